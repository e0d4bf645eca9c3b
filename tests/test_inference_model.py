"""The inference model: our ViT against open_clip's, LoRA folded in by hand against peft's
adapters, and a scan's model and face pipeline loaded without open_clip, peft or torchvision."""

import json
import subprocess
import sys

import open_clip
import pytest
import torch
from open_clip.model import _build_vision_tower
from safetensors import safe_open
from safetensors.torch import save_file

from mfclip_cli.errors import CheckpointError
from mfclip_cli.model import build_detector, load_checkpoint, load_model_config, save_checkpoint
from mfclip_cli.model.towers import architecture_config, inference_towers
from mfclip_cli.model.vit import VisionTransformer, supports

SMALL = {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32}


@pytest.mark.parametrize(
    "architecture", ["ViT-B-16", "ViT-B-16-quickgelu", "ViT-H-14-CLIPA-336", "ViT-M-16-alt"]
)
def test_vit_equals_open_clips_tower(architecture):
    """Each of the variants open_clip's ViT configs use (QuickGELU, average pooling, no pre-norm,
    norm after pooling, layer scale), shrunk to two small layers, computes open_clip's function."""
    config = architecture_config(architecture)
    vision_cfg = {**config["vision_cfg"], **SMALL}
    quick_gelu = bool(config.get("quick_gelu", False))
    torch.manual_seed(0)
    reference = _build_vision_tower(48, vision_cfg, quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        for parameter in reference.parameters():  # layer scales and norms away from 1 and 0
            parameter.add_(0.1 * torch.randn_like(parameter))
    ours = VisionTransformer(vision_cfg, 48, quick_gelu).eval()
    ours.load_state_dict(reference.state_dict())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), rtol=1e-5, atol=1e-5)


def test_architectures_open_clip_builds_otherwise_are_left_to_it():
    for architecture in ("ViT-B-16", "ViT-L-14", "ViT-bigG-14", "mfclip-tiny"):
        assert supports(architecture_config(architecture)["vision_cfg"]), architecture
    for architecture in ("RN50", "coca_ViT-B-32", "ViT-B-16-SigLIP", "EVA02-B-16"):
        assert not supports(architecture_config(architecture)["vision_cfg"]), architecture
    assert architecture_config("no-such-architecture") is None


def _adapted(tiny_model):
    """The tiny model with every LoRA adapter (attention, out-projection, MLP) given an effect."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in tiny_model.named_parameters():
            if "lora_B" in name or parameter.requires_grad:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return tiny_model.eval()


def test_inference_load_gives_the_trained_models_outputs(tiny_model, faces, tmp_path):
    model = _adapted(tiny_model)
    path = tmp_path / "adapted.safetensors"
    save_checkpoint(model, path)
    scoring, info = load_checkpoint(path, inference=True)
    assert isinstance(scoring.vision.image_tower, VisionTransformer)
    assert scoring.language is None and scoring.inference_only
    assert not any("lora_" in name for name, _ in scoring.named_parameters())
    with torch.no_grad():
        expected = model(faces)
        torch.testing.assert_close(scoring(faces), expected, rtol=1e-4, atol=1e-5)
        assert scoring.merge_adapters() is scoring  # already folded: nothing to do
        torch.testing.assert_close(scoring(faces), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="merged"):
        scoring.loss(faces, [])
    with pytest.raises(ValueError, match="merged"):
        save_checkpoint(scoring, tmp_path / "again.safetensors")
    assert info.sha256 and info.config == model.config


def test_lora_tensors_of_another_rank_than_the_config_are_refused(tiny_model, tmp_path):
    """Folding scales the update by alpha / rank: a header whose rank was edited scored with
    another scaling without a word, where training refused the same file."""
    path = tmp_path / "adapted.safetensors"
    save_checkpoint(_adapted(tiny_model), path)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(header["config"])
    config["lora"]["rank"] *= 2
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata={**header, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"has rank \d+, its config says \d+"):
        load_checkpoint(edited, inference=True)


def test_inference_load_falls_back_to_open_clip_and_peft(tiny_model, faces, tmp_path, monkeypatch):
    """An architecture our ViT cannot build is built by open_clip, its adapters merged by peft."""
    model = _adapted(tiny_model)
    path = tmp_path / "adapted.safetensors"
    save_checkpoint(model, path)
    monkeypatch.setattr("mfclip_cli.model.mfclip.inference_towers", lambda settings: None)
    scoring, _ = load_checkpoint(path, inference=True)
    assert isinstance(scoring.vision.image_tower, open_clip.transformer.VisionTransformer)
    assert scoring.inference_only and scoring.language is not None
    with torch.no_grad():
        torch.testing.assert_close(scoring(faces), model(faces), rtol=1e-4, atol=1e-5)


def test_quick_gelu_follows_the_architecture_or_the_resolved_setting(tiny_config):
    plain = inference_towers(tiny_config.clip)
    forced = inference_towers(tiny_config.replace(clip={"quick_gelu": True}).clip)
    assert not plain.quick_gelu and forced.quick_gelu
    quick = inference_towers(tiny_config.replace(clip={"architecture": "ViT-B-32-quickgelu"}).clip)
    assert quick.quick_gelu and quick.embed_dim == 512 and quick.image_size == 224


def test_scoring_a_face_imports_no_open_clip_peft_or_torchvision(tmp_path):
    """What a one-image scan needs (the demo model and the face pipeline) loads without the
    libraries whose imports took seconds of its start-up."""
    script = """
