"""Nothing lost, nothing mislabelled: resume, interruption, unwritable outputs, narrow terminals."""

import csv
import fcntl
import io
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from media import astronaut, face_free, mosaic, save_heic, save_truncated_jpeg, save_video
from PIL import Image
from report_schemas import (
    broken,
    check,
    check_json_file,
    check_scan_lines,
    check_scan_outputs,
    schema_errors,
    set_to,
)
from rich.console import Console
from test_scan_cli import MFCLIP, run

from mfclip_cli.engines.scan.records import FaceRecord, FileRecord
from mfclip_cli.engines.scan.writers.common import DEMO_NOTICE, ReportError
from mfclip_cli.engines.scan.writers.csv_report import CsvSink
from mfclip_cli.engines.scan.writers.resume import ResumeState
from mfclip_cli.engines.scan.writers.table import TableSink
from mfclip_cli.faces.decode import FrameReader, open_video


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Sorted so that what a crash leaves (the first records) holds the error and the fake."""
    root = tmp_path_factory.mktemp("photos")
    save_truncated_jpeg(root / "a_truncated.jpg")
    Image.fromarray(astronaut()).save(root / "b_astronaut.png")
    Image.fromarray(face_free()).save(root / "c_face_free.png")
    Image.fromarray(mosaic()).save(root / "d_mosaic.png")
    return root


def _records_by_name(stdout: str) -> dict[str, dict]:
    """A --jsonl - stream's file records, checked against the schema, by file name."""
    return {
        Path(line["path"]).name: line
        for line in check_scan_lines(stdout.splitlines())
        if line["type"] == "file"
    }


def _lines(path: Path) -> list[dict]:
    return check_scan_lines(path.read_text().splitlines())


def _file_records(path: Path) -> list[dict]:
    return [line for line in _lines(path) if line["type"] == "file"]


@pytest.mark.parametrize(
    "options", [[], ["--fail-on-fake", "--fake-threshold", "0.0001"]], ids=["errors", "fakes"]
)
def test_resumed_report_gives_the_exit_code_of_an_uninterrupted_run(
    photos, weights, tmp_path, options
):
    whole, again = tmp_path / "whole", tmp_path / "again"
    reports = ["--jsonl", "r.jsonl", "--json", "r.json", "--csv", "r.csv", "--html", "r.html"]
    whole.mkdir()
    again.mkdir()
    uninterrupted = run(str(photos), "--weights", str(weights), *reports, *options, cwd=whole)
    assert uninterrupted.returncode == (4 if options else 3), uninterrupted.stderr
    lines = (whole / "r.jsonl").read_text().splitlines(keepends=True)
    # What a crash after two files leaves: the meta line, two records and half of the third.
    (again / "r.jsonl").write_text("".join(lines[:3]) + lines[3][:40])
    resumed = run(str(photos), "--weights", str(weights), *reports, "--resume", *options, cwd=again)
    assert resumed.returncode == uninterrupted.returncode, resumed.stderr
    assert "2 input(s) already recorded there were skipped, 2 scanned now" in resumed.stderr
    assert _file_records(again / "r.jsonl") == _file_records(whole / "r.jsonl")
    # an exit code of 3 from earlier records is said, as this run's are (audit L M4)
    earlier = sum(json.loads(line)["status"] == "error" for line in lines[1:3])
    said = f"{earlier} input(s) recorded by earlier runs of r.jsonl could not be read"
    assert (said in " ".join(resumed.stderr.split())) == (earlier > 0), resumed.stderr
    # the reports written whole hold every input, the skipped ones by their earlier records
    documents = [check_json_file(folder / "r.json", "scan") for folder in (whole, again)]
    assert documents[1]["files"] == documents[0]["files"]
    assert len(documents[1]["files"]) == 4 and documents[1]["meta"]["complete"]
    assert (again / "r.csv").read_text() == (whole / "r.csv").read_text()
    page = (again / "r.html").read_text()
    assert all(photo.name in page for photo in photos.iterdir())
    assert page.count('<section class="card file"') == 4


