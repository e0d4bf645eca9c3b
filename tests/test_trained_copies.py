"""A checkpoint keeps digests of the bytes of the files it trained and was selected on, and eval
finds copies of them in the data it scores, under other names, in other folders, in other
datasets, where no check by path can see them."""

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import mfclip
from report_schemas import (
    broken,
    check_json_file,
    check_train_run,
    drop,
    schema_errors,
    set_to,
)
from rich.console import Console
from test_train import make_dataset, run, train_args

from mfclip_cli.data import read_dataset, select
from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.contents import content_digests, digest_value, prepared_sources
from mfclip_cli.engines.evaluate.held_out import trained_copies
from mfclip_cli.engines.train.ablate import AblationRequest, run_ablation
from mfclip_cli.engines.train.settings import TrainSettings
from mfclip_cli.errors import CheckpointError
from mfclip_cli.model import (
    build_model,
    load_checkpoint,
    load_model_config,
    read_checkpoint_info,
    save_checkpoint,
)
from mfclip_cli.model.checkpoint import network_sha256, trained_digests


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_files_digest_is_the_start_of_its_sha256_and_an_unreadable_file_is_marked(tmp_path):
    data = make_dataset(tmp_path / "faces", per_class=2)
    index = read_dataset(data)
    (data / index.samples[1].path).unlink()  # gone since it was listed
    contents = content_digests(index, index.samples)
    expected = [
        int.from_bytes(bytes.fromhex(_sha256(data / s.path)[:16]), "little", signed=True)
        for s in index.samples
        if s is not index.samples[1]
    ]
    assert contents.readable.tolist() == [i != 1 for i in range(len(index.samples))]
    assert contents.values[contents.readable].tolist() == expected
    assert contents.from_sources == 0
    assert contents.known().tolist() == sorted(set(expected))


def test_a_prepared_face_is_known_by_its_bytes_and_the_picture_it_was_cropped_from(tmp_path):
    """prepare.jsonl names each source's bytes and its crops: a crop is known by its source
    (one picture prepared in two folders gives two crops that need not be equal) as well as by
    its own bytes (the crops copied elsewhere, or listed by another manifest, audit AO F1); the
    last record of a source written by a --resume wins, and a line cut short is passed over."""
    folder = tmp_path / "prepared"
    (folder / "faces").mkdir(parents=True)
    for name in ("a_0.png", "b_0.png", "c_0.png"):
        (folder / "faces" / name).write_bytes(name.encode())
    first, second, source_b = "1" * 64, "2" * 64, "3" * 64
    lines = [
        {"type": "settings", "crop_size": 128},
        {"source": "a.png", "sha256": first, "faces": [{"path": "faces/a_0.png"}]},
        {"source": "b.png", "sha256": source_b, "faces": [{"path": "faces/b_0.png"}]},
        {"source": "a.png", "sha256": second, "faces": [{"path": "faces/a_0.png"}]},
        {"source": "bad.png", "sha256": None, "faces": []},
        {"source": "odd.png", "sha256": "abc", "faces": [{"path": "faces/c_0.png"}]},
    ]
    log = "".join(json.dumps(line) + "\n" for line in lines)
    # a line of bytes that are no UTF-8, and one cut inside a character (audit AP-3)
    (folder / "prepare.jsonl").write_bytes(log.encode() + b"\xff\xfe\n" + b'{"source": "\xc3')
    sources = prepared_sources(folder)
    assert sources == {"faces/a_0.png": second, "faces/b_0.png": source_b}
    (folder / "manifest.jsonl").write_text(
        "".join(
            json.dumps({"path": f"faces/{name}", "label": "real"}) + "\n"
            for name in ("a_0.png", "b_0.png", "c_0.png")
        )
    )
    other = make_dataset(tmp_path / "other", per_class=1)
    # read alone, and beside another dataset (its paths then under a prefix)
    own = {
        name: digest_value(_sha256(folder / "faces" / name))
        for name in ("a_0.png", "b_0.png", "c_0.png")
    }
    for index in (read_dataset(folder), read_datasets([str(folder), str(other)])):
        contents = content_digests(index, index.samples)
        prefix = "prepared/" if index.sources else ""
        position = {s.path: k for k, s in enumerate(index.samples)}
        for name, source in (("a_0.png", second), ("b_0.png", source_b), ("c_0.png", None)):
            k = position[prefix + "faces/" + name]
            assert contents.values[k] == own[name] and contents.readable[k]
            assert contents.has_source[k] == (source is not None)  # c: not in the log
            assert source is None or contents.sources[k] == digest_value(source)
        assert contents.from_sources == 2
    known = {digest_value(second), digest_value(source_b), *own.values()}
    assert set(contents.known().tolist()) >= known
    # a manifest elsewhere listing the crops by absolute path: known by their own bytes
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "manifest.jsonl").write_text(
        json.dumps({"path": str(folder / "faces" / "a_0.png"), "label": "real"}) + "\n"
    )
    listed = read_dataset(elsewhere)
    mine = content_digests(listed, listed.samples)
    assert mine.matching(np.array([own["a_0.png"]])).tolist() == [True]
    assert mine.from_sources == 0  # no prepare.jsonl beside that manifest
    # a crop deleted since: not read, though its source is known (audit AO F5)
    (folder / "faces" / "b_0.png").unlink()
    index = read_dataset(folder)
    gone = content_digests(index, index.samples)
    assert gone.readable.tolist() == [s.path != "faces/b_0.png" for s in index.samples]
    assert not gone.matching(np.array([digest_value(source_b)])).any()


