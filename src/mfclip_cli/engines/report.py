"""Where scan results go: JSON, JSON Lines, CSV, a terminal table, annotated copies.

Every sink gets the run's meta first, then one record per input file in input order. JSON Lines
and CSV are written as each file finishes (a crash loses nothing already written); the JSON
document is written atomically at the end. No sink overwrites an existing file unless asked.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from mfclip_cli.engines.records import STATUS_ERROR, FileRecord
from mfclip_cli.faces.decode import DecodeError, decode_image, is_video
from mfclip_cli.files import refuse_existing, write_json_atomic

CLASS_COLUMNS = ("real", "diffusion", "gan")
LABEL_COLOURS = {"real": (40, 200, 80), "diffusion": (240, 90, 40), "gan": (200, 40, 200)}


class Sink(Protocol):
    def begin(self, meta: dict[str, Any]) -> None: ...
    def write(self, record: FileRecord) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """One line per file, flushed as it is written; ``-`` is stdout. Resuming appends."""

    def __init__(self, target: str, *, force: bool = False, resume: bool = False):
        self.target = target
        self.resume = resume
        if target == "-":
            self.stream: TextIO = sys.stdout
        else:
            path = Path(target)
            if not resume:
                refuse_existing(path, force)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(path, "a" if resume else "w", encoding="utf-8")

    def _line(self, document: dict[str, Any]) -> None:
        self.stream.write(json.dumps(document, ensure_ascii=False) + "\n")
        self.stream.flush()

    def begin(self, meta: dict[str, Any]) -> None:
        if not self.resume:
            self._line(meta)

    def write(self, record: FileRecord) -> None:
        self._line(record.to_dict())

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


class JsonSink:
    """``{meta, files: [...]}`` written atomically once the run ends."""

    def __init__(self, path: str, *, force: bool = False):
        self.path = Path(path)
        self.force = force
        refuse_existing(self.path, force)
        self.meta: dict[str, Any] = {}
        self.files: list[dict[str, Any]] = []

    def begin(self, meta: dict[str, Any]) -> None:
        self.meta = {key: value for key, value in meta.items() if key != "type"}

    def write(self, record: FileRecord) -> None:
        document = record.to_dict()
        document.pop("type")
        self.files.append(document)

    def close(self) -> None:
        write_json_atomic(self.path, {"meta": self.meta, "files": self.files}, overwrite=self.force)


CSV_COLUMNS = [
    "path", "sha256", "size", "format", "width", "height", "status", "error", "frame", "timestamp",
    "face_index", "x1", "y1", "x2", "y2", "det_score", *CLASS_COLUMNS, "label", "weights_sha256", "demo",
]


class CsvSink:
    """One row per face; a file with no face or an error gets one row with empty face columns."""

    def __init__(self, path: str, *, force: bool = False):
        self.path = Path(path)
        refuse_existing(self.path, force)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "w", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.stream, fieldnames=CSV_COLUMNS)
        self.common: dict[str, Any] = {}

    def begin(self, meta: dict[str, Any]) -> None:
        self.common = {"weights_sha256": meta["weights"]["sha256"], "demo": str(meta["demo"]).lower()}
        self.writer.writeheader()

    def write(self, record: FileRecord) -> None:
        base = {key: getattr(record, key) for key in ("path", "sha256", "size", "format", "width", "height", "status", "error")}
        base.update(self.common)
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
                    "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                    "det_score": face.det_score,
                    **face.probs,
                    "label": face.label,
                }
            )
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


class TableSink:
    """A rich table on the terminal once the run ends: a row per face, and per faceless file."""

    def __init__(self, console: Console):
        self.console = console
        self.rows: list[tuple[str, ...]] = []
        self.meta: dict[str, Any] = {}

    def begin(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def write(self, record: FileRecord) -> None:
        if not record.faces:
            detail = record.error if record.status == STATUS_ERROR else "no face found"
            self.rows.append((record.path, record.status, "", "", "", "", "", detail or ""))
        for face in record.faces:
            where = f"#{face.index}" + (f" @{face.timestamp:.2f}s" if face.timestamp is not None else "")
            box = "[" + ", ".join(f"{v:.0f}" for v in face.box) + "]"
            probs = [f"{face.probs[name]:.3f}" for name in CLASS_COLUMNS]
            self.rows.append((record.path, record.status, where, box, *probs, face.label))

    def close(self) -> None:
        weights = self.meta.get("weights", {})
        title = f"mfclip scan — weights {weights.get('name')} ({str(weights.get('sha256'))[:12]})"
        if self.meta.get("demo"):
            title += " [DEMO: synthetic-artifact weights, not evidence]"
        table = Table(title=title)
        longest = max((len(row[0]) for row in self.rows), default=4)
        table.add_column("file", overflow="fold", min_width=min(longest, self.console.width // 4))
        for column in ("status", "face", "box", *CLASS_COLUMNS):
            table.add_column(column, no_wrap=column in CLASS_COLUMNS, justify="right" if column in CLASS_COLUMNS else "left")
        table.add_column("label / note", overflow="fold", min_width=9)
        for row in self.rows:
            table.add_row(*row)
        self.console.print(table)


class AnnotateSink:
    """Copies of scanned images with each face's box and label drawn, written under ``folder``."""

    def __init__(self, folder: str, *, force: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()) and not force:
            raise FileExistsError(f"{self.folder} is not empty (use --force to write into it)")
        self.folder.mkdir(parents=True, exist_ok=True)

    def begin(self, meta: dict[str, Any]) -> None:
        pass

    def write(self, record: FileRecord) -> None:
        if record.status == STATUS_ERROR or is_video(Path(record.path)):
            return
        try:
            image = Image.fromarray(decode_image(Path(record.path)).pixels)
        except DecodeError:
            return
        draw = ImageDraw.Draw(image)
        width = max(2, round(max(image.size) / 400))
        for face in record.faces:
            colour = LABEL_COLOURS.get(face.label, (255, 255, 0))
            draw.rectangle(face.box, outline=colour, width=width)
            text = f"{face.index} {face.label} {face.probs[face.label]:.2f}"
            draw.text((face.box[0] + width, max(0, face.box[1] - 12)), text, fill=colour)
        name = f"{Path(record.path).stem}.{(record.sha256 or 'nohash')[:8]}.png"
        image.save(self.folder / name)

    def close(self) -> None:
        pass


def jsonl_done_records(path: Path, weights_sha256: str) -> set[tuple[str, str]]:
    """(path, sha256) of every file already in a JSON Lines report, for ``--resume``.

    The report must come from the same weights. A last line cut off by a crash is removed.
    """
    if not path.is_file():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as handle:
            handle.truncate(len(raw))
    lines = [json.loads(line) for line in io.StringIO(raw.decode("utf-8")) if line.strip()]
    if not lines or lines[0].get("type") != "meta":
        raise ValueError(f"{path} does not start with an mfclip meta line; cannot resume from it")
    previous = lines[0].get("weights", {}).get("sha256")
    if previous != weights_sha256:
        raise ValueError(
            f"{path} was written with weights {previous}, not {weights_sha256}; resuming would mix results"
        )
    return {(line["path"], line["sha256"]) for line in lines[1:] if line.get("type") == "file" and line.get("sha256")}
