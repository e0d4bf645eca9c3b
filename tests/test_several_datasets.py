"""Several datasets at once (``--data A --data B``), the cross-dataset protocol that names the
training data by order, ``--label-map`` on train / eval / calibrate / ablate, and eval's
``--allow-one-class`` TPR-only report."""

import io
import subprocess
from collections import Counter
from pathlib import Path

import cli
import numpy as np
import pytest
from PIL import Image
from report_schemas import check_json_file, check_train_run
from rich.console import Console
from test_train import _face

from mfclip_cli.data import (
    ProtocolError,
    Sample,
    load_protocol,
    parse_protocol,
    read_dataset,
    read_datasets,
    select,
    write_manifest,
)
from mfclip_cli.engines.train.ablate import AblationRequest, _Runner
from mfclip_cli.engines.train.settings import TrainSettings, load_train_settings
from mfclip_cli.errors import UsageError

GENERATORS = {"gan": "checker2", "diffusion": "blur1"}


def _image(path: Path, rng: np.random.Generator, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_face(rng, label, GENERATORS.get(label, ""))).save(path)


def published_split(i: int) -> str:
    return "val" if i % 4 == 0 else "train"


def prepared(root: Path, dataset: str, per_class: int, seed: int, split=None):
    """A folder as ``mfclip prepare`` leaves it: crops and a manifest whose paths are relative to
    it. Every such folder uses the same relative paths, as two prepared datasets do. ``split``:
    none, one for all, or a function of the index within the class."""
    rng = np.random.default_rng(seed)
    samples = []
    for label in ("real", "diffusion", "gan"):
        for i in range(per_class):
            relative = f"crops/{label}/{i:04d}.png"
            _image(root / relative, rng, label)
            samples.append(
                Sample(
                    relative,
                    label,
                    "none" if label == "real" else "efs",
                    GENERATORS.get(label, "camera"),
                    dataset,
                    video=f"clips/{label}{i % 4}" if label == "real" else None,
                    split=split(i) if callable(split) else split,
                )
            )
    write_manifest(root / "manifest.jsonl", samples)
    return root


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    base = tmp_path_factory.mktemp("several")
    return (
        prepared(base / "faces" / "alpha", "alpha", 16, seed=1, split=published_split),
        prepared(base / "faces" / "beta", "beta", 8, seed=2, split=published_split),
    )


def test_one_data_reads_exactly_as_before(two):
    alpha, _ = two
    alone, listed = read_dataset(alpha), read_datasets([str(alpha)])
    assert listed.samples == alone.samples and listed.root == alone.root
    assert listed.sources == ()


def test_several_data_resolve_each_path_against_its_own_folder(two):
    alpha, beta = two
    index = read_datasets([str(alpha), str(beta)])
    assert index.root == alpha.parent.absolute()
    assert len(index) == 16 * 3 + 8 * 3
    paths = [sample.path for sample in index.samples]
    assert len(set(paths)) == len(paths)  # the same relative paths stayed two samples
    assert "alpha/crops/real/0000.png" in paths and "beta/crops/real/0000.png" in paths
    assert all(index.absolute(sample).is_file() for sample in index.samples)
    videos = {sample.video for sample in index.samples if sample.video}
    assert videos == {f"{name}/clips/real{i}" for name in ("alpha", "beta") for i in range(4)}
    assert [(s.given, s.prefix, s.datasets, s.samples) for s in index.sources] == [
        (str(alpha), "alpha", ("alpha",), 48),
        (str(beta), "beta", ("beta",), 24),
    ]
    assert {s.dataset for s in index.samples if s.path.startswith("beta/")} == {"beta"}


def test_the_same_folder_twice_or_a_label_map_on_manifests_is_refused(two, tmp_path):
    alpha, beta = two
    with pytest.raises(UsageError, match="same dataset folder"):
        read_datasets([str(alpha), str(alpha / ".." / "alpha")])
    label_map = tmp_path / "labels.toml"
    label_map.write_text('[DiFF]\nImagen9 = "diffusion"\n')
    with pytest.raises(UsageError, match="prepare the dataset again with --label-map"):
        read_datasets([str(alpha), str(beta)], label_map=label_map)


def test_cross_dataset_ordered_trains_on_the_first_and_tests_on_the_others(two):
    alpha, beta = two
    protocol = load_protocol("cross-dataset-ordered")
    splits = select(read_datasets([str(alpha), str(beta)]), protocol)
    assert splits.held_out == ("beta",)
    assert {s.dataset for s in splits.train + splits.val} == {"alpha"}
    assert {s.dataset for s in splits.test} == {"beta"} and len(splits.test) == 24
    assert list(splits.test_subsets()) == ["beta"]
    swapped = select(read_datasets([str(beta), str(alpha)]), protocol)
    assert swapped.held_out == ("alpha",) and len(swapped.test) == 48
    with pytest.raises(ProtocolError, match="give two or more --data"):
        select(read_datasets([str(alpha)]), protocol)


