"""A scan's outputs as one: every report opened (or refused) before the first input, each record
given to all of them or none, each closed even when another fails, and what a report that could
not be written says. A new format is a sink in writers/, a line in ``FILE_SINKS``, its
``ScanRequest`` field with its line in ``request.REPORT_OPTIONS`` (the existing-file and
input-overlap checks read it) and its ``cli/scan.py`` option."""

from __future__ import annotations

import errno
import signal
from functools import partial
from typing import Any, Callable

from rich.console import Console

from mfclip_cli.engines.runtime import signals_held
from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.request import REPORT_OPTIONS, ScanRequest
from mfclip_cli.engines.scan.writers.common import (
    STDOUT,
    ReportError,
    Sink,
    StandardOutput,
    cannot_write,
)
from mfclip_cli.engines.scan.writers.csv_report import CsvSink
from mfclip_cli.engines.scan.writers.images import AnnotateSink, ExplainSink
from mfclip_cli.engines.scan.writers.json_reports import JsonlSink, JsonSink
from mfclip_cli.engines.scan.writers.resume import ResumeState
from mfclip_cli.engines.scan.writers.table import TableSink
from mfclip_cli.errors import ReaderGone, UsageError
from mfclip_cli.files import shown

STOPPING = (signal.SIGINT, signal.SIGTERM)  # what ends a scan as Ctrl-C does


def _html_sink(path: str, request: ScanRequest) -> Sink:
    from mfclip_cli.engines.scan.writers.html import HtmlSink  # Jinja2 only where it is used

    return HtmlSink(path, force=request.force)


# What a scan writes to the paths its request names, one sink per request field, in the order
# they are opened: annotated copies and explanations first, so that the reports carry each PNG's
# path or why it failed.
FILE_SINKS: tuple[tuple[str, Callable[[str, ScanRequest], Sink]], ...] = (
    (
        "annotate_dir",
        lambda folder, request: AnnotateSink(
            folder, force=request.force, max_pixels=request.settings.max_pixels
        ),
    ),
    ("explain_dir", lambda folder, request: ExplainSink(folder, force=request.force)),
    (
        "jsonl_path",
        lambda path, request: JsonlSink(path, force=request.force, resume=request.resume),
    ),
    ("json_path", lambda path, request: JsonSink(path, force=request.force)),
    ("csv_path", lambda path, request: CsvSink(path, force=request.force)),
    ("html_path", _html_sink),
)


def open_sinks(request: ScanRequest, console: Console) -> list[Sink]:
    """Every output, opened (or refused) before the scan starts; none is left behind by a refusal.

    On a terminal the table comes too (unless JSON Lines go to stdout); piped with no report
    named, JSON Lines stream to stdout.
    """
    openers: list[Callable[[], Sink]] = [
        partial(open_sink, getattr(request, name), request)
        for name, open_sink in FILE_SINKS
        if getattr(request, name)
    ]
    streamed = any(getattr(request, name) == STDOUT for name in REPORT_OPTIONS)
    if not streamed and console.is_terminal:
        # where every file's result is kept, so that the table may show only the notable files
        kept = [
            f"{option} {shown(getattr(request, name))}"
            for name, option in REPORT_OPTIONS.items()
            if getattr(request, name)
        ]
        openers.append(lambda: TableSink(console, kept_in=kept))
    elif not any(getattr(request, name) for name in REPORT_OPTIONS):
        openers.append(lambda: JsonlSink(STDOUT))
    sinks: list[Sink] = []
    try:
        for opener in openers:
            sinks.append(opener())
    except BaseException:
        # the last opened first: a folder an earlier one made holds a later one's file
        for sink in reversed(sinks):
            sink.discard()
        raise
    return sinks


class OutputFailed(Exception):
    """A report could not be written (``Reports.close`` names it): the scan stops."""


