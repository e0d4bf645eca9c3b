"""A dataset image that cannot be decoded never ends a pass: training stands the next readable
sample of its class in for it, scoring (eval, calibrate, validation) leaves it out and says so,
and the command ends with exit code 3. Before, the first truncated file stopped ``mfclip train``
mid-epoch, and ``--resume`` stopped on it again."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from report_schemas import check_json_file, check_train_run, schema_errors
from test_train import MFCLIP, TORCHRUN, make_dataset, run, train_args

from mfclip_cli.data import DataError, Sample, Unreadable, read_dataset, select
from mfclip_cli.data.copies import identical_files
from mfclip_cli.data.faceset import EpochOrder, FaceImages, collate_faces
from mfclip_cli.engines.inference import FaceSource, predict_outputs
from mfclip_cli.engines.inspect import _identical_lines as render_identical
from mfclip_cli.model import CLASS_NAMES
from mfclip_cli.model.checkpoint import read_checkpoint_info


def _truncate(path: Path) -> None:
    """Keep the first third of an image file: its header reads, its pixels do not."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pictures(root: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    return names


def test_scoring_leaves_an_unreadable_sample_out_and_says_why(tmp_path):
    names = _pictures(tmp_path, 4)
    _truncate(tmp_path / names[1])
    images = FaceImages(tmp_path, names, 32)
    item = images[1]
    assert item.face is None and item.index == 1
    assert item.unreadable.path == names[1] and "truncated" in item.unreadable.error
    batch = collate_faces([images[i] for i in range(4)])
    assert batch.indices == [0, 2, 3] and batch.faces.shape == (3, 3, 32, 32)
    assert [missing.path for missing in batch.unreadable] == [names[1]]
    torch.testing.assert_close(batch.faces[1], images[2].face, rtol=0, atol=0)


def test_training_stands_the_next_readable_sample_of_its_class_in(tmp_path):
    names = _pictures(tmp_path, 5)
    classes = [0, 0, 1, 0, 1]
    for broken in (names[1], names[3]):
        _truncate(tmp_path / broken)
    images = FaceImages(tmp_path, names, 32, stand_ins=classes)
    # sample 1's class (0) goes on at 3 (unreadable too), then wraps round to 0
    item = images[1]
    assert item.index == 0 and item.unreadable.path == names[1]
    torch.testing.assert_close(item.face, images[0].face, rtol=0, atol=0)
    assert images[2].unreadable is None and images[2].index == 2
    _truncate(tmp_path / names[0])  # now no sample of class 0 can be read
    with pytest.raises(DataError, match="no other sample of its class"):
        images[1]


def test_leaving_out_records_the_samples_per_split(tmp_path):
    root = make_dataset(tmp_path / "faces", per_class=16)
    splits = select(read_dataset(root), "in-domain")
    gone = splits.test[0]
    missing = [Unreadable(gone.path, "truncated")]
    after = splits.leaving_out("test", missing)
    assert gone not in after.test and len(after.test) == len(splits.test) - 1
    assert after.unreadable == {"test": missing} and after.val == splits.val
    assert splits.leaving_out("val", []) is splits


def test_outputs_pair_each_row_with_a_readable_sample(tmp_path, tiny_model):
    root = make_dataset(tmp_path / "faces", per_class=3)
    samples = read_dataset(root).samples[:6]
    _truncate(root / samples[2].path)
    outputs = predict_outputs(tiny_model, FaceSource(root, torch.device("cpu"), 4), samples)
    readable = [sample for i, sample in enumerate(samples) if i != 2]
    assert outputs.samples == readable
    assert [missing.path for missing in outputs.unreadable] == [samples[2].path]
    alone = predict_outputs(tiny_model, FaceSource(root, torch.device("cpu"), 4), readable)
    np.testing.assert_allclose(outputs.logits, alone.logits, atol=1e-5)


