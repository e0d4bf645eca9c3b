"""``mfclip scan --weights A --weights B ...``: every checkpoint's verdict on the same detected
faces, run as a subprocess the way an analyst runs it, against single-weights scans."""

import csv
import shutil
from pathlib import Path

import pytest
import torch
from cli import mfclip
from media import astronaut, face_free, mosaic, save_video
from PIL import Image
from report_schemas import check_json_file, check_scan_lines
from rich.console import Console

import mfclip_cli.faces.pipeline as pipeline
from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.writers.csv_report import CSV_COLUMNS
from mfclip_cli.engines.scan.writers.table import TableSink
from mfclip_cli.model import build_detector, build_model, load_model_config, save_checkpoint
from mfclip_cli.model.checkpoint import load_checkpoint
from mfclip_cli.scoring.calibration import temperature_of
from mfclip_cli.scoring.fpr_bounds import fpr_support

NAMES = ("a", "b", "c")  # tiny MFCLIP, tiny MFCLIP calibrated, tiny MC-LCR calibrated
TOLERANCE = 1e-6


def run(*args, **options):
    return mfclip("scan", *args, **options)


def _calibration(temperature: float, threshold: float) -> dict:
    """A made-up calibration whose 1 % threshold its 400 validation reals support."""
    return {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": {"data": "made up for the test", "n_real": 400},
        "thresholds": {
            "fpr:0.01": {
                "fpr": 0.01,
                "threshold": threshold,
                "val_fpr": 0.0,
                "val_tpr": 0.5,
                **fpr_support(0.01, 400, 0),
            }
        },
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny MFCLIPs (one calibrated) and a tiny MC-LCR, which reads 64 px crops, not 128."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    save_checkpoint(build_model(load_model_config("tiny")), folder / "a.safetensors")
    torch.manual_seed(1)
    save_checkpoint(
        build_model(load_model_config("tiny")),
        folder / "b.safetensors",
        calibration=_calibration(2.5, 0.7),
    )
    torch.manual_seed(2)
    save_checkpoint(
        build_detector(load_model_config("mc-lcr-tiny")),
        folder / "c.safetensors",
        calibration=_calibration(0.5, 0.05),
    )
    return {name: folder / f"{name}.safetensors" for name in NAMES}


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    Image.fromarray(astronaut()).save(root / "astronaut.png")
    Image.fromarray(mosaic()).save(root / "mosaic.png")
    Image.fromarray(face_free()).save(root / "face_free.png")
    save_video(root / "clip.mp4", frames=4, fps=4.0)
    return root


def _weights(checkpoints, *names):
    return [argument for name in names for argument in ("--weights", str(checkpoints[name]))]


def _lines(path: Path) -> list[dict]:
    return check_scan_lines(path.read_text().splitlines())


@pytest.fixture(scope="module")
def scans(checkpoints, evidence, tmp_path_factory):
    """Each checkpoint's scan alone, and the three side by side into every report."""
    out = tmp_path_factory.mktemp("reports")
    alone = {}
    for name in NAMES:
        result = run(str(evidence), *_weights(checkpoints, name), "--frames", "2", "--jsonl", "-")
        assert result.returncode == 0, result.stderr
        alone[name] = check_scan_lines(result.stdout.splitlines())
    result = run(
        str(evidence),
        *_weights(checkpoints, *NAMES),
        "--frames",
        "2",
        "--jsonl",
        str(out / "m.jsonl"),
        "--json",
        str(out / "m.json"),
        "--csv",
        str(out / "m.csv"),
        "--html",
        str(out / "m.html"),
    )
    assert result.returncode == 0, result.stderr
    return alone, _lines(out / "m.jsonl"), out


def _files(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["type"] == "file"]


def test_each_detector_says_what_its_checkpoint_says_alone(scans):
    alone, together, _ = scans
    files = _files(together)
    assert sum(len(record["faces"]) for record in files) >= 7  # astronaut, mosaic, frames
    for k, name in enumerate(NAMES):
        single = _files(alone[name])
        assert [r["path"] for r in single] == [r["path"] for r in files]
        for record, reference in zip(files, single):
            assert len(record["faces"]) == len(reference["faces"])
            for face, own in zip(record["faces"], reference["faces"]):
                # detected once: the same faces, whichever checkpoint reads them
                assert (face["box"], face["landmarks"]) == (own["box"], own["landmarks"])
                entry = face["detectors"][k]
                assert entry["weights"] == name
                assert entry["sha256"] == alone[name][0]["weights"]["sha256"]
                for label, value in own["probs"].items():
                    assert abs(entry["probs"][label] - value) <= TOLERANCE
                assert entry["label"] == own["label"]
                assert entry["uncertainty"] == pytest.approx(own["uncertainty"], abs=TOLERANCE)
                assert "ood" not in entry and "ood_distance" not in entry  # no statistics


def test_the_primary_keeps_the_single_scan_record(scans):
    """Without ``detectors`` a face is the first checkpoint's alone, and so is each video's
    summary: pipelines reading ``probs`` and ``label`` see the primary."""
    alone, together, _ = scans
    for record, reference in zip(_files(together), _files(alone["a"])):
        faces = [{k: v for k, v in face.items() if k != "detectors"} for face in record["faces"]]
        assert {**record, "faces": faces} == reference
    meta, single = together[0], alone["a"][0]
    assert meta["weights"] == single["weights"]
    # each compared checkpoint named, with the precision it ran at (as it runs alone)
    assert meta["compared_weights"] == [
        {**alone[name][0]["weights"], "precision": alone[name][0]["precision"]["used"]}
        for name in NAMES
    ]
    assert meta["precision"] == single["precision"]
    assert meta["calibration"] == single["calibration"]
    assert meta["thresholds"] == {**single["thresholds"], "fake_compared": [0.5, 0.5, 0.5]}


def test_every_report_carries_the_detectors(scans, checkpoints):
    _, together, out = scans
    document = check_json_file(out / "m.json", "scan")
    assert document["files"] == [
        {k: v for k, v in line.items() if k != "type"} for line in _files(together)
    ]
    rows = list(csv.DictReader((out / "m.csv").open(encoding="utf-8")))
    header = next(csv.reader((out / "m.csv").open(encoding="utf-8")))
    compared = [
        f"{column}@{k}"
        for k in (1, 2)
        for column in ("real", "diffusion", "gan", "label", "weights_sha256")
    ]
    assert header == [*CSV_COLUMNS, *compared]  # the single-weights columns stay in place
    faces = [face for record in _files(together) for face in record["faces"]]
    face_rows = [row for row in rows if row["face_index"]]
    assert len(face_rows) == len(faces)
    for row, face in zip(face_rows, faces):
        assert float(row["real"]) == face["probs"]["real"] and row["label"] == face["label"]
        for k in (1, 2):
            entry = face["detectors"][k]
            assert [float(row[f"{c}@{k}"]) for c in ("real", "diffusion", "gan")] == list(
                entry["probs"].values()
            )
            assert row[f"label@{k}"] == entry["label"]
            assert row[f"weights_sha256@{k}"] == entry["sha256"]
    page = (out / "m.html").read_text()
    astronaut_face = next(r for r in _files(together) if r["path"].endswith("astronaut.png"))
    entry = astronaut_face["faces"][0]["detectors"][2]
    assert f"#2 c: <strong>{entry['label']}</strong> · real {entry['probs']['real']:.3f}" in page
    assert "#0 a (" in page and "#1 b (" in page  # the run's checkpoints, numbered


@pytest.mark.parametrize("width", [60, 100, 160])
def test_the_table_shows_each_checkpoints_fake_probability(scans, width):
    _, together, _ = scans
    console = Console(width=width, record=True, force_terminal=False)
    sink = TableSink(console)
    sink.begin(together[0])
    for line in _files(together):
        sink.write(FileRecord.from_dict({**line, "path": Path(line["path"]).name}))
    sink.close(together[-1])
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(line for line in lines if "file" in line and "face" in line)
    face = next(r for r in _files(together) if r["path"].endswith("astronaut.png"))["faces"][0]
    fakes = [f"{1 - entry['probs']['real']:.3f}" for entry in face["detectors"]]
    row = next(line for line in lines if "astronaut.png" in line)
    if width >= 90:  # a p(fake) per checkpoint in place of the three probabilities
        assert all(f"#{k} {name}" in header for k, name in enumerate(NAMES))
        assert "real" not in header and "gan" not in header
        assert all(fake in row for fake in fakes)
    else:  # narrow: the primary's p(fake) alone
        assert "p(fake)" in header and "#1" not in header and fakes[0] in row


def test_detection_runs_once_per_image_and_alignment_once_per_geometry(
    checkpoints, evidence, monkeypatch
):
    scorers = []
    for name in NAMES:
        model, info = load_checkpoint(checkpoints[name], inference=True)
        record = {"name": name, "sha256": info.sha256}
        scorers.append(Scorer(model, temperature_of(info.calibration), weights=record))
    scanner = Scanner(scorers, ScanSettings(device="cpu", workers=2), torch.device("cpu"))
    assert scanner.cropper.search.more_crops == ((64, 1.3),)  # a and b share 128 px crops
    detect, align = scanner.cropper.detector.detect, pipeline.align_faces
    detected, aligned = [], []

    def counted_detect(images):
        detected.extend(id(image) for image in images)
        return detect(images)

    def counted_align(image, landmarks, size, margin):
        aligned.append((size, margin))
        return align(image, landmarks, size, margin)

    monkeypatch.setattr(scanner.cropper.detector, "detect", counted_detect)
    monkeypatch.setattr(pipeline, "align_faces", counted_align)
    items = [InputItem(evidence / name) for name in ("astronaut.png", "mosaic.png")]
    records = list(scanner.scan(items))
    assert len(detected) == len(set(detected)) == 2  # one detection per image
    assert sorted(aligned) == sorted([(64, 1.3), (128, 1.3)] * 2)  # one per geometry per image
    assert [len(record.faces) for record in records] == [1, 4]
    for face in records[1].faces:
        assert [entry["weights"] for entry in face.detectors] == list(NAMES)
        assert face.detectors[0]["probs"] == face.probs


def test_explain_and_fpr_thresholds_with_several_checkpoints(checkpoints, evidence, tmp_path):
    """The heatmaps are the primary's (an MFCLIP); with ``fpr:X`` each checkpoint labels at its
    own threshold for that FPR."""
    photo = evidence / "astronaut.png"
    result = run(
        str(photo),
        *_weights(checkpoints, "b", "c"),
        "--fake-threshold",
        "fpr:0.01",
        "--explain",
        str(tmp_path / "why"),
        "--jsonl",
        "-",
    )
    assert result.returncode == 0, result.stderr
    meta, record, _ = check_scan_lines(result.stdout.splitlines())
    assert meta["thresholds"]["fake"] == 0.7 and meta["thresholds"]["fake_compared"] == [0.7, 0.05]
    (face,) = record["faces"]
    assert Path(face["explanation"]).is_file() and face["richest_patch"]
    for entry, threshold in zip(face["detectors"], (0.7, 0.05)):
        assert (entry["label"] == "real") == (1 - entry["probs"]["real"] < threshold)
    assert face["detectors"][0]["label"] == face["label"]

    # a non-MFCLIP primary has no heatmaps; a compared checkpoint without the threshold is named
    refused = run(
        str(photo), *_weights(checkpoints, "c", "a"), "--explain", str(tmp_path / "other")
    )
    assert refused.returncode == 2 and "mc-lcr" in refused.stderr
    refused = run(str(photo), *_weights(checkpoints, "b", "a"), "--fake-threshold", "fpr:0.01")
    assert refused.returncode == 2 and "--weights a: --fake-threshold fpr:0.01" in refused.stderr


def test_one_checkpoint_named_twice_is_a_usage_error_that_writes_nothing(
    checkpoints, evidence, tmp_path
):
    copy = tmp_path / "same-as-a.safetensors"
    shutil.copy(checkpoints["a"], copy)
    out = tmp_path / "out"
    result = run(
        str(evidence / "astronaut.png"),
        *_weights(checkpoints, "a"),
        "--weights",
        str(copy),
        "--jsonl",
        str(out / "r.jsonl"),
        "--csv",
        str(out / "r.csv"),
        "--annotate",
        str(out / "marked"),
    )
    assert result.returncode == 2 and "the same checkpoint" in result.stderr
    assert not out.exists()


def test_resume_needs_the_same_checkpoints_in_the_same_order(
    scans, checkpoints, evidence, tmp_path
):
    _, together, out = scans
    report = tmp_path / "m.jsonl"
    shutil.copy(out / "m.jsonl", report)
    before = report.read_bytes()
    for names in (("a", "b"), ("a", "c", "b"), ("a",)):
        refused = run(
            str(evidence),
            *_weights(checkpoints, *names),
            "--frames",
            "2",
            "--jsonl",
            str(report),
            "--resume",
        )
        assert refused.returncode == 2 and "other settings" in refused.stderr, names
        assert report.read_bytes() == before
    resumed = run(
        str(evidence),
        *_weights(checkpoints, *NAMES),
        "--frames",
        "2",
        "--jsonl",
        str(report),
        "--resume",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(_files(together))} input(s) already recorded" in resumed.stderr
