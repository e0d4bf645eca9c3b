"""The scan job, end to end: checkpoints loaded, resume, progress, interruption and the exit
code; the request and its checks are ``request.py``'s, the report's meta ``meta.py``'s, the
outputs ``reports.py``'s, the scanning itself ``scanner.py``'s, the records' split across
torchrun processes ``distributed.py``'s."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from mfclip_cli.engines.runtime import (
    EXIT_FAKE,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREADABLE,
    join_world,
    signal_handlers,
)
from mfclip_cli.engines.scan.distributed import distributed_records
from mfclip_cli.engines.scan.duplicates import DuplicateTracker
from mfclip_cli.engines.scan.inputs import Inputs, collect_inputs
from mfclip_cli.engines.scan.meta import scan_meta
from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.records import STATUS_ERROR, STATUSES, FileRecord
from mfclip_cli.engines.scan.reports import STOPPING, OutputFailed, Reports
from mfclip_cli.engines.scan.request import (
    ScanRequest,
    check_picture_folders,
    checked_request,
    refuse_reports_on_inputs,
)
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.writers.common import STDOUT, operating_point_words
from mfclip_cli.engines.scan.writers.resume import ResumeState
from mfclip_cli.engines.weights.store import (
    LoadedWeights,
    load_weights,
    refuse_incomparable,
    resolve_weights,
    say_caveats,
    weights_record,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.files import readable, shown
from mfclip_cli.model import detector_kind, detector_of
from mfclip_cli.scoring.attribution import attributor_of
from mfclip_cli.scoring.calibration import (
    temperature_of,
    threshold_for_fpr,
)
from mfclip_cli.scoring.inconclusive import stored_band
from mfclip_cli.scoring.ood import ood_of
from mfclip_cli.scoring.precision import calibration_at, choose_precision, model_at
from mfclip_cli.timestamps import utc_now


class Interrupted(BaseException):
    """The scan was stopped by SIGTERM (Ctrl-C arrives as KeyboardInterrupt). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way (a batch retried file by file)
    swallows it."""


class _Stopper:
    """Ctrl-C, and SIGTERM (``timeout``, a batch system) the same way, end the scan: reports
    closed, marked partial. Only the first counts: the others are ignored from then on, for the
    process is ending (a second Ctrl-C broke off the workers' shutdown, and C++ aborted the
    exit). While a record is ``held`` (written to every report and counted) the stop waits for
    it: a record in the JSON Lines but not in the end line's count or the CSV was a torn run."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.holding = False

    def stop(self, signum: int, frame: Any) -> None:
        for number in STOPPING:
            signal.signal(number, signal.SIG_IGN)
        self.signals.append(signum)
        if not self.holding:
            self._raise()

    def _raise(self) -> None:
        if self.signals[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(f"signal {self.signals[0]}")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.signals:
            self._raise()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with signal_handlers(self.stop, STOPPING, restore=lambda: not self.signals):
            yield


def _load_checkpoints(names: Sequence[str], device: torch.device) -> list[LoadedWeights]:
    """Every ``--weights`` loaded (none: the default one), before anything is written; one named
    twice, or checkpoints of different classes, are a usage error."""
    checkpoints = []
    for name in names or [None]:
        resolved = resolve_weights(name)
        checkpoints.append(load_weights(resolved, device))
    if len(checkpoints) > 1:
        refuse_incomparable(names, checkpoints)
    return checkpoints


def _scorers(
    checkpoints: Sequence[LoadedWeights], settings: ScanSettings, device: torch.device
) -> list[Scorer]:
    """Each checkpoint at its own precision (``--precision``: with --explain the primary runs
    fp32), calibration and OOD statistics; with ``fpr:X`` each at its own threshold for that
    validation FPR (a compared checkpoint without one is named)."""
    scorers = []
    for k, checkpoint in enumerate(checkpoints):
        info = checkpoint.info
        try:
            precision = choose_precision(
                settings.precision, device, info.calibration, explain=settings.explain and k == 0
            )
            calibration = calibration_at(info.calibration, precision.used)
            threshold = None
            if settings.fake_threshold_fpr is not None:
                threshold = threshold_for_fpr(
                    calibration,
                    settings.fake_threshold_fpr,
                    accept_unsupported=settings.accept_unsupported_fpr,
                )
        except UsageError as error:
            if k == 0:
                raise
            raise UsageError(f"--weights {checkpoint.resolved.name}: {error}") from None
        record = weights_record(checkpoint)
        scorers.append(
            Scorer(
                model_at(checkpoint.model, precision.used),
                temperature_of(calibration),
                ood_of(info),
                threshold,
                record,
                attribution=attributor_of(info),
                band=stored_band(calibration),
                precision=precision,
            )
        )
    return scorers


def _inputs(request: ScanRequest, stdin: TextIO | None, error_console: Console | None) -> Inputs:
    """The files to scan, or a usage error where there are none; the files passed over, the
    names folded into a file reached by another, and the folders named through a symbolic link
    (their files recorded under the link's name, not their own), said on ``error_console`` (one
    process's)."""
    items = collect_inputs(
        request.inputs,
        recursive=request.recursive,
        stdin=stdin,
        separator="\0" if request.null_separated else "\n",
    )
    passed_over = (
        f"{items.not_media} file(s) in the folders named were passed over, their names being no "
        "image's or video's: name them, or list them (find DIR -type f | mfclip scan -)"
    )
    if not items:
        raise UsageError(
            f"nothing to scan: no image or video found in {' '.join(map(shown, request.inputs))}"
            + (f"; {passed_over}" if items.not_media else "")
        )
    if error_console is None:
        return items
    notes = [passed_over] if items.not_media else []
    if items.folded:
        notes.append(
            f"{items.folded} name(s) reached a file already listed (a symbolic or hard link to "
            "it, the file named twice): each file is scanned once, its record lists them "
            "(also_named)"
        )
    if items.folders_without_media:
        named = ", ".join(shown(str(folder)) for folder in items.folders_without_media)
        notes.append(
            f"{len(items.folders_without_media)} folder(s) named held no image or video: "
            f"{named} (the meta's folders_without_media)"
        )
    for folder, real in items.linked_folders.items():
        if under := sum(item.path.is_relative_to(folder) for item in items):
            notes.append(
                f"{shown(str(folder))} leads through a symbolic link to {shown(real)}: {under} "
                "file(s) are recorded under the name given"
            )
    for note in notes:
        error_console.print(f"note: {note}", highlight=False, markup=False)
    return items


def _band_cannot_fire(settings: ScanSettings, primary: Scorer) -> str | None:
    """Why no face can be inconclusive although the band is on (an uncalibrated checkpoint:
    a training run's ``last``), or None: the meta says the band is on, and a gate on
    inconclusive faces would pass everything."""
    if not settings.inconclusive or settings.stability:
        return None
    if primary.band.threshold is not None or primary.ood is not None:
        return None
    return (
        "this checkpoint stores no uncertainty threshold and no OOD statistics (it was not "
        "calibrated: mfclip calibrate fits them), so no face can be inconclusive"
    )


def _progress_bar(error_console: Console, *, visible: bool) -> Progress:
    return Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        console=error_console,
        disable=not visible,
        transient=True,
    )


