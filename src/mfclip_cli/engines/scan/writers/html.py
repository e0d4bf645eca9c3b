"""The HTML case report: one self-contained page a colleague opens offline in any browser.

Images are embedded as data URIs and the style sheet is inline; there is no script and nothing is
fetched. It is one more sink over the scan's records (``mfclip scan --html``), and
``report_from_jsonl`` renders the same page from an earlier JSON Lines report (``mfclip report``).
Each file's pictures are drawn when its record arrives (from the image the scan decoded; a video's
frames, and every picture of ``mfclip report``, read again once and shown only when the bytes are
those the record's SHA-256 names) and encoded as small JPEGs, and its section is staged on disk,
so memory stays flat in the number of files; the page is assembled atomically at the end, when
the summary it opens with is known. Every path and message goes through Jinja2's autoescaping,
never into markup by hand.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image

from mfclip_cli.engines.scan.evidence import InputChanged, frames_of, image_of, read_image
from mfclip_cli.engines.scan.records import (
    STATUS_ERROR,
    STATUS_NO_FACE,
    FaceRecord,
    FileRecord,
    faces_by_frame,
)
from mfclip_cli.engines.scan.writers.common import (
    CLASS_COLUMNS,
    DEMO_NOTICE,
    LABEL_COLOURS,
    ReportError,
    operating_point_words,
    report_lines,
    side_by_side,
)
from mfclip_cli.engines.scan.writers.images import draw_faces
from mfclip_cli.engines.scan.writers.json_reports import StagedReport
from mfclip_cli.engines.scan.writers.resume import ResumeState
from mfclip_cli.errors import DataError
from mfclip_cli.faces.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_image,
)
from mfclip_cli.files import file_key, shown
from mfclip_cli.schemas import SCHEMA_VERSION
from mfclip_cli.timestamps import utc_now

THUMBNAIL_SIDE = 640  # pixels, the longer side of a file's (or a video frame's) picture
# and of a picture without a face: enough to see a face the detector missed, a quarter of the
# bytes (most of an evidence folder has none: 20,000 files made a 348 MB page, audit AA M1)
FACELESS_THUMBNAIL_SIDE = 320
CROP_SIDE = 160  # pixels, a face crop and its explanation
CROP_MARGIN = 1.3  # the crop's side over the face box's longer side, as the aligner's margin
JPEG_QUALITY = 85

_TEMPLATES = Environment(
    loader=PackageLoader("mfclip_cli.engines.scan.writers", "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field fails the tests instead of rendering empty
    trim_blocks=True,
    lstrip_blocks=True,
    # every string as the table shows it (control characters in a file name escaped), but
    # the page's own markup: its file sections are rendered first and kept as they are
    finalize=lambda value: (
        shown(value) if isinstance(value, str) and not isinstance(value, Markup) else value
    ),
)


def _text(value: Any) -> str:
    """A meta value in words: settings dicts as ``key value; ...`` (keys as words, not
    identifiers), lists comma-separated, a setting that is off or absent as a dash."""
    if isinstance(value, dict):
        return "; ".join(f"{key.replace('_', ' ')} {_text(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


def _operating_point_rows(point: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An ``fpr:X`` threshold's support in words: an accepted unsupported one was said only in
    the JSON."""
    return [("operating point", operating_point_words(point))] if point else []


