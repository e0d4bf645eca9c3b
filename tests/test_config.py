"""Model configurations as data: shipped by name, user files that extend them, clear errors."""

import json

import pytest

from mfclip_cli.model import ConfigError, load_model_config, shipped_config_names
from mfclip_cli.model.config import apply_overrides, config_from_dict


def test_shipped_configs():
    assert {"tiny", "vit-b-16"} <= set(shipped_config_names())
    real = load_model_config("vit-b-16")
    assert (real.clip.architecture, real.preprocess.crop_size, real.fusion) == (
        "ViT-B-16",
        256,
        "gated",
    )
    assert load_model_config("tiny").clip.pretrained is None


def test_round_trip_through_a_dict():
    config = load_model_config("vit-b-16")
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_user_json_extends_a_shipped_config(tmp_path):
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"extends": "tiny", "lora": {"rank": 8}, "fusion": "sum"}))
    config = load_model_config(path)
    assert (
        config.name == "wide"
        and config.lora.rank == 8
        and config.lora.alpha == 8
        and config.fusion == "sum"
    )
    assert config.noise == load_model_config("tiny").noise


def test_user_toml(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'extends = "vit-b-16"\nname = "mine"\n[loss]\ndistill_weight = 0.0\n'
        "[loss.spa]\nenabled = false\n"
    )
    config = load_model_config(path)
    assert (
        config.name == "mine" and config.loss.distill_weight == 0.0 and not config.loss.spa.enabled
    )
    assert config.loss.contrastive_weight == 0.5


@pytest.mark.parametrize(
    "document, message",
    [
        ({"extends": "tiny", "lora": {"rnak": 8}}, "unknown key"),
        ({"extends": "tiny", "fusion": "concat"}, "fusion must be"),
        ({"extends": "tiny", "noise": {"patch_size": 512}}, "exceeds preprocess.crop_size"),
        ({"extends": "tiny", "classes": ["real", "fake"]}, "classes must be"),
        ({"extends": "nonexistent"}, "no model config"),
    ],
)
def test_invalid_configs_are_rejected_with_the_reason(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=message):
        load_model_config(path)


def test_unreadable_config_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config(broken)
    with pytest.raises(ConfigError, match="no model config"):
        load_model_config("vit-z-99")
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps({"extends": str(cycle)}))
    with pytest.raises(ConfigError, match="cycle"):
        load_model_config(cycle)


def test_overrides_set_fields_of_every_type():
    base = load_model_config("tiny")
    config = apply_overrides(
        base,
        [
            "lora.text=true",
            "loss.spa.enabled=false",
            "fusion=sum",  # a bare word is a string
            "noise.enabled=false",
            "prompts.levels=1",
            "lora.alpha=16",  # an integer is a valid float
            "preprocess.mean=[0.5, 0.5, 0.5]",
            "clip.pretrained=/weights/clip.safetensors",
            "clip.quick_gelu=null",
            'prompts.real="a photo of a genuine face"',
            "prompts.family_names.gan=a generative adversarial network",
            "loss.spa.hardness=2",
            "loss.spa.hardness=3.5",  # the last assignment of a key wins
        ],
    )
    assert config.lora.text and not config.loss.spa.enabled and config.fusion == "sum"
    assert not config.noise.enabled and config.prompts.levels == 1
    assert config.lora.alpha == 16.0 and isinstance(config.lora.alpha, float)
    assert config.preprocess.mean == (0.5, 0.5, 0.5)
    assert config.clip.pretrained == "/weights/clip.safetensors" and config.clip.quick_gelu is None
    assert config.prompts.real == "a photo of a genuine face"
    assert config.prompts.family_names == {
        "diffusion": "a diffusion model",
        "gan": "a generative adversarial network",
    }
    assert config.loss.spa.hardness == 3.5
    unchanged = ("name", "head", "classes")
    assert all(getattr(config, key) == getattr(base, key) for key in unchanged)
    assert config.noise.patch_size == base.noise.patch_size and config.lora.rank == base.lora.rank
    assert config_from_dict(config.to_dict()) == config  # what a checkpoint records
    assert apply_overrides(base, []) == base


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("lora.txt=true", "unknown key lora.txt: lora has alpha, dropout, rank, text$"),
        (
            "nosie.enabled=false",
            "the config has classes, clip, detector, fusion, head, lora, loss, name",
        ),
        (
            "loss.spa.enable=false",
            "loss.spa has enabled, false_negatives, hardness, hardness_among, identity_eps$",
        ),
        ("lora.rank.x=1", "lora.rank is a value, not a section"),
        (
            "loss.spa=false",
            "loss.spa is a section; set one of its keys: enabled, false_negatives, hardness",
        ),
        ("prompts.family_names=x", "set one entry: prompts.family_names.NAME=VALUE"),
        ("lora.text=yes", 'lora.text must be true or false, not "yes"'),
        ("lora.rank=2.5", "lora.rank must be an integer, not 2.5"),
        ("lora.rank=true", "lora.rank must be an integer, not true"),
        ("lora.alpha=[1]", r"lora.alpha must be a number, not \[1\]"),
        ("preprocess.mean=[0.5, 0.5]", "preprocess.mean must be a list of 3 values"),
        ("clip.quick_gelu=1", "clip.quick_gelu must be true or false or null, not 1"),
        ("name=null", "name must be a string, not null"),
        ("prompts.levels=5", "prompts.levels must be 1 to 4, not 5"),
        ("prompts.levels=0", "prompts.levels must be 1 to 4, not 0"),
        ("fusion=concat", "fusion must be 'sum' or 'gated'"),
        # values that would only crash in torch or train to NaN, blamed on --lr
        ("lora.dropout=2", "lora.dropout must be a finite number at least 0 and below 1"),
        ("head.dropout=1.0", "head.dropout must be a finite number at least 0 and below 1"),
        ("loss.distill_temperature=0", "loss.distill_temperature must be a finite number above"),
        ("loss.contrastive_weight=nan", "loss.contrastive_weight must be a finite number"),
        ("loss.spa.hardness=-1", "loss.spa.hardness must be a finite number at least 0"),
        ("lora.rank=0", "lora.rank must be a finite number at least 1"),
        ("noise.clip=0", "noise.clip must be a finite number above 0"),
        ("lora.rank", "is not KEY=VALUE"),
        ("=1", "is not KEY=VALUE"),
    ],
)
def test_bad_overrides_say_what_is_valid(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_model_config("tiny"), [assignment])


def test_configs_without_the_newer_keys_get_their_defaults():
    """Checkpoints written before noise.enabled and prompts.levels existed still describe their
    model: the full noise branch and all four prompt levels."""
    document = load_model_config("tiny").to_dict()
    del document["noise"]["enabled"], document["prompts"]["levels"]
    config = config_from_dict(document)
    assert config.noise.enabled and config.prompts.levels == 4
