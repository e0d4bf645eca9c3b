"""Losses: sample pair attention (SPA) in the image-text contrastive loss, distillation, total.

SPA reweights the negative (off-diagonal) pairs of the symmetric CLIP loss. For an anchor i and a
negative j the weight is the product of

* relevance, 0 for a false negative (two samples whose labels say the same thing: nothing to
  push apart) and 1 otherwise. What counts as a false negative is ``spa.false_negatives``:
  ``prompts`` (``prompt_pair_weights``), the same prompt texts at every level in use, so two
  fakes apart only in their generator (3 of 4 levels shared) stay full negatives however close
  training draws their prompts; or ``embeddings`` (``text_pair_weights``), the soft
  ``1 - exp(-d_ij / eps)`` of the level embeddings' dissimilarity ``d_ij = sum_l (1 - cos)``.
  The soft rule was measured to fail on a trained text tower: LoRA on the text side drew the
  generator prompts to cosine ~0.998, and such pairs fell to weight ~0.1 (docs/ablation.md); and
* hardness, from the image-text similarity ``c_ij``: a negative that looks like the anchor's
  positive weighs more. With ``spa.hardness_among = "relevant"`` (the shipped configs) it is
  ``R_i * exp(beta c_ij) / sum_k r_ik exp(beta c_ik)`` over the anchor's negatives k, with
  ``r`` the relevance and ``R_i = sum_k r_ik``: the relevant negatives' weights average 1 (a
  relevance-weighted mean), so the loss keeps its scale at any batch size and the hard ones
  are emphasised. With ``"negatives"`` (checkpoints before the key) it is
  ``(N - 1) * softmax_j(beta c_ij)`` over all negatives: a false negative, in the image->text
  direction as similar as the positive (the same text), took most of that mass, and every
  relevant negative of a trained model weighed below 1 (audit M F3).

A negative's term ``exp(l_ij)`` in the softmax denominator is multiplied by its weight (added
``log w`` to its logit). The weights are computed without gradient: they steer the loss but are not
themselves learned, since a loss left free to learn its own negative weights would learn to drop
them. With SPA off every weight is 1 and the loss is exactly the plain symmetric CLIP loss.

Under ``torchrun`` the contrastive loss sees the global batch: every process's features are
gathered, with gradients, and each process scores its own rows against all columns (see
``contrastive_loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mfclip_cli.labels import LabelSet
from mfclip_cli.model.config import LossSettings, SpaSettings
from mfclip_cli.model.detectors import LossTerms

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def clip_loss(
    image_to_text: torch.Tensor,
    text_to_image: torch.Tensor,
    targets: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss of image->text and text->image logit rows ([n, N] each, the positive
    of row i in column ``targets[i]``); for a square batch, ``logits, logits.t(), arange(N)``.

    Optional negative ``weights`` ([n, N] each, indexed [anchor, negative], 1 at the positives)
    scale each negative's ``exp(logit)`` in its row's softmax denominator; without them this is
    the plain CLIP loss.
    """
    rows = (image_to_text, text_to_image)
    if weights is not None:
        tiny = torch.finfo(image_to_text.dtype).tiny
        rows = tuple(
            logits + weight.to(logits.dtype).clamp_min(tiny).log()
            for logits, weight in zip(rows, weights)
        )
    return 0.5 * (F.cross_entropy(rows[0], targets) + F.cross_entropy(rows[1], targets))


