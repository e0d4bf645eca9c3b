"""MC-LCR: its building blocks against hand computations, its loss against a loop reference, the
tiny model end to end, its configs and backbone weights, and the full config's shapes."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from mfclip_cli.errors import BackboneError, ConfigError, UnsafeFileError
from mfclip_cli.model.config import CONFIG_DIR, load_model_config
from mfclip_cli.model.mclcr import (
    MCLCR,
    MCLCRSettings,
    build_mclcr,
    gram_style,
    patch_spectra,
    supcon_loss,
)
from mfclip_cli.model.prompts import LabelSet

LABEL_SETS = [
    LabelSet("real", "none"),
    LabelSet("diffusion", "t2i", "sd-1.5"),
    LabelSet("diffusion", "t2i", "sdxl"),
    LabelSet("gan", "efs", "stylegan2"),
    LabelSet("real", "none"),
    LabelSet("gan", "efs", "stylegan2"),
]


@pytest.fixture(scope="module")
def tiny_settings() -> MCLCRSettings:
    return load_model_config("mc-lcr-tiny")


@pytest.fixture
def tiny(tiny_settings) -> MCLCR:
    torch.manual_seed(0)
    return build_mclcr(tiny_settings)


@pytest.fixture
def faces(tiny_settings) -> torch.Tensor:
    size = tiny_settings.crop_size
    return torch.rand(len(LABEL_SETS), 3, size, size, generator=torch.Generator().manual_seed(1))


# --- building blocks ------------------------------------------------------------------------


def test_gram_style_equals_a_hand_computation():
    features = torch.randn(2, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    batch, channels, height, width = features.shape
    expected_full, expected_upper = [], []
    for b in range(batch):
        full, upper = [], []
        for c in range(channels):
            for d in range(channels):
                total = 0.0
                for y in range(height):
                    for x in range(width):
                        total += float(features[b, c, y, x]) * float(features[b, d, y, x])
                full.append(total / (height * width))
                if d >= c:
                    upper.append(total / (height * width))
        expected_full.append(full)
        expected_upper.append(upper)
    upper = gram_style(features)
    assert upper.shape == (2, channels * (channels + 1) // 2)
    torch.testing.assert_close(upper, torch.tensor(expected_upper), rtol=1e-6, atol=1e-6)
    full = gram_style(features, upper_triangle=False)
    torch.testing.assert_close(full, torch.tensor(expected_full), rtol=1e-6, atol=1e-6)


def _image_from_spectra(amplitude, phase, height, width):
    """The inverse of ``patch_spectra``: each patch's inverse DFT, the patches put back in
    row-major order."""
    batch, _, patch, _ = amplitude.shape
    patches = torch.fft.ifft2(torch.polar(amplitude, phase)).real
    grid = patches.reshape(batch, height // patch, width // patch, patch, patch)
    return grid.permute(0, 1, 3, 2, 4).reshape(batch, height, width)


def test_patch_spectra_round_trip_to_the_patches():
    grey = torch.rand(2, 32, 48, generator=torch.Generator().manual_seed(2))
    amplitude, phase = patch_spectra(grey, 16)
    assert amplitude.shape == phase.shape == (2, 6, 16, 16)
    torch.testing.assert_close(
        _image_from_spectra(amplitude, phase, 32, 48), grey, atol=1e-5, rtol=0
    )
    # patch 4 (row 1, column 1) is the DFT of exactly that square of the image
    direct = torch.fft.fft2(grey[:, 16:32, 16:32])
    torch.testing.assert_close(torch.polar(amplitude[:, 4], phase[:, 4]), direct, atol=1e-4, rtol=0)


def test_known_patches_have_known_spectra():
    patch = 8
    constant = torch.full((1, patch, patch), 0.25)
    amplitude, phase = patch_spectra(constant, patch)
    assert amplitude[0, 0, 0, 0].item() == pytest.approx(0.25 * patch * patch)
    assert phase[0, 0, 0, 0].item() == pytest.approx(0.0)
    rest = amplitude[0, 0].flatten()[1:]
    assert rest.abs().max().item() < 1e-5  # all the energy is in the DC bin
    # a cosine along x with 2 cycles per patch: amplitude p^2 / 2 at (0, 2) and (0, p - 2)
    x = torch.arange(patch, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * 2 * x / patch).expand(patch, patch)[None]
    amplitude, _ = patch_spectra(wave, patch)
    peaks = {(0, 2), (0, patch - 2)}
    for v in range(patch):
        for u in range(patch):
            expected = patch * patch / 2 if (v, u) in peaks else 0.0
            assert amplitude[0, 0, v, u].item() == pytest.approx(expected, abs=1e-4)


def test_patch_spectra_refuses_images_that_do_not_split():
    with pytest.raises(ValueError, match="does not split"):
        patch_spectra(torch.rand(1, 30, 32), 16)


def _supcon_reference(embeddings: torch.Tensor, labels: list[int], temperature: float) -> float:
    """Khosla et al. eq. 2 term by term, anchors without a positive left out."""
    z = [row / row.norm() for row in embeddings.double()]
    terms = []
    for i, anchor in enumerate(z):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(
            math.exp(float(anchor @ z[a]) / temperature) for a in range(len(z)) if a != i
        )
        total = sum(
            math.log(math.exp(float(anchor @ z[p]) / temperature) / denominator) for p in positives
        )
        terms.append(-total / len(positives))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_supcon_equals_the_loop_reference(temperature):
    embeddings = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    labels = [0, 0, 1, 1, 1, 2, 3]  # the anchors of classes 2 and 3 have no positive
    loss = supcon_loss(embeddings, torch.tensor(labels), temperature)
    assert loss.item() == pytest.approx(
        _supcon_reference(embeddings, labels, temperature), rel=1e-5
    )
    # the scale of the embeddings does not matter: they are unit-normalised inside
    scaled = supcon_loss(3.0 * embeddings, torch.tensor(labels), temperature)
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-5)


def test_supcon_does_not_depend_on_the_batch_order():
    embeddings = torch.randn(9, 4, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 5])
    order = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    expected = supcon_loss(embeddings, labels)
    assert supcon_loss(embeddings[order], labels[order]).item() == pytest.approx(expected.item())


def test_supcon_without_positives_is_zero_and_differentiable():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(embeddings, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(embeddings.grad, torch.zeros(3, 4))


# --- the tiny model -------------------------------------------------------------------------


def test_tiny_model_shapes(tiny, tiny_settings, faces):
    tiny.eval()
    embeddings, logits = tiny.embed_and_classify(faces)
    assert embeddings.shape == (len(faces), tiny_settings.fused_dim)
    assert logits.shape == (len(faces), 3)
    assert tiny.classes == ("real", "diffusion", "gan")
    assert tiny.crop_size == 64
    torch.testing.assert_close(tiny(faces), logits)
    probabilities = tiny.predict_proba(faces)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(len(faces)))
    # faces of another size are resized to the crop size first
    larger = torch.nn.functional.interpolate(faces, size=(80, 80), mode="bilinear")
    assert tiny(larger).shape == (len(faces), 3)


def test_tiny_loss_trains_every_parameter(tiny, faces):
    tiny.train()
    losses = tiny.loss(faces, LABEL_SETS)
    losses.total.backward()
    floats = {name: float(value.detach()) for name, value in vars(losses).items()}
    assert set(floats) == {"total", "classification", "contrastive"}
    expected = floats["classification"] + 0.5 * floats["contrastive"]
    assert floats["total"] == pytest.approx(expected, rel=1e-6)
    assert floats["contrastive"] > 0
    parameters = dict(tiny.named_parameters())
    assert len(tiny.trainable_parameters()) == len(parameters)
    for name, parameter in parameters.items():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "rule,groups",
    [("class", [0, 1, 1, 2, 0, 2]), ("label_set", [0, 1, 2, 3, 0, 3])],
)
def test_supcon_positives_follow_the_setting(tiny_settings, faces, rule, groups):
    torch.manual_seed(0)
    model = build_mclcr(dataclasses.replace(tiny_settings, contrastive_positives=rule)).eval()
    losses = model.loss(faces, LABEL_SETS)
    with torch.no_grad():
        embeddings = model.embed(faces)
    expected = supcon_loss(embeddings, torch.tensor(groups), tiny_settings.supcon_temperature)
    assert losses.contrastive.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_refuses_mismatched_labels(tiny, faces):
    with pytest.raises(ValueError, match="6 faces but 2 label sets"):
        tiny.loss(faces, LABEL_SETS[:2])


# --- configs and weights --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mc-lcr", "mc-lcr-tiny"])
def test_configs_load_and_round_trip(name, tmp_path):
    settings = load_model_config(name)
    assert settings.name == name
    document = settings.to_dict()
    assert document["detector"] == "mc-lcr"
    assert MCLCRSettings.from_dict(document) == settings
    # the shipped file spells out every setting, so it says what the model is
    shipped = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert set(document) - set(shipped) == {"classes"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document))
    assert load_model_config(path) == settings


@pytest.mark.parametrize(
    "change,message",
    [
        ({"detector": "mfclip"}, "not an mc-lcr config"),
        ({"colour": 1}, "unknown key"),
        ({"crop_size": "64"}, "crop_size must be an integer"),
        ({"backbone": "resnet50"}, "backbone must be one of"),
        ({"backbone_widths": None}, "backbone_widths is required"),
        ({"contrastive_positives": "generator"}, "contrastive_positives must be one of"),
        ({"spectrum_dim": 15}, "multiple of attention_heads"),
    ],
)
def test_bad_configs_are_refused(tiny_settings, change, message):
    with pytest.raises(ConfigError, match=message):
        MCLCRSettings.from_dict({**tiny_settings.to_dict(), **change})


def test_unknown_config_names_are_refused():
    with pytest.raises(ConfigError, match="mc-lcr, mc-lcr-tiny"):
        load_model_config("mc-lcr-huge")


def test_unknown_style_stages_are_refused(tiny_settings):
    with pytest.raises(ConfigError, match="block9 are not parts"):
        build_mclcr(dataclasses.replace(tiny_settings, style_stages=("block1", "block9")))


def test_backbone_weights_load_from_safetensors(tiny_settings, tmp_path):
    torch.manual_seed(1)
    source = build_mclcr(tiny_settings).spatial.network.state_dict()
    # an ImageNet classifier in the file is ignored
    path = tmp_path / "backbone.safetensors"
    save_file({**source, "fc.weight": torch.zeros(10, 48), "fc.bias": torch.zeros(10)}, path)
    torch.manual_seed(2)
    model = build_mclcr(dataclasses.replace(tiny_settings, pretrained=str(path)))
    loaded = model.spatial.network.state_dict()
    assert loaded.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(loaded[key], value), key
    # pretrained=False leaves the file unread (a checkpoint will fill the backbone)
    missing = dataclasses.replace(tiny_settings, pretrained=str(tmp_path / "none.safetensors"))
    build_mclcr(missing, pretrained=False)
    with pytest.raises(FileNotFoundError):
        build_mclcr(missing)


def test_wrong_backbone_weights_are_refused(tiny_settings, tmp_path):
    source = build_mclcr(tiny_settings).spatial.network.state_dict()
    incomplete = {k: v for k, v in source.items() if k != "conv1.weight"}
    incomplete["block1.rep.0.conv1.weight"] = torch.zeros(3)
    incomplete["block9.skip.weight"] = torch.zeros(3)
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in incomplete.items()}, path)
    with pytest.raises(
        BackboneError,
        match="missing conv1.weight .*unexpected block9.skip.weight .*mis-shaped block1.rep",
    ):
        build_mclcr(dataclasses.replace(tiny_settings, pretrained=str(path)))
    pickled = tmp_path / "pickled.safetensors"
    torch.save(source, pickled)
    with pytest.raises(UnsafeFileError, match="pickled"):
        build_mclcr(dataclasses.replace(tiny_settings, pretrained=str(pickled)))


# --- the full config ------------------------------------------------------------------------


def test_full_config_taps_are_legacy_xception_features():
    """The tapped run of legacy_xception ends where timm's own forward_features does, and taps
    entry-flow blocks 1-3 (128, 256, 728 channels); a 96-pixel input keeps this quick."""
    torch.manual_seed(0)
    model = build_mclcr(load_model_config("mc-lcr")).eval()
    image = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        shallow, last = model.spatial(image)
        expected = model.spatial.network.forward_features(image)
    torch.testing.assert_close(last, expected)
    assert [m.shape[1] for m in shallow] == [128, 256, 728]


def test_full_config_gives_three_logits_at_299_pixels():
    """Random init (no download): the shape check of the 28M-parameter model, a few seconds."""
    settings = load_model_config("mc-lcr")
    assert (settings.backbone, settings.crop_size, settings.pretrained) == (
        "legacy_xception",
        299,
        None,
    )
    model = build_mclcr(settings).eval()
    with torch.no_grad():
        embeddings, logits = model.embed_and_classify(torch.rand(1, 3, 299, 299))
    assert embeddings.shape == (1, 512)
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()
