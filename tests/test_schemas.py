"""The published report contract: the shipped JSON Schemas, the command that prints them, and
records that break them. Every test that writes a report validates it (report_schemas.py)."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from media import astronaut
from PIL import Image
from report_schemas import check, check_scan_lines, schema_errors

from mfclip_cli.schemas import SCHEMA_NAMES, SCHEMA_VERSION, load_schema, schema_text

MFCLIP = str(Path(sys.executable).with_name("mfclip"))


def _mfclip(*args, cwd=None):
    return subprocess.run([MFCLIP, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_shipped_schema_is_draft_2020_12_and_reads_its_major_version(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    major = SCHEMA_VERSION.split(".")[0]
    assert schema["$id"] == f"urn:mfclip:schema:{name}:{major}"
    versions = [
        definition["properties"]["schema_version"]["pattern"]
        for definition in schema["$defs"].values()
        if "schema_version" in definition.get("properties", {})
    ]
    assert versions and set(versions) == {rf"^{major}\.[0-9]+\.[0-9]+$"}


def test_the_schema_command_prints_the_shipped_schema(tmp_path):
    for name in SCHEMA_NAMES:
        printed = _mfclip("schema", name, cwd=tmp_path)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == schema_text(name) and json.loads(printed.stdout)
    unknown = _mfclip("schema", "train", cwd=tmp_path)
    flat = " ".join(unknown.stderr.replace("│", " ").split())  # out of its wrapped box
    assert unknown.returncode == 2 and "no schema named 'train'; mfclip ships scan, eval" in flat


def test_the_blocks_two_schemas_share_are_the_same():
    """Each schema stands alone (a consumer loads one file), so the blocks the scan and eval
    schemas both define (probs, weights, calibration, fitted_on, ...) must not drift apart."""
    scan, evaluation = (load_schema(name)["$defs"] for name in ("scan", "eval"))
    shared = sorted(set(scan) & set(evaluation))
    assert {"probs", "weights", "calibration_summary", "fitted_on", "fpr_support"} <= set(shared)
    assert [name for name in shared if scan[name] != evaluation[name]] == []


@pytest.fixture(scope="module")
def scan_report(weights, tmp_path_factory):
    """One real scan with the optional records on (--stability, --duplicates, provenance): a
    face, the same face re-encoded, an unreadable file; the JSON Lines and the JSON document."""
    root = tmp_path_factory.mktemp("schema-scan")
    Image.fromarray(astronaut()).save(root / "astronaut.png")
    Image.fromarray(astronaut()).save(root / "astronaut75.jpg", quality=75)
    (root / "empty.jpg").write_bytes(b"")
    names = [str(root / name) for name in ("astronaut.png", "astronaut75.jpg", "empty.jpg")]
    lines, document = root / "r.jsonl", root / "r.json"
    result = _mfclip(
        "scan", *names, "--weights", str(weights), "--stability", "--duplicates",
        "--jsonl", str(lines), "--json", str(document), "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    records = check_scan_lines(lines.read_text().splitlines())
    return records, check(json.loads(document.read_text()), "scan")


def test_every_scan_record_names_its_schema_version(scan_report):
    (meta, *files, end), document = scan_report
    assert meta["schema_version"] == document["meta"]["schema_version"] == SCHEMA_VERSION
    assert [record["type"] for record in files] == ["file"] * 3 and end["type"] == "end"
    assert end["duplicates"] and files[0]["provenance"] and files[0]["faces"][0]["stability"]


def _broken(record, path, change):
    """A deep copy of ``record`` with ``change(container, key)`` applied at ``path``."""
    broken = copy.deepcopy(record)
    container = broken
    for key in path[:-1]:
        container = container[key]
    change(container, path[-1])
    return broken


def _add(container, key):
    container[key] = "not in the contract"


def _drop(container, key):
    del container[key]


def _records(scan_report) -> dict:
    (meta, face_file, _, _, end), document = scan_report
    return {"meta": meta, "file": face_file, "end": end, "document": document}


@pytest.mark.parametrize(
    "which, path",
    [
        ("meta", ["provenance_of_the_run"]),
        ("meta", ["thresholds", "fake_maybe"]),
        ("meta", ["calibration", "surprise"]),
        ("meta", ["verdicts", "mood"]),
        ("meta", ["precision", "bits"]),
        ("meta", ["provenance", "checks", "exif"]),
        ("meta", ["attribution", "generators"]),
        ("file", ["faces", 0, "mood"]),
        ("file", ["faces", 0, "stability", "jpeg:10"]),
        ("file", ["camera"]),
        ("file", ["provenance", "c2pa", "verdict"]),
        ("file", ["provenance", "watermark", "strength"]),
        ("end", ["duration"]),
        ("end", ["duplicates", 0, "mean_distance"]),
        ("document", ["meta", "extra"]),
        ("document", ["files", 0, "faces", 0, "probs", "human"]),
    ],
)
def test_an_unknown_field_fails_validation(scan_report, which, path):
    record = _records(scan_report)[which]
    assert schema_errors(record, "scan") == []
    assert schema_errors(_broken(record, path, _add), "scan") != []


@pytest.mark.parametrize(
    "which, path",
    [
        ("meta", ["schema_version"]),
        ("meta", ["weights", "sha256"]),
        ("meta", ["verdicts"]),
        ("meta", ["precision", "used"]),
        ("meta", ["provenance"]),
        ("meta", ["attribution", "reason"]),
        ("file", ["status"]),
        ("file", ["faces", 0, "probs"]),
        ("file", ["faces", 0, "probs", "gan"]),
        ("file", ["faces", 0, "stability", "flips"]),
        ("file", ["provenance", "declares_ai"]),
        ("end", ["complete"]),
        ("end", ["duplicates", 0, "disagree"]),
        ("document", ["meta", "complete"]),
        ("document", ["files"]),
    ],
)
def test_a_missing_required_field_fails_validation(scan_report, which, path):
    record = _records(scan_report)[which]
    assert schema_errors(_broken(record, path, _drop), "scan") != []


def _set(value):
    return lambda container, key: container.__setitem__(key, value)


def test_a_wrong_type_or_another_major_version_fails_validation(scan_report):
    records = _records(scan_report)
    meta, face_file = records["meta"], records["file"]
    assert schema_errors(_broken(face_file, ["faces", 0, "label"], _set("human")), "scan") != []
    box = _broken(face_file, ["faces", 0, "box"], lambda c, k: c[k].pop())
    assert schema_errors(box, "scan") != []
    assert schema_errors(_broken(face_file, ["phash"], _set("not hex")), "scan") != []
    major = int(SCHEMA_VERSION.split(".")[0])
    for other in (major - 1, major + 1):  # removals and renames bump the major: not readable
        changed = _broken(meta, ["schema_version"], _set(f"{other}.0.0"))
        assert schema_errors(changed, "scan") != []
    minor = _broken(meta, ["schema_version"], _set(f"{major}.7.0"))
    assert schema_errors(minor, "scan") == []  # additions bump the minor: still readable


def test_an_inconclusive_face_says_what_it_leaned_to_and_why(scan_report):
    face_file = _records(scan_report)["file"]
    face = {key: value for key, value in face_file["faces"][0].items()}
    for key in ("leaning", "inconclusive"):
        face.pop(key, None)
    conclusive = {**face_file, "faces": [{**face, "label": "gan"}]}
    assert schema_errors(conclusive, "scan") == []
    bare = {**face_file, "faces": [{**face, "label": "inconclusive"}]}
    assert schema_errors(bare, "scan") != []
    marked = {"label": "inconclusive", "leaning": "gan", "inconclusive": ["unstable"]}
    assert schema_errors({**face_file, "faces": [{**face, **marked}]}, "scan") == []
    leaning_alone = {**face, "label": "gan", "leaning": "gan", "inconclusive": ["ood"]}
    assert schema_errors({**face_file, "faces": [leaning_alone]}, "scan") != []
