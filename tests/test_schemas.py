"""The published report contract: the shipped JSON Schemas, the command that prints them, and
records that break them. Every test that writes a report validates it (report_schemas.py)."""

import itertools
import json

import pytest
from cli import mfclip
from jsonschema import Draft202012Validator
from media import astronaut
from PIL import Image
from report_schemas import (
    add_unknown,
    broken,
    check,
    check_json_file,
    check_scan_lines,
    drop,
    schema_errors,
    set_to,
)
from test_layouts import diff_tree

from mfclip_cli.schemas import SCHEMA_NAMES, SCHEMA_VERSION, load_schema, schema_text


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
        printed = mfclip("schema", name, cwd=tmp_path)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == schema_text(name) and json.loads(printed.stdout)
    unknown = mfclip("schema", "report", cwd=tmp_path)
    flat = " ".join(unknown.stderr.replace("│", " ").split())  # out of its wrapped box
    assert unknown.returncode == 2 and "no schema named 'report'; mfclip ships scan, eval" in flat


def test_the_blocks_two_schemas_share_are_the_same():
    """Each schema stands alone (a consumer loads one file), so the blocks two schemas both
    define (weights, calibration, fitted_on, data, label, ...) must not drift apart."""
    blocks = {name: load_schema(name)["$defs"] for name in SCHEMA_NAMES}
    scan, evaluation = blocks["scan"], blocks["eval"]
    shared = set(scan) & set(evaluation)
    assert {"weights", "calibration_summary", "fitted_on", "fpr_support"} <= shared
    assert "data" in blocks["ablate"] and "label" in blocks["inspect"]
    drifted = [
        (first, second, block)
        for first, second in itertools.combinations(SCHEMA_NAMES, 2)
        for block in sorted(set(blocks[first]) & set(blocks[second]))
        if blocks[first][block] != blocks[second][block]
    ]
    assert drifted == []


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_block_a_schema_defines_is_used(name):
    """A block no report field refers to describes nothing: it drifts unseen (eval's schema
    carried scan's probs and label for no field)."""
    schema = load_schema(name)
    text = json.dumps(schema)
    assert [block for block in schema["$defs"] if f'"#/$defs/{block}"' not in text] == []


def test_the_ablate_schema_names_what_ablate_can_write():
    """The variants and SPA's label relations are enums in the schema: a new one is a minor
    change of the contract, not a silent one."""
    from mfclip_cli.engines.train.ablate import METRICS, VARIANTS

    blocks = load_schema("ablate")["$defs"]
    assert blocks["ablation"]["properties"]["variants"]["propertyNames"]["enum"] == list(VARIANTS)
    assert blocks["seed_run"]["properties"]["variant"]["enum"] == list(VARIANTS)
    assert blocks["metric_means"]["required"] == list(METRICS)
    assert set(METRICS) <= set(blocks["seed_run"]["required"])
    relations = set(blocks["relation"]["enum"])
    assert relations == {"class", "forgery_type", "generator", "real"}  # never "identical"


