"""What ``mfclip scan`` is asked to do, and the checks it passes before anything is read or
written: outputs that can be written and do not collide, options that go together."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.writers.common import STDOUT
from mfclip_cli.errors import UsageError
from mfclip_cli.files import GLOB_CHARS, file_key, glob_base, lies_within, readable


@dataclass
class ScanRequest:
    """Everything ``mfclip scan`` was asked to do."""

    inputs: list[str]
    settings: ScanSettings = field(default_factory=ScanSettings)
    # the checkpoints, the primary first; none: $MFCLIP_WEIGHTS, then the default
    weights: tuple[str, ...] = ()
    recursive: bool = True
    null_separated: bool = False  # paths on stdin end with NUL (find -print0), not a newline
    json_path: str | None = None
    jsonl_path: str | None = None
    csv_path: str | None = None
    html_path: str | None = None
    annotate_dir: str | None = None
    explain_dir: str | None = None
    resume: bool = False
    force: bool = False
    quiet: bool = False
    fail_on_fake: bool = False  # exit 4 when a face is labelled diffusion or gan (conclusively)
    fail_on_declared_ai: bool = False  # exit 4 when a file's own evidence declares AI origin
    fail_on_inconclusive: bool = False  # exit 5 when a face is inconclusive (and none is fake)


REPORT_OPTIONS = {
    "jsonl_path": "--jsonl",
    "json_path": "--json",
    "csv_path": "--csv",
    "html_path": "--html",
}


def check_outputs(request: ScanRequest) -> None:
    """Each output its own file, and standard output (``-``) for one report at most: two reports
    in one file would leave the last one written, and the table or another report in a stream
    would spoil it for whatever reads it. ``/dev/null`` takes as many as are sent to it."""
    options = {**REPORT_OPTIONS, "annotate_dir": "--annotate", "explain_dir": "--explain"}
    named = {option: getattr(request, name) for name, option in options.items()}
    named = {option: path for option, path in named.items() if path}
    if named.get("--html") == STDOUT:
        raise UsageError("--html -: the case report is a page; name a file for it")
    for option in ("--annotate", "--explain"):
        if named.get(option) == STDOUT:
            raise UsageError(f"{option} -: it writes pictures into a folder; name the folder")
    streamed = [option for option, path in named.items() if path == STDOUT]
    if len(streamed) > 1:
        raise UsageError(f"{' and '.join(streamed)} both name standard output (-); name a file")
    seen: dict[str, str] = {}
    for option, path in named.items():
        real = os.path.realpath(path)
        if path == STDOUT or real == os.devnull:
            continue
        if real in seen:
            raise UsageError(f"{seen[real]} and {option} both name {path}: give each its own")
        seen[real] = option


def refuse_reports_on_inputs(request: ScanRequest, inputs: Iterable[Path]) -> None:
    """No report is written over one of the files scanned, whatever ``--force`` says: the
    evidence is never written to (audit Z6: ``--csv`` on an input emptied it before it was read,
    ``--json`` replaced it at the end). Compared by file (device and inode), so a hard link or
    another spelling of an input is found; a report that does not exist yet is no input."""
    reports: dict[tuple[int, int], str] = {}
    for name, option in REPORT_OPTIONS.items():
        path = getattr(request, name)
        if path and path != STDOUT and (key := file_key(path, regular=True)) is not None:
            reports[key] = f"{option} {path}"  # a device or pipe (/dev/null) is no evidence
    if not reports:
        return
    for input_path in inputs:
        key = file_key(input_path)
        if key is not None and (report := reports.get(key)) is not None:
            raise UsageError(
                f"{report} is one of the files to scan ({input_path}): a report is never written "
                "over evidence; name another file for it"
            )


def check_picture_folders(request: ScanRequest, inputs: Iterable[Path]) -> list[str]:
    """No picture is written into the folder that holds a file scanned: files named one by one
    (the shell's ``case/*``, a list on stdin) put ``--annotate case`` beside the evidence, where
    the next scan of the folder takes the copies for evidence (audit X M3). A folder under it,
    as ``--annotate out`` beside a photo named alone, stays the user's to choose: the notes
    returned say that a later scan of the photo's folder takes the pictures in (audit AK)."""
    targets = {
        os.path.realpath(folder): f"{option} {folder}"
        for option, folder in (
            ("--annotate", request.annotate_dir),
            ("--explain", request.explain_dir),
        )
        if folder
    }
    notes: dict[str, str] = {}
    for path in inputs if targets else ():
        holder = os.path.realpath(path.parent)
        if (target := targets.get(holder)) is not None:
            raise UsageError(
                f"{target} is the folder of the input {path}: its pictures would lie beside the "
                "evidence; name another folder"
            )
        for place, option in targets.items():
            if option not in notes and lies_within(place, holder):
                holder_said, path_said = readable(str(path.parent)), readable(str(path))
                notes[option] = (
                    f"note: {option} lies in {holder_said}, the folder of the input {path_said}: "
                    f"a later scan of {holder_said} would take its pictures for evidence"
                )
    return list(notes.values())


def as_standard_output(request: ScanRequest) -> ScanRequest:
    """A report named ``/dev/stdout`` (or ``/dev/fd/1``, or any name of the stream stdout is)
    taken as ``-``: checked with the others that name stdout, and the table kept off it."""
    try:
        out = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no stdout at all
        return request
    renamed = {}
    for name in REPORT_OPTIONS:
        path = getattr(request, name)
        if not path or path == STDOUT or os.path.realpath(path) == os.devnull:
            continue
        try:
            here = os.stat(path)
        except (OSError, ValueError):
            continue
        if (here.st_dev, here.st_ino) == (out.st_dev, out.st_ino):
            renamed[name] = STDOUT
    return replace(request, **renamed) if renamed else request


def checked_request(request: ScanRequest) -> ScanRequest:
    """``request`` with its reports on stdout named ``-``, or a usage error for a request that
    cannot run: torch-free, so the command line refuses a mistyped option in a moment."""
    request = as_standard_output(request)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "-" in request.inputs:
        raise UsageError(
            "under torchrun, name the inputs as paths (stdin reaches only one process)"
        )
    if request.resume and (not request.jsonl_path or request.jsonl_path == STDOUT):
        raise UsageError("--resume needs --jsonl FILE (the report to continue)")
    check_outputs(request)
    for option, folder in (
        ("--annotate", request.annotate_dir),
        ("--explain", request.explain_dir),
    ):
        if not folder:
            continue
        target = os.path.realpath(folder)
        for spec in request.inputs:
            if spec != "-" and Path(spec).is_dir():
                if lies_within(target, os.path.realpath(spec)):
                    raise UsageError(f"{option} {folder} lies inside the input folder {spec}")
            elif GLOB_CHARS & set(spec) and not os.path.lexists(spec):
                # a quoted pattern's folder is its boundary, as a folder's is (audit X M3)
                if lies_within(target, glob_base(spec)):
                    raise UsageError(
                        f"{option} {folder} lies inside the folder the pattern {spec} searches"
                    )
    if request.settings.frames is not None and request.settings.frames < 1:
        raise UsageError("--frames must be at least 1")
    if not math.isfinite(request.settings.fps) or request.settings.fps <= 0:
        raise UsageError(f"--fps must be a positive number, not {request.settings.fps}")
    return request