def test_resume_knows_a_file_by_another_hard_link_of_it(photos, weights, tmp_path):
    """Audit Y L1: hard links of a file are one input, under the name met first; a resume that
    met the other name first scanned the file again, and the report held it twice."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "photo.png").write_bytes((photos / "b_astronaut.png").read_bytes())
    os.link(tmp_path / "b" / "photo.png", tmp_path / "a" / "same.png")
    report = tmp_path / "r.jsonl"
    first = run("b", "--weights", str(weights), "--jsonl", str(report), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run(
        "a", "b", "--weights", str(weights), "--jsonl", str(report), "--resume", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "1 input(s) already recorded there were skipped, 0 scanned now" in again.stderr
    assert [line["path"] for line in _file_records(report)] == ["b/photo.png"]
    # the earlier record names both now: a resume naming either finds it (audit Z L1)
    first = run("a", "b", "--weights", str(weights), "--jsonl", "both.jsonl", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    only = run("b", "--weights", str(weights), "--jsonl", "both.jsonl", "--resume", cwd=tmp_path)
    assert "1 input(s) already recorded there were skipped, 0 scanned now" in only.stderr
    assert [line["path"] for line in _file_records(tmp_path / "both.jsonl")] == ["a/same.png"]


def test_resume_knows_a_file_by_its_real_path_and_refuses_other_settings(photos, weights, tmp_path):
    report = tmp_path / "r.jsonl"
    first = run("b_astronaut.png", "--weights", str(weights), "--jsonl", str(report), cwd=photos)
    assert first.returncode == 0, first.stderr
    again = run(
        str(photos / "b_astronaut.png"),
        str(photos / "c_face_free.png"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
        "--resume",
    )
    assert again.returncode == 0, again.stderr
    assert "1 input(s) already recorded there were skipped, 1 scanned now" in again.stderr
    assert [Path(line["path"]).name for line in _file_records(report)] == [
        "b_astronaut.png",
        "c_face_free.png",
    ]
    before = report.read_bytes()
    for option in (["--fake-threshold", "0.7"], ["--min-face", "40"], ["--fps", "2"]):
        other = run(
            str(photos), "--weights", str(weights), "--jsonl", str(report), "--resume", *option
        )
        assert other.returncode == 2 and "other settings" in other.stderr, (option, other.stderr)
    # a verdict setting is named alone, not as the whole record twice (audit AK F5)
    other = run(str(photos), "--weights", str(weights), "--jsonl", str(report), "--resume",
                "--duplicates")  # fmt: skip
    said = " ".join(other.stderr.split())
    assert other.returncode == 2 and "(verdicts.near_duplicate_bits None there, 8 now)" in said
    assert report.read_bytes() == before
    lines = report.read_text().splitlines()
    older = {**json.loads(lines[0]), "schema_version": "2.0.0"}
    report.write_text("\n".join([json.dumps(older), *lines[1:]]) + "\n")
    mixed = run(str(photos), "--weights", str(weights), "--jsonl", str(report), "--resume")
    assert mixed.returncode == 2 and "report format '2.0.0' there" in mixed.stderr, mixed.stderr
    assert "it was written by another build of mfclip" in mixed.stderr
    assert "resume with the same settings" not in mixed.stderr  # no build of this one can


# the meta line of a report to resume, as far as the settings compared read it
EARLIER_META = {
    "type": "meta",
    "weights": {"sha256": "0" * 64},
    "thresholds": {"fake": 0.5},
    "video_sampling": {"fps": 1.0},
    "schema_version": "2.7.0",
    "verdicts": None,
    "device": "cpu",
}


@pytest.mark.parametrize(
    ("there", "now", "said"),
    [
        (None, {"c2pa_trust": None}, "provenance checks off (--no-provenance) there, on now"),
        ({"c2pa_trust": None}, None, "provenance checks on there, off (--no-provenance) now"),
        (
            {"c2pa_trust": None},
            {"c2pa_trust": "anchors.pem", "c2pa_trust_sha256": "ab" * 32},
            "provenance checks on there, on with the C2PA trust anchors of anchors.pem "
            "(SHA-256 abababababab) now",
        ),
        (  # another certificate copied over the same file name (audit O M3: it was resumed)
            {"c2pa_trust": "anchors.pem", "c2pa_trust_sha256": "ab" * 32},
            {"c2pa_trust": "anchors.pem", "c2pa_trust_sha256": "cd" * 32},
            "provenance checks on with the C2PA trust anchors of anchors.pem (SHA-256 "
            "abababababab) there, on with the C2PA trust anchors of anchors.pem (SHA-256 "
            "cdcdcdcdcdcd) now",
        ),
    ],
    ids=["turned-on", "turned-off", "trust-file", "trust-file-rewritten"],
)
def test_a_resume_refusal_words_the_provenance_setting(there, now, said, tmp_path):
    """A report written with --no-provenance and resumed without it was refused with
    "provenance trust False there, True now": no trust anchor changed, the checks were off."""
    meta = EARLIER_META
    report = tmp_path / "r.jsonl"
    with pytest.raises(ReportError) as refusal:
        ResumeState.from_report(
            report, [(0, {**meta, "provenance": there})], {**meta, "provenance": now}
        )
    assert f"other settings ({said})" in str(refusal.value)


def test_the_same_anchors_named_by_another_path_resume():
    """--c2pa-trust ./anchors.pem after anchors.pem was refused: the same certificates."""
    meta = EARLIER_META
    there = {**meta, "provenance": {"c2pa_trust": "anchors.pem", "c2pa_trust_sha256": "ab" * 32}}
    now = {**meta, "provenance": {"c2pa_trust": "./anchors.pem", "c2pa_trust_sha256": "ab" * 32}}
    assert ResumeState.from_report(Path("r.jsonl"), [(0, there)], now).done == {}


def test_a_report_being_written_is_locked(photos, weights, tmp_path):
    report = tmp_path / "r.jsonl"
    assert (
        run(
            str(photos / "c_face_free.png"), "--weights", str(weights), "--jsonl", str(report)
        ).returncode
        == 0
    )
    before = report.read_bytes()
    with open(report, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as another mfclip scan would hold it
        for option in ("--resume", "--force"):
            second = run(str(photos), "--weights", str(weights), "--jsonl", str(report), option)
            assert (
                second.returncode == 2 and "being written by another mfclip scan" in second.stderr
            )
            assert report.read_bytes() == before, option  # not emptied, not appended to


def test_resume_refuses_a_file_that_is_not_a_report_and_leaves_it_alone(photos, weights, tmp_path):
    for name, text in (("notes.txt", "hello world"), ("r.json", '{"meta": {}, "files": []}\n')):
        target = tmp_path / name
        target.write_text(text)
        result = run(
            str(photos),
            "--weights",
            str(weights),
            "--jsonl",
            str(target),
            "--resume",
            "--csv",
            str(tmp_path / "faces.csv"),
        )
        assert (
            result.returncode == 2
            and "cannot resume" in result.stderr
            and "Traceback" not in result.stderr
        )
        assert target.read_text() == text and not (tmp_path / "faces.csv").exists()


def test_a_refused_forced_run_keeps_the_reports_it_would_have_replaced(photos, weights, tmp_path):
    jsonl, table = tmp_path / "old.jsonl", tmp_path / "old.csv"
    jsonl.write_text("earlier report\n")
    table.write_text("earlier,csv\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run(
        str(photos),
        "--weights",
        str(weights),
        "--force",
        "--jsonl",
        str(jsonl),
        "--csv",
        str(table),
        "--json",
        str(blocker / "r.json"),
    )
    assert result.returncode == 2, result.stderr
    assert jsonl.read_text() == "earlier report\n" and table.read_text() == "earlier,csv\n"


def test_interrupted_scan_marks_its_reports_partial(weights, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    Image.fromarray(mosaic()).save(folder / "000.png")
    picture = (folder / "000.png").read_bytes()
    for i in range(1, 120):  # copies: hard links of one file are one input
        (folder / f"{i:03d}.png").write_bytes(picture)
    jsonl, document = tmp_path / "r.jsonl", tmp_path / "r.json"
    environment = {key: value for key, value in os.environ.items() if key != "MFCLIP_WEIGHTS"}
    process = subprocess.Popen(
        [
            MFCLIP,
            "scan",
            str(folder),
            "--weights",
            str(weights),
            "--jsonl",
            str(jsonl),
            "--json",
            str(document),
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environment, "HF_HUB_OFFLINE": "1"},
        # Ctrl-C as a terminal sends it, even where pytest itself runs as a background job (whose
        # children a shell starts with SIGINT ignored, which Python then leaves ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (
        not jsonl.exists() or jsonl.read_text().count('"type": "file"') < 2
    ):
        time.sleep(0.05)
    assert process.poll() is None, "the scan ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)  # and again, as users press it, while the workers stop (it aborted there)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and "terminate" not in stderr
    # the --json report is there now: the same command with --resume alone was refused
    hint = f"(continue with --resume --jsonl {jsonl}, with --force for its --json)"
    assert hint in " ".join(stderr.split())
    lines = _lines(jsonl)
    written = [line for line in lines if line["type"] == "file"]
    assert 2 <= len(written) < 120
    assert (
        lines[-1]["type"] == "end"
        and lines[-1]["complete"] is False
        and lines[-1]["files_written"] == len(written)
    )
    report = check_json_file(document, "scan")
    assert report["meta"]["complete"] is False and report["meta"]["inputs"] == 120
    assert report["files"] == [{k: v for k, v in line.items() if k != "type"} for line in written]


def test_outputs_are_checked_before_the_scan_and_a_refusal_leaves_nothing(
    photos, weights, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    jsonl = tmp_path / "r.jsonl"
    for option in (
        ["--json", str(blocker / "r.json")],
        ["--csv", str(blocker / "r.csv")],
        ["--annotate", str(blocker)],
        ["--annotate", str(blocker / "copies")],
    ):
        result = run(str(photos), "--weights", str(weights), "--jsonl", str(jsonl), *option)
        assert result.returncode == 2, (option, result.stderr)
        assert "Traceback" not in result.stderr and str(blocker) in result.stderr, result.stderr
        assert not jsonl.exists()  # the retry is not blocked by an empty report
    retry = run(str(photos / "c_face_free.png"), "--weights", str(weights), "--jsonl", str(jsonl))
    assert retry.returncode == 0, retry.stderr


def test_a_refusal_leaves_none_of_the_folders_it_made(photos, weights, tmp_path):
    """Audit X L2: a run refused for a later output left the folders an earlier one had made
    (``--annotate new/y/z`` beside an existing --json left new/ and new/y/); audit V L2: a
    report named through them did too. What was there before stays."""
    (tmp_path / "taken.json").mkdir()  # a folder where --json names a file: refused, --force or not
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "doc.txt").write_text("the analyst's")
    for option in (  # outputs opened before --json, which refuses
        ["--annotate", str(tmp_path / "new" / "y" / "z")],
        ["--explain", str(tmp_path / "kept" / "y" / "z")],
        ["--jsonl", str(tmp_path / "new" / "y" / "r.jsonl")],
        ["--jsonl", f"{tmp_path}/new/../r.jsonl"],
        # through a folder it makes, to one that is there: kept/ was taken for one this run
        # made, and removed with what it held (audit Z H1)
        ["--annotate", f"{tmp_path}/new/../kept", "--force"],
        ["--annotate", f"{tmp_path}/new/sub/.."],  # new/, made on the way to new/sub
        # two outputs in one new folder (audit Z L2: the copies' folder went first, and new/
        # held the report still)
        ["--annotate", str(tmp_path / "new" / "copies"), "--jsonl", str(tmp_path / "new" / "r")],
    ):
        result = run(
            str(photos / "c_face_free.png"), "--weights", str(weights), *option,
            "--json", str(tmp_path / "taken.json"),
        )  # fmt: skip
        assert result.returncode == 2 and "is a folder" in result.stderr, result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "taken.json"], option
        assert [p.name for p in (tmp_path / "kept").iterdir()] == ["doc.txt"], option
    # nor is a folder there written into without --force, reached through one to make
    refused = run(
        str(photos / "c_face_free.png"), "--weights", str(weights),
        "--annotate", f"{tmp_path}/new/../kept",
    )  # fmt: skip
    assert refused.returncode == 2 and "is not empty" in refused.stderr, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "taken.json"]


def test_a_report_name_too_long_is_a_usage_error_that_leaves_nothing(photos, weights, tmp_path):
    """Audit Z L3: a name longer than the file system allows gave exit 1 and left the folders
    made for it (its own refusal came before it was among the outputs a refusal discards)."""
    long = "x" * 300
    for option, target in (  # a streamed report, one staged to the end, and folders too long
        ("--jsonl", tmp_path / "new" / "y" / f"{long}.out"),
        ("--json", tmp_path / "new" / "y" / f"{long}.out"),
        ("--jsonl", tmp_path / "new" / long / "r.out"),  # audit Z2: new/ was left
        ("--annotate", tmp_path / "new" / long),
    ):
        result = run(str(photos / "c_face_free.png"), "--weights", str(weights), option, target)
        assert result.returncode == 2 and "File name too long" in result.stderr, result.stderr
        assert not any(tmp_path.iterdir()), option


def test_one_path_for_two_outputs_is_refused_before_the_scan(photos, weights, tmp_path):
    photo = str(photos / "b_astronaut.png")
    same = tmp_path / "same.out"
    for options, says in (
        (["--json", str(same), "--csv", str(same)], "--json and --csv both name"),
        (["--jsonl", str(same), "--html", str(tmp_path / "." / "same.out")], "both name"),
        (["--json", "-", "--jsonl", "-"], "--jsonl and --json both name standard output"),
        (["--jsonl", "/dev/stdout", "--csv", "-"], "--jsonl and --csv both name standard output"),
        (["--html", "-"], "name a file"),
        (["--annotate", "-", "--json", "-"], "--annotate -: it writes pictures into a folder"),
    ):
        result = run(photo, "--weights", str(weights), *options, "--force", cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr, (options, result.stderr)
        assert not same.exists() and not (tmp_path / "-").exists()


def test_json_and_csv_can_go_to_standard_output(photos, weights, tmp_path):
    photo = str(photos / "b_astronaut.png")
    document = run(photo, "--weights", str(weights), "--json", "-", cwd=tmp_path)
    assert document.returncode == 0, document.stderr
    files = check(json.loads(document.stdout), "scan")["files"]
    assert [record["path"] for record in files] == [photo] and files[0]["faces"]
    table = run(photo, "--weights", str(weights), "--csv", "-", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [row["path"] for row in rows] == [photo] and rows[0]["label"]
    assert not (tmp_path / "-").exists()


def test_reports_go_through_pipes_and_devices_as_they_are(photos, weights, tmp_path):
    """A shell's ``--json >(jq ...)`` is a pipe that exists before the scan, and ``/dev/null``
    a device: each is written through (not refused as an existing file, nor replaced, nor
    staged beside it in /dev), and /dev/null may take several reports."""
    photo = str(photos / "b_astronaut.png")
    pipes = {name: tmp_path / f"{name}.fifo" for name in ("json", "jsonl")}
    read: dict[str, bytes] = {}

    def drain(name: str) -> None:
        read[name] = pipes[name].read_bytes()

    for pipe in pipes.values():
        os.mkfifo(pipe)
    readers = [threading.Thread(target=drain, args=(name,), daemon=True) for name in pipes]
    for reader in readers:
        reader.start()
    outputs = ["--json", str(pipes["json"]), "--jsonl", str(pipes["jsonl"])]
    devices = ["--csv", os.devnull, "--html", os.devnull]
    result = run(photo, "--weights", str(weights), *outputs, *devices)
    for reader in readers:
        reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    files = check(json.loads(read["json"]), "scan")["files"]
    lines = check_scan_lines(read["jsonl"].decode().splitlines())
    assert [record["path"] for record in files] == [photo] and files[0]["faces"]
    assert [line["type"] for line in lines] == ["meta", "file", "end"]
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
    resumed = run(photo, "--weights", str(weights), "--jsonl", os.devnull, "--resume")
    assert resumed.returncode == 2 and "cannot be read back" in resumed.stderr, resumed.stderr


def test_an_error_names_a_file_that_is_not_utf8_as_reports_do(photos, weights, tmp_path):
    existing = tmp_path / os.fsdecode(b"o\xff.json")
    existing.write_text("")
    photo = str(photos / "b_astronaut.png")
    result = run(photo, "--weights", str(weights), "--json", str(existing))
    assert result.returncode == 2 and "o\\xff.json already exists" in result.stderr, result.stderr


def test_a_closed_standard_stream_is_a_usage_error_not_a_traceback(photos, weights):
    photo = str(photos / "b_astronaut.png")
    for args, closed, says in (
        ([photo, "--jsonl", "-"], 1, "standard output is closed"),
        (["-", "--jsonl", os.devnull], 0, "standard input is closed"),
    ):
        result = subprocess.run(
            [MFCLIP, "scan", *args, "--weights", str(weights)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            preexec_fn=lambda fd=closed: os.close(fd),
        )
        assert result.returncode == 2 and says in result.stderr, result.stderr
    with open("/dev/full", "w") as full:  # a full disk behind stdout: the output is named
        result = subprocess.run(
            [MFCLIP, "scan", photo, "--jsonl", "-", "--weights", str(weights)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    assert "cannot write standard output: No space left on device" in result.stderr


def test_a_failing_annotated_copy_is_that_files_problem(photos, weights, tmp_path):
    copies = tmp_path / "copies"
    astronaut_sha = run(str(photos / "b_astronaut.png"), "--weights", str(weights), "--jsonl", "-")
    sha = check_scan_lines(astronaut_sha.stdout.splitlines())[1]["sha256"]
    (copies / f"b_astronaut.{sha[:8]}.png").mkdir(parents=True)  # a folder where its copy would go
    report = tmp_path / "r.jsonl"
    result = run(
        str(photos / "b_astronaut.png"),
        str(photos / "d_mosaic.png"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
        "--annotate",
        str(copies),
        "--force",
    )
    assert result.returncode == 3, result.stderr
    astronaut_record, mosaic_record = _file_records(report)
    assert astronaut_record["status"] == "ok" and len(astronaut_record["faces"]) == 1
    assert "annotated copy not written" in astronaut_record["annotation"]["error"]
    assert Path(mosaic_record["annotation"]["path"]).is_file() and len(mosaic_record["faces"]) == 4


def test_nothing_to_scan_is_a_usage_error(weights, tmp_path):
    (tmp_path / "notes.txt").write_text("no media here")
    result = run(str(tmp_path), "--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"))
    assert result.returncode == 2 and "nothing to scan" in result.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_stderr_names_a_file_as_the_table_does(photos, weights, tmp_path):
    """A name holding ESC sequences (an evidence folder's, or a report's) went raw to the
    terminal in "nothing to scan: ... in NAME" and "NAME already exists"."""
    empty = tmp_path / "emp\x1b[31mty"
    empty.mkdir()
    result = run(str(empty), "--weights", str(weights))
    assert result.returncode == 2 and "emp\\x1b[31mty" in result.stderr, result.stderr
    existing = tmp_path / "r\x1b]0;x\x07.json"
    existing.write_text("")
    photo = str(photos / "b_astronaut.png")
    refused = run(photo, "--weights", str(weights), "--json", str(existing))
    assert refused.returncode == 2 and "r\\x1b]0;x\\x07.json already exists" in refused.stderr
    assert "\x1b" not in result.stderr + refused.stderr


def test_min_face_is_a_floor_on_the_reported_faces(photos, weights):
    result = run(str(photos / "d_mosaic.png"), "--weights", str(weights), "--jsonl", "-")
    sizes = [
        max(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1])
        for f in check_scan_lines(result.stdout.splitlines())[1]["faces"]
    ]
    floor = sorted(sizes)[1] + 1  # between the faces' sizes
    result = run(
        str(photos / "d_mosaic.png"),
        "--weights",
        str(weights),
        "--jsonl",
        "-",
        "--min-face",
        str(int(floor)),
    )
    (record,) = [
        line for line in check_scan_lines(result.stdout.splitlines()) if line["type"] == "file"
    ]
    kept = [max(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) for f in record["faces"]]
    assert kept and all(size >= int(floor) for size in kept), (sizes, kept)


def test_a_folders_loops_fifos_and_broken_videos_get_records_and_ffmpeg_stays_quiet(
    weights, tmp_path
):
    """A symlink loop and a FIFO named like a photo are reported, never followed or opened (the
    scan would hang on either); a video FFmpeg cannot open is an error record, and FFmpeg's own
    complaint is printed nowhere: not on stderr, and not into the JSON Lines on stdout, where
    OpenCV prints it when the user has set FFmpeg's log level."""
    Image.fromarray(face_free()).save(tmp_path / "photo.png")
    os.symlink(tmp_path, tmp_path / "loop")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    result = run(str(tmp_path), "--weights", str(weights), "--jsonl", "-")
    assert result.returncode == 3, result.stderr
    records = _records_by_name(result.stdout)
    assert records["loop"]["status"] == "error" and "symbolic link loop" in records["loop"]["error"]
    assert records["photo.png"]["status"] == "no_face"
    assert records["pipe.jpg"]["status"] == "error"
    assert "not a regular file" in records["pipe.jpg"]["error"]
    # FFmpeg's own words ("moov atom not found") go nowhere; the record says what they meant
    assert records["broken.mp4"]["status"] == "error" and "moov atom" not in result.stderr
    assert "it has no index" in records["broken.mp4"]["error"]
    verbose = run(
        str(tmp_path / "broken.mp4"),
        "--weights",
        str(weights),
        "--jsonl",
        "-",
        env={"OPENCV_FFMPEG_LOGLEVEL": "16"},
    )
    assert verbose.returncode == 3 and "moov atom" not in verbose.stdout + verbose.stderr
    check_scan_lines(verbose.stdout.splitlines())


