"""eval and calibrate refuse to score samples a checkpoint was trained or selected with: its own
splits are recomputed from the protocol it records, on the data it was trained on."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli import mfclip
from report_schemas import broken, check_json_file, drop, schema_errors, set_to
from test_train import make_dataset

from mfclip_cli.data import Sample, load_protocol, read_dataset, select, write_manifest
from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.identity import dataset_identity
from mfclip_cli.engines.evaluate.held_out import (
    HeldOutTrained,
    calibration_data_changed,
    calibration_overlap,
    changed_data_overlap,
    held_out_trained,
    refuse_training_overlap,
    trained_protocol,
    training_overlap,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.model import build_model, load_model_config, read_checkpoint_info, save_checkpoint


def _trained_with(data: Path | list[str], protocol: str, path: Path) -> Path:
    """A checkpoint whose training record says: trained on ``data`` (one folder, or several
    read as one in this order) with ``protocol``: the record training writes; its weights are
    random, which this check never reads."""
    index = read_datasets(data if isinstance(data, list) else str(data))
    splits = select(index, protocol)
    torch.manual_seed(0)
    training = {
        "data": {**dataset_identity(index), "layout": index.layout, "counts": index.counts()},
        "protocol": {
            "name": splits.protocol.name,
            "definition": splits.protocol.to_dict(),
            "held_out": list(splits.held_out),
            "sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test")},
        },
    }
    save_checkpoint(build_model(load_model_config("tiny")), path, metadata={"training": training})
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("held-out") / "faces", per_class=12)


@pytest.fixture(scope="module")
def in_domain(data, tmp_path_factory):
    return _trained_with(
        data, "in-domain", tmp_path_factory.mktemp("ckpt") / "in-domain.safetensors"
    )


def _expected(data: Path, trained: str, scored: str, split: str) -> dict[str, int]:
    """The reference: the scored split's samples in each of the trained protocol's splits."""
    index = read_dataset(data)
    own, other = select(index, trained), select(index, scored, ())
    paths = {path for path in (s.path for s in getattr(other, split))}
    return {role: len(paths & {s.path for s in getattr(own, role)}) for role in ("train", "val")}


def test_the_overlap_is_counted_against_the_recomputed_training_splits(data, in_domain, tmp_path):
    index = read_dataset(data)
    info = read_checkpoint_info(in_domain)
    test = select(index, "cross-generator").test
    overlap = training_overlap(info, index, "test", test)
    expected = _expected(data, "in-domain", "cross-generator", "test")
    assert overlap.protocol == "in-domain" and overlap.counts == expected
    assert expected["train"] > 0  # the held-out generators' fakes were trained on in-domain
    # its own protocol's test split is held out by construction
    assert training_overlap(info, index, "test", select(index, "in-domain").test).total == 0
    # the same folder copied under another name (the folder layout names its samples' dataset
    # after the folder): the same data, the same overlap (audit V F12: nothing could be told)
    renamed = tmp_path / "faces-copy"
    shutil.copytree(data, renamed)
    copy = read_dataset(renamed)
    assert {s.dataset for s in copy} == {"faces-copy"}
    copied_test = select(copy, "cross-generator").test
    assert training_overlap(info, copy, "test", copied_test).counts == expected
    # other data (one file less): nothing can be told
    other = read_dataset(data)
    other.samples.pop()
    assert training_overlap(info, other, "test", test) is None


def _eval(data, weights, out, *options):
    command = ["eval", "--data", str(data), "-w", str(weights), "--device", "cpu"]
    return mfclip(*command, "--bootstrap", "0", "--json", str(out), *options)


def test_eval_never_writes_over_the_checkpoint_it_scores(data, in_domain, tmp_path):
    """``--json run/best.json --force`` replaced the checkpoint's sidecar (its training and
    calibration record) with the eval report (audit AI F7): refused, --force or not, before
    anything is scored; so is the checkpoint itself."""
    copy = tmp_path / "best.safetensors"
    shutil.copy(in_domain, copy)
    sidecar = copy.with_suffix(".json")
    sidecar.write_text("{}")
    for target, whose in ((sidecar, "sidecar"), (copy, "weights")):
        refused = _eval(data, copy, target, "--force")
        assert refused.returncode == 2, refused.stderr
        said = " ".join(refused.stderr.split())
        assert f"best.json is {copy}'s sidecar" in said or whose == "weights", said
        assert f"best.safetensors's {whose}: write the report elsewhere" in said
    assert sidecar.read_text() == "{}" and copy.read_bytes() == in_domain.read_bytes()


def test_eval_refuses_a_test_split_the_checkpoint_trained_on(data, in_domain, tmp_path):
    refused = _eval(data, in_domain, tmp_path / "r.json", "--protocol", "cross-generator")
    assert refused.returncode == 2, refused.stderr
    expected = _expected(data, "in-domain", "cross-generator", "test")
    assert f"{expected['train']} in its train split" in refused.stderr
    assert "--allow-training-overlap" in refused.stderr and not (tmp_path / "r.json").exists()
    allowed = _eval(
        data,
        in_domain,
        tmp_path / "allowed.json",
        "--protocol",
        "cross-generator",
        "--allow-training-overlap",
    )
    assert allowed.returncode == 0, allowed.stderr
    total = expected["train"] + expected["val"]
    assert f"warning: {total} of the " in allowed.stderr and "scored anyway" in allowed.stderr
    report = check_json_file(tmp_path / "allowed.json", "eval")
    assert report["protocol"]["training_overlap"] == {"protocol": "in-domain", **expected}
    # and the generators it holds out are ones the checkpoint trained on (audit AI F3)
    held_out = report["protocol"]["held_out"]
    trained = {s.generator for s in select(read_dataset(data), "in-domain").train}
    assert held_out and set(held_out) <= trained
    assert report["protocol"]["held_out_trained"] == {"values": held_out, "exact": True}
    assert f"which holds out generator {', '.join(held_out)}" in " ".join(allowed.stderr.split())
    for wrong in (set_to(-1), set_to("3"), drop):
        assert schema_errors(broken(report, ["protocol", "training_overlap", "val"], wrong), "eval")
    # no --protocol: the checkpoint's own, on the data it was trained on
    default = _eval(data, in_domain, tmp_path / "default.json")
    assert default.returncode == 0, default.stderr
    assert "protocol: in-domain, the one the checkpoint was trained with" in default.stderr
    report = json.loads((tmp_path / "default.json").read_text())
    assert report["protocol"]["training_overlap"] == {"protocol": "in-domain", "train": 0, "val": 0}
    assert report["protocol"]["held_out_trained"] is None  # nothing held out


def test_a_cross_generator_figure_of_generators_it_trained_on_is_said(tmp_path):
    """DiFF's test images are other files than its train images: a checkpoint trained in-domain,
    on every generator, scored under cross-generator overlapped nothing, and its figure read as
    one on held-out generators, without a word (audit AI F3). What it trained on of them is
    told from its own train split on this data, or, on other data, from its training data's
    recorded counts, less what its own protocol held out."""
    from test_layouts import diff_tree

    root = tmp_path / "DiFF"
    diff_tree(root)
    index = read_dataset(root)
    cross = load_protocol("cross-generator")
    splits = select(index, cross, ())
    train = {s.generator for s in select(index, "in-domain").train}
    expected = [value for value in splits.held_out if value in train]
    assert expected and training_overlap(
        read_checkpoint_info(_trained_with(root, "in-domain", tmp_path / "a.safetensors")),
        index, "test", splits.test,
    ).total == 0  # fmt: skip
    info = read_checkpoint_info(tmp_path / "a.safetensors")
    assert held_out_trained(info, index, cross, splits) == HeldOutTrained(expected, exact=True)
    trained_so = read_checkpoint_info(_trained_with(root, cross.name, tmp_path / "b.safetensors"))
    assert held_out_trained(trained_so, index, cross, splits) == HeldOutTrained([], exact=True)
    # other data (a file more): from the counts it recorded, every generator of its data
    (root / "test/T2I/HPS/h2.png").write_bytes((root / "test/T2I/HPS/h.png").read_bytes())
    grown = read_dataset(root)
    grown_splits = select(grown, cross, ())
    told = held_out_trained(info, grown, cross, grown_splits)
    assert told == HeldOutTrained(list(grown_splits.held_out), exact=False)
    assert held_out_trained(trained_so, grown, cross, grown_splits).values == []
    in_domain = load_protocol("in-domain")
    assert held_out_trained(info, index, in_domain, select(index, in_domain)) is None


def test_the_training_data_grown_since_is_said_with_the_overlap_it_may_hold(
    data, in_domain, tmp_path
):
    """Audit Y F3: one file added to the training folder turned the held-out check off without
    a word, and eval scored training faces as test. Who was trained on cannot be told exactly
    now, but the recorded protocol splits by a stable hash: the overlap it gives is an upper
    bound, said on stderr."""
    grown = tmp_path / "grown" / data.name  # the folder's recorded name
    shutil.copytree(data, grown)
    first = sorted((grown / "real").rglob("*.png"))[0]
    shutil.copy(first, first.with_name("added_" + first.name))
    info, index = read_checkpoint_info(in_domain), read_dataset(grown)
    test = select(index, "cross-generator", ()).test
    assert training_overlap(info, index, "test", test) is None  # other data: nothing exact
    changed = changed_data_overlap(info, index, "test", test)
    estimate, then = changed.estimate, changed.samples_then
    expected = _expected(data, "in-domain", "cross-generator", "test")
    assert then == len(read_dataset(data).samples) == len(index.samples) - 1
    assert changed.samples_now == then + 1
    assert all(estimate.counts[role] >= expected[role] for role in expected)
    report_path = tmp_path / "r.json"
    said = _eval(grown, in_domain, report_path, "--protocol", "cross-generator")
    assert said.returncode == 0, said.stderr
    assert f"up to {estimate.total} of the {len(test)} test samples" in said.stderr
    assert f"({then} samples, {then + 1} now" in said.stderr
    # the report keeps it (2.11.0), and the weights store will not take its figures as held out
    report = check_json_file(report_path, "eval")
    assert report["protocol"]["training_overlap"] is None
    assert report["protocol"]["changed_data_overlap"] == {
        "protocol": "in-domain",
        **estimate.counts,
        "samples_then": then,
        "samples_now": then + 1,
        "split_named": 0,  # the folder names no split: the protocol's hash decides every one
    }
    for wrong in (set_to(-1), drop):
        path = ["protocol", "changed_data_overlap", "samples_now"]
        assert schema_errors(broken(report, path, wrong), "eval")
    registered = mfclip(
        "weights", "add", str(in_domain), "--name", "grown", "--eval", str(report_path)
    )
    assert registered.returncode == 2, registered.stderr
    assert f"up to {estimate.total} test sample(s)" in " ".join(registered.stderr.split())
    # other data altogether (another folder name) says nothing of the kind
    elsewhere = tmp_path / "other"
    shutil.copytree(grown, elsewhere)
    assert changed_data_overlap(info, read_dataset(elsewhere), "test", test) is None
    # nor another dataset in a folder of that name, its size not within a factor 2 (audit R F3)
    small = tmp_path / "small" / data.name
    small.mkdir(parents=True)
    for kept in sorted(p for p in data.rglob("*.png"))[: len(index.samples) // 3]:
        (small / kept.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(kept, small / kept.relative_to(data))
    other = read_dataset(small)
    assert changed_data_overlap(info, other, "test", other.samples) is None
    held = _eval(data, in_domain, tmp_path / "held.json")  # the very data: nothing changed
    assert held.returncode == 0, held.stderr
    assert (
        json.loads((tmp_path / "held.json").read_text())["protocol"]["changed_data_overlap"] is None
    )


def test_a_split_column_edited_since_training_is_said_to_escape_the_bound(data, tmp_path):
    """The bound on a changed training folder recomputes the recorded protocol's splits there:
    a manifest whose split column was edited since (train samples moved to test) put them in
    test again, so the bound said 0 and eval scored trained faces as held out, without a word.
    The samples whose split the data names are counted apart, said, and refused by the store."""
    folder = tmp_path / "named" / "faces"
    shutil.copytree(data, folder)
    index = read_dataset(data)
    assigned = select(index, "in-domain")
    split_of = {s.path: name for name in ("train", "val", "test") for s in getattr(assigned, name)}
    samples = [replace(s, split=split_of[s.path]) for s in index.samples if s.path in split_of]
    write_manifest(folder / "manifest.jsonl", samples)
    weights = _trained_with(folder, "in-domain", tmp_path / "named.safetensors")
    moved = {s.path for s in assigned.train[:3]}  # trained on, then relabelled test in place
    edited = [replace(s, split="test") if s.path in moved else s for s in samples]
    write_manifest(folder / "manifest.jsonl", edited, overwrite=True)
    info, now = read_checkpoint_info(weights), read_dataset(folder)
    test = select(now, "in-domain", ()).test
    assert moved <= {s.path for s in test}
    changed = changed_data_overlap(info, now, "test", test)
    assert changed.estimate.total == 0  # the bound cannot see them
    assert changed.split_named == len(test)
    report_path = tmp_path / "r.json"
    said = _eval(folder, weights, report_path, "--protocol", "in-domain")
    assert said.returncode == 0, said.stderr
    words = " ".join(said.stderr.split())
    assert f"{len(test)} of them have their split named by the data" in words, words
    recorded = check_json_file(report_path, "eval")["protocol"]["changed_data_overlap"]
    assert recorded["split_named"] == len(test) and recorded["train"] == 0
    registered = mfclip("weights", "add", str(weights), "--name", "n", "--eval", str(report_path))
    assert registered.returncode == 2, registered.stderr
    assert "changed_data_overlap.split_named" in " ".join(registered.stderr.split())


def test_a_checkpoint_copied_without_its_sidecar_still_knows_its_training(
    data, in_domain, tmp_path
):
    """The record lived in the sidecar only: the checkpoint copied alone was scored on faces it
    was trained on without a word. Its header holds the data and protocol now."""
    alone = tmp_path / "copied.safetensors"
    alone.write_bytes(in_domain.read_bytes())
    refused = _eval(data, alone, tmp_path / "r.json", "--protocol", "cross-generator")
    assert refused.returncode == 2 and "in its train split" in refused.stderr
    # one that records nothing (not made by mfclip train) is said to be unchecked
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(build_model(load_model_config("tiny")), bare)
    result = _eval(data, bare, tmp_path / "b.json", "--protocol", "cross-generator")
    assert result.returncode == 0, result.stderr
    assert "bare carries no record of its training" in result.stderr
    assert "whether the test split holds faces it was trained on cannot be told" in result.stderr
    kept = _eval(data, in_domain, tmp_path / "kept.json", "--allow-training-overlap")
    assert "no record of its training" not in kept.stderr


def test_calibrate_refuses_a_val_split_the_checkpoint_trained_on(data, tmp_path):
    """A cross-generator checkpoint calibrated on in-domain's val: the held-in generators' fakes
    there are in its train split (both protocols split by the same hash)."""
    weights = _trained_with(data, "cross-generator", tmp_path / "cg.safetensors")
    expected = _expected(data, "cross-generator", "in-domain", "val")["train"]
    assert expected > 0
    command = ["calibrate", "--data", str(data), "-w", str(weights), "--device", "cpu"]
    refused = mfclip(*command, "--protocol", "in-domain", "-o", str(tmp_path / "c.safetensors"))
    assert refused.returncode == 2, refused.stderr
    assert "the val split of protocol 'in-domain' holds samples" in refused.stderr
    assert f"({expected} in its train split," in refused.stderr
    assert not (tmp_path / "c.safetensors").exists()
    # no --protocol: the checkpoint's own val split, which it never trained on
    own = mfclip(*command, "-o", str(tmp_path / "own.safetensors"))
    assert own.returncode == 0, own.stderr
    assert "protocol: cross-generator, the one the checkpoint was trained with" in own.stderr


def test_calibrate_refuses_a_val_split_holding_the_checkpoints_own_test_faces(data, tmp_path):
    """Audit Y F6: an in-domain checkpoint calibrated under cross-generator had its
    temperature, band and thresholds fitted on its own in-domain test faces; eval then reported
    calibrated figures on them as held out."""
    weights = _trained_with(data, "in-domain", tmp_path / "id.safetensors")
    index = read_dataset(data)
    own_test = {s.path for s in select(index, "in-domain").test}
    other_val = select(index, "cross-generator", ()).val
    expected = {
        "train": _expected(data, "in-domain", "cross-generator", "val")["train"],
        "test": sum(s.path in own_test for s in other_val),
    }
    assert expected["test"] > 0
    overlap = training_overlap(read_checkpoint_info(weights), index, "val", other_val)
    assert overlap.counts == expected
    command = ["calibrate", "--data", str(data), "-w", str(weights), "--device", "cpu"]
    out = tmp_path / "c.safetensors"
    refused = mfclip(*command, "--protocol", "cross-generator", "-o", str(out))
    assert refused.returncode == 2 and f"{expected['test']} in its test split" in refused.stderr
    assert "is tested on" in refused.stderr and not out.exists()


def test_the_order_of_several_data_does_not_hide_an_overlap(tmp_path):
    """cross-dataset-ordered trains on the first --data: named the other way round at eval, its
    test split would be the training data. The checkpoint's held-out datasets are pinned to
    those it held out, so the overlap is found whatever the order."""
    first = make_dataset(tmp_path / "alpha", per_class=6)
    second = make_dataset(tmp_path / "beta", per_class=6, seed=1)
    weights = _trained_with(
        [str(first), str(second)], "cross-dataset-ordered", tmp_path / "w.safetensors"
    )
    splits = select(read_datasets([str(first), str(second)]), "cross-dataset-ordered")
    info = read_checkpoint_info(weights)
    swapped = read_datasets([str(second), str(first)])
    test = select(swapped, "cross-dataset-ordered").test  # alpha: what it trained on
    overlap = training_overlap(info, swapped, "test", test)
    assert overlap is not None and overlap.counts["train"] == len(splits.train)
    # its own protocol, pinned, tests beta whatever the order
    own = select(swapped, trained_protocol(info, swapped))
    assert {s.path for s in own.test} == {s.path for s in splits.test}
    assert training_overlap(info, swapped, "test", own.test).total == 0


def test_calibrate_says_a_train_split_holding_the_checkpoints_own_test_faces(data, tmp_path):
    """Audit Y F6, its other half: calibrate fits the OOD statistics and the generator
    fingerprints on its protocol's train split; under another protocol that split held the
    checkpoint's own test faces, which eval then found in-distribution and attributed as seen."""
    weights = _trained_with(data, "in-domain", tmp_path / "id.safetensors")
    index = read_dataset(data)
    own_test = {s.path for s in select(index, "in-domain").test}
    other_train = select(index, "cross-generator", ()).train
    expected = sum(s.path in own_test for s in other_train)
    assert expected > 0
    overlap = training_overlap(read_checkpoint_info(weights), index, "train", other_train)
    assert overlap.counts == {"test": expected}
    with pytest.raises(
        UsageError,
        match=f"the train split of protocol 'cross-generator' holds "
        f"samples this checkpoint is tested on \\({expected} in its test split",
    ):
        refuse_training_overlap(overlap, "train", "cross-generator")
    command = ["calibrate", "--data", str(data), "-w", str(weights), "--device", "cpu"]
    out = tmp_path / "c.safetensors"
    allowed = mfclip(
        *command, "--protocol", "cross-generator", "--allow-training-overlap", "-o", str(out)
    )
    assert allowed.returncode == 0, allowed.stderr
    said = " ".join(allowed.stderr.split())
    assert (
        f"warning: {expected} of the {len(other_train)} train samples are not held out from "
        f"id ({expected} in its test split, under its training protocol in-domain): fitted on "
        "anyway" in said
    ), said
    assert "val samples are not held out" in said  # its val split's own overlap, said apart
    # kept in the checkpoint written, said by eval of it, refused by the store (audit R F4)
    fitted_on = read_checkpoint_info(out).calibration["fitted_on"]
    assert fitted_on["training_overlap"]["protocol"] == "in-domain"
    assert fitted_on["training_overlap"]["train"] == {"test": expected}
    report = tmp_path / "calibrated-eval.json"
    # its own in-domain test faces are in the train split calibrated on: allowed, said
    evaluated = _eval(data, out, report, "--allow-training-overlap")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "was calibrated with --allow-training-overlap" in " ".join(evaluated.stderr.split())
    registered = mfclip("weights", "add", str(out), "--name", "calibrated", "--eval", str(report))
    assert registered.returncode == 2 and "calibrated on samples of its own" in registered.stderr
    # its own protocol: neither split holds its test faces, nothing is said
    own = mfclip(*command, "-o", str(tmp_path / "own.safetensors"))
    assert own.returncode == 0 and "not held out" not in own.stderr, own.stderr