def _precision_rows(precision: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Which arithmetic gave the probabilities (int8 and fp32 differ in the last digits)."""
    if not precision:
        return []
    return [("precision", f"{precision.get('used')} ({precision.get('reason')})")]


def _size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size:,} bytes)"
    return f"{size} bytes"


def _data_uri(image: Image.Image, kind: str = "JPEG") -> str:
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format=kind, optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{kind.lower()};base64,{encoded}"


def _face_crop(image: Image.Image, box: list[float]) -> Image.Image:
    """The face box, squared and widened by ``CROP_MARGIN`` about its centre (black beyond the
    image's edge), at ``CROP_SIDE``: like the model's aligned crop, without the rotation."""
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) * CROP_MARGIN / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    square = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    return image.crop(square).resize((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS)


def attribution_words(attribution: dict[str, Any]) -> str:
    """The meta's attribution in words: which generators the checkpoint can name, or why
    none."""
    if not attribution.get("available"):
        return f"attribution unavailable: {attribution.get('reason', 'no generator fingerprints')}"
    return (
        f"{_text(attribution['generators'])} (attribution is only among these trained "
        f"generators; {attribution['rule']})"
    )


STRIP_WIDTH, STRIP_HEIGHT = 320, 60  # pixels, a track's p(fake) line


def _track_strips(record: FileRecord, pictures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per track of a video: its summary, its faces' crops in time order (where the frames could
    be read again) and its p(fake) over time as an SVG polyline's points."""
    summaries = (record.video or {}).get("tracks") or []
    crops: dict[tuple[int | None, int], str | None] = {
        (view["record"].frame, view["record"].index): view["crop"]
        for picture in pictures
        for view in picture["faces"]
    }
    times = [face.timestamp or 0.0 for face in record.faces]
    start, span = min(times, default=0.0), (max(times, default=0.0) - min(times, default=0.0))
    strips = []
    for summary in summaries:
        faces = [face for face in record.faces if face.track == summary["track"]]
        points = [
            (
                STRIP_WIDTH * ((face.timestamp or 0.0) - start) / (span or 1.0),
                STRIP_HEIGHT * face.probs["real"],  # p(fake) 1 at the top
            )
            for face in faces
        ]
        strips.append(
            {
                "summary": summary,
                "crops": [crops.get((face.frame, face.index)) for face in faces],
                "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
            }
        )
    return strips


class HtmlSink(StagedReport):
    """The HTML case report, staged section by section and written atomically when the run ends.

    Paths in the records are read relative to the meta's ``cwd`` (the folder the scan ran in). An
    input that cannot be read again, or that changed since the scan (another SHA-256), keeps its
    section and its faces' results, with a note in place of its pictures.
    """

    def __init__(self, path: str | Path, *, force: bool = False, source: str | None = None):
        super().__init__(path, force=force)
        self.source = source  # the JSON Lines report rendered, for ``mfclip report``
        self.meta: dict[str, Any] = {}
        self.base = Path.cwd()
        self.count = self.faces = self.fake_files = self.unreadable = 0
        self.declared_ai = self.explanations_unshown = 0
        self.labels: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.errors: list[tuple[int, str, str]] = []  # (section number, path, message)
        # the files an analyst looks at first, linked from the top of the page: (section number,
        # path, why) for a face labelled diffusion or gan or a declared AI origin, and those
        # with an inconclusive face (thousands of sections are not read one by one)
        self.flagged: list[tuple[int, str, str]] = []
        self.uncertain: list[tuple[int, str]] = []

    def begin(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.base = Path(meta.get("cwd") or os.getcwd())

    def write(self, record: FileRecord) -> None:
        self.count += 1
        self.faces += len(record.faces)
        self.labels.update(face.label for face in record.faces)
        self.statuses[record.status] += 1
        self.declared_ai += record.declares_ai
        self._flag(record)
        if record.status == STATUS_ERROR:
            self.errors.append((self.count, record.path, record.error or "error"))
        if record.annotation and "error" in record.annotation:
            self.errors.append((self.count, record.path, record.annotation["error"]))
        if record.explanation_error:  # it adds exit code 3 as the annotation's does (audit X M2)
            self.errors.append((self.count, record.path, record.explanation_error))
        if record.video and record.video.get("incomplete"):
            self.errors.append((self.count, record.path, record.video["incomplete"]))
        pictures_note = self._pictures_note(record)
        if record.pictures_unread:  # exit 3, as a video read in part (audit AE L1)
            self.errors.append((self.count, record.path, pictures_note))
        unshown = self.explanations_unshown
        pictures, note = self._pictures(record)
        # its pictures, or a heatmap, not read again (a missing heatmap left exit 0: audit X L5)
        self.unreadable += note is not None or self.explanations_unshown > unshown
        section = _TEMPLATES.get_template("file.html").render(
            number=self.count,
            file=record,
            size=_size(record.size),
            pictures=pictures,
            note=note,
            pictures_note=pictures_note,
            tracks=_track_strips(record, pictures),
            strip_width=STRIP_WIDTH,
            strip_height=STRIP_HEIGHT,
        )
        self.staged.write(section)

    def _pictures_note(self, record: FileRecord) -> str | None:
        """``record.pictures_note``; of a report written before 2.19.0, which scanned a TIFF's,
        HEIF's or MPO's first picture only, that the others were not (its records say so only
        by the report's version: audit AE M6)."""
        version = str(self.meta.get("schema_version") or SCHEMA_VERSION).split(".")
        older = [int(part) if part.isdigit() else 0 for part in version[:2]] < [2, 19]
        if older and record.pictures_in_file and record.video is None:
            first = "primary" if record.format == "HEIF" else "first"
            return (
                f"only the {first} of its {record.pictures_in_file} pictures was scanned (by "
                "mfclip before 2.19.0, which did not scan the others)"
            )
        return record.pictures_note

    # -- pictures ----------------------------------------------------------------------------
    def _images(
        self, record: FileRecord, keys: list[int | None]
    ) -> Iterator[tuple[int | None, Image.Image]]:
        """(frame index or None, PIL image) of each picture of the input ``keys`` name: the
        image the scan decoded (None: an image's, or the first picture of one of several), else
        read again (``evidence.image_of``, ``evidence.frames_of``)."""
        limit = self._limit
        if None in keys:
            yield None, Image.fromarray(image_of(record, self.base, limit).pixels)
        frames = [key for key in keys if key is not None]
        if frames:
            with frames_of(record, self.base, frames, limit) as video:
                for frame in video:
                    yield frame.index, Image.fromarray(frame.pixels)

    def _pictures(self, record: FileRecord) -> tuple[list[dict[str, Any]], str | None]:
        """A picture per image, or per video frame with faces, each with its faces; and a note
        when the pictures could not be shown (the faces are listed without them then)."""
        if record.status == STATUS_ERROR:
            return [], None
        groups = faces_by_frame(record.faces)
        if not record.framed:
            groups.setdefault(None, [])  # an image is shown with or without faces
        elif record.stills and not groups:  # its first picture scanned (audit AF F7: not one
            # that could not be decoded), None where it is the one the scan decoded
            first = record.first_scanned
            groups.setdefault(None if first in (0, None) else first, [])
        shown: dict[int | None, dict[str, Any]] = {}
        note = None
        try:
            for frame, image in self._images(record, list(groups)):
                shown[frame] = self._picture(groups[frame], image)
        except (OSError, DecodeError, ValueError, InputChanged) as error:
            shown.clear()  # a video that changed as its frames were read: none is shown
            note = f"pictures not shown: {getattr(error, 'strerror', None) or error}"
            if not (self.base / record.path).exists():
                note = f"input missing: {self.base / record.path} is not there any more"
        if note is None and len(shown) < len(groups):
            note = f"{len(groups) - len(shown)} frame(s) could not be decoded again"
        pictures = [
            shown.get(frame) or self._picture(faces, None) for frame, faces in groups.items()
        ]
        return pictures, note

    def _flag(self, record: FileRecord) -> None:
        """Note ``record`` among the files to look at first, if it is one."""
        fakes = Counter(face.label for face in record.faces if face.conclusive_fake)
        self.fake_files += bool(fakes)
        why = [f"{count} face(s) labelled {label}" for label, count in sorted(fakes.items())]
        if record.declares_ai:
            why.append("its own evidence declares an AI origin")
        if why:
            self.flagged.append((self.count, record.path, "; ".join(why)))
        if any(face.inconclusive for face in record.faces):
            self.uncertain.append((self.count, record.path))

    def _picture(self, faces: list[FaceRecord], image: Image.Image | None) -> dict[str, Any]:
        picture = {
            "frame": faces[0].frame if faces else None,
            "timestamp": faces[0].timestamp if faces else None,
            "thumbnail": None,
            "faces": [self._face(face, image) for face in faces],
        }
        if image is not None:
            width = image.width
            # in place: the crops are made already
            side = THUMBNAIL_SIDE if faces else FACELESS_THUMBNAIL_SIDE
            image.thumbnail((side, side))
            draw_faces(image, faces, image.width / width)
            picture["thumbnail"] = _data_uri(image)
        return picture

    def _face(self, face: FaceRecord, image: Image.Image | None) -> dict[str, Any]:
        view: dict[str, Any] = {
            "record": face,
            "crop": None if image is None else _data_uri(_face_crop(image, face.box)),
            "explanation": None,
            "explanation_note": None,
        }
        if face.explanation:
            try:
                heatmap = Image.fromarray(self._explanation(face).pixels)
                heatmap.thumbnail((CROP_SIDE, CROP_SIDE))
                view["explanation"] = _data_uri(heatmap, "PNG")
            except (DecodeError, InputChanged) as error:
                view["explanation_note"] = f"explanation not shown: {error}"
                self.explanations_unshown += 1
        return view

    def _explanation(self, face: FaceRecord) -> DecodedImage:
        """The heatmap PNG the scan wrote for ``face``, read once; an ``InputChanged`` where its
        bytes are not those the record's SHA-256 names (a later run wrote over it: audit X M1)."""
        read = read_image(self.base / face.explanation)  # type: ignore[operator]
        if face.explanation_sha256 not in (None, read.sha256):
            raise InputChanged(
                "the file has changed since the scan (its SHA-256 differs): another run wrote "
                "over it"
            )
        return decode_image(read.data, self._limit)

    @property
    def _limit(self) -> int:
        """The scan's pixel limit, which every picture read again is held to (audit Y M2: a 108
        MP photo it took was refused), the heatmaps too: Pillow's check is one for the process,
        and the default, set by a heatmap's reading, refused a view the scan's workers were
        reading under a larger one (audit AH F6)."""
        return (self.meta.get("thresholds") or {}).get("max_pixels", DEFAULT_MAX_PIXELS)

    # -- the page ----------------------------------------------------------------------------
    def _meta_rows(self, summary: dict[str, Any]) -> list[tuple[str, str]]:
        meta = self.meta
        weights = meta.get("weights") or {}
        rows = [
            ("tool", f"{meta.get('tool', 'mfclip')} {meta.get('version', '')}".strip()),
            ("weights", _text(weights.get("name"))),
            ("weights SHA-256", _text(weights.get("sha256"))),
            ("device", _text(meta.get("device"))),
            ("thresholds", _text(meta.get("thresholds"))),
            *_operating_point_rows(meta.get("operating_point")),
            *_precision_rows(meta.get("precision")),
            ("video sampling", _text(meta.get("video_sampling"))),
            ("inconclusive band", _text(meta.get("verdicts"))),
        ]
        if side_by_side(meta):  # numbered as each face's lines are
            checkpoints = [
                f"#{k} {weights.get('name')} ({str(weights.get('sha256'))[:12]})"
                for k, weights in enumerate(side_by_side(meta))
            ]
            rows.append(("side by side", "; ".join(checkpoints)))
        if "calibration" in meta:
            rows.append(("calibration", _text(meta["calibration"])))
        if "attribution" in meta:
            rows.append(("generators known", attribution_words(meta["attribution"])))
        if meta.get("provenance"):
            rows.append(("provenance checks", _text(meta["provenance"])))
        if "processes" in meta:
            rows.append(("processes", _text(meta["processes"])))
        rows += [
            ("started (UTC)", _text(meta.get("started_utc"))),
            ("finished (UTC)", _text(summary.get("finished_utc"))),
            ("scanned in", _text(meta.get("cwd"))),
            ("report written (UTC)", utc_now()),
        ]
        if self.source:
            rows.append(("rendered from", self.source))
        return rows

    def _summary_rows(self, summary: dict[str, Any]) -> list[tuple[str, str]]:
        rows = [("files", str(self.count)), ("faces", str(self.faces))]
        labels = [*CLASS_COLUMNS, *sorted(set(self.labels) - set(CLASS_COLUMNS))]
        rows += [(f"faces labelled {label}", str(self.labels[label])) for label in labels]
        rows += [
            ("files with a face labelled diffusion or gan", str(self.fake_files)),
            ("files with an inconclusive face", str(len(self.uncertain))),
            ("files whose own evidence declares an AI origin", str(self.declared_ai)),
            ("files without a face", str(self.statuses[STATUS_NO_FACE])),
            ("errors", str(len(self.errors))),
        ]
        if self.meta.get("folders_without_media"):  # an empty or unmounted evidence folder
            empty = "; ".join(self.meta["folders_without_media"])
            rows.append(("folders named holding no image or video", empty))
        if self.unreadable:
            rows.append(("inputs not read again (pictures or heatmaps)", str(self.unreadable)))
        if summary.get("skipped_as_done"):
            skipped = str(summary["skipped_as_done"])
            rows.append(("inputs recorded by an earlier run (shown as it recorded them)", skipped))
        return rows

    def close(self, summary: dict[str, Any]) -> None:
        page = _TEMPLATES.get_template("report.html").generate(
            meta_rows=self._meta_rows(summary),
            summary_rows=self._summary_rows(summary),
            demo=bool(self.meta.get("demo")),
            demo_notice=DEMO_NOTICE,
            complete=bool(summary.get("complete")),
            errors=self.errors,
            flagged=self.flagged,
            uncertain=self.uncertain,
            duplicates=summary.get("duplicates"),
            # asked for, but the run stopped before its files were grouped
            ungrouped=summary.get("duplicates") is None
            and bool((self.meta.get("verdicts") or {}).get("near_duplicate_bits")),
            colours={label: f"rgb{colour}" for label, colour in LABEL_COLOURS.items()},
            sections=self.staged_parts(),
        )
        self.publish(page)


def _report_entries(source: Path, lines: Iterator[Any]) -> Iterator[FileRecord | dict[str, Any]]:
    """The file records and end lines of a JSON Lines report after its meta line."""
    try:
        for line in lines:
            if line.get("type") == "file":
                yield FileRecord.from_dict(line)
            elif line.get("type") == "end":
                yield line
    except (ValueError, KeyError, TypeError, AttributeError):  # JSON, UTF-8 or shape
        raise ReportError(
            f"{source} is not an mfclip JSON Lines report: a line after its meta line is not a "
            "report record"
        ) from None


def _replaced_records(source: Path) -> tuple[set[int], list[str]]:
    """The places (among ``_report_entries``) of file records that a later record of the same
    input replaces: a resumed run scans again a file changed since, or one that could not be
    read, and appends its new record, the earlier one staying where it was; and the inputs the
    report lists. Inputs are told apart as resume tells them (``ResumeState.key``:
    ``photos/a.jpg`` from ``/case`` is ``/case/photos/a.jpg``)."""
    last: dict[str, int] = {}
    places: list[int] = []
    with open(source, "rb") as stream:
        lines = report_lines(stream)
        meta = next(lines, None)
        cwd = meta.get("cwd") if isinstance(meta, dict) else None
        entries = (
            line for line in lines if isinstance(line, dict) and line.get("type") in ("file", "end")
        )
        try:
            for index, line in enumerate(entries):
                if line["type"] == "file":
                    last[ResumeState.key(FileRecord.path_of(line), cwd)] = index
                    places.append(index)
        except (ValueError, KeyError, TypeError):  # the rendering pass names the broken line
            pass
    return set(places) - set(last.values()), list(last)


def _refuse_evidence_target(target: str | Path, inputs: list[str]) -> None:
    """No page is written over a file the report lists, whatever ``--force`` says, as ``scan``
    writes no report over an input (audit X M6: ``report --html case/IMG.jpg --force`` replaced
    the evidence). Compared by file, so a hard link or another spelling is found."""
    found = file_key(target, regular=True)
    if found is None:
        return  # not there yet (or a pipe): no input
    for path in inputs:
        if file_key(path) == found:
            raise ReportError(
                f"{target} is one of the files the report lists ({path}): a report is never "
                "written over evidence; name another file"
            )


def _check_renderable(source: Path, meta: dict[str, Any]) -> None:
    """Another tool's report, or one in a report format of another major version (whose fields
    may be named or mean otherwise), is refused rather than drawn wrong."""
    if meta.get("tool", "mfclip") != "mfclip":
        raise ReportError(f"{source} was written by {meta['tool']!r}, not by mfclip")
    version = meta.get("schema_version")
    if version is not None and str(version).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ReportError(
            f"{source} is in report format {version}; this mfclip renders {SCHEMA_VERSION} and "
            "the formats of its major version only (docs/output.md lists what changed)"
        )


def report_from_jsonl(
    source: str | Path,
    target: str | Path,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Render the HTML case report of an earlier scan from its JSON Lines report (``--jsonl``);
    ``progress(done, total)`` is told of each file rendered (reading 20,000 inputs again took a
    minute without a word: audit AA L2).

    A line cut off by a crash is left out, as is a file's record that a later one of the same
    path replaces (a resumed run scanned it again). A resumed report holds an end line per run
    that wrote to it: the last line says what the report is, so a report whose last line is not
    an end line (a record after it: a resumed run that did not finish) is shown as partial.
    Returns how many inputs could not be read again for their pictures (their sections say so).
    Nothing is written when ``source`` is not a report.
    """
    source = Path(source)
    if os.path.realpath(source) == os.path.realpath(target):
        raise ReportError(f"{target} is the JSON Lines report itself: name another file")
    try:
        stream = open(source, "rb")
    except OSError as error:
        # the command's input, missing or unreadable as a dataset can be: exit 1, not a usage error
        raise DataError(f"cannot read {source}: {error.strerror or error}") from None
    with stream:
        lines = report_lines(stream)
        try:
            meta = next(lines, None)
        except ValueError:  # JSON or UTF-8
            meta = None
        if not isinstance(meta, dict) or meta.get("type") != "meta":
            raise ReportError(
                f"{source} is not an mfclip JSON Lines report (its first line is not a complete "
                "meta line)"
            )
        _check_renderable(source, meta)
        replaced, inputs = _replaced_records(source)
        _refuse_evidence_target(target, inputs)
        sink = HtmlSink(target, force=force, source=str(source))
        try:
            sink.begin(meta)
            end: dict[str, Any] = {"complete": False}
            for index, entry in enumerate(_report_entries(source, lines)):
                if isinstance(entry, FileRecord):
                    if index not in replaced:
                        sink.write(entry)
                        if progress is not None:
                            progress(sink.count, len(inputs))
                    end = {"complete": False}  # until an end line follows
                else:
                    end = entry
            sink.close({key: value for key, value in end.items() if key != "type"})
        except BaseException:
            sink.discard()
            raise
    return sink.unreadable