def test_data_inspect_verify_finds_them_before_a_run_does(tmp_path):
    """``data inspect --verify`` decodes every image as train and eval will: the truncated ones
    are listed with why (exit 3); without it, nothing is decoded and all is well (exit 0)."""
    root = make_dataset(tmp_path / "faces", per_class=4)
    samples = read_dataset(root).samples
    broken = sorted([samples[1].path, samples[6].path])
    for path in broken:
        _truncate(root / path)
    report_path = tmp_path / "inspect.json"
    verified = run(
        MFCLIP, "data", "inspect", str(root), "--verify", "--workers", "2",
        "--json", str(report_path), check=False,
    )  # fmt: skip
    assert verified.returncode == 3, verified.stderr
    report = check_json_file(report_path, "inspect")
    assert report["verified"]["images"] == len(samples) and report["verified"]["workers"] == 2
    assert [item["path"] for item in report["verified"]["unreadable"]] == broken
    assert all("truncated" in item["error"] for item in report["verified"]["unreadable"])
    assert f"cannot be decoded: {broken[0]}" in verified.stdout
    assert f"{len(samples)} images, 2 cannot be decoded" in verified.stdout
    quick = run(MFCLIP, "data", "inspect", str(root))
    assert "no image decoded" in quick.stdout and "cannot be decoded" not in quick.stdout


def test_data_inspect_verify_finds_the_same_bytes_under_other_names(tmp_path):
    """A test image copied into train under another name, and one picture filed under two
    labels, are found by no walk of names: --verify hashes the bytes it reads and groups the
    files that hold the same ones, across splits, across labels, and the rest apart."""
    rng = np.random.default_rng(0)
    root = tmp_path / "Stable Diffusion V1.4"  # GenImage: train, and val its test split
    for split in ("train", "val"):
        for kind in ("ai", "nature"):
            (root / split / kind).mkdir(parents=True)
            for i in range(3):
                picture = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(picture).save(root / split / kind / f"{i}.png")
    shutil.copy(root / "val/ai/0.png", root / "train/ai/copy.png")  # a test image trained on
    shutil.copy(root / "train/nature/1.png", root / "train/ai/also.png")  # real and fake
    shutil.copy(root / "val/nature/2.png", root / "val/nature/again.png")  # counted twice
    report_path = tmp_path / "inspect.json"
    verified = run(MFCLIP, "data", "inspect", str(root), "--verify", "--json", str(report_path))
    groups = check_json_file(report_path, "inspect")["verified"]["identical"]
    assert not any(group["across_datasets"] for group in groups)
    named = {
        tuple(item["path"] for item in group["files"]): (
            group["across_splits"],
            group["across_labels"],
        )
        for group in groups
    }
    assert named == {
        ("train/ai/copy.png", "val/ai/0.png"): (True, False),
        ("train/ai/also.png", "train/nature/1.png"): (False, True),
        ("val/nature/2.png", "val/nature/again.png"): (False, False),
    }
    digests = {group["sha256"] for group in groups}
    assert hashlib.sha256((root / "val/ai/0.png").read_bytes()).hexdigest() in digests
    leaked = next(group for group in groups if group["across_splits"])
    assert leaked["files"][1] == {
        "path": "val/ai/0.png",
        "dataset": "GenImage",
        "split": "test",
        "label": "diffusion",
    }
    lines = verified.stdout.splitlines()
    assert any(
        line.startswith("identical files in train and a held-out split")
        and "train/ai/copy.png (train, diffusion) = val/ai/0.png (test, diffusion)" in line
        for line in lines
    ), verified.stdout
    assert any(line.startswith("identical files under more than one label") for line in lines)
    assert any(
        line.startswith("identical files (one dataset, split and label): 1 group") for line in lines
    )
    assert verified.returncode == 0
    # another dataset holding a copy of a GenImage test real, inspected beside it
    other = tmp_path / "mine"
    (other / "real").mkdir(parents=True)
    shutil.copy(root / "val/nature/0.png", other / "real/kept.png")
    both = run(MFCLIP, "data", "inspect", str(root), str(other), "--verify", "--json",
               str(tmp_path / "both.json"))  # fmt: skip
    report = check_json_file(tmp_path / "both.json", "inspect")
    assert report["layout"] == "genimage+folder" and report["samples"] == 16
    crossing = [group for group in report["verified"]["identical"] if group["across_datasets"]]
    assert [[item["path"] for item in group["files"]] for group in crossing] == [
        ["Stable Diffusion V1.4/val/nature/0.png", "mine/real/kept.png"]
    ]
    assert crossing[0]["may_cross_splits"] and crossing[0]["splits"] == ["test"]
    assert "identical files in more than one dataset" in both.stdout
    assert "mine/real/kept.png (mine, real)" in both.stdout
    assert "identical files without a published split" in both.stdout


