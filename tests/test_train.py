"""``mfclip train`` and ``mfclip eval`` end to end on a small dataset whose fakes carry learnable
traces.

Reals are smooth colour fields with fine sensor-like grain; "gan" fakes add a periodic
checkerboard (two periods = two generators); "diffusion" fakes have the grain smoothed away (two
blur strengths = two generators). The tiny model must learn that on CPU within the test's budget.
"""

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import MFCLIP, TORCHRUN, command
from PIL import Image
from report_schemas import (
    add_unknown,
    broken,
    check_json_file,
    check_train_run,
    drop,
    schema_errors,
    set_to,
)
from rich.console import Console
from safetensors.torch import load_file
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from mfclip_cli.data import load_protocol, read_dataset, select
from mfclip_cli.data.faceset import EpochOrder
from mfclip_cli.data.identity import index_digest
from mfclip_cli.data.protocols import PROTOCOL_DIR
from mfclip_cli.engines.train.settings import (
    TrainSettings,
    load_train_settings,
    resolve_train_settings,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.files import check_safetensors, sha256_file
from mfclip_cli.model import load_checkpoint
from mfclip_cli.model.checkpoint import read_checkpoint_info
from mfclip_cli.schemas import SCHEMA_VERSION

SIZE = 128  # the tiny config's crop size
GENERATORS = {"gan": ("checker2", "checker4"), "diffusion": ("blur1", "blur2")}


def _face(rng: np.random.Generator, label: str, generator: str) -> np.ndarray:
    base = gaussian_filter(rng.random((SIZE, SIZE, 3)), sigma=(12, 12, 0))
    base = (base - base.min()) / (np.ptp(base) + 1e-9) * 0.6 + 0.2
    grain = rng.normal(0, 0.06, (SIZE, SIZE, 1))
    if label == "diffusion":
        grain = gaussian_filter(
            grain,
            sigma=(1.0 if generator == "blur1" else 2.0, 1.0 if generator == "blur1" else 2.0, 0),
        )
    image = base + grain
    if label == "gan":
        period = 2 if generator == "checker2" else 4
        y, x = np.mgrid[0:SIZE, 0:SIZE]
        image = image + 0.08 * (((y // (period // 2)) + (x // (period // 2))) % 2 - 0.5)[..., None]
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def make_dataset(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in ("real", "gan", "diffusion"):
        for i in range(per_class):
            if label == "real":
                folder = root / "real" / "camera"
                generator = ""
            else:
                generator = GENERATORS[label][i % 2]
                folder = root / label / "efs" / generator
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_face(rng, label, generator)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("artifacts") / "artifacts", per_class=60)


def run(*argv, check=True, timeout=900, **options):
    """``argv`` (``MFCLIP`` or ``TORCHRUN`` first) run by ``cli.command``, checked by default."""
    return command(*argv, check=check, timeout=timeout, **options)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        MFCLIP,
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--workers",
        "0",
        *extra,
    ]


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run(*train_args(dataset, out, "--epochs", "8"))
    return out


def test_training_learns_the_artifact_and_selects_on_val(trained):
    settings, lines = check_train_run(trained)
    assert settings["schema_version"] == SCHEMA_VERSION and settings["epochs"] == 8
    # each step's line names the rate it trained at: the warm-up's first, never the next
    # step's (audit M F2: step 1 said the peak, the last said 0)
    rates = [line["lr"] for line in lines if line["type"] == "step"]
    total, warm = len(rates), round(settings["warmup"] * len(rates))
    expected = [  # linear warm-up, then half a cosine (DESIGN, docs/training.md)
        3e-3
        * (
            (k + 1) / warm
            if k < warm
            else 0.5 + 0.5 * math.cos(math.pi * (k - warm) / (total - warm))
        )
        for k in range(total)
    ]
    assert rates == pytest.approx(expected, rel=1e-6, abs=0)
    assert rates[-1] > 0 and (settings["warmup"] == 0 or rates[0] < max(rates))
    # every kind of line a run writes: the fits come once, at its end
    kinds = [line["type"] for line in lines]
    assert set(kinds) == {"step", "val", "ood", "attribution", "int8"}
    assert sorted(kinds[-3:]) == ["attribution", "int8", "ood"]
    assert set(kinds[:-3]) == {"step", "val"}
    val = [line for line in lines if line["type"] == "val"]
    steps = [line for line in lines if line["type"] == "step"]
    assert len(val) == 8 and steps[-1]["step"] == len(steps)
    # one x-axis for every line: a validation at an epoch's end has done that many epochs
    per_epoch = len(steps) / 8
    assert [line["epochs_done"] for line in val] == [float(k) for k in range(1, 9)]
    assert [line["epochs_done"] for line in steps] == [
        round(line["step"] / per_epoch, 6) for line in steps
    ]
    assert max(line["auc"] for line in val) >= 0.9
    assert steps[-1]["loss"] < steps[0]["loss"]
    sidecar = json.loads((trained / "best.json").read_text())
    best_val = sidecar["training"]["val"]
    assert best_val["auc"] == max(line["auc"] for line in val)  # selection by val AUC
    assert sidecar["training"]["protocol"]["name"] == "in-domain"
    assert {"best.safetensors", "last.safetensors", "last.state.safetensors", "train.json"} <= {
        p.name for p in trained.iterdir()
    }


def test_eval_reports_the_test_split_and_predictions_reproduce_auc(dataset, trained, tmp_path):
    report_path, predictions, plots = (
        tmp_path / "report.json",
        tmp_path / "pred.csv",
        tmp_path / "plots",
    )
    result = run(
        MFCLIP,
        "eval",
        "--data",
        str(dataset),
        "--protocol",
        "in-domain",
        "--weights",
        str(trained / "best.safetensors"),
        "--device",
        "cpu",
        "--json",
        str(report_path),
        "--predictions",
        str(predictions),
        "--plots",
        str(plots),
    )
    report = check_json_file(report_path, "eval")
    overall = report["overall"]
    assert overall["auc"] >= 0.9
    for key in ("auc", "ap", "eer", "acc", "real_acc", "fake_acc", "acc3", "macro_f1", "confusion"):
        assert key in overall
    assert report["protocol"]["sizes"]["test"] == overall["n"]
    # what it scored, recorded as a checkpoint records its training (audit J M4): the protocol
    # whole and the digest of the sample list
    assert report["protocol"]["definition"] == load_protocol("in-domain").to_dict()
    assert report["data"]["index_sha256"] == index_digest(read_dataset(dataset))
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == ["path", "label", "real", "diffusion", "gan"]
    labels = [row["label"] != "real" for row in rows]
    scores = [1 - float(row["real"]) for row in rows]
    assert roc_auc_score(labels, scores) == pytest.approx(overall["auc"], abs=1e-6)
    assert (plots / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUC" in result.stdout and "overall" in result.stdout
    again = run(
        MFCLIP,
        "eval",
        "--data",
        str(dataset),
        "--weights",
        str(trained / "best.safetensors"),
        "--json",
        str(report_path),
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cross_generator_eval_scores_only_unseen_generators(dataset, trained, tmp_path):
    report_path = tmp_path / "cross.json"
    run(
        MFCLIP,
        "eval",
        "--data",
        str(dataset),
        "--protocol",
        "cross-generator",
        "--weights",
        str(trained / "best.safetensors"),
        "--device",
        "cpu",
        "--json",
        str(report_path),
        "--allow-training-overlap",  # trained in-domain: refused without it (test_held_out.py)
    )
    report = check_json_file(report_path, "eval")
    held_out = set(report["protocol"]["held_out"])
    assert held_out and set(report["subsets"]) == held_out
    # the papers' headline (GenImage's "Avg Acc"): each subset weighs alike, whatever its size
    mean = report["subset_mean"]
    assert mean["subsets"] == len(held_out) == 2
    for metric in ("auc", "acc", "fake_acc", "acc3"):
        values = [subset[metric] for subset in report["subsets"].values()]
        assert mean[metric] == pytest.approx(sum(values) / len(values), abs=1e-12)
    # the training run recorded its protocol whole, so the overlap is counted
    overlap = report["protocol"]["training_overlap"]
    assert overlap["protocol"] == "in-domain" and overlap["train"] > 0


def test_killed_training_resumes_to_the_same_weights(dataset, tmp_path):
    """With dropout (the vit-b-16 head has it): a resumed run's data loader drew from torch's
    global generator again, and every dropout mask after the resume point differed (audit M
    F1)."""
    common = ("--epochs", "2", "--checkpoint-every", "1", "--val-every", "4")
    common += ("--set", "head.dropout=0.1", "--set", "lora.dropout=0.1")
    straight = tmp_path / "straight"
    run(*train_args(dataset, straight, *common))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        train_args(dataset, interrupted, *common),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    state = interrupted / "last.state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it get a little further, possibly mid-write
    process.send_signal(signal.SIGKILL)
    process.wait()
    total = metrics_lines(straight)[-1]["step"]
    assert metrics_lines(interrupted)[-1]["step"] < total, (
        "the run finished before it could be interrupted"
    )

    run(MFCLIP, "train", "--out", str(interrupted), "--resume", "--device", "cpu")
    check_train_run(straight)
    check_train_run(interrupted)
    expected, resumed = (
        load_file(str(straight / "last.safetensors")),
        load_file(str(interrupted / "last.safetensors")),
    )
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    for checkpoint in ("last.safetensors", "best.safetensors"):  # same bytes: no clock inside
        assert sha256_file(straight / checkpoint) == sha256_file(interrupted / checkpoint)
    fitted = json.loads((interrupted / "best.json").read_text())
    assert "fitted_utc" in fitted["calibration"] and "fitted_utc" in fitted["ood"]
    assert "fitted_utc" in read_checkpoint_info(interrupted / "best.safetensors").attribution
    steps = [line["step"] for line in metrics_lines(interrupted) if line["type"] == "step"]
    assert steps == list(range(1, total + 1))  # nothing logged twice, nothing lost


def test_a_run_stopped_before_its_first_save_leaves_its_folder_usable(dataset, tmp_path):
    """SIGTERM (a scheduler, ``timeout``) ended the process at once: the folder kept train.json
    and metrics.jsonl, --resume said last.safetensors was missing and a new run that the folder
    was not empty. It now ends as Ctrl-C does."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        train_args(dataset, out, "--epochs", "3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (out / "last.safetensors").exists(), "it saved before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    assert not out.exists() or not any(out.iterdir())  # the same command can run again


def test_two_process_torchrun_sees_the_same_samples(dataset, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    env = {"OMP_NUM_THREADS": "1"}
    run(*train_args(dataset, single, "--epochs", "1"), env=env)
    run(
        TORCHRUN,
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mfclip_cli",
        *train_args(dataset, double, "--epochs", "1")[1:],
        env=env,
    )
    (_, one), (_, two) = check_train_run(single), check_train_run(double)
    assert [line["samples_seen"] for line in one if line["type"] == "step"] == [
        line["samples_seen"] for line in two if line["type"] == "step"
    ]
    assert (double / "best.safetensors").is_file()
    # each process hashed its share of the files; gathered, the digests are one process's
    held = [
        read_checkpoint_info(run / "best.safetensors").metadata["training"]["digests"]
        for run in (single, double)
    ]
    assert held[0] == held[1] and held[0]["train"] > 0
    one, two = (load_file(run / "best.safetensors") for run in (single, double))
    for name in ("trained.train", "trained.val"):
        assert torch.equal(one[name], two[name])


def test_epoch_order_is_deterministic_and_ranks_partition_each_batch():
    order = EpochOrder(classes=[0] * 30 + [1] * 7 + [2] * 13, batch_size=8, seed=3)
    assert order.batches_per_epoch == 6
    first = list(order.batches(1))
    assert first == list(order.batches(1)) and first != list(order.batches(2))
    halves = [list(order.batches(1, rank=r, world=2)) for r in range(2)]
    for whole, a, b in zip(first, *halves):
        assert sorted(a + b) == sorted(whole) and len(a) == len(b) == 4
    assert list(order.batches(1, start=4)) == first[4:]
    balanced = EpochOrder(
        classes=[0] * 90 + [1] * 5 + [2] * 5, batch_size=10, seed=0, balanced=True
    )
    drawn = np.bincount([balanced.classes[i] for i in balanced.indices(0)], minlength=3)
    assert drawn[1] + drawn[2] > 30  # rare classes drawn far above their 10 % share


def test_settings_from_toml_and_their_errors(tmp_path):
    good = tmp_path / "train.toml"
    good.write_text(
        '[train]\ndata = "d"\nconfig = "tiny"\nepochs = 2\nbatch_size = 8\n'
        'overrides = ["lora.text=true"]\n'
    )
    settings = load_train_settings(good, out="run", epochs=3)
    assert settings == TrainSettings(
        data="d", out="run", config="tiny", epochs=3, batch_size=8, overrides=("lora.text=true",)
    )
    given = load_train_settings(good, out="run", overrides=("fusion=sum",))
    assert given.overrides == ("fusion=sum",)  # --set replaces the file's list
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\ndata = "d"\nepochz = 2\n')
    with pytest.raises(UsageError, match="epochz"):
        load_train_settings(bad, out="run")
    with pytest.raises(UsageError, match="batch_size"):
        TrainSettings(data="d", out="o", batch_size=0)
    with pytest.raises(UsageError, match="list of KEY=VALUE"):
        TrainSettings(data="d", out="o", overrides="fusion=sum")


def test_a_commands_options_become_its_settings(tmp_path, monkeypatch):
    """train and ablate read their options the one way: a file under the options, the options
    alone, or nothing at all for a resume; their --data is checked there, before torch loads."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset folder not found: missing"):
        resolve_train_settings({"data": ("missing",)}, out="o")
    file = tmp_path / "train.toml"
    file.write_text('[train]\ndata = "d"\nepochs = 2\nlr = 0.01\n')
    given = {"data": None, "epochs": 5, "lr": None}
    assert resolve_train_settings(given, out="o", settings_file=str(file)) == TrainSettings(
        data="d", out="o", epochs=5, lr=0.01
    )
    assert resolve_train_settings({**given, "data": ("x",)}, out="o") == TrainSettings(
        data=("x",), out="o", epochs=5
    )
    with pytest.raises(UsageError, match="--data is required"):
        resolve_train_settings(given, out="o")
    with pytest.raises(UsageError, match="cannot resume o: it holds no train.json"):
        resolve_train_settings({"epochs": None}, out="o", resume=True)
    with pytest.raises(UsageError, match="saved settings; drop epochs"):
        resolve_train_settings(given, out="o", resume=True)
    with pytest.raises(UsageError, match="drop --settings"):
        resolve_train_settings({}, out="o", settings_file=str(file), resume=True)


@pytest.mark.parametrize(
    "line, said",
    [
        ('epochs = "2"', "epochs must be a whole number, not '2'"),
        ('lr = "3e-3"', "lr must be a number, not '3e-3'"),
        ("seed = 1.5", "seed must be a whole number, not 1.5"),
        ('balanced = "no"', "balanced must be true or false, not 'no'"),  # was taken as true
        ("epochs = true", "epochs must be a whole number, not True"),
        ("config = 3", "config must be text, not 3"),
        ("workers = -1", "workers must be 0 or more"),  # a traceback from the data loader
        ("val_every = -1", "val_every must be 0 or more"),  # validated after every step
        ("lr = nan", "lr must be a finite positive number, not nan"),  # AdamW's traceback
        ("lr = inf", "lr must be a finite positive number, not inf"),  # after a step
    ],
)
def test_a_settings_file_value_of_the_wrong_kind_is_named(tmp_path, line, said):
    file = tmp_path / "train.toml"
    file.write_text(f'[train]\ndata = "d"\n{line}\n')
    with pytest.raises(UsageError, match=re.escape(said)):
        load_train_settings(file, out="o")


def test_a_settings_file_that_is_not_text_is_named(tmp_path):
    """Audit S F3: a picture or a UTF-16 file given to --settings ended in a traceback."""
    file = tmp_path / "train.toml"
    file.write_bytes("[train]\n".encode("utf-16"))
    with pytest.raises(UsageError, match="train.toml: not UTF-8 text"):
        load_train_settings(file, out="o")
    with pytest.raises(UsageError, match="training settings file not found: .*missing.toml"):
        load_train_settings(tmp_path / "missing.toml", out="o")


def test_whole_numbers_stand_for_floats_in_a_settings_file(tmp_path):
    file = tmp_path / "train.toml"
    file.write_text('[train]\ndata = "d"\nlr = 1\nbalanced = true\n')
    settings = load_train_settings(file, out="o")
    assert settings.lr == 1 and settings.balanced is True


def test_config_overrides_are_trained_and_recorded_in_the_checkpoint(dataset, tmp_path):
    out = tmp_path / "ablation"
    overrides = ["noise.enabled=false", "prompts.levels=2", "lora.text=true", "fusion=sum"]
    run(*train_args(dataset, out, "--epochs", "1", *(f"--set={item}" for item in overrides)))
    assert check_train_run(out)[0]["overrides"] == overrides
    for name in ("best.safetensors", "last.safetensors"):
        model, info = load_checkpoint(out / name)
        assert not info.config.noise.enabled and info.config.prompts.levels == 2
        assert info.config.lora.text and info.config.fusion == "sum"
        assert model.vision.noise_branch is None and model.language.level_logits.shape == (2,)
        assert model.language.text_tower_trainable


def test_train_refuses_a_used_run_folder_and_a_bad_resume(dataset, trained, tmp_path):
    again = run(*train_args(dataset, trained, "--epochs", "1"), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    missing = run(MFCLIP, "train", "--out", str(tmp_path / "nothing"), "--resume", check=False)
    assert missing.returncode == 2 and "cannot resume" in missing.stderr


def test_a_run_records_its_environment_and_resumes_only_under_its_process_count(trained, tmp_path):
    """Audit J M1-M3: the process count changes the weights (the distillation term is per
    process), the thread count their low digits; neither was recorded, and a run begun in two
    processes resumed in one without a word."""
    environment = json.loads((trained / "train.json").read_text())["environment"]
    assert environment["processes"] == 1 and environment["device"] == "cpu"
    assert (
        environment["torch_threads"] >= 1 and environment["versions"]["torch"] == torch.__version__
    )
    info = read_checkpoint_info(trained / "best.safetensors")
    assert info.metadata["training"]["environment"] == environment
    moved = tmp_path / "moved"
    shutil.copytree(trained, moved)
    settings = json.loads((moved / "train.json").read_text())
    two = {**settings, "environment": {**environment, "processes": 2}}
    (moved / "train.json").write_text(json.dumps(two))
    refused = run(MFCLIP, "train", "--out", str(moved), "--resume", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "began in 2 process(es) and this is 1" in refused.stderr
    assert "torchrun --nproc-per-node 2" in refused.stderr
    other = {**settings, "environment": {**environment, "torch_threads": 99}}
    (moved / "train.json").write_text(json.dumps(other))
    resumed = run(MFCLIP, "train", "--out", str(moved), "--resume", "--device", "cpu")
    said = resumed.stdout + resumed.stderr
    assert "resumed in another environment (torch_threads 99 then" in said, said


def test_a_run_folder_being_trained_into_is_not_resumed_by_a_second_train(trained, tmp_path):
    """Audit J L5: the workers of a killed torchrun launcher train on; a --resume meanwhile made
    two writers of one run folder. A train holds a lock on its folder."""
    import fcntl

    busy = tmp_path / "busy"
    shutil.copytree(trained, busy)
    descriptor = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running train holds it
        refused = run(MFCLIP, "train", "--out", str(busy), "--resume", check=False)
    finally:
        os.close(descriptor)
    assert refused.returncode == 2 and "being trained into by another" in refused.stderr
    assert run(MFCLIP, "train", "--out", str(busy), "--resume").returncode == 0


def test_resume_refuses_settings_it_does_not_know(trained, tmp_path):
    """A train.json from a newer mfclip (a setting this one lacks) is refused by name, exit 2."""
    newer = tmp_path / "newer"
    shutil.copytree(trained, newer)
    settings = json.loads((newer / "train.json").read_text())
    (newer / "train.json").write_text(json.dumps({**settings, "sharpness_aware": True}))
    refused = run(MFCLIP, "train", "--out", str(newer), "--resume", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "does not know: sharpness_aware" in refused.stderr and "Traceback" not in refused.stderr


def test_training_stops_at_gradients_that_are_not_finite(dataset, tmp_path):
    """An absurd learning rate overflows the weights after one AdamW step; the next step's
    gradients are NaN, and training stops there (exit 1, one line) instead of going on on NaN.
    The run saved after step 1 stays, its log that one finite step, its weights finite."""
    out = tmp_path / "diverged"
    args = ("--epochs", "1", "--lr", "1e30", "--checkpoint-every", "1")
    result = run(*train_args(dataset, out, *args), check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "training stopped at step 2: its gradients are not finite" in result.stderr
    assert "--lr (this run's: 1e+30)" in result.stderr and "Traceback" not in result.stderr
    logged = metrics_lines(out)
    assert [record["step"] for record in logged] == [1] and math.isfinite(logged[0]["loss"])
    weights = load_file(out / "last.safetensors")
    assert all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())


def test_adamw_leaves_biases_norms_and_scales_undecayed():
    """Audit M F6: AdamW decayed the logit scale, the level logits, biases and norm gains, pulling
    a scale towards 0 each step. With zero gradients an AdamW step is the decay alone: a decayed
    tensor shrinks by 1 - lr * wd, an undecayed one stays; ``all`` (runs before 2.13.0) decays
    every one."""
    from mfclip_cli.engines.train.training import adamw
    from mfclip_cli.model.config import load_model_config
    from mfclip_cli.model.detectors import build_detector

    lr, decay = 0.1, 0.5
    for decay_on in ("weights", "all"):
        torch.manual_seed(0)
        model = build_detector(load_model_config("tiny"), pretrained=False)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        optimizer = adamw(
            [p for _, p in named], lr=lr, weight_decay=decay, decay_on=decay_on, fused=False
        )
        with torch.no_grad():  # no zeros (LoRA's B starts at 0): decay shows on every tensor
            for _, parameter in named:
                parameter.uniform_(0.5, 1.5)
                parameter.grad = torch.zeros_like(parameter)
        before = {n: p.detach().clone() for n, p in named}
        optimizer.step()
        kept = {n for n, p in named if torch.equal(p.detach(), before[n])}
        shrunk = {n for n, p in named if torch.allclose(p.detach(), before[n] * (1 - lr * decay))}
        names = {n for n, _ in named}
        if decay_on == "all":
            assert len(optimizer.param_groups) == 1 and shrunk == names
            continue
        undecayed = {n for n, p in named if p.ndim < 2}
        assert {"criterion.log_logit_scale", "language.level_logits"} <= undecayed
        assert any(n.endswith(".bias") for n in undecayed)
        assert any("lora_A" in n for n in names - undecayed)
        assert kept == undecayed and shrunk == names - undecayed


def test_weight_decay_settings_are_checked():
    assert TrainSettings(data="d", out="o").weight_decay_on == "weights"
    with pytest.raises(UsageError, match="weight_decay_on must be 'weights' or 'all'"):
        TrainSettings(data="d", out="o", weight_decay_on="biases")
    for bad in (-0.1, math.nan):
        with pytest.raises(UsageError, match="weight_decay must be 0 or more"):
            TrainSettings(data="d", out="o", weight_decay=bad)


def test_a_run_from_before_weight_decay_on_resumes_with_every_tensor_decayed(dataset, tmp_path):
    """A train.json without weight_decay_on (written before 2.13.0) trained with one AdamW group
    over every tensor: resumed, it is read as ``all``, so its optimiser state (one group) loads
    (read as today's default, two groups, the state was refused)."""
    settings = tmp_path / "old.toml"
    settings.write_text('[train]\nweight_decay_on = "all"\n')
    old = tmp_path / "old"
    run(*train_args(dataset, old, "--epochs", "1", "--settings", str(settings)))
    recorded = json.loads((old / "train.json").read_text())
    assert recorded["weight_decay_on"] == "all"
    del recorded["weight_decay_on"]
    (old / "train.json").write_text(json.dumps(recorded))
    header = check_safetensors(old / "last.state.safetensors")["__metadata__"]
    assert len(json.loads(header["param_groups"])) == 1
    resumed = run(MFCLIP, "train", "--out", str(old), "--resume", "--device", "cpu")
    assert "done:" in resumed.stderr
    assert schema_errors(recorded, "train") == []  # valid without the key


def test_a_run_folder_from_before_schema_2_2_resumes(trained, tmp_path):
    """train.json gained schema_version in 2.2.0; --resume reads the settings of a run folder
    started before, without one (here a finished run: resuming it reads train.json, the data and
    the state, trains nothing and finds its fits done), and leaves its train.json as it was."""
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    settings = json.loads((old / "train.json").read_text())
    del settings["schema_version"]
    (old / "train.json").write_text(json.dumps(settings))
    lines = (old / "metrics.jsonl").read_text()
    resumed = run(MFCLIP, "train", "--out", str(old), "--resume", "--device", "cpu")
    assert "done:" in resumed.stderr
    assert json.loads((old / "train.json").read_text()) == settings  # not rewritten
    assert (old / "metrics.jsonl").read_text() == lines
    assert schema_errors(settings, "train") != []  # it predates the contract


def test_resume_refuses_data_that_changed_since_the_run_began(dataset, trained, tmp_path):
    """The batches of every epoch come from the train split's sample list: a run resumed on
    data with a file removed (or added, or relabelled) would train on other batches than the
    run it continues, without a word. The same data, moved elsewhere, resumes."""
    data = Path(shutil.copytree(dataset, tmp_path / "moved" / dataset.name))
    folder = Path(shutil.copytree(trained, tmp_path / "run"))
    settings = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps({**settings, "data": str(data)}))
    resume = (MFCLIP, "train", "--out", str(folder), "--resume", "--device", "cpu")
    moved = run(*resume)
    assert "done:" in moved.stderr  # finished already: nothing trained, nothing refused
    images = sorted(data.rglob("*.png"))
    images[0].unlink()
    changed = run(*resume, check=False)
    assert changed.returncode == 2, changed.stderr
    said = " ".join(changed.stderr.split())
    assert f"its data differ from those it began with ({len(images)} samples" in said, said
    assert f"; {len(images) - 1}, " in said and "Traceback" not in said


def test_resume_refuses_a_protocol_that_splits_the_data_otherwise_now(dataset, trained, tmp_path):
    """A protocol file edited since the run began (here another hash seed that keeps the train
    split's size) moves samples between splits: the resumed run trained on samples of its first
    part's test split, and its test figures were not held out (audit T1)."""
    index = read_dataset(dataset)
    began = select(index, load_protocol("in-domain"))
    seed = next(
        seed
        for seed in range(1, 200)
        if len(select(index, replace(load_protocol("in-domain"), seed=seed)).train)
        == len(began.train)
    )
    protocol = tmp_path / "in-domain.toml"  # the shipped one, copied: its name is the same
    protocol.write_text((PROTOCOL_DIR / "in-domain.toml").read_text(encoding="utf-8"))
    folder = Path(shutil.copytree(trained, tmp_path / "run"))
    settings = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps({**settings, "protocol": str(protocol)}))
    resume = (MFCLIP, "train", "--out", str(folder), "--resume", "--device", "cpu")
    assert "done:" in run(*resume).stderr  # the same protocol in another file: resumed
    protocol.write_text(protocol.read_text().replace("seed = 0", f"seed = {seed}"))
    edited = run(*resume, check=False)
    assert edited.returncode == 2, edited.stderr
    said = " ".join(edited.stderr.split())
    assert f"cannot resume {folder}: " in said and "samples lie in another split" in said, said
    assert "the protocol file was edited since" in said and "Traceback" not in said


@pytest.fixture(scope="module")
def run_records(trained) -> dict:
    """The trained run's train.json and the first metrics line of each type."""
    settings, lines = check_train_run(trained)
    first = {}
    for line in lines:
        first.setdefault(line["type"], line)
    return {"settings": settings, **first}


@pytest.mark.parametrize(
    "which, path, change",
    [
        ("settings", ["schema_version"], drop),
        ("settings", ["schema_version"], set_to("1.4.0")),
        ("settings", ["seed"], drop),
        ("settings", ["resume"], add_unknown),
        ("settings", ["epochs"], set_to(0)),
        ("settings", ["data"], set_to([])),
        ("settings", ["overrides"], set_to("fusion=sum")),
        ("settings", ["lora_rank"], set_to("8")),
        ("step", ["loss"], drop),
        ("step", ["loss"], set_to(None)),
        ("step", ["gradient_norm"], add_unknown),
        ("step", ["step"], set_to(0)),
        ("step", ["type"], set_to("steps")),
        ("val", ["video"], drop),
        ("val", ["auc"], set_to("0.9")),
        ("val", ["calibration"], add_unknown),
        ("val", ["confusion"], set_to([[1, 2], [3, 4]])),
        ("ood", ["fitted_on", "train_samples"], drop),
        ("ood", ["fitted_on", "split"], add_unknown),  # a calibration's, not these
        ("ood", ["fitted_on", "surprise"], add_unknown),
        ("attribution", ["fitted_on", "train_samples"], set_to(40)),
        ("ood", ["classes"], set_to(["human"])),
        ("ood", ["threshold"], drop),
        ("ood", ["val_flagged"], set_to(1.5)),
        ("attribution", ["val", "top1"], drop),
        ("attribution", ["label_sets", 0, "share"], add_unknown),
        ("attribution", ["views"], set_to(["jpeg:90"])),
        ("attribution", ["temperature"], set_to(0.5)),
        ("int8", ["split"], set_to("test")),
        ("int8", ["int8_allowed"], drop),
        ("int8", ["fp32", "auc"], set_to("high")),
        ("int8", ["int8", "bits"], add_unknown),
    ],
)
def test_a_wrong_run_record_fails_validation(run_records, which, path, change):
    record = run_records[which]
    assert schema_errors(record, "train") == []
    assert schema_errors(broken(record, path, change), "train") != []


def test_an_undefined_val_metric_is_null_and_valid(run_records):
    """A val split of one class has no AUC: null, as eval writes it."""
    val = run_records["val"]
    assert schema_errors(broken(val, ["auc"], set_to(None)), "train") == []


def test_a_resume_from_an_epochs_last_step_validates_it_once(tmp_path, monkeypatch):
    """A state saved at an epoch's last step (--checkpoint-every) comes before the epoch's
    validation: a run killed after validating resumes to validate again, and logs it once."""
    from mfclip_cli.engines.train import training

    data = make_dataset(tmp_path / "data", per_class=20)
    settings = TrainSettings(
        data=str(data), out=str(tmp_path / "run"), config="tiny", epochs=2, batch_size=16,
        lr=3e-3, workers=0, checkpoint_every=1,
    )  # fmt: skip
    validate = training.Trainer.validate

    def validate_then_die(self):
        validate(self)
        raise KeyboardInterrupt  # killed before the epoch's own save

    monkeypatch.setattr(training.Trainer, "validate", validate_then_die)
    console = Console(file=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        training.train(settings, resume=False, device="cpu", console=console)
    monkeypatch.setattr(training.Trainer, "validate", validate)
    resumed = resolve_train_settings({}, out=settings.out, resume=True)
    assert resumed == settings
    with pytest.raises(UsageError, match=r"other settings than it began with \(lr 0.003"):
        training.train(replace(resumed, lr=0.5), resume=True, device="cpu", console=console)
    training.train(resumed, resume=True, device="cpu", console=console)
    val_steps = [line["step"] for line in metrics_lines(tmp_path / "run") if line["type"] == "val"]
    assert len(val_steps) == 2 and len(set(val_steps)) == 2, val_steps


def test_a_run_begun_with_relative_paths_resumes_from_another_folder(tmp_path):
    """train.json keeps --data as typed ('faces'); a resume from another folder reads it from
    the folder the run began in (before: 'dataset folder not found: faces')."""
    project = tmp_path / "project"
    make_dataset(project / "faces", per_class=20)
    begun = run(*train_args(Path("faces"), Path("run"), "--epochs", "1"), cwd=project, check=False)
    assert begun.returncode == 0, begun.stderr[-2000:]
    settings = json.loads((project / "run" / "train.json").read_text())
    assert settings["data"] == "faces" and settings["cwd"] == str(project)
    resumed = run(
        MFCLIP, "train", "--out", str(project / "run"), "--resume", cwd=tmp_path, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
