"""Sample pair attention and the contrastive / distillation losses against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from mfclip_cli.model import LabelSet, build_model
from mfclip_cli.model.config import LossSettings, SpaSettings
from mfclip_cli.model.losses import (
    INITIAL_LOGIT_SCALE,
    MFCLIPLoss,
    clip_loss,
    contrastive_loss,
    distillation_loss,
    false_negative_keys,
    label_relation,
    pair_relevance,
    prompt_pair_weights,
    sample_pair_weights,
    spa_relevance,
    text_pair_weights,
)


def _unit(n, d, seed):
    return F.normalize(
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64),
        dim=-1,
    )


def _ids(levels):
    """Prompt keys for level embeddings: equal rows, equal keys (as equal prompts give)."""
    return torch.unique(levels.flatten(1), dim=0, return_inverse=True)[1]


def _reference_clip_loss(images, texts, scale):
    """Symmetric CLIP cross-entropy written out term by term."""
    n = images.shape[0]
    total = 0.0
    for i in range(n):
        row = [scale * float(images[i] @ texts[j]) for j in range(n)]
        column = [scale * float(texts[i] @ images[j]) for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -column[i] + math.log(sum(math.exp(v) for v in column))
    return total / (2 * n)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_spa_off_equals_plain_symmetric_clip_loss(n):
    images, texts = _unit(n, 16, 0), _unit(n, 16, 1)
    texts[-1] = texts[0]  # duplicates are what SPA would change; off, they must not matter
    scale = torch.tensor(INITIAL_LOGIT_SCALE, dtype=torch.float64)
    off = SpaSettings(enabled=False)
    levels = texts[:, None]
    expected = _reference_clip_loss(images, texts, math.exp(INITIAL_LOGIT_SCALE))
    ids = _ids(levels)
    assert abs(float(contrastive_loss(images, texts, levels, ids, scale, off)) - expected) < 1e-6
    assert abs(float(contrastive_loss(images, texts, levels, ids, scale, None)) - expected) < 1e-6


def _square(logits):
    """clip_loss's arguments for a square batch."""
    return logits, logits.t(), torch.arange(logits.shape[0])


def test_unit_weights_reduce_to_plain_loss():
    logits = torch.randn(5, 5, dtype=torch.float64)
    ones = torch.ones(5, 5, dtype=torch.float64)
    assert torch.allclose(
        clip_loss(*_square(logits), (ones, ones)), clip_loss(*_square(logits)), atol=1e-12
    )


def _reference_spa_loss(images, texts, levels, scale, settings):
    """The SPA loss of the module docstring written out term by term, one anchor at a time."""
    n, count = images.shape[0], levels.shape[1]

    def relevance(i, j):
        if settings.false_negatives == "prompts":
            return float(not torch.equal(levels[i], levels[j]))
        dissimilarity = sum(1 - float(levels[i, k] @ levels[j, k]) for k in range(count))
        return 1 - math.exp(-max(dissimilarity, 0.0) / settings.identity_eps)

    def row_loss(anchors, candidates, i):
        negatives = [j for j in range(n) if j != i]
        similarity = {j: float(anchors[i] @ candidates[j]) for j in negatives}
        # the hardness softmax over every negative, or relevance-weighted over the relevant
        share = {
            j: 1.0 if settings.hardness_among == "negatives" else relevance(i, j) for j in negatives
        }
        norm = sum(share[j] * math.exp(settings.hardness * similarity[j]) for j in negatives)
        total = sum(share.values())
        denominator = math.exp(scale * float(anchors[i] @ candidates[i]))
        for j in negatives:
            hardness = total * math.exp(settings.hardness * similarity[j]) / norm if norm else 0
            denominator += relevance(i, j) * hardness * math.exp(scale * similarity[j])
        return -scale * float(anchors[i] @ candidates[i]) + math.log(denominator)

    rows = sum(row_loss(images, texts, i) for i in range(n))
    columns = sum(row_loss(texts, images, i) for i in range(n))
    return (rows + columns) / (2 * n)


