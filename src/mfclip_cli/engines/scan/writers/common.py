"""What every writer of a scan's results shares: the sink interface, the error for an output
that cannot be written, a report file locked for one run, the class columns and colours,
reading a JSON Lines report back, and an operating point in words."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Protocol, TextIO

from mfclip_cli.engines.scan.records import (
    INCONCLUSIVE,
    FileRecord,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.files import is_stream, refuse_existing, shown
from mfclip_cli.labels import CLASS_NAMES

CLASS_COLUMNS = CLASS_NAMES
LABEL_COLOURS = {
    "real": (40, 200, 80),
    "diffusion": (240, 90, 40),
    "gan": (200, 40, 200),
    INCONCLUSIVE: (150, 150, 150),
}


STDOUT = "-"  # the path that names standard output (--jsonl, --json, --csv)


class Sink(Protocol):
    target: str  # what it writes, as the user named it, for messages
    # a report of every input, written anew by each run: a resumed run gives it the earlier
    # records of the inputs it skips as done (the JSON Lines report has them already; the
    # annotated copies and heatmaps were drawn then)
    whole_report: bool

    def begin(self, meta: dict[str, Any]) -> None: ...
    def write(self, record: FileRecord) -> None: ...
    def close(self, summary: dict[str, Any]) -> None: ...
    def discard(self) -> None: ...


def cannot_write(path: Path, error: OSError) -> ReportError:
    return ReportError(f"cannot write {path}: {error.strerror or error}")


def make_folder(folder: Path, output: Path) -> list[Path]:
    """``folder`` and its parents made for ``output``, and the real paths of those made,
    outermost first (for ``remove_made``); where one cannot be made, those made before it are
    removed (audit Z2) and a part of the path that is a file is named as such (mkdir says "File
    exists" or "Not a directory")."""
    made = folders_to_make(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        remove_made(made)
        raise _folder_error(folder, output, error) from None
    return made


@contextlib.contextmanager
def folders_for(path: Path) -> Iterator[list[Path]]:
    """The folders made for the file ``path`` (``make_folder``), taken back where the opening
    in the ``with`` block fails: an output refused there is not yet among those a refusal
    discards."""
    made = make_folder(path.parent, path)  # a file in its way named as the scan names it
    try:
        yield made
    except BaseException:
        remove_made(made)
        raise


def _folder_error(folder: Path, output: Path, error: OSError) -> ReportError:
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        parts = (folder, *folder.parents)
        blocking = next((part for part in parts if part.exists() and not part.is_dir()), None)
        if blocking is not None:
            return ReportError(f"cannot write {output}: {blocking} is a file, not a directory")
    return cannot_write(output, error)


def folders_to_make(folder: Path) -> list[Path]:
    """The real paths of the folders ``folder.mkdir(parents=True)`` would make, outermost first,
    by the path as given, part by part: "new/../old" makes new/, which no parent of it names,
    and not old/, which is there (a missing part is no link: its ".." is lexical; audit Z H1)."""
    prefixes = [Path(*folder.parts[: end + 1]) for end in range(len(folder.parts))]
    made: list[Path] = []
    for prefix in prefixes:
        real = Path(os.path.realpath(prefix))
        if prefix.name not in ("", ".", "..") and not os.path.lexists(real) and real not in made:
            made.append(real)
    return made


def remove_made(made: list[Path]) -> None:
    """The folders ``make_folder`` made, removed innermost first while they are empty: a run
    refused or discarded left them (audit X L2, audit V L2)."""
    for folder in reversed(made):
        if not os.path.lexists(folder):  # the part that could not be made, or gone
            continue
        try:
            folder.rmdir()
        except OSError:  # not empty (another run's files): the rest stays
            return


class ReportError(UsageError):
    """An output that cannot be written, or a report that cannot be resumed or read."""


def report_lines(stream: IO[bytes]) -> Iterator[Any]:
    """The JSON values of a JSON Lines report, one per line; a last line without its newline (cut
    off by a crash) is left out."""
    return (value for _, value in report_lines_at(stream))


def report_lines_at(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(byte offset, JSON value) of each line of a JSON Lines report, as ``report_lines``.

    Lines are split at newlines only: a JSON string written with ``ensure_ascii=False`` may hold
    other line separators (U+2028 in a file name).
    """
    offset = 0
    for line in stream:
        if not line.endswith(b"\n"):
            return
        if line.strip():
            yield offset, json.loads(line)
        offset += len(line)


def side_by_side(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The weights records of a scan with several checkpoints (``--weights A --weights B``), the
    primary first; none for a scan with one."""
    return list(meta.get("compared_weights") or [])


DEMO_NOTICE = "DEMO weights (synthetic artifacts): these probabilities are not evidence"


def claim(path: Path, *, keep: bool, report: Path | None = None) -> tuple[int, bool]:
    """``path`` opened read-write and locked against other runs for as long as this run writes
    it, created unless ``keep`` lets an existing file be taken (``--force``, ``--resume``): a
    second scan naming it is refused at its start, not after its whole run. The descriptor, and
    whether the file existed (a run removes only what it created). ``report``: the report a lock
    file stands for, as messages name it."""
    try:
        existed = path.exists()
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | (0 if keep else os.O_EXCL), 0o666)
    except FileExistsError:
        raise FileExistsError(
            f"{shown(str(path))} already exists (use --force to overwrite it)"
        ) from None
    except OSError as error:
        raise cannot_write(path, error) from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise ReportError(f"{report or path} is being written by another mfclip scan") from None
    return descriptor, existed


class ReportFile:
    """A report file opened for this run: locked against other runs, emptied only once every
    output has opened (``begin``), and removed on ``discard`` only if this run created it. A pipe
    or a device (``/dev/null``, a shell's ``>(...)``) is written straight through."""

    def __init__(self, path: Path, *, force: bool, append: bool = False):
        self.path = path
        self.append = append
        self.passing_through = is_stream(path)  # nothing to lock, empty or remove
        self.existed = False  # with nothing in it to resume from
        if self.passing_through:
            if append:
                raise ReportError(f"cannot resume {path}: a pipe or a device cannot be read back")
            try:
                self.stream: TextIO = open(path, "w", encoding="utf-8", newline="")
            except OSError as error:
                raise cannot_write(path, error) from error
            return
        with folders_for(path) as self.made:
            refuse_existing(path, force or append)
            descriptor, self.existed = claim(path, keep=force or append)
        self.stream = os.fdopen(descriptor, "r+", encoding="utf-8", newline="")

    @property
    def target(self) -> str:
        return str(self.path)

    def begin(self) -> None:
        if self.append:
            self.stream.seek(0, io.SEEK_END)
        elif not self.passing_through:
            self.stream.truncate(0)  # a forced overwrite: the old report goes only now

    def close(self) -> None:
        self.stream.close()  # and unlocked

    def discard(self) -> None:
        """Close without a word and remove what this run created: closing flushes what is still
        buffered, and on a full disk that failed again, hiding the named error before the empty
        report was removed (the retry was then refused: "already exists")."""
        try:
            self.stream.close()
        except OSError:
            pass  # what the buffer held is being thrown away
        if not self.existed and not self.passing_through:
            self.path.unlink(missing_ok=True)
            remove_made(self.made)


class StandardOutput:
    """Standard output where a report is named ``-``, as a ``ReportFile``: nothing to lock,
    empty, resume from or remove, and left open."""

    target = "standard output"
    existed = False

    def __init__(self) -> None:
        if sys.stdout is None:  # started with it closed (">&-")
            raise ReportError("standard output is closed: name a file for the report")
        self.stream: TextIO = sys.stdout

    def begin(self) -> None:
        pass

    def close(self) -> None:
        self.stream.flush()

    def discard(self) -> None:
        pass


def report_file(target: str, *, force: bool, append: bool = False) -> ReportFile | StandardOutput:
    """The stream a streamed report (JSON Lines, CSV) writes to: a file, or stdout for ``-``."""
    if target == STDOUT:
        return StandardOutput()
    return ReportFile(Path(target), force=force, append=append)


def operating_point_words(point: dict) -> str:
    """An ``fpr:X`` threshold's support in words, for the people who read the HTML run block and
    the warning a scan gives when it starts (the table and CSV do not say it)."""
    bound = point.get("fpr_upper_95")
    within = "" if bound is None else f": its FPR is at most {bound:.2%} (95 % confidence)"
    said = f"{point.get('target')}, from {point.get('n_real')} validation reals{within}"
    if point.get("accepted_unsupported"):
        said += "; NOT SUPPORTED by them, used because --accept-unsupported-fpr was given"
    return said