def run_scan(
    request: ScanRequest, *, stdin: TextIO | None, console: Console, error_console: Console
) -> int:
    """Run a scan end to end and return the exit code (0, 3, 4, or 130 when interrupted; usage
    errors raise).

    Launched under ``torchrun``, the inputs are split across the processes and rank 0 writes one
    merged, input-ordered report. The exit code describes the whole report, records of a resumed
    run's earlier part included.
    """
    request = checked_request(request)  # the command line checked it already; a caller may not
    # only barriers and a broadcast
    processes, device = join_world(request.settings.device, backend="gloo")
    rank, world = processes.rank, processes.size
    if request.explain_dir:
        request = replace(request, settings=replace(request.settings, explain=True))
    checkpoints = _load_checkpoints(request.weights, device)
    primary = checkpoints[0]
    info = primary.info
    if request.explain_dir and not detector_kind(detector_of(info.config)).explains:
        raise UsageError(
            f"--explain draws MFCLIP's heatmaps and noise patches; this checkpoint's detector "
            f"is {detector_of(info.config)}"
        )
    scorers = _scorers(checkpoints, request.settings, device)
    if scorers[0].fake_threshold is not None:
        threshold = scorers[0].fake_threshold
        request = replace(request, settings=replace(request.settings, fake_threshold=threshold))
    if (
        unbanded := _band_cannot_fire(request.settings, scorers[0])
    ) and request.fail_on_inconclusive:
        raise UsageError(f"--fail-on-inconclusive: {unbanded}")
    if rank == 0:
        for checkpoint, scorer in zip(checkpoints, scorers):
            say_caveats(checkpoint, scorer.precision, error_console, named=len(checkpoints) > 1)
        if unbanded:
            error_console.print(f"note: {unbanded}", highlight=False, markup=False)
    items = _inputs(request, stdin, error_console if rank == 0 else None)
    refuse_reports_on_inputs(request, (item.path for item in items))
    notes = check_picture_folders(request, (item.path for item in items if item.error is None))
    for note in notes if rank == 0 else ():
        error_console.print(note, highlight=False, markup=False)
    scanner = Scanner(scorers, request.settings, device)
    meta = scan_meta(request, scanner, primary, len(items))
    meta["files_passed_over"] = items.not_media
    meta["folders_without_media"] = [readable(str(f)) for f in items.folders_without_media]
    if world > 1:
        meta["processes"] = world
    point = meta.get("operating_point") or {}
    if rank == 0 and point:  # the table and CSV do not say it
        bound, target = point.get("fpr_upper_95"), request.settings.fake_threshold_fpr
        if point.get("accepted_unsupported"):
            error_console.print(
                f"[bold yellow]warning:[/] {operating_point_words(point)}", highlight=False
            )
        elif bound is not None and target is not None and bound > target:
            error_console.print(
                f"note: {operating_point_words(point)}, above the {target:.2%} asked for "
                "(the threshold lets through the false positives its target allows; "
                "calibrating on more reals narrows the bound)",
                highlight=False,
                markup=False,
            )

    # Rank 0 alone reads the resume state and opens the reports; the others learn the outcome.
    reports, shared = Reports(request, []), [ResumeState(), None]  # and a refusal to pass on
    if rank == 0:
        try:
            reports, shared[0] = Reports.open(request, console, meta)
        except UsageError as refusal:
            shared[1] = str(refusal)
    if world > 1:
        dist.broadcast_object_list(shared, src=0)
    previous, refusal = shared
    if refusal:
        raise UsageError(refusal)

    def skip(record: FileRecord) -> bool:
        return previous.done_at(record) is not None

    progress = _progress_bar(
        error_console, visible=rank == 0 and not request.quiet and error_console.is_terminal
    )
    if world > 1:
        base = Path(
            request.jsonl_path or request.json_path or request.csv_path or request.html_path or "-"
        )
        parts_base = base.parent if str(base) != "-" else Path.cwd()
        records = distributed_records(
            scanner, items, skip if previous.done else None, rank, world, parts_base.resolve()
        )
    else:
        records = scanner.scan(items, skip=skip if previous.done else None)
    tally = Tally(dict(previous.records), request.settings.duplicates)
    complete = stopped = False  # stopped: by Ctrl-C or SIGTERM
    try:
        stopper = _Stopper()
        with progress, stopper.installed():
            task = progress.add_task("scan", total=len(items), current="")
            for record in records:
                if record.resumed:
                    if reports.whole or tally.duplicates is not None:
                        earlier = previous.earlier(record)
                        tally.add_earlier(earlier)
                        if reports.whole:
                            with stopper.held():
                                reports.write(earlier, earlier=True)
                    progress.update(task, advance=1)
                    continue
                with stopper.held():
                    reports.write(record)
                    # after the reports: the annotated copy is written (or fails) as a report is
                    tally.add(record)
                record.source = None  # the bytes and pixels read: memory flat in the files
                progress.update(task, advance=1, current=escape(shown(Path(record.path).name)))
            if tally.duplicates is not None:
                # here, where Ctrl-C still stops the run: in the reports' close, where signals
                # are held off, many near hashes kept it deaf for minutes (audit AC M2)
                progress.update(task, current="grouping near-duplicates")
                tally.duplicates.group()
            complete = True
    except (KeyboardInterrupt, Interrupted):
        stopped = True
    except OutputFailed:
        pass
    finally:
        # a second Ctrl-C (or SIGTERM) stopped the workers' shutdown half way, or the exit after
        # it, where C++ aborted: held off while the reports close, for good once a run stopped
        with signal_handlers(signal.SIG_IGN, STOPPING, restore=lambda: not stopped):
            records.close()  # stops the workers: what they had not started is dropped
            # Every input of a finished run was scanned or skipped: the skips counted on every rank.
            skipped = len(items) - tally.written if complete and previous.done else 0
            try:
                reports.close(tally.summary(complete, skipped))
            finally:
                processes.leave()
    if rank != 0:
        return EXIT_OK  # rank 0 has the whole report, and its exit code says what it holds
    _say_how_it_ended(tally, skipped, complete, request, error_console)
    return _exit_code(request, tally.outcome.values()) if complete else EXIT_INTERRUPTED