@pytest.mark.parametrize("among", ["relevant", "negatives"])
@pytest.mark.parametrize("rule", ["prompts", "embeddings"])
def test_spa_loss_matches_a_term_by_term_reference(rule, among):
    generator = torch.Generator().manual_seed(4)
    levels = F.normalize(torch.randn(5, 3, 16, generator=generator, dtype=torch.float64), dim=-1)
    levels = levels[torch.tensor([0, 1, 0, 2, 3, 4])]  # samples 0 and 2 share their labels
    levels[4, :2] = levels[3, :2]  # 3 and 4 differ at their last level only
    texts = F.normalize(levels.sum(dim=1), dim=-1)
    images = _unit(6, 16, 8)
    settings = SpaSettings(
        hardness=3.0, false_negatives=rule, identity_eps=0.05, hardness_among=among
    )
    scale = torch.tensor(math.log(10.0), dtype=torch.float64)
    expected = _reference_spa_loss(images, texts, levels, 10.0, settings)
    loss = contrastive_loss(images, texts, levels, _ids(levels), scale, settings)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_identical_texts_weigh_less_as_negatives_than_different_texts():
    # Texts 0 and 1 are identical (same labels); text 2 differs. Image 0 is equally similar to
    # texts 1 and 2, so only the texts' relation can tell the two negatives apart.
    t0 = F.normalize(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), dim=0)
    t2 = F.normalize(torch.tensor([0.0, 1, 0, 0, 0, 0, 0, 0]), dim=0)
    texts = torch.stack([t0, t0, t2]).double()
    images = F.normalize(
        torch.tensor(
            [[1.0, 1, 0.2, 0, 0, 0, 0, 0], [1.0, 0, 0, 1, 0, 0, 0, 0], [0.0, 1, 0, 0, 1, 0, 0, 0]]
        ),
        dim=-1,
    ).double()
    assert torch.isclose(images[0] @ texts[1], images[0] @ texts[2])
    spa = SpaSettings(enabled=True)
    rows, columns = sample_pair_weights(images, texts, text_pair_weights(texts[:, None], spa), spa)
    assert rows[0, 1] < 1e-6 < 0.5 < rows[0, 2]
    assert torch.all(torch.diagonal(rows) == 1) and torch.all(torch.diagonal(columns) == 1)

    # The same shows in the gradient: the loss pushes image 0 away from text 2, barely from text 1.
    logits = (math.exp(INITIAL_LOGIT_SCALE) * images @ texts.t()).requires_grad_(True)
    clip_loss(*_square(logits), (rows, columns)).backward()
    assert abs(float(logits.grad[0, 1])) < 1e-3 * abs(float(logits.grad[0, 2]))
    assert float(logits.grad[0, 2]) > 0

    # Without SPA, the identical-text pair is pushed apart just as hard.
    plain = (math.exp(INITIAL_LOGIT_SCALE) * images @ texts.t()).requires_grad_(True)
    clip_loss(*_square(plain)).backward()
    assert torch.isclose(plain.grad[0, 1], plain.grad[0, 2])


def test_harder_negatives_weigh_more():
    texts = F.normalize(torch.eye(3, 4, dtype=torch.float64), dim=-1)  # all different
    images = F.normalize(
        torch.tensor([[1.0, 0.6, 0.1, 0.0], [0.0, 1, 0, 0], [0.0, 0, 1, 0]], dtype=torch.float64),
        dim=-1,
    )
    rows, _ = sample_pair_weights(images, texts, 1 - torch.eye(3), SpaSettings(hardness=5.0))
    assert rows[0, 1] > 1.0 > rows[0, 2]  # text 1 looks more like image 0 than text 2 does
    assert torch.isclose(rows[0, 1] + rows[0, 2], torch.tensor(2.0, dtype=torch.float64), atol=1e-6)