def test_a_file_reached_by_links_is_one_record_that_names_them(weights, tmp_path):
    """Audit F9: a folder holding a photo and a link to it gave one record and no word of the
    link (not in the meta's input count, the end line or on stderr), and the record sat in the
    place of a link sorted before it. It keeps its own name's place and lists the other names in
    ``also_named`` (a name that is not UTF-8 readably, its bytes in ``also_named_bytes``), in the
    JSON Lines, the CSV and the HTML; a resume and ``mfclip report`` find the file again."""
    evidence = tmp_path / "f9"
    evidence.mkdir()
    Image.fromarray(face_free()).save(evidence / "a.png")
    Image.fromarray(face_free()).save(evidence / "c.png")
    os.symlink("c.png", evidence / "0_link.png")
    odd = os.fsdecode(b"z\xff, z.png")  # not UTF-8, and a comma and a space in it
    os.symlink("c.png", evidence / odd)
    reports = {kind: tmp_path / f"scan.{kind}" for kind in ("jsonl", "csv", "html")}
    options = [f"--{kind}={path}" for kind, path in reports.items()]
    result = run(str(evidence), "--weights", str(weights), *options)
    assert result.returncode == 0, result.stderr
    assert "note: 2 name(s) reached a file already listed" in result.stderr
    check_scan_outputs(jsonl_path=reports["jsonl"])
    records = _file_records(reports["jsonl"])
    assert [record["path"] for record in records] == [
        str(evidence / "a.png"),
        str(evidence / "c.png"),
    ]
    assert "also_named" not in records[0] and "also_named_bytes" not in records[0]
    names = [str(evidence / "0_link.png"), str(evidence / "z\\xff, z.png")]
    assert records[1]["also_named"] == names
    assert records[1]["also_named_bytes"] == [None, os.fsencode(evidence / odd).hex()]
    rows = list(csv.DictReader(io.StringIO(reports["csv"].read_text(encoding="utf-8"))))
    assert [(row["path"], row["also_named"]) for row in rows][0] == (str(evidence / "a.png"), "")
    assert json.loads(rows[1]["also_named"]) == names
    page = reports["html"].read_text(encoding="utf-8")
    assert "also named" in page and "z\\xff, z.png" in page

    again = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(reports["jsonl"]), "--resume"
    )
    assert again.returncode == 0 and "2 input(s) already recorded" in again.stderr, again.stderr
    redrawn = subprocess.run(
        [MFCLIP, "report", str(reports["jsonl"]), "--html", str(tmp_path / "again.html")],
        capture_output=True,
        text=True,
    )
    assert redrawn.returncode == 0, redrawn.stderr
    assert "z\\xff, z.png" in (tmp_path / "again.html").read_text(encoding="utf-8")