class Tally:
    """What a run wrote, as its end line, its closing messages and its exit code count it."""

    def __init__(self, earlier: dict[str, tuple[bool, bool, bool, bool]], duplicates: bool) -> None:
        # real path: FileRecord.outcome (error, conclusive fake, inconclusive, declared AI), a
        # resumed run's earlier records included: the exit code describes the whole report
        self.outcome = earlier
        self.written = self.faces = 0
        self.failed = 0  # this run's records that add exit code 3
        self.by_status = dict.fromkeys(STATUSES, 0)  # this run's records
        # the files of the report, a resumed run's earlier ones too (``add_earlier``)
        self.duplicates = DuplicateTracker() if duplicates else None

    def add(self, record: FileRecord) -> None:
        self.written += 1
        self.faces += len(record.faces)
        self.by_status[record.status] += 1
        self.outcome[ResumeState.key(record.path)] = record.outcome
        self.failed += record.failed
        if self.duplicates is not None:
            self.duplicates.add(record)

    def add_earlier(self, record: FileRecord) -> None:
        """An earlier run's record of an input this run skipped as done: grouped with this
        run's, as the report holds both (a resumed run grouped only its own files: a fake copy
        of an earlier real picture went unflagged, audit X H1); counted as this run's no."""
        if self.duplicates is not None:
            self.duplicates.add(record)

    def summary(self, complete: bool, skipped: int) -> dict[str, Any]:
        """The reports' end line."""
        summary: dict[str, Any] = {
            "complete": complete,
            "files_written": self.written,
            "files_by_status": self.by_status,
            "files_failed": self.failed,
            "faces": self.faces,
            "finished_utc": utc_now(),
        }
        if skipped:
            summary["skipped_as_done"] = skipped
        if self.duplicates is not None and self.duplicates.found is not None:
            summary["duplicates"] = self.duplicates.found  # a run stopped before has none
        return summary