def test_cross_dataset_ordered_keeps_the_first_datas_published_test_split(tmp_path, two):
    _, beta = two
    published = prepared(tmp_path / "published", "gamma", 12, seed=3, split="test")
    samples = read_dataset(published).samples
    trained = [Sample(**{**s.to_dict(), "split": "train"}) for s in samples[::2]]
    write_manifest(published / "manifest.jsonl", trained + samples[1::2], overwrite=True)
    both = read_datasets([str(published), str(beta)])
    splits = select(both, "cross-dataset-ordered", required=("train", "test"))
    assert all(s.dataset == "beta" for s in splits.test)
    kept = {s.path for s in splits.train + splits.val}
    prefix = both.sources[0].prefix
    assert kept == {f"{prefix}/{s.path}" for s in trained}  # none of its test images trains


def test_a_later_datas_published_test_split_is_its_test(tmp_path, two):
    """Audit H M6: a later --data was tested whole, its train split too, which no benchmark tests
    (DiFF's val/test, Celeb-DF's testing list); a dataset whose publisher gives it no test split
    (beta here: train and val) is still tested whole."""
    alpha, beta = two
    later = prepared(
        tmp_path / "later", "gamma", 8, seed=5, split=lambda i: "test" if i % 2 else "train"
    )
    splits = select(read_datasets([str(alpha), str(later)]), "cross-dataset-ordered")
    assert splits.held_out == ("gamma",) and len(splits.test) == 12
    assert all(s.split == "test" and s.dataset == "gamma" for s in splits.test)
    assert not [s for s in splits.train + splits.val if s.dataset == "gamma"]
    everything = select(read_datasets([str(alpha), str(beta), str(later)]), "cross-dataset-ordered")
    tested = Counter(s.dataset for s in everything.test)
    assert tested == {"beta": 24, "gamma": 12}


def test_a_dataset_name_in_the_first_and_a_later_data_is_refused(two, tmp_path):
    alpha, _ = two
    again = prepared(tmp_path / "alpha-2", "alpha", 4, seed=4)
    with pytest.raises(ProtocolError, match="dataset name.*alpha.*first --data"):
        select(read_datasets([str(alpha), str(again)]), "cross-dataset-ordered")
    with pytest.raises(ProtocolError, match="needs holdout = 'dataset'"):
        parse_protocol({"holdout": "generator", "holdout_values": "after-first"}, name="x")


def test_train_settings_take_one_or_several_data(tmp_path):
    assert TrainSettings(data=["a"], out="-").data == "a"
    assert TrainSettings(data=["a", "b"], out="-").data == ("a", "b")
    settings = tmp_path / "train.toml"
    settings.write_text('[train]\ndata = ["a", "b"]\nlabel_map = "lab.toml"\n')
    loaded = load_train_settings(settings, out="-")
    assert loaded.data == ("a", "b") and loaded.label_map == "lab.toml"
    with pytest.raises(UsageError, match="names no dataset"):
        TrainSettings(data=[], out="-")


def test_ablate_reads_several_data_with_a_label_map(two, tmp_path):
    alpha, beta = two
    diff = diff_tree(tmp_path / "DiFF", per_class=4)
    label_map = write_label_map(tmp_path)
    training = TrainSettings(
        data=(str(alpha), str(diff)), out="-", config="tiny", label_map=str(label_map)
    )
    runner = _Runner(AblationRequest(training=training, device="cpu"), Console(file=io.StringIO()))
    assert [source.layout for source in runner.index.sources] == ["manifest", "diff"]
    assert {s.generator for s in runner.index.samples if s.dataset == "DiFF"} == {"", "Imagen9"}


# ----------------------------------------------------------------------------- the commands


def mfclip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli.mfclip(*args, check=check, timeout=900)


TINY = ("--config", "tiny", "--device", "cpu", "--batch-size", "16", "--lr", "3e-3")
TINY += ("--workers", "0", "--epochs", "1")


