"""Reports checked against the JSON Schemas mfclip ships, the way a consumer outside mfclip would:
``jsonschema`` on the files and streams as written. A test that writes a report calls one of
these, so a format change the schema does not describe fails the suite."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from mfclip_cli.schemas import SCHEMA_VERSION, load_schema


@cache
def validator(kind: str) -> Draft202012Validator:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(record: Any, kind: str) -> list[str]:
    """Why ``record`` is not a valid ``kind`` record (empty when it is): the most relevant error
    of each failing branch, with where it lies."""
    errors = list(validator(kind).iter_errors(record))
    if not errors:
        return []
    error = best_match(errors)
    where = "/".join(map(str, error.absolute_path)) or "(top)"
    return [f"{where}: {error.message}"]


def check(record: Any, kind: str) -> Any:
    """``record``, asserted to be a valid ``kind`` record of this schema version."""
    problems = schema_errors(record, kind)
    assert not problems, f"not a valid {kind} record: {problems[0]}"
    version = _version_of(record)
    assert version in (None, SCHEMA_VERSION), f"schema_version {version}, not {SCHEMA_VERSION}"
    return record


def check_part(record: Any, kind: str, part: str) -> Any:
    """``record``, asserted to be a valid ``part`` (an entry of the ``kind`` schema's ``$defs``):
    a piece a test makes without a whole report around it."""
    definitions = load_schema(kind)["$defs"]
    schema = {"$ref": f"#/$defs/{part}", "$defs": definitions}
    errors = list(Draft202012Validator(schema).iter_errors(record))
    assert not errors, f"not a valid {part}: {best_match(errors).message}"
    return record


def _version_of(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    return (record.get("meta") or record).get("schema_version")


def check_scan_lines(lines: Iterable[str]) -> list[dict]:
    """The records of a scan's JSON Lines output, each validated; the first must be its meta."""
    records = [check(json.loads(line), "scan") for line in lines if line.strip()]
    assert records and records[0]["type"] == "meta", "a scan's JSON Lines start with its meta"
    return records


def check_scan_outputs(json_path: Path | None = None, jsonl_path: Path | None = None) -> None:
    """A scan's ``--json`` document and ``--jsonl`` file, as written."""
    if json_path is not None:
        check(json.loads(Path(json_path).read_text(encoding="utf-8")), "scan")
    if jsonl_path is not None:
        check_scan_lines(Path(jsonl_path).read_text(encoding="utf-8").splitlines())


def check_json_file(path: Path, kind: str) -> dict:
    """A JSON report file (eval, data inspect, bench or ablate --json; prepare.json), validated
    and returned."""
    return check(json.loads(Path(path).read_text(encoding="utf-8")), kind)


def check_prepared(out: Path) -> None:
    """Everything ``mfclip prepare`` writes about its run: OUT/prepare.json and each line of
    OUT/prepare.jsonl."""
    check_json_file(out / "prepare.json", "prepare")
    for line in (out / "prepare.jsonl").read_text(encoding="utf-8").splitlines():
        check(json.loads(line), "prepare")


def _strict_json(text: str) -> Any:
    """``text`` parsed as JSON proper: Python's ``NaN`` and ``Infinity`` are refused, as a
    consumer's parser would refuse them."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_train_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """Everything ``mfclip train`` writes about its run: RUN/train.json (the settings, naming the
    schema version of the run folder) and each line of RUN/metrics.jsonl, validated; returned."""
    run_dir = Path(run_dir)
    settings = check(_strict_json((run_dir / "train.json").read_text(encoding="utf-8")), "train")
    assert settings["schema_version"] == SCHEMA_VERSION, "train.json names the run's format"
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [check(_strict_json(line), "train") for line in lines]
    assert records and all("type" in record for record in records), "metrics lines have a type"
    return settings, records


def broken(record: Any, path: list, change: Callable[[Any, Any], None]) -> Any:
    """A deep copy of ``record`` with ``change(container, key)`` applied at ``path``: a record
    a test expects the schema to refuse."""
    copied = copy.deepcopy(record)
    container = copied
    for key in path[:-1]:
        container = container[key]
    change(container, path[-1])
    return copied


def add_unknown(container: Any, key: Any) -> None:
    container[key] = "not in the contract"


def drop(container: Any, key: Any) -> None:
    del container[key]


def set_to(value: Any) -> Callable[[Any, Any], None]:
    return lambda container, key: container.__setitem__(key, value)