def _say_how_it_ended(
    tally: Tally, skipped: int, complete: bool, request: ScanRequest, error_console: Console
) -> None:
    """stderr's closing lines: inputs skipped as done, unreadable or read in part, and how to
    continue an interrupted run."""
    written, errors = tally.written, tally.by_status[STATUS_ERROR]
    if skipped:
        error_console.print(
            f"resumed {request.jsonl_path}: {skipped} input(s) already recorded there were "
            f"skipped, {written} scanned now",
            highlight=False,
            markup=False,
        )
    if errors:
        error_console.print(
            f"{errors} of {written} input(s) could not be read: their records "
            'say why ("status": "error")',
            highlight=False,
            markup=False,
        )
    if tally.failed > errors:  # the exit code's 3 said, where no error record is
        error_console.print(
            f"{tally.failed - errors} of {written} input(s) were read only in part (a "
            "video truncated or damaged, a picture of a file of several that could not be decoded) "
            "or their annotated copy or heatmap was not written: their records say why "
            "(video.incomplete, pictures_unread, annotation.error, explanation_error)",
            highlight=False,
            markup=False,
        )
    earlier = sum(failed for failed, *_ in tally.outcome.values()) - tally.failed
    if skipped and earlier > 0:  # the exit code describes the whole report: say why it is 3
        error_console.print(
            f"{earlier} input(s) recorded by earlier runs of {request.jsonl_path} could not be "
            "read, or only in part: the exit code counts them (their records say why)",
            highlight=False,
            markup=False,
        )
    if not complete:
        error_console.print(
            f"[bold red]interrupted:[/] {written} input(s) written this run; "
            'the reports are marked "complete": false' + _how_to_continue(request),
            highlight=False,
        )


def _how_to_continue(request: ScanRequest) -> str:
    """The options that continue an interrupted run: the reports written whole and the folders
    written into are there now, and the same command with --resume alone was refused for them
    (audit W L5, audit X L1)."""
    if not request.jsonl_path or request.jsonl_path == STDOUT:
        return ""
    there = [
        option
        for option, path in (
            ("--json", request.json_path),
            ("--csv", request.csv_path),
            ("--html", request.html_path),
            ("--annotate", request.annotate_dir),
            ("--explain", request.explain_dir),
        )
        if path and path != STDOUT
    ]
    force = f", with --force for its {'/'.join(there)}" if there else ""
    return f" (continue with --resume --jsonl {escape(request.jsonl_path)}{force})"


def _exit_code(request: ScanRequest, outcomes: Iterable[tuple[bool, bool, bool, bool]]) -> int:
    """The exit code of a finished scan, from every record's ``FileRecord.outcome`` (error,
    conclusive fake, inconclusive, declared AI): the first that applies of 4, 5, 3, 0."""
    failed = fake = inconclusive = declared = False
    for error, conclusive_fake, undecided, declares in outcomes:
        failed, fake = failed or error, fake or conclusive_fake
        inconclusive, declared = inconclusive or undecided, declared or declares
    if (request.fail_on_fake and fake) or (request.fail_on_declared_ai and declared):
        return EXIT_FAKE
    if request.fail_on_inconclusive and inconclusive:
        return EXIT_INCONCLUSIVE
    return EXIT_UNREADABLE if failed else EXIT_OK