def test_the_digests_travel_in_the_checkpoint_outside_the_network(tmp_path):
    model = build_model(load_model_config("tiny"))
    digests = {"train": np.array([-5, 3, 9], np.int64), "val": np.array([], np.int64)}
    record = {"of": "sha256[:8]", "train": 3, "val": 0, "unreadable": 0, "from_prepared": 0}
    training = {"data": {"name": "x"}, "protocol": {"name": "in-domain"}, "digests": record}
    plain = save_checkpoint(model, tmp_path / "plain.safetensors")
    kept = save_checkpoint(
        model,
        tmp_path / "kept.safetensors",
        metadata={"training": training},
        trained_digests=digests,
    )
    assert network_sha256(plain.path) == network_sha256(kept.path)  # the same network
    assert plain.sha256 != kept.sha256  # a file that holds more
    load_checkpoint(kept.path)  # the digests are no weights of the model: it builds
    (kept.path.with_suffix(".json")).unlink()  # the header alone says it: the record is in it
    info = read_checkpoint_info(kept.path)
    held = trained_digests(info)
    assert {k: v.tolist() for k, v in held.items()} == {"train": [-5, 3, 9], "val": []}
    assert trained_digests(plain) is None
    # the record and the tensors disagree: the file was altered
    altered = save_checkpoint(
        model,
        tmp_path / "altered.safetensors",
        metadata={"training": {**training, "digests": {**record, "train": 4}}},
        trained_digests=digests,
    )
    with pytest.raises(CheckpointError, match="do not match its training record"):
        trained_digests(altered)
    home = {"MFCLIP_HOME": str(tmp_path / "home")}
    refused = mfclip("weights", "add", str(altered.path), "--name", "altered", env=home)
    assert refused.returncode != 0 and "do not match its training record" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("copies")
    data = make_dataset(root / "ours", per_class=20)
    out = root / "run"
    run(*train_args(data, out, "--epochs", "1", "--batch-size", "8"))
    return data, out / "best.safetensors"