class Reports:
    """The sinks of one scan (none on the ranks of a torchrun scan other than 0)."""

    def __init__(self, request: ScanRequest, sinks: list[Sink]) -> None:
        self.request = request
        self.sinks = sinks
        # the reports an input done by an earlier run needs its record in: read back only for them
        self.whole = [sink for sink in sinks if sink.whole_report]
        self.failures: list[tuple[Sink, OSError]] = []  # that could not be written (a full disk)

    @classmethod
    def open(
        cls, request: ScanRequest, console: Console, meta: dict[str, Any]
    ) -> tuple["Reports", ResumeState]:
        """The outputs opened and begun with ``meta``, and what a resumed JSON Lines report holds
        already; an output that cannot be written or resumed is a usage error, and leaves no
        output behind."""
        sinks: list[Sink] = []
        previous = ResumeState()
        try:
            sinks = open_sinks(request, console)
            jsonl = next((sink for sink in sinks if isinstance(sink, JsonlSink)), None)
            if request.resume and jsonl is not None:
                previous = jsonl.previous(meta)
            for sink in sinks:
                try:
                    sink.begin(meta)
                except OSError as error:  # stdout on a full disk (">/dev/full"): named
                    _reader_gone(sink, error)
                    raise cannot_write(sink.target, error) from error
        except BaseException as error:
            for sink in reversed(sinks):
                sink.discard()
            if isinstance(error, (ReportError, FileExistsError)):
                raise UsageError(str(error)) from None
            raise
        return cls(request, sinks), previous

    def write(self, record: FileRecord, *, earlier: bool = False) -> None:
        """``record`` to every report, or (``earlier``: an input an earlier run did) to those
        written anew by each run. All or none: a Ctrl-C or SIGTERM arriving meanwhile waits until
        the last report has it, then stops the scan as it would have."""
        with signals_held(STOPPING):
            for sink in self.whole if earlier else self.sinks:
                try:
                    sink.write(record)
                except OSError as error:
                    self.failures.append((sink, error))
                    raise OutputFailed from error

    def close(self, summary: dict[str, Any]) -> None:
        """Every report closed with ``summary``, even when another fails; then the first report
        that could not be written is named (``OSError``), or what no report should meet raised."""
        broken: list[Exception] = []
        for sink in self.sinks:
            try:
                sink.close(summary)
            except OSError as error:
                self.failures.append((sink, error))
            except Exception as error:
                broken.append(error)
        if self.failures:
            sink, error = self.failures[0]
            _reader_gone(sink, error)
            raise _output_failed(sink, error, self.request, finished=summary["complete"])
        if broken:
            raise broken[0]


def _reader_gone(sink: Sink, error: OSError) -> None:
    """``ReaderGone`` where ``error`` is stdout's reader having left (``| head``); a report file
    or FIFO whose reader left is named as any write that failed."""
    if sink.target == StandardOutput.target and error.errno == errno.EPIPE:
        raise ReaderGone from error


def _output_failed(sink: Sink, error: OSError, request: ScanRequest, finished: bool) -> OSError:
    """What a report that could not be written (a full disk) says: which one, that the reports
    are partial, and how to go on (``--resume`` continues a JSON Lines report); or, where the
    scan had finished and only closing it failed, that the others are whole."""
    reason = error.strerror or error
    room = " (room on a full disk)" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    if finished:
        return OSError(
            error.errno,
            f"cannot write {sink.target}: {reason}. The scan finished and the other reports are "
            f"whole; once {sink.target} can be written{room}, scan again for it "
            "(or, for the HTML page, mfclip report from a JSON Lines report)",
        )
    if request.jsonl_path and request.jsonl_path != STDOUT:
        then = f"run the same scan with --resume --jsonl {request.jsonl_path} to continue it"
    else:
        then = "scan again (with --jsonl FILE, --resume can continue an interrupted scan)"
    return OSError(
        error.errno,
        f"cannot write {sink.target}: {reason}. The scan stopped there and its "
        f"reports are partial; once {sink.target} can be written{room}, {then}",
    )
