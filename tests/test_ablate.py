"""``mfclip ablate``: every variant trained and tested alike, aggregated over seeds, resumable."""

import io
import json
import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
from cli import MFCLIP
from report_schemas import (
    add_unknown,
    broken,
    check,
    check_json_file,
    check_train_run,
    drop,
    schema_errors,
    set_to,
)
from rich.console import Console
from test_train import make_dataset

from mfclip_cli.data import load_protocol, read_dataset, select
from mfclip_cli.engines.inference import FaceSource, predict_outputs, score_samples
from mfclip_cli.engines.train import ablate as ablate_engine
from mfclip_cli.engines.train.ablate import AblationRequest, run_ablation
from mfclip_cli.engines.train.settings import TrainSettings
from mfclip_cli.errors import UsageError
from mfclip_cli.model import load_checkpoint, read_checkpoint_info
from mfclip_cli.model.config import apply_overrides
from mfclip_cli.model.losses import spa_relevance
from mfclip_cli.schemas import SCHEMA_VERSION
from mfclip_cli.scoring.calibration import softmax, temperature_of


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ablate") / "data", per_class=16)


@pytest.fixture
def console():
    return Console(file=io.StringIO(), width=120)


def _request(data, out, **changes):
    training = TrainSettings(
        data=str(data), out="-", config="tiny", epochs=1, batch_size=16, lr=3e-3, workers=0
    )
    return AblationRequest(training=training, device="cpu", out=str(out), **changes)


