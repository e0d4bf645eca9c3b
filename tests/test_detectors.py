"""The detector registry: configs name their detector, checkpoints record it, and train, eval,
scan and bench run any detector alike (MC-LCR here, on its tiny config, as a user runs them)."""

import json

import pytest
import torch
from media import astronaut
from PIL import Image
from report_schemas import check_json_file, check_scan_lines, check_train_run
from test_train import MFCLIP, make_dataset, run

from mfclip_cli.errors import ConfigError
from mfclip_cli.model import (
    DETECTORS,
    build_detector,
    detector_of,
    load_checkpoint,
    load_model_config,
    read_checkpoint_info,
    save_checkpoint,
)
from mfclip_cli.model.checkpoint import CheckpointError, sidecar_path
from mfclip_cli.model.config import apply_overrides, config_from_dict
from mfclip_cli.model.mclcr import MCLCR, MCLCRSettings


def test_a_config_names_its_detector_and_mfclip_is_the_default():
    assert set(DETECTORS) == {"mfclip", "mc-lcr", "clip-probe"}
    mclcr = load_model_config("mc-lcr-tiny")
    assert isinstance(mclcr, MCLCRSettings) and detector_of(mclcr) == "mc-lcr"
    tiny = load_model_config("tiny")
    assert detector_of(tiny) == "mfclip"
    document = tiny.to_dict()
    del document["detector"]  # as configs and checkpoints written before the registry
    assert config_from_dict(document) == tiny
    with pytest.raises(ConfigError, match="unknown detector 'xception'.*mfclip, mc-lcr"):
        config_from_dict({**mclcr.to_dict(), "detector": "xception"})
    # MFCLIP's settings under another detector's name: that detector's keys are checked
    with pytest.raises(ConfigError, match="mc-lcr config: unknown key.*clip"):
        config_from_dict({**tiny.to_dict(), "detector": "mc-lcr"})


def test_overrides_reach_any_detectors_settings():
    mclcr = apply_overrides(load_model_config("mc-lcr-tiny"), ["supcon_weight=0.25"])
    assert isinstance(mclcr, MCLCRSettings) and mclcr.supcon_weight == 0.25
    with pytest.raises(ConfigError, match="unknown key lora.rank: the config has .*supcon_weight"):
        apply_overrides(mclcr, ["lora.rank=4"])


def test_a_checkpoint_records_its_detector_and_rebuilds_it(tmp_path):
    torch.manual_seed(0)
    model = build_detector(load_model_config("mc-lcr-tiny")).eval()
    path = tmp_path / "mclcr.safetensors"
    save_checkpoint(model, path)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["detector"] == "mc-lcr" and sidecar["crop"] == {"size": 64, "margin": 1.3}
    assert "lora" not in sidecar  # MFCLIP's summary only for MFCLIP
    info = read_checkpoint_info(path)
    assert info.config == model.config
    for inference in (False, True):
        loaded, _ = load_checkpoint(path, inference=inference)
        assert isinstance(loaded, MCLCR)
        faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(faces), model(faces))
    # tensors that are not its detector's: a clear error, not a half-loaded model
    torch.manual_seed(0)
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(build_detector(load_model_config("tiny")), wrong)
    header = json.loads(sidecar_path(path).read_text())["config"]
    from safetensors.torch import load_file, save_file

    tensors = load_file(wrong)
    save_file(
        tensors,
        tmp_path / "mixed.safetensors",
        metadata={"format": "mfclip-checkpoint/1", "config": json.dumps(header)},
    )
    with pytest.raises(CheckpointError, match="detector mc-lcr"):
        load_checkpoint(tmp_path / "mixed.safetensors")


@pytest.fixture(scope="module")
def mclcr_run(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("artifacts") / "artifacts", per_class=24)
    out = tmp_path_factory.mktemp("run") / "run"
    run(
        MFCLIP, "train", "--data", str(data), "--out", str(out), "--config", "mc-lcr-tiny",
        "--device", "cpu", "--batch-size", "8", "--epochs", "1", "--workers", "0",
    )  # fmt: skip
    return data, out


def test_train_eval_and_scan_run_mc_lcr(mclcr_run, tmp_path):
    data, out = mclcr_run
    best = read_checkpoint_info(out / "best.safetensors")
    assert detector_of(best.config) == "mc-lcr"
    assert best.calibration["temperature"] > 0 and best.ood["threshold"] > 0
    settings, lines = check_train_run(out)
    assert settings["config"] == "mc-lcr-tiny"
    step = next(line for line in lines if line["type"] == "step")
    assert {"loss", "classification", "contrastive"} <= set(step) and "distillation" not in step

    report = tmp_path / "eval.json"
    run(
        MFCLIP, "eval", "--weights", str(out / "best.safetensors"), "--data", str(data),
        "--device", "cpu", "--json", str(report), "--bootstrap", "0",
    )  # fmt: skip
    assert 0 <= check_json_file(report, "eval")["overall"]["auc"] <= 1

    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    scan = run(
        MFCLIP, "scan", str(image), "--weights", str(out / "best.safetensors"),
        "--device", "cpu", "--jsonl", "-", check=False,
    )  # fmt: skip
    assert scan.returncode in (0, 4), scan.stderr
    meta, record, *_ = check_scan_lines(scan.stdout.splitlines())
    assert meta["weights"]["config"] == "mc-lcr-tiny"
    (face,) = record["faces"]
    assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "ood_distance" in face

    explain = run(
        MFCLIP, "scan", str(image), "--weights", str(out / "best.safetensors"),
        "--device", "cpu", "--explain", str(tmp_path / "why"), check=False,
    )  # fmt: skip
    assert explain.returncode == 2 and "detector is mc-lcr" in explain.stderr
    assert not (tmp_path / "why").exists()


def test_options_a_detector_cannot_honour_are_refused(mclcr_run, tmp_path):
    data, _ = mclcr_run
    out = tmp_path / "never"
    refused = run(
        MFCLIP, "train", "--data", str(data), "--out", str(out), "--config", "mc-lcr-tiny",
        "--device", "cpu", "--lora-rank", "4", check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "mc-lcr detector" in refused.stderr
    assert not out.exists()
