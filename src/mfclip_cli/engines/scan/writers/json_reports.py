"""The JSON Lines report (one line per file as it finishes, resumable) and the JSON document
(staged beside its target and published atomically at the end)."""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from mfclip_cli.engines.scan.records import (
    FileRecord,
)
from mfclip_cli.engines.scan.writers.common import (
    STDOUT,
    ReportError,
    ReportFile,
    cannot_write,
    claim,
    folders_for,
    remove_made,
    report_file,
    report_lines_at,
)
from mfclip_cli.engines.scan.writers.resume import ResumeState
from mfclip_cli.files import atomic_writer, hidden_sibling, is_stream, refuse_existing


class JsonlSink:
    """One line per file, flushed as it is written; ``-`` is stdout.

    The report is locked while it is written, so a second run cannot append to it at the same
    time. Resuming appends to it. The last line, ``{"type": "end", "complete": ...}``, says whether
    the run finished: a report without it, or with ``complete: false``, is partial.
    """

    whole_report = False  # resuming appends to it

    def __init__(self, target: str, *, force: bool = False, resume: bool = False):
        self.file = report_file(target, force=force, append=resume)
        self.target, self.stream = self.file.target, self.file.stream

    def previous(self, meta: dict[str, Any]) -> "ResumeState":
        """What the report already holds, checked against this run's ``meta``; a cut-off last line
        is dropped."""
        if not isinstance(self.file, ReportFile) or not self.file.existed:
            return ResumeState()
        path = self.file.path
        self.stream.seek(0)
        raw = self.stream.buffer.read()
        if not raw:
            return ResumeState()
        complete = raw[: raw.rfind(b"\n") + 1]
        try:
            lines = list(report_lines_at(io.BytesIO(complete)))
            state = ResumeState.from_report(path, lines, meta)
        except ReportError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError):  # JSON, UTF-8 or shape
            raise ReportError(
                f"{path} is not an mfclip JSON Lines report; cannot resume from it"
            ) from None
        # A line cut off by a crash goes only now, in a report known to be ours.
        if len(complete) < len(raw):
            self.stream.truncate(len(complete))
        return state

    def _line(self, document: dict[str, Any]) -> None:
        self.stream.write(json.dumps(document, ensure_ascii=False) + "\n")
        self.stream.flush()

    def begin(self, meta: dict[str, Any]) -> None:
        self.file.begin()
        if not self.file.existed or self.stream.tell() == 0:  # a resumed report has its meta
            self._line(meta)

    def write(self, record: FileRecord) -> None:
        self._line(record.to_dict())

    def close(self, summary: dict[str, Any]) -> None:
        try:
            self._line({"type": "end", **summary})
        finally:  # closed (and unlocked) even on a full disk
            self.file.close()

    def discard(self) -> None:
        self.file.discard()


class StagedReport:
    """A report written atomically when the run ends, from parts staged as the records come.

    The parts go to a hidden file next to the report (memory stays flat, and an unwritable folder
    is found before the scan, not after it); what the report says first, such as the run's
    ``complete`` flag, is known only at the end, so the report is assembled then. Nothing is at
    the report's name until then, but a hidden lock file beside it is locked from the start, so
    that a second scan naming it is refused at its start, not after its whole run (audit Z2); a
    run killed outright leaves that file unlocked, and the next run takes it. ``-`` is standard
    output, written once the run ends.
    """

    whole_report = True

    def __init__(self, path: str | Path, *, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.locked: int | None = None  # the locked descriptor of its lock file, while held
        self.made: list[Path] = []  # the folders made for it (``remove_made``)
        if str(path) == STDOUT or is_stream(self.path):  # staged in the system's temporary folder
            self.staged = tempfile.TemporaryFile("w+", encoding="utf-8")
            return
        if self.path.is_dir():
            raise ReportError(f"{self.path} is a folder, not a file")
        with folders_for(self.path) as self.made:
            refuse_existing(self.path, force)
            self.locked, _ = claim(self.lock, keep=True, report=self.path)
            try:
                self.staged = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.path.parent)
            except OSError as error:
                self._unlock()
                raise cannot_write(self.path, error) from error

    @property
    def target(self) -> str:
        return "standard output" if str(self.path) == STDOUT else str(self.path)

    @property
    def lock(self) -> Path:
        """The hidden file beside the report that this run locks while it writes it."""
        return self.path.with_name(hidden_sibling(self.path.name, ".mfclip-lock"))

    def staged_parts(self) -> Iterator[str]:
        """What was staged, in chunks of a megabyte."""
        self.staged.seek(0)
        while chunk := self.staged.read(1 << 20):
            yield chunk

    def publish(self, chunks: Iterable[str]) -> None:
        """Write the report from ``chunks`` (read lazily) into place atomically."""
        if str(self.path) == STDOUT:
            sys.stdout.writelines(chunks)
            sys.stdout.flush()
            self.staged.close()
            return
        try:
            with atomic_writer(self.path, overwrite=self.force) as handle:
                for chunk in chunks:
                    handle.write(chunk.encode("utf-8"))
        finally:
            self.staged.close()
            self._unlock()

    def discard(self) -> None:
        self.staged.close()
        self._unlock()
        remove_made(self.made)

    def _unlock(self) -> None:
        """The lock file removed, then let go (a run that opened it meanwhile finds it locked
        until then, and the next one makes a new one)."""
        if self.locked is None:
            return
        descriptor, self.locked = self.locked, None
        try:
            self.lock.unlink(missing_ok=True)
        finally:
            os.close(descriptor)


class JsonSink(StagedReport):
    """``{meta, files: [...]}``, written atomically when the run ends (the records staged)."""

    def __init__(self, path: str, *, force: bool = False):
        super().__init__(path, force=force)
        self.meta: dict[str, Any] = {}
        self.count = 0

    def begin(self, meta: dict[str, Any]) -> None:
        self.meta = {key: value for key, value in meta.items() if key != "type"}

    def write(self, record: FileRecord) -> None:
        document = record.to_dict()
        document.pop("type")
        text = json.dumps(document, indent=2, ensure_ascii=False).replace("\n", "\n    ")
        self.staged.write(("    " if self.count == 0 else ",\n    ") + text)
        self.count += 1

    def close(self, summary: dict[str, Any]) -> None:
        meta = json.dumps({**self.meta, **summary}, indent=2, ensure_ascii=False).replace(
            "\n", "\n  "
        )
        head = f'{{\n  "meta": {meta},\n  "files": [\n'
        tail = "\n  ]\n}\n" if self.count else "  ]\n}\n"
        self.publish(itertools.chain([head], self.staged_parts(), [tail]))
