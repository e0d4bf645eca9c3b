"""The assembled model: what trains, what stays frozen, and that it can learn."""

import re

import pytest
import torch

from mfclip_cli.model import LabelSet, build_model, load_model_config

# Everything allowed to train; the rest (the CLIP towers' own weights) must stay bit-identical.
TRAINABLE = re.compile(
    r"^(vision\.image_tower\..*lora_[AB]\..*"
    r"|vision\.noise_branch\..*"
    r"|vision\.fusion\..*"
    r"|language\.level_logits"
    r"|head\..*"
    r"|text_predictor\..*"
    r"|criterion\.log_logit_scale)$"
)
GROUPS = [
    "lora_",
    "noise_branch",
    "fusion",
    "level_logits",
    "head",
    "text_predictor",
    "log_logit_scale",
]

LABELS = [
    LabelSet("real"),
    LabelSet("gan", "efs", "StyleGAN2"),
    LabelSet("diffusion", "t2i", "SDXL"),
    LabelSet("real"),
    LabelSet("diffusion", "fe", "DiffFace"),
    LabelSet("gan", "fs", "SimSwap"),
]


def test_forward_gives_three_class_logits_and_probabilities(tiny_model, faces):
    tiny_model.eval()
    logits = tiny_model(faces)
    assert logits.shape == (6, 3) and tiny_model.classes == ("real", "diffusion", "gan")
    probs = tiny_model.predict_proba(faces)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(6))


