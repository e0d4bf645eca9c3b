"""Model configurations as data: shipped by name, user files that extend them, clear errors."""

import json

import pytest

from mfclip_cli.model import ConfigError, load_model_config, shipped_config_names
from mfclip_cli.model.config import config_from_dict


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