def test_train_eval_and_calibrate_on_two_prepared_folders(two, tmp_path):
    alpha, beta = two
    data = ("--data", str(alpha), "--data", str(beta))
    run = tmp_path / "run"
    mfclip("train", *data, "--protocol", "cross-dataset-ordered", "--out", str(run), *TINY)
    saved, _ = check_train_run(run)
    assert saved["data"] == [str(alpha), str(beta)]
    report_path = tmp_path / "eval.json"
    weights = str(run / "best.safetensors")
    eval_args = ("--protocol", "cross-dataset-ordered", "-w", weights, "--device", "cpu")
    mfclip("eval", *data, *eval_args, "--bootstrap", "0", "--json", str(report_path))
    report = check_json_file(report_path, "eval")
    assert report["protocol"]["held_out"] == ["beta"]
    assert report["protocol"]["sizes"]["test"] == 24 and list(report["subsets"]) == ["beta"]
    assert [source["data"] for source in report["data"]["sources"]] == [str(alpha), str(beta)]
    calibrated = tmp_path / "calibrated.safetensors"
    result = mfclip(
        "calibrate", *data, "-w", weights, "--protocol", "cross-dataset-ordered",
        "-o", str(calibrated), "--device", "cpu",
    )  # fmt: skip
    assert calibrated.is_file() and "protocol cross-dataset-ordered" in result.stdout


# ----------------------------------------------------------------------------- --label-map


def diff_tree(root: Path, per_class: int) -> Path:
    """DiFF as published, its fakes from a generator the shipped table lacks (Imagen9)."""
    rng = np.random.default_rng(5)
    for split, count in (("train", per_class * 4), ("val", per_class), ("test", per_class)):
        for i in range(count):
            _image(root / "DiFF_real" / split / f"{i:04d}.png", rng, "real")
            _image(root / split / "T2I" / "Imagen9" / f"{i:04d}.png", rng, "diffusion")
    return root


def write_label_map(folder: Path) -> Path:
    path = folder / "labels.toml"
    path.write_text('[DiFF]\nImagen9 = "diffusion"\n')
    return path


def test_label_map_on_train_calibrate_and_eval(tmp_path):
    diff = diff_tree(tmp_path / "DiFF", per_class=4)
    label_map = str(write_label_map(tmp_path))
    data = ("--data", str(diff), "--protocol", "diff")
    refused = mfclip("eval", *data, "--device", "cpu", check=False)
    assert refused.returncode == 1 and "Imagen9" in refused.stderr  # a data error
    run = tmp_path / "run"
    mfclip("train", *data, "--label-map", label_map, "--out", str(run), *TINY)
    assert check_train_run(run)[0]["label_map"] == label_map
    weights = str(run / "best.safetensors")
    calibrated = tmp_path / "calibrated.safetensors"
    mfclip("calibrate", *data, "--label-map", label_map, "-w", weights, "-o", str(calibrated))
    report_path = tmp_path / "eval.json"
    mfclip(
        "eval", *data, "--label-map", label_map, "-w", str(calibrated), "--device", "cpu",
        "--bootstrap", "0", "--json", str(report_path),
    )  # fmt: skip
    report = check_json_file(report_path, "eval")
    assert report["overall"]["n"] == 8 and list(report["subsets"]) == ["t2i"]


# ----------------------------------------------------------------------------- one-class test


def test_one_class_test_split_is_refused_unless_allowed_then_auc_is_undefined(tmp_path, weights):
    fakes = tmp_path / "fakes"
    rng = np.random.default_rng(6)
    samples = []
    for i in range(6):
        label = ("diffusion", "gan")[i % 2]
        _image(fakes / f"{i}.png", rng, label)
        samples.append(Sample(f"{i}.png", label, "efs", GENERATORS[label], "fakes", split="test"))
    write_manifest(fakes / "manifest.jsonl", samples)
    args = ("eval", "--data", str(fakes), "-w", str(weights), "--device", "cpu")
    refused = mfclip(*args, check=False)
    assert refused.returncode == 2
    assert "the test split has no real faces (real 0, diffusion 3, gan 3)" in refused.stderr
    assert "--allow-one-class" in refused.stderr
    report_path = tmp_path / "eval.json"
    allowed = mfclip(*args, "--allow-one-class", "--bootstrap", "50", "--json", str(report_path))
    report = check_json_file(report_path, "eval")
    assert report["undefined"]["metrics"] == ["auc", "ap", "eer"]
    why = "the test split has no real faces (real 0, diffusion 3, gan 3)"
    assert report["undefined"]["why"] == why
    overall = report["overall"]
    assert overall["auc"] is None and overall["ap"] is None and overall["eer"] is None
    assert overall["fake_acc"] is not None and overall["n_fake"] == 6
    assert "undefined" in allowed.stdout and "AUC, AP, EER undefined" in allowed.stdout
    assert "AUC, AP, EER undefined" in allowed.stderr