def test_inference_is_batch_independent(tiny_model, faces):
    tiny_model.eval()
    with torch.no_grad():
        batched = tiny_model(faces)
        single = torch.cat([tiny_model(faces[i : i + 1]) for i in range(len(faces))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_only_adapters_and_new_modules_train(tiny_model, faces):
    names = {name for name, p in tiny_model.named_parameters() if p.requires_grad}
    assert names and all(TRAINABLE.match(name) for name in names), sorted(
        n for n in names if not TRAINABLE.match(n)
    )
    frozen = {name for name, p in tiny_model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("language.text_tower.") for n in frozen)
    assert any(n.startswith("vision.image_tower.") and "base_layer" in n for n in frozen)

    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    optimiser = torch.optim.AdamW(tiny_model.trainable_parameters(), lr=1e-2)
    tiny_model.train()
    for _ in range(2):  # two steps: LoRA's A matrices get gradient once B has left zero
        optimiser.zero_grad()
        tiny_model.loss(faces, LABELS).total.backward()
        optimiser.step()
    changed = {
        name for name, p in tiny_model.named_parameters() if not torch.equal(p, before[name])
    }
    for name in frozen:
        assert torch.equal(dict(tiny_model.named_parameters())[name], before[name]), (
            f"frozen {name} changed"
        )
    assert changed <= names
    for group in GROUPS:
        assert any(group in name for name in changed), f"no parameter of {group} changed"
    assert any("attn.lora_" in n for n in changed) and any("mlp.c_fc.lora_" in n for n in changed)
    assert any("mlp.c_proj.lora_" in n for n in changed) and any(
        "out_proj.lora_" in n for n in changed
    )


def test_lora_changes_the_attention_output(tiny_model, faces):
    """Adapters on nn.MultiheadAttention must act (targeting out_proj alone silently would not)."""
    tiny_model.eval()
    with torch.no_grad():
        before = tiny_model.vision.image_tower(tiny_model.vision.image_input(faces))
        for name, p in tiny_model.named_parameters():
            if "attn.lora_B" in name and "out_proj" not in name:
                p.normal_(std=0.5)
        after = tiny_model.vision.image_tower(tiny_model.vision.image_input(faces))
    assert not torch.allclose(before, after, atol=1e-4)


def test_merged_adapters_give_the_adapted_outputs_and_refuse_training(tiny_model, faces, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from mfclip_cli.model import save_checkpoint

    tiny_model.eval()
    with torch.no_grad():
        for name, p in tiny_model.named_parameters():
            if (
                "lora_B" in name
            ):  # B starts at zero: give every adapter (attention, out-projection, MLP) an effect
                p.normal_(std=0.5)
        adapted = tiny_model(faces)
        bare = {
            name: p.detach().clone()
            for name, p in tiny_model.named_parameters()
            if "lora_" not in name
        }
        tiny_model.merge_adapters()
        merged = tiny_model(faces)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)
    assert tiny_model.inference_only
    parameters = dict(tiny_model.named_parameters())
    # still moved by .to()
    assert all(isinstance(parameters[name], torch.nn.Parameter) for name in bare)
    assert any(not torch.equal(parameters[name], bare[name]) for name in bare if "out_proj" in name)
    with pytest.raises(RuntimeError, match="merged"):
        tiny_model.loss(faces, LABELS)
    with pytest.raises(ValueError, match="merged"):
        save_checkpoint(tiny_model, tmp_path / "merged.safetensors")
    for (
        layer
    ) in tiny_model.modules():  # undoing it restores the base weights (float rounding aside)
        if isinstance(layer, BaseTunerLayer) and layer.merged:
            layer.unmerge()
    for name, value in bare.items():
        torch.testing.assert_close(
            dict(tiny_model.named_parameters())[name], value, atol=1e-6, rtol=0
        )


def test_tiny_model_overfits_a_fixed_batch(tiny_config, faces):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    model.train()
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        loss = model.loss(faces, LABELS).total
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < 0.5 * losses[0], losses[::10]
    model.eval()
    predicted = model(faces).argmax(dim=1).tolist()
    assert predicted == [model.classes.index(labels.label) for labels in LABELS]


@pytest.mark.parametrize("fusion", ["sum", "gated"])
def test_both_fusions_build_and_run(tiny_config, faces, fusion):
    model = build_model(tiny_config.replace(fusion=fusion))
    assert (model.vision.fusion.gate is None) == (fusion == "sum")
    assert torch.isfinite(model.loss(faces, LABELS).total)


def test_vit_b_16_structure():
    """The real architecture (random weights: nothing is downloaded): LoRA where it belongs."""
    config = load_model_config("vit-b-16")
    assert config.clip.architecture == "ViT-B-16" and config.clip.pretrained == "openai"
    model = build_model(config, pretrained=False)
    assert model.config.clip.quick_gelu is True  # the OpenAI tag was trained with QuickGELU
    adapted = {
        n.rsplit(".lora_", 1)[0]
        for n, _ in model.vision.image_tower.named_parameters()
        if ".lora_" in n
    }
    for block in range(12):
        prefix = f"transformer.resblocks.{block}."
        assert {
            prefix + "attn",
            prefix + "attn.base_layer.out_proj",
            prefix + "mlp.c_fc",
            prefix + "mlp.c_proj",
        } <= adapted
    assert model.vision.image_size == 224 and model.crop_size == 256
    # the paper's trained language encoder, and SRM on [0, 1] (chosen by docs/ablation.md)
    assert config.lora.text and config.noise.pixel_range == 1.0
    assert any(".lora_" in n for n, _ in model.language.named_parameters())
    total, trainable = model.parameter_counts()
    assert 140e6 < total < 160e6 and trainable < 0.05 * total
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 256, 256)).shape == (1, 3)


def _is_noise_part(name: str) -> bool:
    return name.startswith(("vision.noise_branch.", "vision.fusion."))


def test_without_the_noise_branch_the_visual_embedding_is_the_image_embedding(tiny_config, faces):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(noise={"enabled": False}))
    assert model.vision.noise_branch is None and model.vision.fusion is None
    full = build_model(tiny_config)
    names = {name for name, _ in model.named_parameters()}
    assert names == {name for name, _ in full.named_parameters() if not _is_noise_part(name)}
    assert any(_is_noise_part(name) for name, _ in full.named_parameters())

    model.eval()
    with torch.no_grad():
        image = model.vision.image_tower(model.vision.image_input(faces)).float()
        torch.testing.assert_close(model(faces), model.head(image), rtol=0, atol=0)
    model.train()
    model.loss(faces, LABELS).total.backward()
    assert all(p.grad is not None for p in model.head.parameters())