def text_pair_weights(
    text_levels: torch.Tensor, settings: SpaSettings, others: torch.Tensor | None = None
) -> torch.Tensor:
    """SPA's ``embeddings`` relevance of each pair of texts as negatives: [n, N] from unit-norm
    level embeddings [n, L, D] and ``others`` [N, L, D] (default: ``text_levels`` itself).

    ``1 - exp(-sum_l (1 - cos_l) / eps)``, that is ``1 - prod_l exp(-(1 - cos_l) / eps)``: a pair
    is suppressed as a false negative only when its prompts coincide (nearly) at *every* level.
    The levels are compared one by one, not through the combined text embedding, so that label
    sets sharing 3 of 4 levels keep the weight of their one differing level instead of having it
    diluted by the shared ones.
    """
    others = text_levels if others is None else others
    with torch.no_grad():
        dtype = torch.promote_types(text_levels.dtype, torch.float32)
        cosines = torch.einsum("ild,jld->ij", text_levels.to(dtype), others.to(dtype))
        dissimilarity = (text_levels.shape[1] - cosines).clamp_min(0.0)
        return 1.0 - torch.exp(-dissimilarity / settings.identity_eps)


def prompt_pair_weights(text_ids: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """SPA's ``prompts`` relevance: [n, N], 0 where two samples' prompt texts are the same at
    every level in use (``FineGrainedLanguageEncoder.prompt_ids`` [n] and ``others`` [N]), 1
    elsewhere."""
    others = text_ids if others is None else others
    return (text_ids[:, None] != others[None, :]).float()


def false_negative_keys(
    settings: SpaSettings, text_ids: torch.Tensor, text_levels: torch.Tensor
) -> torch.Tensor:
    """What SPA's false-negative rule compares: the prompt keys [n], or the level embeddings
    [n, L, D] (detached: the weights carry no gradient)."""
    return text_ids if settings.false_negatives == "prompts" else text_levels.detach()


def pair_relevance(
    settings: SpaSettings, keys: torch.Tensor, rows: slice = slice(None)
) -> torch.Tensor:
    """[n, N] relevance of the anchors ``rows`` against every sample, from
    ``false_negative_keys`` by the configured rule."""
    if settings.false_negatives == "prompts":
        return prompt_pair_weights(keys[rows], keys)
    return text_pair_weights(keys[rows], settings, keys)


def label_relation(a: LabelSet, b: LabelSet) -> str:
    """Where two label sets first differ, from the top of the prompt hierarchy: ``class``,
    ``forgery_type``, ``generator``, or ``real`` for two real faces (whose prompts never name a
    generator), ``identical`` for equal sets."""
    if a.label != b.label:
        return "class"
    if a.is_real:
        return "real"
    if a.forgery_type != b.forgery_type:
        return "forgery_type"
    return "generator" if a.generator != b.generator else "identical"


def spa_relevance(
    language: torch.nn.Module, label_sets: Sequence[LabelSet], settings: SpaSettings
) -> dict:
    """The SPA relevance each pair of distinct label sets receives as negatives under a language
    encoder's prompts and the configured false-negative rule, summarised by ``label_relation``:
    mean, min, max and pair count per relation. A relevance near 0 makes a pair a false
    negative."""
    distinct = sorted(set(label_sets), key=lambda s: (s.label, s.forgery_type, s.generator))
    with torch.no_grad():
        keys = false_negative_keys(
            settings, language.prompt_ids(distinct), language.level_embeddings(distinct)
        )
        weights = pair_relevance(settings, keys).cpu()
    by_relation: dict[str, list[float]] = {}
    for i, first in enumerate(distinct):
        for j in range(i + 1, len(distinct)):
            relation = label_relation(first, distinct[j])
            by_relation.setdefault(relation, []).append(float(weights[i, j]))
    return {
        "label_sets": len(distinct),
        "by_relation": {
            relation: {
                "mean": sum(values) / len(values),
                "min": min(values),
                "max": max(values),
                "pairs": len(values),
            }
            for relation, values in sorted(by_relation.items())
        },
    }


def _hardness(
    similarity: torch.Tensor,
    positive: torch.Tensor,
    beta: float,
    relevance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row-wise hardness of each negative, 1 at the positive: ``(N - 1) * softmax`` of
    ``beta * similarity`` over the row's negatives, or, with ``relevance``, its
    relevance-weighted form (the module docstring), whose relevance-weighted mean is 1."""
    count = similarity.shape[1]
    if count == 1:
        return torch.ones_like(similarity)
    scores = (beta * similarity).masked_fill(positive, float("-inf"))
    if relevance is None:
        return ((count - 1) * torch.softmax(scores, dim=1)).masked_fill(positive, 1.0)
    mass = relevance.masked_fill(positive, 0.0)
    # shifted by the largest relevant score, not a false negative's (as similar as the positive,
    # it made every relevant exponential underflow at a large beta: audit Q3)
    # (the pairs without relevance are weighted 0 whatever their hardness: left at 0 here, where
    # they could overflow)
    unweighted = mass <= 0
    relevant_max = scores.masked_fill(unweighted, float("-inf")).amax(dim=1, keepdim=True)
    exponentials = torch.exp(scores - relevant_max).masked_fill(unweighted, 0.0)
    norm = (mass * exponentials).sum(dim=1, keepdim=True)
    total = mass.sum(dim=1, keepdim=True)  # a row of false negatives only: no mass to share
    hardness = torch.where(norm > 0, total * exponentials / norm.clamp_min(1e-30), 0.0)
    return hardness.masked_fill(positive, 1.0)


def sample_pair_weights(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    relevance: torch.Tensor,
    settings: SpaSettings,
    rows: slice = slice(None),
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPA weights of the negatives for the image->text and text->image rows ``rows`` of the batch.

    Inputs are the whole batch's unit-norm embeddings ([N, D]) and the anchors' relevance
    ([n, N], ``pair_relevance``); the result is [n, N] for the n anchors ``rows`` selects: entry
    (i, j) of the first matrix weighs text j as a negative of image i, entry (i, j) of the second
    weighs image j as a negative of text i.
    """
    with torch.no_grad():
        dtype = torch.promote_types(image_embeddings.dtype, torch.float32)
        images, texts = image_embeddings.to(dtype), text_embeddings.to(dtype)
        columns = torch.arange(images.shape[0], device=images.device)
        positive = columns[None, :] == columns[rows][:, None]
        relevance = relevance.to(dtype)
        among = relevance if settings.hardness_among == "relevant" else None
        beta = settings.hardness
        image_to_text = relevance * _hardness(images[rows] @ texts.t(), positive, beta, among)
        text_to_image = relevance * _hardness(texts[rows] @ images.t(), positive, beta, among)
    return image_to_text.masked_fill(positive, 1.0), text_to_image.masked_fill(positive, 1.0)


# torch 2.14 renames the two collectives (the old names warn); a lent GPU machine's torch is 2.11
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _GatherRows(torch.autograd.Function):
    """All processes' rows of a tensor, concatenated in rank order; the backward (a
    reduce-scatter) sends each process the gradient w.r.t. its own rows, summed over processes.

    Both collectives block, rather than torch's functional all_gather, whose backward waits on
    an asynchronous reduce-scatter: beside DDP's gradient all-reduce on gloo that wait crashed a
    process (SIGSEGV or SIGABRT, torch 2.14) about once in 50 two-process training runs, and in
    3 of 4 runs of 3,000 steps of a small model."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, rows: torch.Tensor) -> torch.Tensor:
        gathered = rows.new_empty((rows.shape[0] * dist.get_world_size(), *rows.shape[1:]))
        _ALL_GATHER(gathered, rows.contiguous())
        return gathered

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        own = grad.new_empty((grad.shape[0] // dist.get_world_size(), *grad.shape[1:]))
        _REDUCE_SCATTER(own, grad.contiguous(), op=dist.ReduceOp.SUM)
        return own


def gather_features(*features: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], slice]:
    """The global batch's features, concatenated in rank order, and the rows that are this
    process's.

    In a torch.distributed process group (under torchrun, even of one process) the gradient of
    each gathered copy goes back to the process that owns it, summed (``_GatherRows``). Outside
    one, the features themselves. Every process must hold the same number of rows (the train
    engine splits each global batch evenly).
    """
    count = features[0].shape[0]
    if not (dist.is_available() and dist.is_initialized()):
        return features, slice(0, count)
    rank = dist.get_rank()
    gathered = tuple(_GatherRows.apply(tensor) for tensor in features)
    return gathered, slice(rank * count, (rank + 1) * count)


def contrastive_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_levels: torch.Tensor,
    text_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    spa: SpaSettings | None,
) -> torch.Tensor:
    """Symmetric image-text contrastive loss, with SPA when ``spa`` is given and enabled.

    Inputs are this process's unit-norm embeddings ([n, D]; [n, L, D] text levels) and prompt
    keys ([n]); SPA reads the levels or the keys, as its false-negative rule says. Under
    ``torchrun`` (W processes) its n images and n texts are the rows, scored against the N = W n
    texts and images of the global batch as columns; the other processes compute the other rows,
    rather than each process the full N x N matrix, and what their rows contribute to this
    process's gradient comes back through the gather. Each process's loss is the mean of its
    rows, so the mean over processes is the single-process loss of the global batch; its
    gradient w.r.t. its own features is that of the sum over processes, W times the global
    loss's, and DDP's mean over the W processes makes the parameters' gradient the one a single
    process would get from the whole batch.
    """
    spa = spa if spa is not None and spa.enabled else None
    local: tuple[torch.Tensor, ...] = (image_embeddings, text_embeddings)
    if spa is not None:
        local += (false_negative_keys(spa, text_ids, text_levels),)
    gathered, rows = gather_features(*local)
    images, texts = gathered[0], gathered[1]
    scale = logit_scale.exp()
    targets = torch.arange(rows.start, rows.stop, device=images.device)
    weights = None
    if spa is not None:
        relevance = pair_relevance(spa, gathered[2], rows)
        weights = sample_pair_weights(images, texts, relevance, spa, rows)
    return clip_loss(
        scale * image_embeddings @ texts.t(), scale * text_embeddings @ images.t(), targets, weights
    )


def distillation_loss(
    predicted_text: torch.Tensor,
    text_embeddings: torch.Tensor,
    scale: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) * T^2 over the batch's distinct texts as prototypes.

    The teacher is each sample's own text embedding, the student the text embedding predicted from
    its visual embedding; both are scored against the distinct text embeddings of the batch.
    """
    teacher_texts = text_embeddings.detach()
    prototypes = torch.unique(teacher_texts, dim=0)
    scale = scale.detach().exp()
    teacher = F.log_softmax(scale * teacher_texts @ prototypes.t() / temperature, dim=-1)
    student = F.log_softmax(
        scale * F.normalize(predicted_text, dim=-1) @ prototypes.t() / temperature, dim=-1
    )
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


@dataclass
class LossBreakdown(LossTerms):
    """MFCLIP's loss: CE, SPA contrastive and text distillation."""

    contrastive: torch.Tensor
    distillation: torch.Tensor


class MFCLIPLoss(nn.Module):
    """CE on the 3-way head + lambda_c * SPA contrastive + lambda_k * text distillation.

    Holds the learned contrastive temperature (a log logit scale, clamped at 100 as in CLIP).
    """

    def __init__(self, settings: LossSettings):
        super().__init__()
        self.settings = settings
        self.log_logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))

    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self,
        class_logits: torch.Tensor,
        targets: torch.Tensor,
        visual: torch.Tensor,
        text: torch.Tensor,
        text_levels: torch.Tensor,
        text_ids: torch.Tensor,
        predicted_text: torch.Tensor,
    ) -> LossBreakdown:
        settings = self.settings
        scale = self.logit_scale()
        classification = F.cross_entropy(class_logits.float(), targets)
        contrastive = contrastive_loss(
            F.normalize(visual.float(), dim=-1), text, text_levels, text_ids, scale, settings.spa
        )
        distillation = distillation_loss(
            predicted_text.float(), text, scale, settings.distill_temperature
        )
        total = (
            classification
            + settings.contrastive_weight * contrastive
            + settings.distill_weight * distillation
        )
        return LossBreakdown(total, classification, contrastive, distillation)
