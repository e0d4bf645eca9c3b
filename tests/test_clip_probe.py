"""The CLIP probe (UniFD): its configs, the tiny model end to end, that only its head trains, and
its features and logits against reference computations (open_clip called directly, a matmul)."""

import dataclasses
import json

import open_clip
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mfclip_cli.errors import ConfigError
from mfclip_cli.model.backbone import register_open_clip_configs
from mfclip_cli.model.clip_probe import (
    ClipProbe,
    ClipProbeSettings,
    build_clip_probe,
)
from mfclip_cli.model.config import CONFIG_DIR, apply_overrides, load_model_config
from mfclip_cli.model.prompts import LabelSet
from mfclip_cli.model.towers import inference_towers

LABEL_SETS = [
    LabelSet("real", "none"),
    LabelSet("diffusion", "t2i", "sd-1.5"),
    LabelSet("gan", "efs", "stylegan2"),
    LabelSet("real", "none"),
]


@pytest.fixture(scope="module")
def tiny_settings() -> ClipProbeSettings:
    return load_model_config("clip-probe-tiny")


@pytest.fixture
def tiny(tiny_settings) -> ClipProbe:
    torch.manual_seed(0)
    return build_clip_probe(tiny_settings)


@pytest.fixture
def faces(tiny_settings) -> torch.Tensor:
    size = tiny_settings.preprocess.crop_size
    return torch.rand(len(LABEL_SETS), 3, size, size, generator=torch.Generator().manual_seed(1))


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip-probe", "clip-probe-tiny"])
def test_configs_load_and_round_trip(name, tmp_path):
    settings = load_model_config(name)
    assert settings.name == name
    document = settings.to_dict()
    assert document["detector"] == "clip-probe"
    assert ClipProbeSettings.from_dict(document) == settings
    # the shipped file spells out every setting but the fixed class list
    shipped = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert {k: v for k, v in document.items() if k != "classes"} == shipped
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document))
    assert load_model_config(path) == settings


def test_full_config_is_unifd():
    settings = load_model_config("clip-probe")
    assert settings.clip == dataclasses.replace(
        settings.clip, architecture="ViT-L-14", pretrained="openai"
    )
    assert settings.preprocess.crop_size == 224
    assert (settings.preprocess.mean, settings.preprocess.std) == (
        open_clip.OPENAI_DATASET_MEAN,
        open_clip.OPENAI_DATASET_STD,
    )
    assert settings.normalize_features is False


@pytest.mark.parametrize(
    "change, message",
    [
        ({"head": {"hidden": 8}}, "unknown key.*head"),
        ({"clip": {"arch": "ViT-B-16"}}, r"clip: unknown key.*arch"),
        ({"detector": "mc-lcr"}, "not a clip-probe config: its detector is 'mc-lcr'"),
        (
            {"preprocess": {"crop_size": "224"}},
            'preprocess.crop_size must be an integer, not "224"',
        ),
        ({"clip": {"quick_gelu": "yes"}}, "clip.quick_gelu must be true or false or null"),
        ({"preprocess": {"mean": [0.5, 0.5]}}, "preprocess.mean must be a list of 3 values"),
        ({"normalize_features": 1}, "normalize_features must be true or false"),
        ({"clip": "ViT-B-16"}, "clip: expected a table"),
        ({"classes": ["real", "fake"]}, "classes must be"),
    ],
)
def test_bad_configs_are_refused(tiny_settings, change, message):
    document = {**tiny_settings.to_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        ClipProbeSettings.from_dict(document)


def test_other_detectors_configs_and_unknown_names_are_refused(tiny_settings):
    with pytest.raises(ConfigError, match="not a clip-probe config: its detector is 'mfclip'"):
        ClipProbeSettings.from_dict({**tiny_settings.to_dict(), "detector": "mfclip"})
    with pytest.raises(ConfigError, match="clip-probe-tiny"):
        load_model_config("clip-probe-huge")


def test_overrides_apply_to_the_probe(tiny_settings):
    changed = apply_overrides(tiny_settings, ["normalize_features=true", "clip.quick_gelu=true"])
    assert isinstance(changed, ClipProbeSettings)
    assert changed.normalize_features and changed.clip.quick_gelu


# --- the tiny model -------------------------------------------------------------------------


def test_shapes_and_surface(tiny, faces):
    assert tiny.classes == ("real", "diffusion", "gan")
    assert (tiny.crop_size, tiny.crop_margin) == (128, 1.3)
    assert tiny.merge_adapters() is tiny and tiny.inference_only is False
    logits = tiny(faces)
    assert logits.shape == (len(LABEL_SETS), 3)
    embeddings, same = tiny.embed_and_classify(faces)
    assert embeddings.shape == (len(LABEL_SETS), 64)
    torch.testing.assert_close(same, logits, rtol=0, atol=0)
    probs = tiny.predict_proba(faces)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(len(LABEL_SETS)))
    assert tiny(torch.rand(2, 3, 96, 96)).shape == (2, 3)  # another crop size is resized
    assert not hasattr(tiny, "language") and "text" not in dict(tiny.named_children())