def test_eval_refuses_a_test_split_its_calibration_was_fitted_on(data, tmp_path):
    """Audit R, left then: a checkpoint trained elsewhere and calibrated on this data under
    in-domain, evaluated under cross-generator. The held-out generators' fakes of that test
    split are those in-domain fitted the OOD statistics and fingerprints (train) and the
    temperature, band and thresholds (val) on: its calibrated figures were not held out."""
    elsewhere = make_dataset(tmp_path / "elsewhere", per_class=16, seed=3)
    weights = _trained_with(elsewhere, "in-domain", tmp_path / "w.safetensors")
    calibrated = tmp_path / "calibrated.safetensors"
    done = mfclip(
        "calibrate", "--data", str(data), "-w", str(weights), "--device", "cpu",
        "--protocol", "in-domain", "-o", str(calibrated),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    index = read_dataset(data)
    info = read_checkpoint_info(calibrated)
    assert info.calibration["fitted_on"]["protocol_definition"]["name"] == "in-domain"
    expected = _expected(data, "in-domain", "cross-generator", "test")
    assert expected["train"] > 0
    test = select(index, "cross-generator").test
    assert calibration_overlap(info, index, test).record() == {"protocol": "in-domain", **expected}
    assert calibration_overlap(info, index, select(index, "in-domain").test).total == 0
    # recorded by name only (calibrations before 2.12.0): the shipped protocol of that name
    fitted = {k: v for k, v in info.calibration["fitted_on"].items() if k != "protocol_definition"}
    legacy = replace(info, calibration={**info.calibration, "fitted_on": fitted})
    assert calibration_overlap(legacy, index, test).counts == expected
    # other data, or no calibration: nothing can be told
    other = read_dataset(data)
    other.samples.pop()
    assert calibration_overlap(info, other, test) is None
    assert calibration_overlap(read_checkpoint_info(weights), index, test) is None

    refused = _eval(data, calibrated, tmp_path / "r.json", "--protocol", "cross-generator")
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "holds samples this checkpoint's calibration was fitted on" in said, said
    assert f"({expected['train']} in its train split (OOD statistics" in said
    assert "calibrate it again under cross-generator" in said
    assert not (tmp_path / "r.json").exists()
    report = tmp_path / "allowed.json"
    allowed = _eval(
        data, calibrated, report, "--protocol", "cross-generator", "--allow-training-overlap"
    )
    assert allowed.returncode == 0, allowed.stderr
    total = expected["train"] + expected["val"]
    said = " ".join(allowed.stderr.split())
    assert f"warning: {total} of the {len(test)} test samples are not held out from" in said
    recorded = check_json_file(report, "eval")["protocol"]["calibration_overlap"]
    assert recorded == {"protocol": "in-domain", **expected}
    document = json.loads(report.read_text())
    for wrong in (set_to(-1), drop):
        path = ["protocol", "calibration_overlap", "train"]
        assert schema_errors(broken(document, path, wrong), "eval")
    registered = mfclip("weights", "add", str(calibrated), "--name", "cal", "--eval", str(report))
    assert registered.returncode == 2, registered.stderr
    assert "protocol.calibration_overlap" in " ".join(registered.stderr.split())
    # the protocol it was calibrated under: held out by construction
    own = _eval(data, calibrated, tmp_path / "own.json", "--protocol", "in-domain")
    assert own.returncode == 0, own.stderr
    recorded = json.loads((tmp_path / "own.json").read_text())["protocol"]["calibration_overlap"]
    assert recorded == {"protocol": "in-domain", "train": 0, "val": 0}


def test_a_calibration_on_data_changed_since_is_said_to_be_unchecked(data, tmp_path):
    """Audit N M1: the data a calibration was fitted on, edited in place since (a split column
    changed, a file removed), turned the held-out check off without a word: its calibrated
    figures may rest on the very faces scored. It is said on stderr."""
    faces = shutil.copytree(data, tmp_path / "faces")
    weights = _trained_with(
        make_dataset(tmp_path / "elsewhere", per_class=16, seed=3),
        "in-domain",
        tmp_path / "w.safetensors",
    )
    calibrated = tmp_path / "calibrated.safetensors"
    done = mfclip(
        "calibrate", "--data", str(faces), "-w", str(weights), "--device", "cpu",
        "-o", str(calibrated),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = read_checkpoint_info(calibrated)
    assert calibration_data_changed(info, read_dataset(faces)) is None  # as it was: checked
    removed = next((faces / "real" / "camera").iterdir())
    removed.unlink()
    changed = read_dataset(faces)
    assert calibration_data_changed(info, changed) == {
        "samples_then": len(changed.samples) + 1,
        "samples_now": len(changed.samples),
    }
    moved = shutil.copytree(faces, tmp_path / "other-name")  # another folder: not this data
    assert calibration_data_changed(info, read_dataset(moved)) is None
    evaluated = _eval(faces, calibrated, tmp_path / "r.json")
    assert evaluated.returncode == 0, evaluated.stderr
    said = " ".join(evaluated.stderr.split())
    assert "calibration was fitted on faces as it was then" in said, said
    assert f"({len(changed.samples) + 1} samples, {len(changed.samples)} now" in said
    protocol = check_json_file(tmp_path / "r.json", "eval")["protocol"]
    assert protocol["calibration_overlap"] is None  # recorded, not only said (audit P L5)
    assert protocol["calibration_data_changed"] == {
        "samples_then": len(changed.samples) + 1,
        "samples_now": len(changed.samples),
    }
    other_data = make_dataset(tmp_path / "another" / "faces", per_class=3, seed=5)
    assert calibration_data_changed(info, read_dataset(other_data)) is None  # a name only


def test_eval_refuses_a_val_split_it_would_choose_thresholds_on_that_it_trained_on(
    data, in_domain, tmp_path
):
    """Audit E F2: under a protocol of other fractions, eval's val split (where it chooses the
    operating-point thresholds and bounds their FPR) held the checkpoint's training faces,
    silently; its test split may be held out all the same."""
    bigval = tmp_path / "bigval.toml"
    bigval.write_text(
        'description = "in-domain with a bigger val"\nval_fraction = 0.6\ntest_fraction = 0.2\n'
        "use_layout_split = true\nseed = 0\n"
    )
    index = read_dataset(data)
    own, other = select(index, "in-domain"), select(index, str(bigval), ())
    trained = {s.path for s in own.train}
    expected = sum(s.path in trained for s in other.val)
    assert expected > 0
    overlap = training_overlap(
        read_checkpoint_info(in_domain), index, "val", other.val, roles=("train",)
    )
    assert overlap.counts == {"train": expected}
    refused = _eval(data, in_domain, tmp_path / "r.json", "--protocol", str(bigval))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2, said
    assert "the val split of protocol 'bigval' holds samples this checkpoint trained on" in said
    assert f"({expected} in its train split" in said and "operating-point thresholds" in said
    report = tmp_path / "allowed.json"
    allowed = _eval(data, in_domain, report, "--protocol", str(bigval), "--allow-training-overlap")
    assert allowed.returncode == 0, allowed.stderr
    assert "where the operating-point thresholds are chosen" in " ".join(allowed.stderr.split())
    chosen_on = check_json_file(report, "eval")["operating_points"]["chosen_on"]
    assert chosen_on["training_overlap"] == {"protocol": "in-domain", "train": expected}
    registered = mfclip("weights", "add", str(in_domain), "--name", "x", "--eval", str(report))
    assert registered.returncode == 2 and "chosen_on.training_overlap" in registered.stderr
    # its own protocol: held out by construction, recorded as 0
    own_report = tmp_path / "own.json"
    assert _eval(data, in_domain, own_report).returncode == 0
    chosen_on = json.loads(own_report.read_text())["operating_points"]["chosen_on"]
    assert chosen_on["training_overlap"] == {"protocol": "in-domain", "train": 0}


def test_a_calibration_by_training_is_checked_against_the_training_protocol(data, tmp_path):
    """Training calibrates its best checkpoint on its own val split and records the protocol by
    name only in the calibration: a protocol file of the user's (not shipped) is found whole in
    the training record, not looked up by name (where it would not be found, or be another)."""
    mine = tmp_path / "mine.toml"
    mine.write_text('description = "mine"\nval_fraction = 0.1\ntest_fraction = 0.2\n')
    bigtest = tmp_path / "bigtest.toml"
    bigtest.write_text('description = "a bigger test"\nval_fraction = 0.1\ntest_fraction = 0.4\n')
    weights = _trained_with(data, str(mine), tmp_path / "w.safetensors")
    info = read_checkpoint_info(weights)
    index = read_dataset(data)
    calibration = {"fitted_on": {"data": dataset_identity(index), "protocol": "mine"}}
    info = replace(info, calibration=calibration)
    test = select(index, str(bigtest)).test
    expected = _expected(data, str(mine), str(bigtest), "test")
    assert sum(expected.values()) > 0
    assert calibration_overlap(info, index, test).record() == {"protocol": "mine", **expected}


def test_a_report_row_of_one_class_is_said():
    """A generator whose paired reals the download lacks was scored on its fakes alone, its
    AUC and the mean's shown "-" without a word (audit AJ J4)."""
    from mfclip_cli.engines.evaluate.evaluation import _one_class_rows

    def faces(*labels):
        return [Sample(f"{i}.png", label, "none" if label == "real" else "t2i")
                for i, label in enumerate(labels)]  # fmt: skip

    rows = {"ADM": faces("diffusion", "diffusion", "gan"), "SDXL": faces("real", "diffusion")}
    said = _one_class_rows(rows)
    assert said.startswith("warning: 1 report row(s) hold one class: ADM (no real faces);")
    assert _one_class_rows({"SDXL": rows["SDXL"]}) is None