def test_a_file_too_large_to_hold_an_image_is_not_read_whole(tmp_path):
    """inspect --verify and prepare read an image's bytes whole, to hash and decode the same
    ones: a file no image within the pixel limit fills (a 1 GiB "photo") is refused before it
    is read, as scan refuses it, never read into memory."""
    root = tmp_path / "faces"
    (root / "real").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "real" / "small.png")
    with open(root / "real" / "huge.png", "wb") as sparse:
        sparse.truncate(1 << 30)
    for empty in ("real/e1.png", "real/e2.png"):  # equal bytes, no picture: no copies (AM F6)
        (root / empty).write_bytes(b"")
    said = "file is 1,073,741,824 bytes, more than an image within the 100-megapixel"
    verified = run(MFCLIP, "data", "inspect", str(root), "--verify", "--json",
                   str(tmp_path / "i.json"), check=False)  # fmt: skip
    assert verified.returncode == 3, verified.stderr
    verified = check_json_file(tmp_path / "i.json", "inspect")["verified"]
    failures = {item["path"]: item["error"] for item in verified["unreadable"]}
    assert failures["real/huge.png"].startswith(said) and len(failures) == 3
    assert verified["identical"] == []
    prepared = run(MFCLIP, "prepare", str(root), "--out", str(tmp_path / "out"), "--config",
                   "tiny", "--device", "cpu", check=False)  # fmt: skip
    assert prepared.returncode == 3, prepared.stderr
    skipped = json.loads((tmp_path / "out" / "prepare.json").read_text())["skipped"]
    refused = {item["source"]: item["error"] for item in skipped if item["status"] == "error"}
    assert refused["real/huge.png"].startswith(said) and len(refused) == 3
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["identical"] == []


def test_identical_files_say_what_a_protocol_may_part():
    """Copies without a published split are what a protocol's hash parts (audit AL A1: called
    "one split"); val and test are no training (A2); frames of one video holding the same
    bytes are no copies any protocol parts (A5)."""
    samples = [
        Sample("a.png", "real"),
        Sample("a_copy.png", "real"),
        Sample("v.png", "gan", split="val"),
        Sample("t.png", "gan", split="test"),
        Sample("clip/0.png", "real", video="clip"),
        Sample("clip/1.png", "real", video="clip"),
        Sample("x.png", "real", split="train"),
        Sample("x_again.png", "real", split="train"),
    ]
    digests = ["a", "a", "v", "v", "f", "f", "x", "x"]
    groups = identical_files(samples, [digest * 64 for digest in digests])
    flags = {
        group["files"][0]["path"]: (
            group["splits"],
            group["across_splits"],
            group["may_cross_splits"],
        )
        for group in groups
    }
    assert flags == {
        "a.png": ([], False, True),
        "v.png": (["test", "val"], True, False),
        "x.png": (["train"], False, False),
    }
    lines = render_identical(groups)
    assert [line.split(":")[0] for line in lines] == [
        "identical files in val and test (a test image a model is selected or calibrated on)",
        "identical files without a published split (a protocol's hash may put them in two splits)",
        "identical files (one dataset, split and label)",
    ]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, dict]:
    """A dataset with one truncated fake in each split (val keeps fakes beside it)."""
    root = make_dataset(tmp_path_factory.mktemp("damaged") / "faces", per_class=30)
    splits = select(read_dataset(root), "in-domain")
    chosen = {
        name: next(s for s in getattr(splits, name) if not s.is_real)
        for name in ("train", "val", "test")
    }
    assert sum(not s.is_real for s in splits.val) >= 2
    for sample in chosen.values():
        _truncate(root / sample.path)
    sizes = {name: len(getattr(splits, name)) for name in chosen}
    return root, {name: (sample.path, sizes[name]) for name, sample in chosen.items()}