def test_head_is_a_linear_map_of_the_embedding(tiny, faces):
    embeddings, logits = tiny.embed_and_classify(faces)
    weight, bias = tiny.head.weight.detach(), tiny.head.bias.detach()
    expected = torch.tensor(
        [
            [
                sum(float(e[d]) * float(weight[c, d]) for d in range(e.numel())) + float(bias[c])
                for c in range(3)
            ]
            for e in embeddings
        ]
    )
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, embeddings @ weight.T + bias)


def test_features_are_open_clips_image_embedding_of_the_preprocessed_face(tiny, faces):
    """open_clip's own model, given the probe's tower weights and the face resized to the
    tower's 64 pixels (bilinear, antialiased) and normalised with CLIP's mean and std by
    torchvision, embeds it as the probe does."""
    register_open_clip_configs()
    reference = open_clip.create_model("mfclip-tiny", force_quick_gelu=False).eval()
    reference.visual.load_state_dict(tiny.vision.image_tower.state_dict())
    images = TF.resize(faces, [64, 64], interpolation=TF.InterpolationMode.BILINEAR)
    images = TF.normalize(images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.no_grad():
        expected = reference.encode_image(images)
        embeddings, _ = tiny.embed_and_classify(faces)
    torch.testing.assert_close(embeddings, expected, rtol=1e-5, atol=1e-5)


def test_normalised_features_are_unit_vectors_read_by_the_head(tiny_settings, faces):
    torch.manual_seed(0)
    model = build_clip_probe(dataclasses.replace(tiny_settings, normalize_features=True))
    embeddings, logits = model.embed_and_classify(faces)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(LABEL_SETS)))
    torch.testing.assert_close(logits, model.head(embeddings))


def test_only_the_head_trains(tiny, faces):
    head = {name for name, _ in tiny.named_parameters() if name.startswith("head.")}
    assert head == {"head.weight", "head.bias"}
    trainable = tiny.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in tiny.head.parameters()}
    total, count = tiny.parameter_counts()
    assert count == 64 * 3 + 3 and total == count + sum(
        p.numel() for p in tiny.vision.image_tower.parameters()
    )
    tower_before = {k: v.clone() for k, v in tiny.vision.image_tower.state_dict().items()}
    head_before = tiny.head.weight.detach().clone()
    optimiser = torch.optim.AdamW(trainable, lr=1e-2)
    parts = tiny.loss(faces, LABEL_SETS)
    parts.total.backward()
    with_grad = {name for name, p in tiny.named_parameters() if p.grad is not None}
    assert with_grad == head
    optimiser.step()
    for key, value in tiny.vision.image_tower.state_dict().items():
        assert torch.equal(value, tower_before[key]), key
    assert not torch.equal(tiny.head.weight, head_before)


def test_loss_is_cross_entropy_alone(tiny, faces):
    parts = tiny.loss(faces, LABEL_SETS)
    targets = torch.tensor([0, 1, 2, 0])
    expected = torch.nn.functional.cross_entropy(tiny(faces), targets)
    torch.testing.assert_close(parts.total, expected)
    floats = {name: float(value.detach()) for name, value in vars(parts).items()}
    assert set(floats) == {"total", "classification"}  # no term the probe has not
    assert floats["total"] == pytest.approx(floats["classification"])
    with pytest.raises(ValueError, match="4 faces but 3 label sets"):
        tiny.loss(faces, LABEL_SETS[:3])


def test_train_mode_leaves_the_tower_in_eval_mode(tiny, faces):
    with torch.no_grad():
        evaluated = tiny.eval().embed_and_classify(faces)[0]
    tiny.train()
    assert tiny.training and tiny.head.training
    assert not any(module.training for module in tiny.vision.image_tower.modules())
    with torch.no_grad():
        torch.testing.assert_close(tiny.embed_and_classify(faces)[0], evaluated, rtol=0, atol=0)


def test_inference_tower_loads_the_probes_weights(tiny, faces):
    """A checkpoint can fill the probe built on ``vit.py``'s tower (no open_clip needed to
    score): same parameter names, same outputs."""
    light = ClipProbe(tiny.config, inference_towers(tiny.config.clip))
    light.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(light.eval()(faces), tiny.eval()(faces))