def test_a_trained_checkpoint_keeps_the_digests_of_its_train_and_val_files(trained_run):
    data, best = trained_run
    splits = select(read_dataset(data), "in-domain")
    info = read_checkpoint_info(best)
    held = trained_digests(info)
    for split in ("train", "val"):
        expected = sorted({digest_value(_sha256(data / s.path)) for s in getattr(splits, split)})
        assert held[split].tolist() == expected
        assert info.metadata["training"]["digests"][split] == len(expected)
    last = trained_digests(read_checkpoint_info(best.with_name("last.safetensors")))
    assert all(np.array_equal(last[k], held[k]) for k in held)


def _eval(data, weights, out, *options):
    command = ["eval", "--data", str(data), "-w", str(weights), "--device", "cpu"]
    return mfclip(*command, "--bootstrap", "0", "--json", str(out), *options)


def test_eval_refuses_copies_of_trained_files_in_other_data_unless_allowed(trained_run, tmp_path):
    data, best = trained_run
    ours = select(read_dataset(data), "in-domain")
    other = make_dataset(tmp_path / "theirs", per_class=20, seed=7)
    # our train and val files, copied into another dataset under other names (each val file
    # under several, so that its hash puts some in their test split)
    for k, sample in enumerate([*ours.train, *ours.val * 6]):
        target = other / Path(sample.path).parent / f"copy{k:03d}.png"
        shutil.copy(data / sample.path, target)
    theirs = select(read_dataset(other), "in-domain")
    digests = {
        split: {_sha256(data / s.path) for s in getattr(ours, split)} for split in ("train", "val")
    }

    def copies(samples):
        return {
            split: sum(_sha256(other / s.path) in found for s in samples)
            for split, found in digests.items()
        }

    expected, on_val = copies(theirs.test), copies(theirs.val)
    assert expected["train"] and expected["val"]  # the copies the hash put in their test split
    refused = _eval(other, best, tmp_path / "r.json")
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    total = expected["train"] + expected["val"]  # the synthetic faces are all distinct
    assert (
        f"{total} of the {len(theirs.test)} test samples hold the very bytes of files best "
        f"trained on or was selected with ({expected['train']} in its train split and "
        f"{expected['val']} in its val split)"
    ) in said
    copied = [s for s in theirs.test if any(_sha256(other / s.path) in d for d in digests.values())]
    named = ", ".join(str(other / s.path) for s in copied[:3])
    assert f"whatever their names or data; such as {named}, ...: its figures" in said
    assert "--allow-training-overlap" in said and not (tmp_path / "r.json").exists()
    allowed = _eval(other, best, tmp_path / "a.json", "--allow-training-overlap")
    assert allowed.returncode == 0, allowed.stderr
    assert f"warning: {total} of the {len(theirs.test)} test samples" in allowed.stderr
    report = check_json_file(tmp_path / "a.json", "eval")
    assert report["protocol"]["trained_copies"] == {
        **expected,
        "samples": total,
        "compared": len(theirs.test),
        "unreadable": 0,
        "files": [s.path for s in copied],  # each named, to be left out
    }
    assert report["protocol"]["training_overlap"] is None  # other data: nothing by path
    chosen_on = report["operating_points"]["chosen_on"]["trained_copies"]
    assert chosen_on["train"] == chosen_on["samples"] == on_val["train"]
    assert chosen_on["compared"] == len(theirs.val) and len(chosen_on["files"]) == on_val["train"]
    for field, wrong in [
        ("compared", set_to(-1)),
        ("compared", set_to("1")),
        ("compared", drop),
        ("files", drop),
        ("files", set_to([1])),
    ]:
        assert schema_errors(broken(report, ["protocol", "trained_copies", field], wrong), "eval")
    home = {"MFCLIP_HOME": str(tmp_path / "home")}
    registered = mfclip(
        "weights", "add", str(best), "--name", "x", "--eval", str(tmp_path / "a.json"), env=home
    )
    assert registered.returncode == 2 and "protocol.trained_copies" in registered.stderr