def test_the_train_schema_names_what_a_run_can_write():
    """train.json holds the settings (every field of TrainSettings) beside its schema_version and
    mfclip_version; a metrics line is one of the types train logs, and a step line may carry any
    detector's loss terms (the total as ``loss``). A new setting, line type or loss term is a
    minor change of the contract, not a silent one."""
    import dataclasses
    import importlib

    from mfclip_cli.engines.fitting import FITTED_NAMES
    from mfclip_cli.engines.train.settings import RUN_RECORD_KEYS, TrainSettings
    from mfclip_cli.engines.train.training import UNREADABLE_LINE
    from mfclip_cli.model.detectors import DETECTORS, LossTerms
    from mfclip_cli.scoring.precision import INT8_KEY

    blocks = load_schema("train")["$defs"]
    settings = blocks["run_settings"]
    fields = [field.name for field in dataclasses.fields(TrainSettings)]
    assert list(settings["properties"]) == [*RUN_RECORD_KEYS, *fields]
    # cwd (2.4.0), weight_decay_on (2.13.0) and environment (2.14.0) are newer: a train.json
    # written before them is still a 2.x run folder
    newer = {"cwd", "weight_decay_on", "environment"}
    assert settings["required"] == [key for key in [*RUN_RECORD_KEYS, *fields] if key not in newer]
    ablate_training = load_schema("ablate")["$defs"]["training"]["properties"]
    assert {k: settings["properties"][k] for k in ablate_training} == ablate_training
    lines = [branch["$ref"].rsplit("/", 1)[1] for branch in load_schema("train")["oneOf"]]
    types = {blocks[name]["properties"]["type"]["const"] for name in lines[1:]}
    assert lines[0] == "run_settings"
    assert types == {"step", "val", UNREADABLE_LINE, INT8_KEY, *FITTED_NAMES}
    for kind in DETECTORS.values():  # each detector's module defines its loss terms
        importlib.import_module(kind.factory.partition(":")[0])
    kinds, terms = [LossTerms], set()
    while kinds:
        kind = kinds.pop()
        kinds.extend(kind.__subclasses__())
        terms |= {"loss" if f.name == "total" else f.name for f in dataclasses.fields(kind)}
    step = blocks["step_line"]
    assert terms <= set(step["properties"]) and {"loss", "classification"} <= set(step["required"])
    assert terms - set(step["required"]) == {"contrastive", "distillation"}


@pytest.fixture(scope="module")
def inspect_report(tmp_path_factory):
    """``data inspect --json`` of a DiFF tree with a generator excluded by a label map, so that
    the report says what it skipped."""
    root = tmp_path_factory.mktemp("schema-inspect")
    diff_tree(root / "DiFF")
    label_map = root / "labels.toml"
    label_map.write_text('[DiFF]\nHPS = "exclude"\n')
    report = root / "inspect.json"
    result = mfclip(
        "data", "inspect", str(root / "DiFF"), "--label-map", str(label_map), "--json", str(report)
    )
    assert result.returncode == 0, result.stderr
    return check_json_file(report, "inspect")


def test_the_inspect_report_names_its_version_and_what_it_skipped(inspect_report):
    assert inspect_report["schema_version"] == SCHEMA_VERSION
    assert inspect_report["skipped"] and inspect_report["rows"]


@pytest.mark.parametrize(
    "path, change",
    [
        (["folders"], add_unknown),
        (["rows", 0, "share"], add_unknown),
        (["schema_version"], drop),
        (["skipped"], drop),
        (["rows", 0, "generator"], drop),
        (["rows", 0, "label"], set_to("human")),
        (["rows", 0, "split"], set_to("holdout")),
        (["rows", 0, "count"], set_to(0)),
        (["datasets", "DiFF"], set_to("19")),
        (["schema_version"], set_to("1.0.0")),
    ],
)
def test_a_wrong_inspect_report_fails_validation(inspect_report, path, change):
    assert schema_errors(broken(inspect_report, path, change), "inspect") != []


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
    result = mfclip(
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
    assert schema_errors(broken(record, path, add_unknown), "scan") != []


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
    assert schema_errors(broken(record, path, drop), "scan") != []


def test_a_wrong_type_or_another_major_version_fails_validation(scan_report):
    records = _records(scan_report)
    meta, face_file = records["meta"], records["file"]
    assert schema_errors(broken(face_file, ["faces", 0, "label"], set_to("human")), "scan") != []
    box = broken(face_file, ["faces", 0, "box"], lambda c, k: c[k].pop())
    assert schema_errors(box, "scan") != []
    assert schema_errors(broken(face_file, ["phash"], set_to("not hex")), "scan") != []
    major = int(SCHEMA_VERSION.split(".")[0])
    for other in (major - 1, major + 1):  # removals and renames bump the major: not readable
        changed = broken(meta, ["schema_version"], set_to(f"{other}.0.0"))
        assert schema_errors(changed, "scan") != []
    minor = broken(meta, ["schema_version"], set_to(f"{major}.7.0"))
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