def test_train_goes_on_past_unreadable_samples_and_exits_3(damaged, tmp_path):
    root, chosen = damaged
    out = tmp_path / "run"
    result = run(*train_args(root, out, "--epochs", "2"), check=False)
    assert result.returncode == 3, result.stderr[-3000:]
    train_path, val_path = chosen["train"][0], chosen["val"][0]
    assert f"train sample {train_path} cannot be read" in result.stderr
    assert f"val sample {val_path} cannot be read" in result.stderr
    assert "finished without 2 sample(s) that could not be read" in result.stderr
    training = read_checkpoint_info(out / "best.safetensors").metadata["training"]
    assert training["unreadable"] == {"train": [train_path], "val": [val_path]}
    _, lines = check_train_run(out)
    unreadable = [line for line in lines if line["type"] == "unreadable"]
    # once per run and split, though the train sample comes round in both epochs
    assert sorted((line["split"], line["path"]) for line in unreadable) == [
        ("train", train_path),
        ("val", val_path),
    ]
    assert all("truncated" in line["error"] for line in unreadable)
    line = unreadable[0]  # what the schema refuses of such a line
    assert schema_errors({**line, "split": "test"}, "train")  # train and val only
    assert schema_errors({k: v for k, v in line.items() if k != "error"}, "train")
    steps = [line for line in lines if line["type"] == "step"]
    assert len(steps) == 2 * ((chosen["train"][1]) // 16)  # no batch lost or shortened
    # resuming the finished run trains nothing, logs nothing again and still says what it lacks
    logged = (out / "metrics.jsonl").read_text(encoding="utf-8")
    again = run(MFCLIP, "train", "--out", str(out), "--resume", "--device", "cpu", check=False)
    assert again.returncode == 3, again.stderr[-3000:]
    assert (out / "metrics.jsonl").read_text(encoding="utf-8") == logged


def test_under_torchrun_each_process_meets_its_own_and_the_checkpoint_lists_all(tmp_path):
    """Under torchrun each process reads its own share of every batch: a sample that the second
    process cannot read is logged by it, and reaches the checkpoint rank 0 writes."""
    root = make_dataset(tmp_path / "faces", per_class=30)
    train = select(read_dataset(root), "in-domain").train
    order = EpochOrder([CLASS_NAMES.index(s.label) for s in train], batch_size=16, seed=0)
    first_of_second_process = next(order.batches(0, rank=1, world=2))[0]
    broken = train[first_of_second_process].path
    _truncate(root / broken)
    out = tmp_path / "run"
    result = run(
        TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "mfclip_cli",
        *train_args(root, out, "--epochs", "1", "--seed", "0")[1:],
        env={"OMP_NUM_THREADS": "1"}, check=False,
    )  # fmt: skip
    assert result.returncode != 0, "torchrun ends 1 where a process ends 3"
    assert f"train sample {broken} cannot be read" in result.stderr, result.stderr[-3000:]
    _, lines = check_train_run(out)
    assert [line["path"] for line in lines if line["type"] == "unreadable"] == [broken]
    training = read_checkpoint_info(out / "best.safetensors").metadata["training"]
    assert training["unreadable"] == {"train": [broken]}


def _eval(root: Path, folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``mfclip eval`` of ``root`` with the bundled demo weights, its JSON report in ``folder``."""
    report_path = folder / "eval.json"
    command = (MFCLIP, "eval", "--data", str(root), "--device", "cpu", "--json", str(report_path))
    return run(*command, check=False), report_path


def test_eval_leaves_unreadable_samples_out_of_its_figures_and_exits_3(damaged, tmp_path):
    root, chosen = damaged
    result, report_path = _eval(root, tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    assert f"test sample {chosen['test'][0]} cannot be read" in result.stderr
    report = check_json_file(report_path, "eval")
    protocol = report["protocol"]
    assert [m["path"] for m in protocol["unreadable"]["test"]] == [chosen["test"][0]]
    assert [m["path"] for m in protocol["unreadable"]["val"]] == [chosen["val"][0]]
    assert protocol["sizes"]["test"] == chosen["test"][1] - 1
    assert schema_errors({**report, "protocol": {**protocol, "unreadable": {"test": []}}}, "eval")
    assert report["overall"]["n"] == chosen["test"][1] - 1


def test_eval_of_a_test_split_left_with_one_class_says_what_is_undefined(tmp_path):
    """Every test real unreadable: the report scores the fakes it has, its AUC undefined and
    said so, never computed over one class."""
    root = make_dataset(tmp_path / "faces", per_class=30)
    reals = [s for s in select(read_dataset(root), "in-domain").test if s.is_real]
    for sample in reals:
        _truncate(root / sample.path)
    result, report_path = _eval(root, tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    report = check_json_file(report_path, "eval")
    assert len(report["protocol"]["unreadable"]["test"]) == len(reals)
    assert report["overall"]["auc"] is None and report["overall"]["n_real"] == 0
    assert "no real faces" in report["undefined"]["why"]
    said = " ".join(result.stderr.split())
    assert "AUC, AP, EER undefined" in said and "(the others could not be read)" in said


def test_calibrate_fits_without_unreadable_samples_and_exits_3(damaged, tmp_path):
    root, chosen = damaged
    out = tmp_path / "calibrated.safetensors"
    result = run(
        MFCLIP, "calibrate", "-w", "mfclip-demo-tiny", "--data", str(root), "--device", "cpu",
        "--out", str(out),
        check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    assert f"val sample {chosen['val'][0]} cannot be read" in result.stderr
    assert f"train sample {chosen['train'][0]} cannot be read" in result.stderr  # OOD's fit
    assert "finished without 2 sample(s)" in result.stderr
    calibration = read_checkpoint_info(out).calibration
    assert calibration["fitted_on"]["samples"] == chosen["val"][1] - 1


def test_ablate_records_each_runs_unreadable_samples_and_exits_3(damaged, tmp_path):
    """An ablation over data with unreadable samples ended 0, its report silent on them (audit
    T5): each run now lists what it could not read, by split, and the command ends 3, also when
    a rerun reuses the finished runs."""
    root, chosen = damaged
    report_path = tmp_path / "ablation.json"
    command = (
        MFCLIP, "ablate", "--data", str(root), "--config", "tiny", "--seeds", "1",
        "--variants", "full", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--out", str(tmp_path / "runs"), "--json", str(report_path),
    )  # fmt: skip
    result = run(*command, check=False)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "finished without 3 sample(s) that could not be read" in result.stderr
    report = check_json_file(report_path, "ablate")
    (only,) = report["variants"]["full"]["per_seed"]
    assert only["unreadable"] == {split: [chosen[split][0]] for split in ("train", "val", "test")}
    again = run(*command, "--force", check=False)
    assert again.returncode == 3, again.stderr[-3000:]
    assert check_json_file(report_path, "ablate")["variants"] == report["variants"]