def test_relevant_negatives_are_emphasised_not_drowned_by_false_ones():
    """Audit M F3: in a model that has learnt the classes, a false negative (the same prompts)
    is as similar as the positive in the image->text direction; over all negatives the hardness
    softmax gave it most of the mass, which relevance then zeroed, and the relevant negatives
    averaged 0.157 with none above 1. Over the relevant ones they average 1, the hard above."""
    torch.manual_seed(0)
    classes = F.normalize(torch.randn(3, 64), dim=-1)
    labels = torch.tensor([0] * 10 + [1] * 11 + [2] * 11)
    noise = F.normalize(torch.randn(32, 64), dim=-1)
    images = F.normalize(0.6 * classes[labels] + 0.8 * noise, dim=-1)
    relevance = prompt_pair_weights(labels)
    relevant = relevance.bool()
    old, _ = sample_pair_weights(
        images, classes[labels], relevance, SpaSettings(hardness_among="negatives")
    )
    assert float(old[relevant].mean()) < 0.3 and float(old[relevant].max()) < 1
    rows, columns = sample_pair_weights(
        images, classes[labels], relevance, SpaSettings(hardness_among="relevant")
    )
    for weights in (rows, columns):
        per_row = (weights * relevance).sum(dim=1) / relevance.sum(dim=1)
        assert torch.allclose(per_row, torch.ones(32), atol=1e-5)
        assert (
            float(weights[relevant].max()) > 1
            and float(weights[~relevant & ~torch.eye(32).bool()].abs().max()) == 0
        )
    # a large beta: shifted by a false negative's score, every relevant exponential underflowed
    # (audit Q3: mean 0.075 at beta 200); against a float64 reference of the formula
    for beta in (100.0, 200.0, 1000.0):
        spa = SpaSettings(hardness_among="relevant", hardness=beta)
        rows, _ = sample_pair_weights(images, classes[labels], relevance, spa)
        assert torch.isfinite(rows).all()
        per_row = (rows * relevance).sum(dim=1) / relevance.sum(dim=1)
        assert torch.allclose(per_row, torch.ones(32), atol=1e-4), beta
        similarity = (images.double() @ classes[labels].double().t()) * beta
        share = torch.softmax(similarity.masked_fill(~relevant, float("-inf")), dim=1)
        reference = relevance.sum(1, keepdim=True) * share  # each row's relevant ones share R
        assert torch.allclose(rows[relevant].double(), reference[relevant], atol=1e-3, rtol=1e-3)
    # every negative relevant: the two rules are one
    everyone = 1 - torch.eye(32)
    a, _ = sample_pair_weights(
        images, classes[labels], everyone, SpaSettings(hardness_among="relevant")
    )
    b, _ = sample_pair_weights(
        images, classes[labels], everyone, SpaSettings(hardness_among="negatives")
    )
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("rule", ["prompts", "embeddings"])
@pytest.mark.parametrize("n", [1, 3, 64])
def test_spa_loss_works_for_any_batch_size(n, rule):
    images = _unit(n, 32, 2).float().requires_grad_(True)
    labels = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(n))
    texts = _unit(4, 32, 3).float()[labels]  # repeated label sets, as in real batches
    scale = torch.tensor(INITIAL_LOGIT_SCALE)
    spa = SpaSettings(false_negatives=rule)
    loss = contrastive_loss(images, texts, texts[:, None], labels, scale, spa)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(images.grad).all()
    if n == 1:
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)