import json, sys
import numpy as np
import torch
from skimage import data
from mfclip_cli.engines.weights.store import load_weights, resolve_weights
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch
loaded = load_weights(resolve_weights(None), torch.device("cpu"))
model, demo = loaded.model, loaded.demo
config = model.config.preprocess
cropper = FaceCropper(FaceSearch(crop_size=config.crop_size, margin=config.margin))
(found,) = cropper([np.ascontiguousarray(data.astronaut())])
probs = model.predict_proba(found.crops)
heavy = [m for m in ("open_clip", "peft", "transformers", "torchvision", "facenet_pytorch",
                     "torch._dynamo") if m in sys.modules]
print(json.dumps({"heavy": heavy, "faces": len(found.detections), "real": float(probs[0, 0]),
                  "demo": demo}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["faces"] == 1 and report["demo"]
    # the demo model's uncalibrated verdict on the astronaut (0.959; README's 0.873 is at T)
    assert report["real"] > 0.9


def test_a_probe_checkpoint_loads_for_scoring_without_open_clip(tmp_path):
    """The CLIP probe's frozen tower is a plain ViT: loading its checkpoint to score builds it
    with ``vit.py``, as MFCLIP's, with the same outputs as the model that was saved."""
    torch.manual_seed(0)
    model = build_detector(load_model_config("clip-probe-tiny")).eval()
    path = tmp_path / "probe.safetensors"
    save_checkpoint(model, path)
    faces = torch.rand(
        2, 3, model.crop_size, model.crop_size, generator=torch.Generator().manual_seed(3)
    )
    save_file({"faces": faces}, tmp_path / "faces.safetensors")
    with torch.no_grad():
        expected = model(faces)
    script = f"""
import json, sys
import torch
from safetensors.torch import load_file
from mfclip_cli.model import load_checkpoint
faces = load_file({str(tmp_path / "faces.safetensors")!r})["faces"]
for inference in (True, False):
    model, _ = load_checkpoint({str(path)!r}, inference=inference)
    with torch.no_grad():
        logits = model(faces)
    heavy = [m for m in ("open_clip", "peft") if m in sys.modules]
    print(json.dumps({{"inference": inference, "heavy": heavy, "logits": logits.tolist()}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    reports = [json.loads(line) for line in result.stdout.strip().splitlines()[-2:]]
    for report in reports:
        assert report["heavy"] == []
        torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)


def test_broken_adapters_are_refused_for_scoring_on_the_language_side_too(tiny_config, tmp_path):
    """The scoring model leaves the language encoder out, and folding stopped multiplying out its
    LoRA pairs; a missing factor or a base weight gone is still refused, as training refuses
    the same file, so that `weights add` registers nothing that cannot be trained on (audit S2
    F5, F7)."""
    torch.manual_seed(0)
    model = build_detector(tiny_config.replace(lora={"text": True}))
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    factor = next(k for k in tensors if k.startswith("language.") and "lora_B" in k)
    weight = factor.replace("lora_B.default.weight", "base_layer.weight")
    weight = weight if weight in tensors else weight.replace("weight", "in_proj_weight")
    for broken, reason in (
        ({k: v for k, v in tensors.items() if k != factor}, "has no lora_B"),
        ({k: v for k, v in tensors.items() if k != weight}, "adapts no weight"),
    ):
        edited = tmp_path / "edited.safetensors"
        save_file(broken, str(edited), metadata=header)
        with pytest.raises(CheckpointError, match=reason):
            load_checkpoint(edited, inference=True)