def test_eval_of_the_training_data_itself_compares_every_test_file(trained_run, tmp_path):
    """Its own protocol on its own data: the test split is held out by path, and its files hold
    no bytes of the train or val files (the synthetic faces are all distinct)."""
    data, best = trained_run
    result = _eval(data, best, tmp_path / "own.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "own.json").read_text())
    test = select(read_dataset(data), "in-domain").test
    none = dict.fromkeys(("train", "val", "samples", "unreadable"), 0)
    assert report["protocol"]["trained_copies"] == {**none, "compared": len(test), "files": []}


def test_calibrate_refuses_a_val_split_of_copies_of_trained_files(trained_run, tmp_path):
    data, best = trained_run
    ours = select(read_dataset(data), "in-domain")
    copy = tmp_path / "renamed"
    shutil.copytree(data, copy)
    for sample in ours.train:  # every train file renamed: no path matches, the bytes do
        path = copy / sample.path
        path.rename(path.with_name("t" + path.name))
    out = tmp_path / "calibrated.safetensors"
    command = ["calibrate", "--data", str(copy), "-w", str(best), "--device", "cpu"]
    refused = mfclip(*command, "--out", str(out))
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    copied = len(ours.train)
    renamed = select(read_dataset(copy), "in-domain").val
    expected = sum(Path(s.path).name.startswith("t") for s in renamed)
    assert expected and copied
    assert (
        f"{expected} of the {len(renamed)} val samples hold the very bytes of files best trained "
        "on (" in said
    ), said
    assert "a calibration fitted on them would rest on pictures it trained on" in said
    assert "or --allow-training-overlap to fit on them anyway (the new checkpoint's" in said
    assert not out.exists()


def test_a_checkpoint_without_digests_leaves_the_check_unknown(tmp_path):
    """Checkpoints made before 2.23.0 (or not by training) keep none: null, not 0."""
    torch.manual_seed(0)
    path = tmp_path / "old.safetensors"
    info = save_checkpoint(build_model(load_model_config("tiny")), path)
    assert trained_copies(info, "test", lambda: pytest.fail("nothing to hash")) is None


def test_files_of_equal_bytes_that_do_not_decode_are_no_copies(tmp_path):
    """Two failed downloads (empty files, one error page) hold equal bytes, but neither was
    trained on nor will be scored: only copies that decode are counted (audit AM F6)."""
    data = make_dataset(tmp_path / "faces", per_class=2)
    index = read_dataset(data)
    picture, empty, page = (data / index.samples[k].path for k in range(3))
    empty.write_bytes(b"")
    page.write_bytes(b"<html>404</html>")
    trained = np.array(
        sorted(digest_value(_sha256(path)) for path in (picture, empty, page)), np.int64
    )
    record = {"of": "sha256[:8]", "train": 3, "val": 0, "unreadable": 0, "from_prepared": 0}
    info = save_checkpoint(
        build_model(load_model_config("tiny")),
        tmp_path / "c.safetensors",
        metadata={"training": {"digests": record}},
        trained_digests={"train": trained, "val": np.array([], np.int64)},
    )
    copies = tmp_path / "copies" / "real" / "camera"
    copies.mkdir(parents=True)
    for name, path in (("a.png", picture), ("b.png", empty), ("c.png", page)):
        shutil.copy(path, copies / name)
    scored = read_dataset(tmp_path / "copies")
    found = trained_copies(info, "test", lambda: content_digests(scored, scored.samples))
    assert found.record() == {
        "train": 1,
        "val": 0,
        "samples": 1,
        "compared": 3,
        "unreadable": 0,
        "files": ["real/camera/a.png"],
    }


def test_training_says_val_files_holding_the_bytes_of_train_files(tmp_path):
    """A dataset filing one picture twice under two names: val selects the model and
    calibrates best.safetensors partly on pictures it trains on (audit AO F2), said at the
    start and recorded."""
    data = make_dataset(tmp_path / "faces", per_class=20)
    for path in sorted((data / "real" / "camera").glob("*.png")):
        for k in range(3):
            shutil.copy(path, path.with_name(f"again{k}_{path.name}"))
    splits = select(read_dataset(data), "in-domain")
    train = {_sha256(data / s.path) for s in splits.train}
    expected = sum(_sha256(data / s.path) in train for s in splits.val)
    assert expected
    result = run(*train_args(data, tmp_path / "run", "--epochs", "1", "--batch-size", "8"))
    said = " ".join(result.stderr.split())
    assert (
        f"warning: {expected} of the {len(splits.val)} val samples hold the very bytes of files "
        f"this run trains on ({expected} in its train split)"
    ) in said
    check_train_run(tmp_path / "run")  # every record of the run as its schema says
    info = read_checkpoint_info(tmp_path / "run" / "best.safetensors")
    assert info.metadata["training"]["digests"]["val_copying_train"] == expected
    # its calibration, fitted on them, says so: eval warns, weights add refuses (audit AP-1)
    assert info.calibration["fitted_on"]["trained_copies"]["samples"] == expected
    assert "files" not in info.calibration["fitted_on"]["trained_copies"]  # it travels
    elsewhere = make_dataset(tmp_path / "elsewhere", per_class=8, seed=3)
    scored = _eval(elsewhere, info.path, tmp_path / "e.json")
    assert scored.returncode == 0, scored.stderr
    assert "best was calibrated on val files holding the bytes of files it trained on" in (
        " ".join(scored.stderr.split())
    )
    home = {"MFCLIP_HOME": str(tmp_path / "home")}
    added = mfclip(
        "weights",
        "add",
        str(info.path),
        "--name",
        "b",
        "--eval",
        str(tmp_path / "e.json"),
        env=home,
    )
    assert added.returncode == 2 and "calibration.fitted_on.trained_copies" in added.stderr
    # and the test files eval of it will refuse are said before training (audit AP-4)
    seen = train | {_sha256(data / s.path) for s in splits.val}
    in_test = sum(_sha256(data / s.path) in seen for s in splits.test)
    assert in_test
    assert f"warning: {in_test} of the {len(splits.test)} test samples hold the very bytes" in said
    assert "eval of its checkpoints on this data will refuse them" in said
    assert info.metadata["training"]["digests"]["test_copying_trained"] == in_test


def test_ablate_says_and_records_test_files_holding_the_bytes_of_train_files(tmp_path):
    """Every run of an ablation scores the test split eval would refuse copies in (audit AO
    F2): said once, and recorded in its report."""
    data = make_dataset(tmp_path / "faces", per_class=16)
    for path in sorted((data / "gan").rglob("*.png")):
        shutil.copy(path, path.with_name(f"again_{path.name}"))
    splits = select(read_dataset(data), "in-domain")
    seen = {
        split: {_sha256(data / s.path) for s in getattr(splits, split)}
        for split in ("train", "val")
    }
    expected = {
        split: sum(_sha256(data / s.path) in found for s in splits.test)
        for split, found in seen.items()
    }
    samples = sum(
        any(_sha256(data / s.path) in found for found in seen.values()) for s in splits.test
    )
    assert samples
    training = TrainSettings(
        data=str(data), out="-", config="tiny", epochs=1, batch_size=16, lr=3e-3, workers=0
    )
    console = Console(file=io.StringIO(), width=200)
    request = AblationRequest(
        training=training, device="cpu", out=str(tmp_path / "runs"), variants=("full",)
    )
    report = run_ablation(request, console, console)
    copies = report["protocol"]["trained_copies"]
    assert copies == {**copies, **expected, "samples": samples, "compared": len(splits.test)}
    assert len(copies["files"]) == samples and copies["unreadable"] == 0
    said = " ".join(console.file.getvalue().split())
    assert f"warning: {samples} of the {len(splits.test)} test samples hold the very bytes" in said
    assert "every variant's figures rest partly on pictures it trained on" in said