def test_distillation_is_zero_for_a_perfect_predictor_and_positive_otherwise():
    texts = _unit(4, 16, 5).float()[torch.tensor([0, 1, 1, 2])]
    scale = torch.tensor(INITIAL_LOGIT_SCALE)
    assert float(distillation_loss(texts * 3.0, texts, scale, 2.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(distillation_loss(_unit(4, 16, 6).float(), texts, scale, 2.0)) > 0.01


def test_total_loss_combines_terms_with_configured_weights():
    settings = LossSettings(contrastive_weight=0.25, distill_weight=2.0)
    criterion = MFCLIPLoss(settings)
    visual, text, predicted = torch.randn(4, 8), _unit(4, 8, 7).float(), torch.randn(4, 8)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    parts = criterion(logits, targets, visual, text, text[:, None], torch.arange(4), predicted)
    expected = parts.classification + 0.25 * parts.contrastive + 2.0 * parts.distillation
    assert torch.isclose(parts.total, expected)
    assert torch.isclose(parts.classification, F.cross_entropy(logits, targets))


SDXL = LabelSet("diffusion", "t2i", "SDXL")
MIDJOURNEY = LabelSet("diffusion", "t2i", "Midjourney")  # SDXL's prompts but the generator's
SPA_LABELS = [SDXL, MIDJOURNEY, LabelSet("real"), LabelSet("real", "none", "camera"), SDXL]


def _spa_text_weights(config, labels, rule):
    """The relevance of each pair of ``labels`` under ``rule``, and their combined texts."""
    torch.manual_seed(0)
    language = build_model(config).language
    spa = config.replace(loss={"spa": {"false_negatives": rule}}).loss.spa
    with torch.no_grad():
        levels = language.level_embeddings(labels)
        combined = language.combine(levels)
        ids = language.prompt_ids(labels)
    return pair_relevance(spa, false_negative_keys(spa, ids, levels)), combined


@pytest.mark.parametrize("rule", ["prompts", "embeddings"])
def test_spa_relevance_summarises_the_pair_weights_by_where_label_sets_differ(tiny_config, rule):
    labels = SPA_LABELS[:4]  # SDXL, Midjourney, two reals
    weights, _ = _spa_text_weights(tiny_config, labels, rule)
    torch.manual_seed(0)
    spa = tiny_config.replace(loss={"spa": {"false_negatives": rule}}).loss.spa
    report = spa_relevance(build_model(tiny_config).language, SPA_LABELS, spa)
    assert report["label_sets"] == 4  # SDXL twice is one label set
    relations = report["by_relation"]
    assert relations["generator"]["pairs"] == 1 and relations["real"]["pairs"] == 1
    assert relations["class"]["pairs"] == 4
    assert relations["generator"]["mean"] == pytest.approx(float(weights[0, 1]), abs=1e-6)
    assert relations["real"]["mean"] == pytest.approx(float(weights[2, 3]), abs=1e-6)
    class_pairs = [float(weights[i, j]) for i in (0, 1) for j in (2, 3)]
    assert relations["class"]["mean"] == pytest.approx(sum(class_pairs) / 4, abs=1e-6)
    assert label_relation(SDXL, LabelSet("diffusion", "i2i", "SDXL")) == "forgery_type"
    assert label_relation(SDXL, SDXL) == "identical"


@pytest.mark.parametrize("rule", ["prompts", "embeddings"])
def test_another_generator_of_the_same_class_stays_a_negative(tiny_config, rule):
    weights, combined = _spa_text_weights(tiny_config, SPA_LABELS, rule)
    # (the soft rule leaves float32 rounding of identical texts, up to ~1e-4)
    assert torch.allclose(weights, weights.t()) and torch.all(torch.diagonal(weights) < 1e-3)
    # Identical prompts are false negatives: the same label set twice, and two real faces (real
    # prompts never name a generator).
    assert weights[0, 4] < 1e-3 and weights[2, 3] < 1e-3
    # SDXL and Midjourney share 3 of 4 prompt levels and still count as negatives, as real
    # against fake does.
    assert weights[0, 1] > 0.8 and weights[0, 2] > 0.99
    # The combined text embedding would dilute their one differing level among the shared ones.
    eps = tiny_config.loss.spa.identity_eps
    assert 1 - math.exp(-(1 - float(combined[0] @ combined[1])) / eps) < 0.5


def test_the_prompt_rule_keeps_negatives_that_training_draws_together():
    """What a trained text tower did (docs/ablation.md): generator prompts at cosine ~0.998.
    The soft rule then all but drops the pair; the prompt rule still counts it in full."""
    generator = torch.Generator().manual_seed(3)
    levels = F.normalize(torch.randn(2, 4, 32, generator=generator), dim=-1)
    levels[1, :3] = levels[0, :3]  # the same class, forgery type and family
    drift = F.normalize(torch.randn(32, generator=generator), dim=0)
    levels[1, 3] = F.normalize(levels[0, 3] + 0.063 * drift, dim=0)
    assert float(levels[0, 3] @ levels[1, 3]) == pytest.approx(0.998, abs=1e-3)
    soft = text_pair_weights(levels, SpaSettings(false_negatives="embeddings"))
    assert float(soft[0, 1]) < 0.15
    exact = pair_relevance(SpaSettings(false_negatives="prompts"), torch.tensor([7, 9]))
    assert exact.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert prompt_pair_weights(torch.tensor([7, 9]), torch.tensor([9])).tolist() == [[1.0], [0.0]]


def test_prompt_keys_follow_the_prompt_texts(tiny_config):
    language = build_model(tiny_config).language
    keys = language.prompt_ids(SPA_LABELS).tolist()
    assert keys[0] == keys[4] and keys[2] == keys[3]  # same label set; two reals
    assert len({keys[0], keys[1], keys[2]}) == 3
    # A fixed digest of the texts, not Python's per-process salted hash: the same everywhere.
    again = build_model(tiny_config).language.prompt_ids(SPA_LABELS).tolist()
    assert again == keys and all(0 <= key < 2**63 for key in keys)
    coarse = build_model(tiny_config.replace(prompts={"levels": 3})).language
    sdxl, midjourney = coarse.prompt_ids([SDXL, MIDJOURNEY]).tolist()
    assert sdxl == midjourney  # without the generator level their prompts are the same


@pytest.mark.parametrize("rule", ["prompts", "embeddings"])
def test_spa_suppresses_what_the_prompt_levels_in_use_cannot_tell_apart(tiny_config, rule):
    """Without the generator level, SDXL and Midjourney have the same prompts: false negatives."""
    three_levels = tiny_config.replace(prompts={"levels": 3})
    weights, _ = _spa_text_weights(three_levels, SPA_LABELS, rule)
    assert weights[0, 1] < 1e-3 and weights[0, 2] > 0.99
