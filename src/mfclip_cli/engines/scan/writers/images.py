"""Annotated copies of the images (boxes and labels) and, with --explain, each face's evidence."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, ImageDraw, ImageFont

from mfclip_cli.engines.scan.evidence import InputChanged, frames_of, image_of
from mfclip_cli.engines.scan.records import (
    STATUS_ERROR,
    FaceEvidence,
    FaceRecord,
    FileRecord,
    faces_by_frame,
)
from mfclip_cli.engines.scan.writers.common import (
    LABEL_COLOURS,
    ReportError,
    cannot_write,
    folders_to_make,
    make_folder,
    remove_made,
)
from mfclip_cli.faces.decode import DEFAULT_MAX_PIXELS, DecodeError
from mfclip_cli.files import atomic_writer, shown

# of a 255-byte name: the hash (9), a frame and face (".frame123456.face12"), ".png", and the
# temporary file's "." and ".XXXXXXXX.tmp" around the whole
STEM_BYTES = 200


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
    """Copies of scanned images, and of the sampled video frames with faces, with each face's
    box and label drawn, written under ``folder``.

    A copy that cannot be written is that file's problem (its record says so under
    ``annotation``), never the end of the run.
    """

    option = "--annotate"
    whole_report = False

    def __init__(self, folder: str, *, force: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.folder = Path(folder)
        self.max_pixels = max_pixels  # the scan's (--max-megapixels), to read pictures again
        # where it leads once made: "new/../kept" is the folder kept/ (audit Z H1: a refusal
        # removed it, taken for one this run made, and it was written into without --force)
        self.real = Path(os.path.realpath(self.folder))
        there = self.real not in folders_to_make(self.folder) and self.real.exists()
        if there and not self.real.is_dir():
            raise ReportError(f"{self.option} {folder} is a file, not a folder")
        if there and any(self.real.iterdir()) and not force:
            raise FileExistsError(f"{self.folder} is not empty (use --force to write into it)")
        self.target = folder
        self.made = make_folder(self.folder, self.folder)
        # made by this run, as it made it (another run may have made it meanwhile: audit Z2)
        self.created = self.real in self.made
        try:
            tempfile.TemporaryFile(dir=self.folder).close()  # can we write there at all?
        except OSError as error:
            self.discard()  # not yet among the outputs a refusal discards
            raise cannot_write(self.folder, error) from error

    def begin(self, meta: dict[str, Any]) -> None:
        pass

    def _stem(self, record: FileRecord) -> str:
        """The name of what is drawn from ``record``: its input's, shown as the reports show it
        (bytes that are not UTF-8 as \\xNN, control characters escaped), so the path the reports
        record names the file exactly, for ``mfclip report`` to find again; cut to
        ``STEM_BYTES`` (a name of 255 bytes, the most a file system allows, left no room for the
        hash, the frame and face and the temporary file's affixes)."""
        name = shown(Path(record.path).stem).encode("utf-8")[:STEM_BYTES]
        stem = name.decode("utf-8", "ignore")  # not a character cut in two
        return f"{stem}.{(record.sha256 or 'nohash')[:8]}"

    def write(self, record: FileRecord) -> None:
        if record.status == STATUS_ERROR:
            return
        try:
            if not record.framed:
                # the image the scan decoded (a copy: its pixels stay as scanned)
                image = Image.fromarray(image_of(record, Path.cwd(), self.max_pixels).pixels)
                path, digest = self._save(image, record.faces, record, None)
                record.annotation = {"path": path, "sha256": digest}
            else:
                copies = self._video_frames(record)
                record.annotation = {
                    "paths": [path for path, _ in copies],
                    "sha256": [digest for _, digest in copies],
                }
        except (OSError, DecodeError, ValueError, InputChanged) as error:
            reason = getattr(error, "strerror", None) or str(error)
            record.annotation = {"error": f"annotated copy not written: {reason}"}

    def _video_frames(self, record: FileRecord) -> list[tuple[str, str]]:
        """One copy per sampled frame with faces (or picture with faces, of a still image of
        several), read again from the input (checked to be the bytes scanned), its frame index
        in the name."""
        by_frame = faces_by_frame(record.faces)
        paths = []
        with frames_of(record, Path.cwd(), sorted(by_frame), self.max_pixels) as frames:
            for frame in frames:
                image = Image.fromarray(frame.pixels)
                paths.append(self._save(image, by_frame[frame.index], record, frame.index))
        return paths

    def _save(
        self, image: Image.Image, faces: list[FaceRecord], record: FileRecord, frame: int | None
    ) -> tuple[str, str]:
        draw_faces(image, faces)
        suffix = "" if frame is None else f".frame{frame:06d}"
        target = self.folder / f"{self._stem(record)}{suffix}.png"
        return str(target), write_png(image, target)

    def close(self, summary: dict[str, Any]) -> None:
        pass

    def discard(self) -> None:
        if self.created:  # the folder itself, made by this run, with what it wrote there
            shutil.rmtree(self.real, ignore_errors=True)
        remove_made([made for made in self.made if made != self.real])  # the rest, left empty


def write_png(image: Image.Image, target: Path) -> str:
    """``image`` written to ``target`` as a PNG (atomically, replacing it), and the SHA-256 of
    the bytes written: the record's, so that a copy a later run wrote over can be told (audit X
    M1: a report showed another checkpoint's heatmap beside its own numbers)."""
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    data = encoded.getvalue()
    with atomic_writer(target, overwrite=True) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


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
            frame = "" if face.frame is None else f".frame{face.frame:06d}"
            target = self.folder / f"{self._stem(record)}{frame}.face{face.index}.png"
            try:
                sheet = draw_evidence(face.evidence, face.richest_patch)
                face.explanation_sha256 = write_png(sheet, target)
                face.explanation = str(target)
            except (OSError, ValueError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                record.explanation_error = f"explanation not written: {reason}"
            face.evidence = None  # drawn: the crop and heatmap are not kept for the whole run
