"""Where scan results go: JSON, JSON Lines, CSV, a terminal table, annotated copies.

Every sink gets the run's meta first, then one record per input file in input order. JSON Lines
and CSV are written as each file finishes (a crash loses nothing already written); the JSON
document is written atomically at the end. No sink overwrites an existing file unless asked.
"""

from __future__ import annotations

import csv
import fcntl
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Protocol, TextIO

from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mfclip_cli.engines.scan.evidence import InputChanged, image_of
from mfclip_cli.engines.scan.records import (
    FILE_FIELDS,
    INCONCLUSIVE,
    STATUS_ERROR,
    FaceEvidence,
    FaceRecord,
    FileRecord,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.faces.decode import DecodeError, is_video
from mfclip_cli.files import atomic_writer, refuse_existing
from mfclip_cli.model.config import CLASS_NAMES

CLASS_COLUMNS = CLASS_NAMES
LABEL_COLOURS = {
    "real": (40, 200, 80),
    "diffusion": (240, 90, 40),
    "gan": (200, 40, 200),
    INCONCLUSIVE: (150, 150, 150),
}


class Sink(Protocol):
    target: str  # what it writes, as the user named it, for messages

    def begin(self, meta: dict[str, Any]) -> None: ...
    def write(self, record: FileRecord) -> None: ...
    def close(self, summary: dict[str, Any]) -> None: ...
    def discard(self) -> None: ...


def _cannot_write(path: Path, error: OSError) -> ReportError:
    return ReportError(f"cannot write {path}: {error.strerror or error}")


def _make_folder(folder: Path, output: Path) -> None:
    """``folder`` and its parents made for ``output``; a part of the path that is a file is named
    as such (mkdir says "File exists" or "Not a directory")."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        blocking = next(
            (part for part in (folder, *folder.parents) if part.exists() and not part.is_dir()),
            None,
        )
        if blocking is None:
            raise _cannot_write(output, error) from error
        raise ReportError(f"cannot write {output}: {blocking} is a file, not a directory") from None
    except OSError as error:
        raise _cannot_write(output, error) from error


class ReportError(UsageError):
    """An output that cannot be written, or a report that cannot be resumed or read."""


def report_lines(stream: IO[bytes]) -> Iterator[Any]:
    """The JSON values of a JSON Lines report, one per line; a last line without its newline (cut
    off by a crash) is left out.

    Lines are split at newlines only: a JSON string written with ``ensure_ascii=False`` may hold
    other line separators (U+2028 in a file name).
    """
    for line in stream:
        if not line.endswith(b"\n"):
            return
        if line.strip():
            yield json.loads(line)


class _ReportFile:
    """A report file opened for this run: locked against other runs, emptied only once every
    output has opened (``begin``), and removed on ``discard`` only if this run created it."""

    def __init__(self, path: Path, *, force: bool, append: bool = False):
        self.path = path
        refuse_existing(path, force or append)
        _make_folder(path.parent, path)
        try:
            self.existed = path.exists()
            flags = os.O_RDWR | os.O_CREAT | (0 if force or append else os.O_EXCL)
            descriptor = os.open(path, flags, 0o666)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists (use --force to overwrite it)") from None
        except OSError as error:
            raise _cannot_write(path, error) from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise ReportError(f"{path} is being written by another mfclip scan") from None
        self.append = append
        self.stream: TextIO = os.fdopen(descriptor, "r+", encoding="utf-8", newline="")

    def begin(self) -> None:
        if self.append:
            self.stream.seek(0, io.SEEK_END)
        else:
            self.stream.truncate(0)  # a forced overwrite: the old report goes only now

    def discard(self) -> None:
        self.stream.close()
        if not self.existed:
            self.path.unlink(missing_ok=True)


class JsonlSink:
    """One line per file, flushed as it is written; ``-`` is stdout.

    The report is locked while it is written, so a second run cannot append to it at the same
    time. Resuming appends to it. The last line, ``{"type": "end", "complete": ...}``, says whether
    the run finished: a report without it, or with ``complete: false``, is partial.
    """

    def __init__(self, target: str, *, force: bool = False, resume: bool = False):
        self.target = "standard output" if target == "-" else target
        self.file: _ReportFile | None = None
        if target == "-":
            self.stream: TextIO = sys.stdout
            return
        self.file = _ReportFile(Path(target), force=force, append=resume)
        self.stream = self.file.stream

    def previous(self, meta: dict[str, Any]) -> "ResumeState":
        """What the report already holds, checked against this run's ``meta``; a cut-off last line
        is dropped."""
        if self.file is None or not self.file.existed:
            return ResumeState()
        path = self.file.path
        self.stream.seek(0)
        raw = self.stream.buffer.read()
        if not raw:
            return ResumeState()
        complete = raw[: raw.rfind(b"\n") + 1]
        try:
            state = ResumeState.from_report(path, list(report_lines(io.BytesIO(complete))), meta)
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
        if self.file is not None:
            self.file.begin()
        if self.stream is sys.stdout or self.stream.tell() == 0:
            self._line(meta)

    def write(self, record: FileRecord) -> None:
        self._line(record.to_dict())

    def close(self, summary: dict[str, Any]) -> None:
        try:
            self._line({"type": "end", **summary})
        finally:  # closed (and unlocked) even on a full disk
            if self.stream is not sys.stdout:
                self.stream.close()

    def discard(self) -> None:
        if self.file is not None:
            self.file.discard()


class StagedReport:
    """A report written atomically when the run ends, from parts staged as the records come.

    The parts go to a hidden file next to the report (memory stays flat, and an unwritable folder
    is found before the scan, not after it); what the report says first, such as the run's
    ``complete`` flag, is known only at the end, so the report is assembled then.
    """

    def __init__(self, path: str | Path, *, force: bool = False):
        self.path = Path(path)
        self.force = force
        refuse_existing(self.path, force)
        if self.path.is_dir():
            raise ReportError(f"{self.path} is a folder, not a file")
        _make_folder(self.path.parent, self.path)
        try:
            self.staged = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.path.parent)
        except OSError as error:
            raise _cannot_write(self.path, error) from error

    @property
    def target(self) -> str:
        return str(self.path)

    def staged_parts(self) -> Iterator[str]:
        """What was staged, in chunks of a megabyte."""
        self.staged.seek(0)
        while chunk := self.staged.read(1 << 20):
            yield chunk

    def publish(self, chunks: Iterable[str]) -> None:
        """Write the report from ``chunks`` (read lazily) into place atomically."""
        with atomic_writer(self.path, overwrite=self.force) as handle:
            for chunk in chunks:
                handle.write(chunk.encode("utf-8"))
        self.staged.close()

    def discard(self) -> None:
        self.staged.close()


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


# the file's provenance in brief (the JSON reports hold all of it); empty with --no-provenance
PROVENANCE_CSV_COLUMNS = (
    "c2pa",  # trusted | valid | invalid | remote | none_found | not_checked | error
    "declared_source_type",  # IPTC digital source type(s): C2PA's, else plain XMP's
    "c2pa_signer",
    "generator",  # front end and model of generation parameters found in the file
    "watermark",  # "sdxl 48/48" for each mark found, else none_found / not_checked / error
    "declares_ai",
)


def provenance_cells(record: FileRecord) -> dict[str, Any]:
    """A file's provenance as the CSV columns word it."""
    found = record.provenance
    if found is None:
        return {}
    c2pa, metadata = found.c2pa, found.metadata
    made = metadata.generation
    marks = [
        f"{mark.name} {mark.bits_matched}/{mark.bits_total}"
        for mark in found.watermark.matches
        if mark.verdict == "found"
    ]
    return {
        "c2pa": "remote" if c2pa.remote_url else c2pa.state or c2pa.status,
        "declared_source_type": " ".join(c2pa.digital_source_types) or metadata.digital_source_type,
        "c2pa_signer": c2pa.signer,
        "generator": None if made is None else " ".join(filter(None, [made.tool, made.model])),
        "watermark": " ".join(marks) or found.watermark.status,
        "declares_ai": str(found.declares_ai).lower(),
    }


CSV_COLUMNS = [
    *FILE_FIELDS,
    "frame",
    "timestamp",
    "face_index",
    "x1",
    "y1",
    "x2",
    "y2",
    "det_score",
    *CLASS_COLUMNS,
    "label",
    "uncertainty",
    "ood",
    "ood_distance",
    # a face not labelled real: its trained generator ("unknown" in the open set) and probability
    "attributed_generator",
    "attribution_probability",
    "leaning",  # an inconclusive face's label before the band
    "inconclusive",  # its reasons, space-separated
    "p_fake_spread",  # with --stability
    "flips",  # with --stability
    "explanation",
    "richest_patch",  # "x1 y1 x2 y2" in the aligned crop, with --explain
    "weights_sha256",
    "demo",
    *PROVENANCE_CSV_COLUMNS,
]
# with several --weights, per compared checkpoint k (1, 2, ... after the primary): "real@1", ...
COMPARED_CSV_COLUMNS = (*CLASS_COLUMNS, "label", "weights_sha256")


def side_by_side(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The weights records of a scan with several checkpoints (``--weights A --weights B``), the
    primary first; none for a scan with one."""
    return list(meta.get("compared_weights") or [])


def attribution_cells(attribution: dict[str, Any] | None) -> dict[str, Any]:
    """A face's top-1 attribution columns (empty without one)."""
    if attribution is None:
        return {}
    return {
        "attributed_generator": attribution["generator"],
        "attribution_probability": attribution["probability"],
    }


def attribution_note(attribution: dict[str, Any] | None) -> str:
    """A face's attribution in a few words for the table: ``by NAME 0.71`` or ``generator
    unknown``."""
    if attribution is None:
        return ""
    if attribution["probability"] is None:
        return "generator unknown"
    return f"by {attribution['generator']} {attribution['probability']:.2f}"


class CsvSink:
    """One row per face; a file with no face or an error gets one row with empty face columns.
    With several checkpoints, each compared one k adds ``real@k`` ... ``weights_sha256@k``."""

    def __init__(self, path: str, *, force: bool = False):
        self.file = _ReportFile(Path(path), force=force)
        self.target = path
        self.stream = self.file.stream
        self.common: dict[str, Any] = {}

    def begin(self, meta: dict[str, Any]) -> None:
        self.file.begin()
        self.common = {
            "weights_sha256": meta["weights"]["sha256"],
            "demo": str(meta["demo"]).lower(),
        }
        columns = [
            f"{column}@{k}"
            for k in range(1, len(side_by_side(meta)))
            for column in COMPARED_CSV_COLUMNS
        ]
        self.writer = csv.DictWriter(self.stream, fieldnames=[*CSV_COLUMNS, *columns])
        self.writer.writeheader()

    @staticmethod
    def _compared(face: FaceRecord) -> dict[str, Any]:
        """The compared checkpoints' columns of ``face``'s row."""
        cells = {}
        for k, entry in enumerate((face.detectors or [])[1:], start=1):
            values = {**entry["probs"], "label": entry["label"], "weights_sha256": entry["sha256"]}
            cells.update({f"{column}@{k}": values[column] for column in COMPARED_CSV_COLUMNS})
        return cells

    def write(self, record: FileRecord) -> None:
        base = {key: getattr(record, key) for key in FILE_FIELDS}
        base.update(self.common)
        base.update(provenance_cells(record))
        if not record.faces:
            self.writer.writerow(base)
        for face in record.faces:
            x1, y1, x2, y2 = face.box
            self.writer.writerow(
                {
                    **base,
                    "frame": face.frame,
                    "timestamp": face.timestamp,
                    "face_index": face.index,
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "det_score": face.det_score,
                    **face.probs,
                    "label": face.label,
                    "uncertainty": face.uncertainty,
                    "ood": None if face.ood is None else str(face.ood).lower(),
                    "ood_distance": face.ood_distance,
                    **attribution_cells(face.attribution),
                    "leaning": face.leaning,
                    "inconclusive": " ".join(face.inconclusive or []) or None,
                    "p_fake_spread": face.stability["spread"] if face.stability else None,
                    "flips": str(face.stability["flips"]).lower() if face.stability else None,
                    "explanation": face.explanation,
                    "richest_patch": " ".join(map(str, face.richest_patch or [])) or None,
                    **self._compared(face),
                }
            )
        self.stream.flush()

    def close(self, summary: dict[str, Any]) -> None:
        self.stream.close()

    def discard(self) -> None:
        self.file.discard()


DEMO_NOTICE = "DEMO weights (synthetic artifacts): these probabilities are not evidence"


def verdict_note(face: FaceRecord) -> str:
    """A face's label in words for the table: an inconclusive one with what it leaned to and
    why, an OOD flag the band did not act on, the spread under --stability."""
    if face.inconclusive:
        note = f"{INCONCLUSIVE} (leaning {face.leaning}: {', '.join(face.inconclusive)})"
    else:
        note = face.label + (", OOD" if face.ood else "")
    if face.stability:
        note += f", spread {face.stability['spread']:.2f}"
    return note


class TableSink:
    """A rich table on the terminal once the run ends: a row per face, and per faceless file.

    With several checkpoints, each one's p(fake) (a column headed ``#k name``, the primary #0)
    stands in for the three probabilities; the uncertainty and label are the primary's.

    On a narrow terminal it drops columns rather than the verdict: first status and box (the
    label column then carries the status), then the probabilities and the uncertainty for the
    primary's p(fake), then that too (below 60 columns). The demo notice is a line of its own,
    wrapped, never cut.
    """

    target = "the terminal"

    def __init__(self, console: Console):
        self.console = console
        self.records: list[FileRecord] = []
        self.meta: dict[str, Any] = {}
        self.checkpoint_columns: list[str] = []  # "#k name" with several checkpoints

    def begin(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.checkpoint_columns = [
            f"#{k} {weights['name']}" for k, weights in enumerate(side_by_side(meta))
        ]

    def write(self, record: FileRecord) -> None:
        self.records.append(record)

    def _columns(self) -> list[str]:
        width = self.console.width
        probabilities = self.checkpoint_columns or list(CLASS_COLUMNS)
        if width >= 120:
            return ["file", "status", "face", "box", *probabilities, "unc.", "label / note"]
        if width >= 90:
            return ["file", "face", *probabilities, "unc.", "label / note"]
        if width >= 60:
            return ["file", "face", "p(fake)", "label / note"]
        return ["file", "face", "label / note"]

    def _cells(self, record: FileRecord, columns: list[str]) -> list[list[str]]:
        found = record.provenance
        evidence = found.summary() if found and (found.signals or found.errors) else None
        if not record.faces:
            note = record.error if record.status == STATUS_ERROR else "no face found"
            note = f"{note}; {evidence}" if evidence else note
            if "status" not in columns:
                note = f"{record.status}: {note}" if record.status == STATUS_ERROR else note
            values = {"file": record.path, "status": record.status, "label / note": note or ""}
            return [[values.get(column, "") for column in columns]]
        rows = []
        for face in record.faces:
            values = {
                "file": record.path,
                "status": record.status,
                "face": f"#{face.index}"
                + (f" @{face.timestamp:.2f}s" if face.timestamp is not None else ""),
                "box": "[" + ", ".join(f"{v:.0f}" for v in face.box) + "]",
                "p(fake)": f"{1.0 - face.probs['real']:.3f}",
                "unc.": "" if face.uncertainty is None else f"{face.uncertainty:.2f}",
                "label / note": ", ".join(
                    part
                    for part in (verdict_note(face), attribution_note(face.attribution))
                    if part
                )
                + (f"; {evidence}" if evidence and face is record.faces[0] else ""),
                **{name: f"{face.probs[name]:.3f}" for name in CLASS_COLUMNS},
                **{
                    column: f"{1.0 - entry['probs']['real']:.3f}"
                    for column, entry in zip(self.checkpoint_columns, face.detectors or [])
                },
            }
            rows.append([values[column] for column in columns])
        return rows

    def close(self, summary: dict[str, Any]) -> None:
        weights = self.meta.get("weights", {})
        title = f"mfclip scan — weights {weights.get('name')} ({str(weights.get('sha256'))[:12]})"
        columns = self._columns()
        if set(self.checkpoint_columns) & set(columns):
            title += ", p(fake) per checkpoint"
        elif self.checkpoint_columns:
            title += f", the primary of {len(self.checkpoint_columns)} checkpoints"
        table = Table(title=title)
        longest = max((len(record.path) for record in self.records), default=4)
        for column in columns:
            if column == "file":
                table.add_column(
                    column, overflow="fold", min_width=min(longest, self.console.width // 4)
                )
            elif column == "label / note":
                table.add_column(column, overflow="fold", min_width=9)
            else:
                numeric = column in (*CLASS_COLUMNS, "p(fake)", "unc.", *self.checkpoint_columns)
                table.add_column(column, no_wrap=numeric, justify="right" if numeric else "left")
        for record in self.records:
            for row in self._cells(record, columns):
                table.add_row(*row)
        self.console.print(table)
        attribution = self.meta.get("attribution") or {}
        if attribution.get("available"):
            self.console.print(
                f"generators named only among the {len(attribution['generators'])} this "
                f"checkpoint was trained on: {', '.join(attribution['generators'])}",
                soft_wrap=False,
                overflow="fold",
                highlight=False,
            )
        if self.meta.get("demo"):
            self.console.print(f"[bold yellow]{DEMO_NOTICE}[/]", soft_wrap=False, overflow="fold")
        for group in summary.get("duplicates") or []:
            said = "; ".join(f"{path} ({verdict})" for path, verdict in group["verdicts"].items())
            style = "bold red" if group["disagree"] else "yellow"
            flag = "near-duplicates, verdicts disagree" if group["disagree"] else "near-duplicates"
            self.console.print(f"[{style}]{flag}:[/] {escape(said)}", highlight=False)
        if not summary.get("complete", True):
            self.console.print("[bold red]partial: the scan was interrupted[/]")

    def discard(self) -> None:
        pass


def draw_faces(image: Image.Image, faces: Iterable[FaceRecord], scale: float = 1.0) -> None:
    """Each face's box in its label's colour, with its number, label and probability above it.

    ``scale`` maps the boxes (in the scanned image's pixels) onto ``image``, a resized copy.
    """
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 45)))
    for face in faces:
        x1, y1, x2, y2 = (value * scale for value in face.box)
        colour = LABEL_COLOURS.get(face.label, (255, 255, 0))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{face.index} {face.label} {face.probs[face.verdict_label]:.2f}"
        # on a tag of the box's colour, legible on any picture; inside the box at the top edge
        _, _, text_width, text_height = draw.textbbox((0, 0), text, font=font)
        tag_height = text_height + 2 * width
        top = y1 - tag_height if y1 >= tag_height else y1
        draw.rectangle((x1, top, x1 + text_width + 2 * width, top + tag_height), fill=colour)
        draw.text((x1 + width, top + width), text, fill=(15, 15, 15), font=font)


class AnnotateSink:
    """Copies of scanned images with each face's box and label drawn, written under ``folder``.

    A copy that cannot be written is that file's problem (its record says so under
    ``annotation``), never the end of the run.
    """

    option = "--annotate"

    def __init__(self, folder: str, *, force: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ReportError(f"{self.option} {folder} is a file, not a folder")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not force:
            raise FileExistsError(f"{self.folder} is not empty (use --force to write into it)")
        self.target = folder
        self.created = not self.folder.exists()
        _make_folder(self.folder, self.folder)
        try:
            tempfile.TemporaryFile(dir=self.folder).close()  # can we write there at all?
        except OSError as error:
            raise _cannot_write(self.folder, error) from error

    def begin(self, meta: dict[str, Any]) -> None:
        pass

    def _stem(self, record: FileRecord) -> str:
        return f"{Path(record.path).stem}.{(record.sha256 or 'nohash')[:8]}"

    def write(self, record: FileRecord) -> None:
        if record.status == STATUS_ERROR or is_video(Path(record.path)):
            return
        target = self.folder / f"{self._stem(record)}.png"
        try:
            # the image the scan decoded (a copy: its pixels stay as scanned)
            image = Image.fromarray(image_of(record, Path.cwd()).pixels)
            draw_faces(image, record.faces)
            with atomic_writer(target, overwrite=True) as handle:
                image.save(handle, format="PNG")
            record.annotation = {"path": str(target)}
        except (OSError, DecodeError, ValueError, InputChanged) as error:
            reason = getattr(error, "strerror", None) or str(error)
            record.annotation = {"error": f"annotated copy not written: {reason}"}

    def close(self, summary: dict[str, Any]) -> None:
        pass

    def discard(self) -> None:
        if self.created:
            shutil.rmtree(self.folder, ignore_errors=True)


def draw_evidence(evidence: FaceEvidence, richest_patch: list[int] | None) -> Image.Image:
    """The aligned crop beside the same crop under its heatmap (red: most relevant to the fake
    score), the noise branch's square outlined in white on both."""
    import cv2  # the scan has it loaded already; the CLI's start-up does not need it

    crop = evidence.crop
    heat = (evidence.heatmap * 255).round().astype("uint8")
    colours = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = 0.6 * evidence.heatmap[..., None]  # unimportant regions stay the face itself
    overlay = (crop * (1 - weight) + colours * weight).round().astype("uint8")
    panels = [Image.fromarray(crop), Image.fromarray(overlay)]
    if richest_patch is not None:
        x1, y1, x2, y2 = richest_patch
        for panel in panels:
            ImageDraw.Draw(panel).rectangle((x1, y1, x2 - 1, y2 - 1), outline=(255, 255, 255))
    side = crop.shape[1]
    sheet = Image.new("RGB", (2 * side + 4, crop.shape[0]), (255, 255, 255))
    sheet.paste(panels[0], (0, 0))
    sheet.paste(panels[1], (side + 4, 0))
    return sheet


class ExplainSink(AnnotateSink):
    """Per face, a PNG of where the model looked (``draw_evidence``), written under ``folder``;
    the face record gets its path. A PNG that cannot be written is that file's problem (its record
    says so under ``explanation_error``), never the end of the run."""

    option = "--explain"

    def write(self, record: FileRecord) -> None:
        for face in record.faces:
            if face.evidence is None:
                continue
            frame = "" if face.frame is None else f".frame{face.frame}"
            target = self.folder / f"{self._stem(record)}{frame}.face{face.index}.png"
            try:
                sheet = draw_evidence(face.evidence, face.richest_patch)
                with atomic_writer(target, overwrite=True) as handle:
                    sheet.save(handle, format="PNG")
                face.explanation = str(target)
            except (OSError, ValueError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                record.explanation_error = f"explanation not written: {reason}"
            face.evidence = None  # drawn: the crop and heatmap are not kept for the whole run


def _checkpoint_hashes(meta: dict[str, Any]) -> str | list[str] | None:
    """What a resume must match: the SHA-256 of the report's checkpoint, or the list of them in
    order for a scan with several."""
    compared = side_by_side(meta)
    if compared:
        return [weights.get("sha256") for weights in compared]
    return (meta.get("weights") or {}).get("sha256")


def _precision_used(meta: dict[str, Any]) -> str | None:
    """The precision a report's scan ran at; one from before ``--precision`` ran the device's
    default (bf16 on CUDA, fp32 on CPU)."""
    recorded = meta.get("precision")
    if recorded:
        return recorded.get("used")
    return "bf16" if str(meta.get("device", "cpu")).startswith("cuda") else "fp32"


def _trust(meta: dict[str, Any]) -> str | bool:
    """A report's provenance setting as a resume must match it: off, or its --c2pa-trust file."""
    provenance = meta.get("provenance")
    return False if provenance is None else provenance.get("c2pa_trust") or True


@dataclass
class ResumeState:
    """What an earlier report holds: the inputs it has done, and what its records add to the exit
    code.

    Inputs are keyed by the file they name (the real path, resolved from the folder the earlier
    run started in) and its SHA-256, so ``photos/a.jpg`` and ``/case/photos/a.jpg`` are one input.
    """

    done: set[tuple[str, str]] = field(default_factory=set)
    # real path: FileRecord.outcome, (error, conclusive fake, inconclusive, declared AI)
    records: dict[str, tuple[bool, bool, bool, bool]] = field(default_factory=dict)

    @staticmethod
    def key(path: str, cwd: str | None = None) -> str:
        return os.path.realpath(os.path.join(cwd or os.getcwd(), path))

    @classmethod
    def from_report(
        cls, path: Path, lines: list[dict[str, Any]], meta: dict[str, Any]
    ) -> "ResumeState":
        if not lines or lines[0].get("type") != "meta":
            raise ReportError(
                f"{path} does not start with an mfclip meta line; cannot resume from it"
            )
        previous = lines[0]
        differences = [
            f"{name} {was!r} there, {now!r} now"
            for name, was, now in [
                ("weights", _checkpoint_hashes(previous), _checkpoint_hashes(meta)),
                *(
                    (f"thresholds.{key}", previous.get("thresholds", {}).get(key), value)
                    for key, value in meta["thresholds"].items()
                ),
                ("video sampling", previous.get("video_sampling"), meta["video_sampling"]),
                ("provenance trust", _trust(previous), _trust(meta)),
                ("verdicts", previous.get("verdicts"), meta["verdicts"]),
                # int8 and fp32 may label a face differently
                ("precision", _precision_used(previous), _precision_used(meta)),
            ]
            if was != now
        ]
        if differences:
            raise ReportError(
                f"{path} was written with other settings ({'; '.join(differences)}); "
                "resuming would mix "
                "results: scan again into a new report, or resume with the same settings"
            )
        state = cls()
        for line in lines[1:]:
            if line.get("type") != "file":
                continue
            key = cls.key(line["path"], previous.get("cwd"))
            if line.get("sha256"):
                state.done.add((key, line["sha256"]))
            earlier = FileRecord.from_dict({**line, "path": key})
            state.records[key] = earlier.outcome
        return state