def save_mjpeg_video(path: Path, frames: int, fps: float) -> None:
    save_video(path, frames, fps, np.ascontiguousarray(astronaut()[::2, ::2]), codec="MJPG")


def test_a_truncated_video_says_which_frames_it_lacks(weights, tmp_path):
    save_mjpeg_video(tmp_path / "full.avi", frames=30, fps=10.0)
    raw = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(raw[: len(raw) // 2])
    result = run(str(tmp_path), "--weights", str(weights), "--fps", "10", "--jsonl", "-")
    assert result.returncode == 3, result.stderr
    records = _records_by_name(result.stdout)
    full, cut = records["full.avi"]["video"], records["cut.avi"]["video"]
    assert full["frames_sampled"] == 30 and full["frames_unread"] == 0
    assert full["incomplete"] is None
    assert cut["frame_count"] == 30 and cut["frames_sampled"] + cut["frames_unread"] == 30
    assert 0 < cut["frames_sampled"] < 30 and records["cut.avi"]["status"] == "ok"
    assert f"{cut['frames_unread']} of the 30 frames sampled could not be read" in cut["incomplete"]
    for wrong in (set_to(-1), set_to(None)):
        assert schema_errors(broken(records["cut.avi"], ["video", "frames_unread"], wrong), "scan")
    assert schema_errors(broken(records["cut.avi"], ["video", "incomplete"], set_to(3)), "scan")
    # the exit code's 3 said where no record is an error: stderr, the end line and the CSV said
    # nothing, and counted the file ok (audit F5)
    end = check_scan_lines(result.stdout.splitlines())[-1]
    assert end["files_by_status"]["error"] == 0 and end["files_failed"] == 1
    assert "1 of 2 input(s) were read only in part" in " ".join(result.stderr.split())
    table = run(str(tmp_path / "cut.avi"), "--weights", str(weights), "--fps", "10", "--csv", "-")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert rows and all(row["video_incomplete"] == cut["incomplete"] for row in rows)
    alone = run(str(tmp_path / "full.avi"), "--weights", str(weights), "--jsonl", "-")
    assert alone.returncode == 0, alone.stderr


def test_a_video_without_frames_is_one_error_record_whichever_sampling(weights, tmp_path):
    """A frameless AVI is "video has no readable frames" with its format and size under --frames
    as under --fps: --frames lost them, raising before the format was known (audit L L3)."""
    save_mjpeg_video(tmp_path / "empty.avi", frames=0, fps=5.0)
    shapes = []
    for sampling in (["--fps", "1"], ["--frames", "5"]):
        result = run(str(tmp_path), "--weights", str(weights), *sampling, "--jsonl", "-")
        assert result.returncode == 3, result.stderr
        record = _records_by_name(result.stdout)["empty.avi"]
        assert record["status"] == "error" and record["error"] == "video has no readable frames"
        shapes.append((record["format"], record["width"], record["height"]))
    assert shapes[0] == shapes[1] and shapes[0][0] == "AVI (MJPG)" and shapes[0][1] > 0


def _avi_frames(raw: bytes) -> list[int]:
    """Where each MJPG frame's chunk ('00dc', its size, then the JPEG) starts in an AVI."""
    starts, at = [], raw.find(b"00dc")
    while at >= 0:
        if raw[at + 8 : at + 10] == b"\xff\xd8":
            starts.append(at)
        at = raw.find(b"00dc", at + 1)
    return starts


def test_a_damaged_frame_is_passed_over_and_a_counted_video_cut_by_a_frame_is_truncated(
    weights, tmp_path
):
    """Audit L H1: OpenCV's grab() decodes, so a damaged frame failed it and was taken for the
    end of the stream (a dashcam MJPG with three bad frames: every face after them unread). H2:
    an AVI or MP4 index counts its frames, yet a stream stopping within half a second of that
    count was called complete, exit 0."""
    save_mjpeg_video(tmp_path / "full.avi", frames=30, fps=10.0)
    raw = bytearray((tmp_path / "full.avi").read_bytes())
    chunks = _avi_frames(bytes(raw))
    assert len(chunks) == 30
    for k in (3, 4, 5):  # the JPEG data of three frames zeroed
        size = int.from_bytes(raw[chunks[k] + 4 : chunks[k] + 8], "little")
        raw[chunks[k] + 8 : chunks[k] + 8 + size] = bytes(size)
    (tmp_path / "damaged.avi").write_bytes(bytes(raw))
    (tmp_path / "short.avi").write_bytes((tmp_path / "full.avi").read_bytes()[: chunks[28]])
    result = run(str(tmp_path), "--weights", str(weights), "--fps", "10", "--jsonl", "-")
    assert result.returncode == 3, result.stderr
    records = _records_by_name(result.stdout)
    damaged, short = records["damaged.avi"], records["short.avi"]
    assert damaged["video"]["frames_sampled"] == 27 and damaged["video"]["frames_unread"] == 0
    assert {face["frame"] for face in damaged["faces"]} == set(range(30)) - {3, 4, 5}
    assert damaged["video"]["incomplete"] == (
        "3 frame(s) of the stream could not be decoded (from frame 3), the frames sampled were "
        "read: the file is damaged"
    )
    video = short["video"]
    assert video["frame_count"] == 30 and video["frames_sampled"] == 28
    assert (
        video["frames_unread"] == 2
        and "its stream gives 28 of the 30 frames its header counts" in (video["incomplete"])
    )
    assert records["full.avi"]["video"]["incomplete"] is None


def test_a_frame_count_the_container_overestimates_is_not_a_truncation(tmp_path):
    """Some containers only estimate their length: frames missing within its last half second
    are counted, not called a damaged file, and the stream's own count and length recorded."""
    save_mjpeg_video(tmp_path / "v.avi", frames=30, fps=10.0)
    capture, info = open_video(tmp_path / "v.avi")
    info.frame_count, info.duration = 33, 3.3  # the estimate: three frames more than it holds
    reader = FrameReader(capture, info, list(range(0, 33, 2)))
    assert [frame.index for frame in reader] == list(range(0, 30, 2))
    assert (reader.unread, reader.unread_from, reader.shortfall()) == (2, 30, None)
    assert (info.frame_count, info.duration) == (30, pytest.approx(3.0))
    # taken in chunks, as the GPU path does, the frames go on where the last chunk stopped
    capture, info = open_video(tmp_path / "v.avi")
    reader = FrameReader(capture, info, list(range(0, 30, 3)))
    chunks = [list(itertools.islice(reader, 4)) for _ in range(3)]
    assert [[f.index for f in chunk] for chunk in chunks] == [
        [0, 3, 6, 9],
        [12, 15, 18, 21],
        [24, 27],
    ]
    assert reader.unread == 0 and reader.shortfall() is None
    capture, info = open_video(tmp_path / "v.avi")
    info.frame_count, info.duration = 60, 6.0  # three seconds more than it holds
    reader = FrameReader(capture, info, list(range(0, 60, 5)))
    assert len(list(reader)) == 6 and "6 of the 12 frames sampled" in reader.shortfall()
    assert "its frames stop at 3.0 s of the 6.0 s it declares" in reader.shortfall()
    assert info.frame_count == 60  # what the file claims, as it is truncated


def test_a_named_transport_stream_is_scanned_and_a_walk_passes_one_over(weights, tmp_path):
    """A .ts named on the command line was "not a recognised image format" (audit W, H4); in a
    folder it is left alone, as TypeScript shares the name."""
    folder = tmp_path / "walked"
    folder.mkdir()
    save_video(tmp_path / "clip.ts", frames=10, fps=5.0)
    save_video(folder / "other.ts", frames=10, fps=5.0)
    Image.fromarray(astronaut()).save(folder / "photo.png")
    result = run(str(tmp_path / "clip.ts"), str(folder), "--weights", str(weights), "--jsonl", "-")
    assert result.returncode == 0, result.stderr
    records = [
        line for line in check_scan_lines(result.stdout.splitlines()) if line["type"] == "file"
    ]
    assert [Path(record["path"]).name for record in records] == ["clip.ts", "photo.png"]
    assert records[0]["status"] == "ok" and records[0]["format"].startswith("video (")
    assert records[0]["video"]["frames_sampled"] == 2


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_table_keeps_the_verdict_and_the_demo_notice_at_any_width(width):
    console = Console(width=width, record=True, force_terminal=False)
    sink = TableSink(console)
    sink.begin(
        {"weights": {"name": "mfclip-demo-tiny", "sha256": "c763148c09fe" + "0" * 52}, "demo": True}
    )
    face = FaceRecord.create(
        0,
        [10, 20, 110, 140],
        [[0, 0]] * 5,
        0.99,
        {"real": 0.1, "diffusion": 0.7, "gan": 0.2},
        "diffusion",
    )
    sink.write(
        FileRecord(path="/evidence/case-2026-117/camera-roll/IMG_20260412_1533.jpg", faces=[face])
    )
    sink.write(FileRecord(path="/evidence/broken.jpg", status="error", error="truncated JPEG"))
    sink.close({"complete": True})
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    flat = " ".join(text.split())
    # the label, beside any column header
    assert flat.count("diffusion") >= (2 if width >= 90 else 1)
    assert "truncated" in flat
    assert " ".join(DEMO_NOTICE.split()) in flat


def test_the_table_shows_file_names_exactly_and_inertly():
    """A name is shown as it is: no rich markup read in it (``a[bold]b.jpg`` is not ``ab.jpg``
    in bold), its control characters escaped (ESC sequences in evidence must not drive the
    analyst's terminal; a newline must not make one name look like two), and bytes that are not
    UTF-8 as \\xNN."""
    console = Console(width=200, record=True, force_terminal=False)
    sink = TableSink(console)
    sink.begin({"weights": {"name": "w", "sha256": "0" * 64}, "demo": False})
    names = ["a[bold]b[red]c.jpg", "evil\x1b[31mRED\x1b[0m\x07.jpg", "line\nbreak.jpg"]
    names += [os.fsdecode(b"caf\xe9.jpg"), "back\\nslash.jpg"]  # a backslash and an n
    for name in names:
        sink.write(FileRecord(path=f"/evidence/{name}", status="no_face"))
    sink.close({"complete": True})
    text = console.export_text()
    for expected in (
        "a[bold]b[red]c.jpg",
        "evil\\x1b[31mRED\\x1b[0m\\x07.jpg",
        "line\\nbreak.jpg",
        "caf\\xe9.jpg",
        "back\\\\nslash.jpg",  # the backslash doubled: not the name with a newline
    ):
        assert expected in text, (expected, text)
    assert "\x1b" not in text and "\x07" not in text


def test_the_csv_shows_names_inertly_and_keeps_the_exact_name_beside_them(tmp_path):
    """``cat faces.csv`` ran the ESC sequences of a name in the evidence on the analyst's
    terminal, and ``=x.jpg``, guarded as ``'=x.jpg``, was the file really named ``'=x.jpg``:
    each text cell is shown as the table shows it, and ``path_bytes`` holds the exact name
    wherever the ``path`` cell is not it."""
    target = tmp_path / "faces.csv"
    sink = CsvSink(str(target))
    sink.begin({"weights": {"name": "w", "sha256": "0" * 64}, "demo": False})
    names = ["esc\x1b[31mRED\x1b[0m.jpg", "=x.jpg", "'=x.jpg", "a\u200b.jpg", "plain.jpg"]
    names.append("C:\\case\\win.jpg")  # nothing to escape: its backslashes as they are
    for name in names:
        sink.write(FileRecord(path=name, status="no_face"))
    sink.write(FileRecord(path="bad.jpg", status="error", error="cannot read \x1b]0;t\x07"))
    sink.close({"complete": True})
    text = target.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text and "\u200b" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    cells = [(row["path"], row["path_bytes"]) for row in rows]
    assert cells == [
        ("esc\\x1b[31mRED\\x1b[0m.jpg", "esc\x1b[31mRED\x1b[0m.jpg".encode().hex()),
        ("'=x.jpg", b"=x.jpg".hex()),  # the guard's ' added: not the file named '=x.jpg
        ("'=x.jpg", ""),  # the exact name
        ("a\\u200b.jpg", "a\u200b.jpg".encode().hex()),  # not plain a.jpg
        ("plain.jpg", ""),
        ("C:\\case\\win.jpg", ""),
        ("bad.jpg", ""),
    ]
    assert rows[-1]["error"] == "cannot read \\x1b]0;t\\x07"


def test_the_csv_writes_each_other_name_as_a_text_cell_is_written(tmp_path):
    """One name holding an invisible character made the whole ``also_named`` array escaped again:
    a not-UTF-8 name beside it came out of the cell with its backslash doubled."""
    target = tmp_path / "faces.csv"
    sink = CsvSink(str(target))
    sink.begin({"weights": {"name": "w", "sha256": "0" * 64}, "demo": False})
    others = ["a\u202egpj.exe", os.fsdecode(b"caf\xe9.jpg"), "C:\\case\\win.jpg"]
    sink.write(FileRecord(path="a.jpg", status="no_face", also_named=others))
    sink.close({"complete": True})
    (row,) = csv.DictReader(io.StringIO(target.read_text(encoding="utf-8")))
    assert json.loads(row["also_named"]) == [
        "a\\u202egpj.exe",  # as the table shows it
        "caf\\xe9.jpg",  # as the JSON reports write it
        "C:\\case\\win.jpg",  # nothing to escape: as it is
    ]


def test_names_that_are_not_utf8_or_hold_newlines_are_reported_exactly(weights, tmp_path):
    """A folder holding a name that is not UTF-8 (a scan stopped on it with a traceback) and one
    holding a newline: every report is written, ``path`` shows the name readably and
    ``path_bytes`` holds its exact bytes; resume and ``mfclip report`` find the file again
    from them; and ``find -print0 | mfclip scan - --null`` reads both names whole."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")
    Image.fromarray(astronaut()).save(evidence / odd)
    Image.fromarray(face_free()).save(evidence / "line\nbreak.png")
    Image.fromarray(face_free()).save(evidence / "esc\x1b[31m.png")
    Image.fromarray(astronaut()).save(evidence / "copy.png")  # a near duplicate of café
    reports = {kind: tmp_path / f"scan.{kind}" for kind in ("jsonl", "json", "csv", "html")}
    options = [f"--{kind}={path}" for kind, path in reports.items()]
    explained = tmp_path / "why"
    result = run(
        str(evidence), "--weights", str(weights), *options, f"--explain={explained}", "--duplicates"
    )
    assert result.returncode == 0, result.stderr
    check_scan_outputs(reports["json"], reports["jsonl"])
    # the near-duplicate groups name files as their records do (their raw names ended the scan)
    groups = _lines(reports["jsonl"])[-1]["duplicates"]
    copies = next(group for group in groups if str(evidence / "copy.png") in group["files"])
    assert sorted(copies["files"]) == [str(evidence / n) for n in ("caf\\xe9.png", "copy.png")]
    records = {line["path"]: line for line in _file_records(reports["jsonl"])}
    weird = records[str(evidence / "caf\\xe9.png")]
    assert bytes.fromhex(weird["path_bytes"]) == os.fsencode(evidence / odd)
    assert weird["status"] == "ok" and len(weird["faces"]) == 1
    # the PNG drawn from it is named as the report names it, so a later read finds it
    assert Path(weird["faces"][0]["explanation"]).name.startswith("caf\\xe9.")
    assert Path(weird["faces"][0]["explanation"]).is_file()
    newline = records[str(evidence / "line\nbreak.png")]
    assert "path_bytes" not in newline and newline["status"] == "no_face"
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(reports["csv"].read_text()))}
    assert rows[str(evidence / "caf\\xe9.png")]["path_bytes"] == weird["path_bytes"]
    page = reports["html"].read_text(encoding="utf-8")  # names shown as the table shows them
    assert all(name in page for name in ("caf\\xe9.png", "line\\nbreak.png", "esc\\x1b[31m.png"))
    assert "\x1b" not in page and "line\nbreak" not in page
    assert page.count("\\n") == page.count("line\\nbreak.png")  # the page's own newlines kept

    again = run(
        str(evidence),
        "--weights",
        str(weights),
        f"--jsonl={reports['jsonl']}",
        "--resume",
        "--duplicates",
    )
    assert again.returncode == 0 and "4 input(s) already recorded" in again.stderr, again.stderr
    redrawn = subprocess.run(
        [MFCLIP, "report", str(reports["jsonl"]), "--html", str(tmp_path / "again.html")],
        capture_output=True,
        text=True,
    )
    assert redrawn.returncode == 0, redrawn.stderr  # the inputs were found again for pictures
    assert "explanation not shown" not in (tmp_path / "again.html").read_text(encoding="utf-8")

    Image.fromarray(face_free()).save(evidence / "cr\rface.png")  # read whole, not as a newline
    piped_names = (odd, "line\nbreak.png", "cr\rface.png")
    names = b"\0".join(os.fsencode(evidence / name) for name in piped_names)
    piped = subprocess.run(
        [MFCLIP, "scan", "-", "--null", "--weights", str(weights), "--jsonl", "-"],
        input=names + b"\0",
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert piped.returncode == 0, piped.stderr.decode(errors="replace")
    lines = check_scan_lines(piped.stdout.decode("utf-8").splitlines())
    statuses = sorted(line["status"] for line in lines if line["type"] == "file")
    assert statuses == ["no_face", "no_face", "ok"]


def test_a_name_of_255_bytes_gets_its_annotated_copy_and_heatmaps(weights, tmp_path):
    """The pictures drawn from a file are named after it, plus its hash and a face: a name near
    the file system's 255 bytes left no room, and every such file failed with exit 3."""
    name = "é" * 120 + ".png"  # 240 + 4 bytes
    Image.fromarray(astronaut()).save(tmp_path / name)
    copies, why = tmp_path / "copies", tmp_path / "why"
    result = run(
        str(tmp_path / name),
        "--weights",
        str(weights),
        "--jsonl",
        "-",
        f"--annotate={copies}",
        f"--explain={why}",
    )
    assert result.returncode == 0, result.stderr
    (record,) = [
        line for line in check_scan_lines(result.stdout.splitlines()) if line["type"] == "file"
    ]
    assert Path(record["annotation"]["path"]).is_file()
    assert Path(record["faces"][0]["explanation"]).is_file()
    assert Path(record["annotation"]["path"]).name.startswith("é" * 100)


def test_a_misnamed_file_is_scanned_as_what_its_bytes_are(weights, tmp_path):
    """Evidence comes misnamed: a JPEG saved as .mp4 failed as a video with no readable frames,
    an MP4 named .jpg as "not a recognised image format"."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    Image.fromarray(astronaut()).save(evidence / "photo.mp4", format="JPEG")
    save_heic(evidence / "phone.mp4")  # a HEIC went to FFmpeg as "MP4 (hevc)" (audit P L2)
    save_video(evidence / "clip.mp4", frames=3)
    (evidence / "clip.mp4").rename(evidence / "clip.jpg")
    copies = tmp_path / "copies"
    result = run(str(evidence), "--weights", str(weights), "--jsonl", "-", f"--annotate={copies}")
    assert result.returncode == 0, result.stderr
    records = _records_by_name(result.stdout)
    photo, clip = records["photo.mp4"], records["clip.jpg"]
    assert photo["format"] == "JPEG" and len(photo["faces"]) == 1 and "video" not in photo
    assert Path(photo["annotation"]["path"]).is_file()
    assert clip["format"].startswith("video (") and clip["video"]["frames_sampled"] >= 1
    phone = records["phone.mp4"]
    assert phone["format"] == "HEIF" and len(phone["faces"]) == 1 and "video" not in phone
    assert phone["provenance"]["metadata"]["status"] != "not_checked"


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text(weights, tmp_path):
    """File names are chosen by whoever made the evidence: "=HYPERLINK(...)" became a live
    formula when the analyst opened faces.csv."""
    for name in ("=HYPERLINK(1).png", "+1.png", "@cmd.png", "plain.png"):
        Image.fromarray(face_free()).save(tmp_path / name)
    result = run(".", "--weights", str(weights), "--csv", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    paths = [row["path"] for row in csv.DictReader(io.StringIO(result.stdout))]
    assert paths == ["'+1.png", "'=HYPERLINK(1).png", "'@cmd.png", "plain.png"]


def test_default_scan_finds_a_small_face_in_a_large_photo(weights, tmp_path):
    """A face just above --min-face pixels at full resolution, in an 8000 x 1000 panorama
    (issue 18).

    Detected on a 1600 px copy (the old default), it would be under 5 px there: beyond MTCNN's
    sight.
    """
    from media import ASTRONAUT_BOX

    scale = 24 / (ASTRONAUT_BOX[2] - ASTRONAUT_BOX[0])
    small = Image.fromarray(astronaut()).resize(
        (round(512 * scale), round(512 * scale)), Image.Resampling.LANCZOS
    )
    field = np.random.default_rng(0).integers(0, 256, (2, 8, 3), dtype=np.uint8)
    panorama = Image.fromarray(field).resize((8000, 1000), Image.Resampling.BICUBIC)
    panorama.paste(small, (5000, 400))
    panorama.save(tmp_path / "panorama.png")
    expected = (
        [5000 + v * scale for v in ASTRONAUT_BOX[::2]],
        [400 + v * scale for v in ASTRONAUT_BOX[1::2]],
    )

    result = run(str(tmp_path / "panorama.png"), "--weights", str(weights), "--jsonl", "-")
    meta, record, _ = check_scan_lines(result.stdout.splitlines())
    assert meta["thresholds"]["smallest_face"] == 20 and meta["thresholds"]["detect_max_side"] == 0
    (face,) = record["faces"]
    x1, y1, x2, y2 = face["box"]
    assert (
        abs((x1 + x2) / 2 - sum(expected[0]) / 2) < 6
        and abs((y1 + y2) / 2 - sum(expected[1]) / 2) < 8
    )
    assert "smallest_face" not in record

    coarse = run(
        str(tmp_path / "panorama.png"),
        "--weights",
        str(weights),
        "--jsonl",
        "-",
        "--detect-max-side",
        "1600",
    )
    _, record, _ = check_scan_lines(coarse.stdout.splitlines())
    # and the report says why
    assert record["status"] == "no_face" and record["smallest_face"] == 60


def test_the_workers_detections_share_a_memory_budget():
    """One worker per core each detecting on a 48-megapixel photo wanted about 5 GB at once
    (audit F4: a 300 KB PNG of 98 megapixels took 7.2 GB): detections wait for the memory they
    take, and one larger than the budget runs alone."""
    from mfclip_cli.engines.scan.scanner import MemoryBudget

    budget = MemoryBudget(10)
    active: list[int] = []
    overcommitted: list[list[int]] = []
    lock = threading.Lock()

    def detect(cost: int) -> None:
        with budget.held(cost):
            with lock:
                active.append(cost)
                if len(active) > 1 and sum(active) > 10:
                    overcommitted.append(list(active))
            time.sleep(0.05)
            with lock:
                active.remove(cost)

    threads = [threading.Thread(target=detect, args=(cost,)) for cost in (6, 6, 4, 20, 3, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads) and budget.in_use == 0
    assert overcommitted == []
    unlimited = MemoryBudget(None)
    with unlimited.held(10**12):
        pass


def test_the_memory_a_scan_budgets_is_the_least_known_and_shared_among_ranks(monkeypatch):
    """Under torchrun each local rank budgeted the whole machine's free memory (the cores were
    shared out), and inside a container the host's figure, not its limit's."""
    from mfclip_cli.engines import runtime

    monkeypatch.setattr(runtime, "_meminfo_available", lambda: 16 << 30)
    monkeypatch.setattr(runtime, "_cgroup_room", lambda: 8 << 30)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.available_memory() == 2 << 30
    monkeypatch.setattr(runtime, "_cgroup_room", lambda: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert runtime.available_memory() == 16 << 30


def test_a_checkpoint_giving_non_finite_probabilities_stops_the_scan_as_its_fault(tmp_path):
    """Finite weights that overflow gave NaN probabilities, reported with a leaning and an
    attribution, exit 0 (audit R F1); now the scan stops at exit 1 naming the checkpoint, and
    neither an image nor a video is given an error record for the model's fault."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from mfclip_cli.engines.weights.store import BUNDLED_STORE

    demo = BUNDLED_STORE / "mfclip-demo-tiny.safetensors"
    tensors = load_file(demo)
    head = sorted(k for k in tensors if k.startswith("head.") and k.endswith("weight"))[-1]
    tensors[head] = torch.full_like(tensors[head], 3e38)  # finite, its products are not
    weights = tmp_path / "overflowing.safetensors"
    weights.write_bytes(save(tensors, metadata=dict(safe_open(str(demo), "pt").metadata())))
    photo, clip = tmp_path / "face.png", tmp_path / "clip.mp4"
    Image.fromarray(astronaut()).save(photo)
    save_video(clip, frames=4, fps=2.0)
    for inputs in ([photo, clip], [clip]):
        jsonl = tmp_path / f"report{len(inputs)}.jsonl"
        result = run(*inputs, "--weights", weights, "--jsonl", jsonl, check=False)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "overflowing gives probabilities that are not finite numbers" in result.stderr
        assert "Traceback" not in result.stderr
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert [line["type"] for line in lines] == ["meta", "end"]
        assert lines[-1]["complete"] is False


@pytest.mark.parametrize("length", [242, 255])
def test_a_report_name_as_long_as_the_file_system_allows_is_written(
    photos, weights, tmp_path, length
):
    """Audit X M4: the temporary file is 14 bytes longer than the report's name and its lock
    13: a 242-byte name lost the run at its end ("File name too long", exit 1), 243 to 255 were
    refused at the start naming the hidden lock file."""
    stem = "é" * ((length - 5) // 2) + "r" * ((length - 5) % 2)  # two bytes a character
    reports = {suffix: tmp_path / f"{stem}.{suffix}" for suffix in ("json", "html")}
    assert {len(os.fsencode(path.name)) for path in reports.values()} == {length}
    result = run(
        str(photos / "b_astronaut.png"), "--weights", str(weights),
        "--json", str(reports["json"]), "--html", str(reports["html"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    check_json_file(reports["json"], "scan")
    assert "<html" in reports["html"].read_text()
    assert sorted(tmp_path.iterdir()) == sorted(reports.values())  # no lock or part left