def test_variants_are_trained_alike_and_aggregated(small_data, tmp_path, console, monkeypatch):
    out = tmp_path / "runs"
    variants = ("full", "no-noise", "one-level", "no-spa")
    request = _request(small_data, out, seeds=2, variants=variants)
    report = run_ablation(request, console, console)
    check(json.loads(json.dumps(report)), "ablate")  # as --json would write it
    full, no_noise = report["variants"]["full"], report["variants"]["no-noise"]
    assert full["overrides"] == ["lora.text=true"]
    assert no_noise["overrides"] == ["lora.text=true", "noise.enabled=false"]
    for name, entry in report["variants"].items():
        assert [run["seed"] for run in entry["per_seed"]] == [0, 1]
        for metric in ("auc", "ap", "eer", "acc3"):
            values = [run[metric] for run in entry["per_seed"]]
            assert entry["mean"][metric] == pytest.approx(np.mean(values))
            assert entry["std"][metric] == pytest.approx(np.std(values, ddof=1))
            assert entry["delta"][metric] == pytest.approx(
                entry["mean"][metric] - full["mean"][metric]
            )
    # each run's figures are eval's: its checkpoint's calibrated probabilities (audit E F5)
    run = full["per_seed"][1]
    model, info = load_checkpoint(out / "full" / "seed-1" / "best.safetensors")
    test = select(read_dataset(small_data), load_protocol("in-domain")).test
    outputs = predict_outputs(model, FaceSource(str(small_data), torch.device("cpu")), test)
    assert run["temperature"] == temperature_of(info.calibration) != 1.0
    expected = score_samples(outputs.samples, softmax(outputs.logits, run["temperature"]))
    for metric in ("auc", "ap", "eer", "acc3"):
        assert run[metric] == pytest.approx(expected[metric])
    # each run is a training run like any other: its train.json and metrics lines validate
    runs = sorted(out.glob("*/seed-*"))
    assert len(runs) == len(variants) * 2
    for folder in runs:
        settings, _ = check_train_run(folder)
        assert settings["overrides"] == report["variants"][folder.parent.name]["overrides"]
    # each run's checkpoint is the model its variant names
    config = read_checkpoint_info(out / "no-noise" / "seed-1" / "best.safetensors").config
    assert not config.noise.enabled and config.lora.text
    one_level = read_checkpoint_info(out / "one-level" / "seed-0" / "best.safetensors")
    assert one_level.config.prompts.levels == 1
    # what SPA made of the training label sets, per run, recomputed from the checkpoint
    assert report["variants"]["no-spa"]["spa_relevance"] is None
    model, info = load_checkpoint(out / "full" / "seed-1" / "best.safetensors")
    train = select(read_dataset(small_data), load_protocol("in-domain")).train
    expected = spa_relevance(model.language, [s.label_set for s in train], info.config.loss.spa)
    reported = full["per_seed"][1]["spa_relevance"]
    assert reported["label_sets"] == expected["label_sets"] == len({s.label_set for s in train})
    relations = expected["by_relation"]
    assert set(reported["by_relation"]) == set(relations) >= {"class", "generator"}
    for relation, summary in relations.items():
        for key in ("mean", "min", "max"):
            assert reported["by_relation"][relation][key] == pytest.approx(summary[key], abs=1e-5)
    # another class is a full negative; another generator of the same class is not a false one
    assert relations["class"]["min"] > 0.9 and relations["generator"]["min"] > 0.01
    seeds_mean = np.mean(
        [run["spa_relevance"]["by_relation"]["generator"]["mean"] for run in full["per_seed"]]
    )
    assert full["spa_relevance"]["generator"] == pytest.approx(seeds_mean)
    assert "no SPA" in console.file.getvalue()
    # a rerun with the same --out reuses every finished run instead of training again
    monkeypatch.setattr(ablate_engine, "train", lambda *a, **k: pytest.fail("trained again"))
    again = run_ablation(request, console, console)
    assert again["variants"] == report["variants"]
    # a run scored before 2.12.0 (at T = 1, no temperature) is scored again, as eval scores it
    done = out / "full" / "seed-0" / "ablation-run.json"
    scored = json.loads(done.read_text())
    done.write_text(json.dumps({k: v for k, v in scored.items() if k != "temperature"}))
    assert run_ablation(request, console, console)["variants"] == report["variants"]
    assert json.loads(done.read_text()) == scored
    # a run whose model is not what its variant builds now (a default changed since: audit Q2,
    # a full trained with SPA's hardness over all negatives reused as today's full) is refused
    built = TrainSettings.model_config
    monkeypatch.setattr(
        TrainSettings,
        "model_config",
        lambda self: apply_overrides(built(self), ["loss.spa.hardness_among=negatives"]),
    )
    with pytest.raises(
        UsageError, match="loss.spa.hardness_among 'relevant' there, 'negatives' now"
    ):
        run_ablation(request, console, console)
    monkeypatch.setattr(TrainSettings, "model_config", built)
    # ... and only those trained as the request asks: another schedule or protocol was reported
    # with the old runs' figures under the new settings
    longer = replace(request, training=replace(request.training, epochs=2, lr=1e-4))
    with pytest.raises(UsageError, match=r"other settings \(epochs 1 there, 2 now; lr 0.003"):
        run_ablation(longer, console, console)
    other = replace(request, training=replace(request.training, protocol="cross-generator"))
    with pytest.raises(UsageError, match="protocol 'in-domain' there, 'cross-generator' now"):
        run_ablation(other, console, console)
    faster = replace(request, training=replace(request.training, workers=1))
    assert run_ablation(faster, console, console)["variants"] == report["variants"]
    # ... and only on the data they were trained on: files added since change the sample list's
    # digest, and a reused run's figures would be reported beside runs on the new data (audit Y)
    # ... and on the splits they were tested on: a protocol file given another hash seed keeps
    # its name (and here its sizes) and moves samples between splits (audit T2)
    reseeded = replace(load_protocol("in-domain"), seed=7)
    monkeypatch.setattr(ablate_engine, "load_protocol", lambda name: reseeded)
    with pytest.raises(UsageError, match=r"other splits: \d+ of the \d+ samples lie in another"):
        run_ablation(request, console, console)
    monkeypatch.setattr(ablate_engine, "load_protocol", load_protocol)
    monkeypatch.setattr(ablate_engine, "index_digest", lambda index: "0" * 64)
    with pytest.raises(UsageError, match=r"trained and tested on other data \(\d+ samples then"):
        run_ablation(request, console, console)


def test_bad_requests_are_usage_errors(small_data, tmp_path):
    with pytest.raises(UsageError, match="unknown variant"):
        _request(small_data, tmp_path, variants=("full", "no-such-part"))
    with pytest.raises(UsageError, match="must include 'full'"):
        _request(small_data, tmp_path, variants=("no-spa",))
    with pytest.raises(UsageError, match="seeds"):
        _request(small_data, tmp_path, seeds=0)
    # one run counted as two seeds narrowed the spread, or printed "± 0.000" (audit T3)
    with pytest.raises(UsageError, match="named more than once: no-spa"):
        _request(small_data, tmp_path, variants=("full", "no-spa", "no-spa"))
    # the full model's lora.text=true came after the user's --set and won silently (audit T7)
    frozen = TrainSettings(
        data=str(small_data),
        out="-",
        config="tiny",
        overrides=("loss.spa.hardness=3", "lora.text=false"),
    )
    with pytest.raises(UsageError, match="--set lora.text=false: ablate's full model sets"):
        AblationRequest(training=frozen, device="cpu", out=str(tmp_path))
    # another detector has none of MFCLIP's components to take away (audit K L10: "unknown key
    # lora.text" from the first variant's override)
    other = TrainSettings(data=str(small_data), out="-", config="mc-lcr-tiny")
    with pytest.raises(UsageError, match="config mc-lcr-tiny is the mc-lcr detector"):
        AblationRequest(training=other, device="cpu", out=str(tmp_path))


def test_a_variant_the_config_already_holds_is_left_out(small_data, tmp_path, console):
    """On a config whose noise branch reads [0, 1] pixels, srm-unit-range is the full model."""
    variants = ("full", "srm-unit-range", "no-noise")
    request = _request(small_data, tmp_path, variants=variants)
    assert ablate_engine.distinct_variants(request, console) == variants
    holds = replace(request.training, overrides=("noise.pixel_range=1.0",))
    request = replace(request, training=holds)
    assert ablate_engine.distinct_variants(request, console) == ("full", "no-noise")
    said = console.file.getvalue()
    assert "srm-unit-range left out: on config tiny it is the full model" in said
    assert "no-noise left out" not in said


def test_a_seed_from_a_settings_file_is_said_to_be_unused(
    small_data, tmp_path, console, monkeypatch
):
    """A --settings file's seed was dropped without a word: the runs are seeded 0..N-1 (T13)."""
    request = _request(small_data, tmp_path, variants=("full",))
    request = replace(request, training=replace(request.training, seed=5))

    def stop(*args):
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(ablate_engine, "_Runner", stop)
    with pytest.raises(RuntimeError, match="stopped before training"):
        run_ablation(request, console, console)
    said = " ".join(console.file.getvalue().split())
    assert "the settings' seed = 5 is not used: the runs of each variant are seeded 0..2" in said


@pytest.fixture(scope="module")
def ablate_command(small_data, tmp_path_factory):
    """One ``mfclip ablate --json``: the command, its result and the report it wrote."""
    report_path = tmp_path_factory.mktemp("ablate-command") / "ablation.json"
    command = [
        MFCLIP, "ablate", "--data", str(small_data), "--config", "tiny", "--seeds", "1",
        "--variants", "full,srm-unit-range", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--json", str(report_path),
    ]  # fmt: skip
    wide = {**os.environ, "COLUMNS": "160"}
    result = subprocess.run(command, capture_output=True, text=True, env=wide)
    assert result.returncode == 0, result.stderr
    return command, result, report_path


def test_ablate_command_writes_its_report(ablate_command):
    command, result, report_path = ablate_command
    report = check_json_file(report_path, "ablate")
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["type"] == "ablation" and list(report["variants"]) == ["full", "srm-unit-range"]
    test = select(read_dataset(ablate_command[0][3]), "in-domain").test
    copies = report["protocol"]["trained_copies"]
    assert copies["samples"] == 0 and copies["files"] == [] and copies["compared"] == len(test)
    assert "srm-unit-range" in result.stdout
    # one seed measures no spread: no "± 0.000" (audit E F4)
    assert "±" not in result.stdout
    assert set(report["variants"]["full"]["std"].values()) == {None}
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    # a report that cannot be written is refused before the runs, not after them (audit T4:
    # the table and, without --out, the runs were lost)
    at = command.index("--json") + 1
    for target, said in [
        (report_path.parent, "is a folder: name the file to write there"),
        (report_path / "x.json", "is a file, not a folder (a folder is needed there)"),
    ]:
        refused = subprocess.run(
            [*command[:at], str(target), *command[at + 1 :], "--force"],
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert "ablate: full, seed 0" not in refused.stderr  # nothing trained


@pytest.mark.parametrize(
    "path, change",
    [
        (["variants", "full", "per_seed", 0, "attribution_top1"], set_to(0.5)),
        (["variants", "full", "median"], add_unknown),
        (["training", "data"], add_unknown),
        (["variants", "no-such-part"], set_to({})),
        (["variants", "full", "spa_relevance", "identical"], set_to(0.5)),
        (
            ["variants", "full", "per_seed", 0, "spa_relevance", "by_relation", "class", "pairs"],
            drop,
        ),
        (["schema_version"], drop),
        (["variants", "full"], drop),
        (["variants", "full", "delta"], drop),
        (["variants", "full", "per_seed", 0, "checkpoint_sha256"], set_to("best.safetensors")),
        (["variants", "full", "mean", "auc"], set_to(1.5)),
        (["variants", "full", "std", "eer"], set_to(-0.1)),
        (["data", "samples"], set_to("48")),
    ],
)
def test_a_wrong_ablate_report_fails_validation(ablate_command, path, change):
    report = json.loads(ablate_command[2].read_text())
    assert schema_errors(report, "ablate") == []
    assert schema_errors(broken(report, path, change), "ablate") != []
