"""Per-file and per-face result records: the scan output contract (README, `mfclip scan`) as
data."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

import numpy as np

from mfclip_cli.faces.decode import ANIMATION_FORMATS
from mfclip_cli.files import readable
from mfclip_cli.labels import CLASS_NAMES
from mfclip_cli.provenance.record import ProvenanceRecord
from mfclip_cli.scoring.inconclusive import (
    BINARY,
    FAMILIES,
    INCONCLUSIVE,
    family_uncertainties,
    uncertainties,
)

STATUS_OK, STATUS_NO_FACE, STATUS_ERROR = "ok", "no_face", "error"
STATUSES = (STATUS_OK, STATUS_NO_FACE, STATUS_ERROR)


def _round(values: np.ndarray | list[float], digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _row(probs: dict[str, float]) -> np.ndarray:
    """[1, 3] a face's probabilities in ``CLASS_NAMES`` order, as the scoring functions read
    them."""
    return np.array([[probs[name] for name in CLASS_NAMES]], dtype=np.float64)


def verdict(
    probs: dict[str, float],
    label: str,
    ood_distance: float | None = None,
    ood_threshold: float | None = None,
    measure: str = BINARY,
) -> dict[str, Any]:
    """One checkpoint's word on a face as the reports hold it: rounded probabilities, label,
    uncertainty (by its band's ``measure``), OOD distance and flag (None without OOD
    statistics). The face record's own fields and each entry of its ``detectors`` are made
    alike."""
    return {
        "probs": {name: round(float(value), 6) for name, value in probs.items()},
        "label": label,
        "uncertainty": round(float(uncertainties(_row(probs), measure)[0]), 6),
        "ood_distance": None if ood_distance is None else round(float(ood_distance), 4),
        "ood": None if ood_distance is None else bool(ood_distance > ood_threshold),
    }


@dataclass
class FaceEvidence:
    """What ``--explain`` draws for one face, held only until its PNG is written."""

    crop: Any  # uint8 [crop, crop, 3]: the aligned face the model read
    heatmap: Any  # float32 [crop, crop] in [0, 1]: 1 = most relevant to the fake score


@dataclass
class FaceRecord:
    index: int
    box: list[float]  # x1, y1, x2, y2 in the upright image's pixels
    landmarks: list[list[float]]  # 5 x (x, y)
    det_score: float
    probs: dict[str, float]
    label: str
    # of the real-vs-fake call: the binary entropy of p(real) over log 2, 0 sure, 1 at 0.5 (or,
    # by a checkpoint calibrated before 2.10.0, of all three classes: meta.verdicts.measure)
    uncertainty: float | None = None
    # Mahalanobis distance of the face embedding to the nearest training class mean, and whether
    # it passes the checkpoint's threshold (None: the checkpoint has no OOD statistics)
    ood_distance: float | None = None
    ood: bool | None = None
    frame: int | None = None  # video frames only
    timestamp: float | None = None  # seconds, video frames only
    # a PNG saying where the model looked (written only when set; the HTML report shows it), and
    # the SHA-256 of its bytes: a later run writing into the folder replaces it
    explanation: str | None = None
    explanation_sha256: str | None = None
    # with --explain: the noise branch's square in the aligned crop, x1 y1 x2 y2 (crop pixels)
    richest_patch: list[int] | None = None
    # with several --weights: each checkpoint's verdict, in --weights order (the primary's first,
    # the fields above): {"weights": name, "sha256", "probs", "label", "uncertainty", ood fields}
    detectors: list[dict[str, Any]] | None = None
    # a face not labelled real, by a checkpoint that stores generator fingerprints: the trained
    # generator it most resembles or "unknown" (scoring/attribution.py, Attributions.record)
    attribution: dict[str, Any] | None = None
    # an inconclusive face (label "inconclusive"): the label it leaned to, and why
    # ("uncertain", "ood", "unstable", "operating_point"; docs/verdicts.md)
    leaning: str | None = None
    inconclusive: list[str] | None = None
    # a face labelled (or leaning) diffusion or gan: the binary entropy of p(diffusion) and
    # p(gan) given fake, and, with the band on and a stored family threshold, whether it is above
    family_uncertainty: float | None = None
    family_uncertain: bool | None = None
    # with --stability: p(fake) and label under each re-encoding, their spread, whether it flips
    stability: dict[str, Any] | None = None
    track: int | None = None  # video frames only: the track it belongs to (engines/scan/tracks.py)
    # with --explain, until its PNG is written: the crop and heatmap to draw (never serialised)
    evidence: FaceEvidence | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        index: int,
        box: np.ndarray | list[float],
        landmarks: np.ndarray | list[list[float]],
        det_score: float,
        probs: dict[str, float],
        label: str,
        frame: int | None = None,
        timestamp: float | None = None,
        ood_distance: float | None = None,
        ood_threshold: float | None = None,
        detectors: list[dict[str, Any]] | None = None,
        attribution: dict[str, Any] | None = None,
        measure: str = BINARY,
    ) -> "FaceRecord":
        family = None
        if label in FAMILIES:
            family = round(float(family_uncertainties(_row(probs))[0]), 6)
        return cls(
            index=index,
            box=_round(box),
            landmarks=_round(landmarks),
            det_score=round(float(det_score), 6),
            **verdict(probs, label, ood_distance, ood_threshold, measure),
            family_uncertainty=family,
            frame=frame,
            timestamp=None if timestamp is None else round(float(timestamp), 3),
            detectors=detectors,
            attribution=attribution,
        )

    def to_dict(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "evidence"}
        if self.frame is None:
            del record["frame"]
        if self.timestamp is None:  # an image's face, or one on a still picture of several
            del record["timestamp"]
        for optional in (
            "uncertainty",
            "ood_distance",
            "ood",
            "explanation",
            "explanation_sha256",
            "richest_patch",
            "detectors",
            "attribution",
            "leaning",
            "inconclusive",
            "family_uncertainty",
            "family_uncertain",
            "stability",
            "track",
        ):
            if record[optional] is None:
                del record[optional]
        return record

    def mark_inconclusive(self, reasons: list[str]) -> None:
        """Label the face inconclusive for ``reasons`` (none: its verdict stands), keeping the
        label it leaned to."""
        if reasons:
            self.leaning, self.label, self.inconclusive = self.label, INCONCLUSIVE, list(reasons)

    @property
    def verdict_label(self) -> str:
        """The label the model gave, inconclusive or not: the one its probabilities stand for."""
        return self.leaning or self.label

    @property
    def conclusive_fake(self) -> bool:
        """Labelled non-real and not inconclusive: what ``--fail-on-fake`` counts."""
        return self.label not in ("real", INCONCLUSIVE)


def faces_by_frame(faces: Iterable[FaceRecord]) -> dict[int | None, list[FaceRecord]]:
    """The faces grouped by the video frame they were found in (an image's under None), in the
    order their frames first appear."""
    groups: dict[int | None, list[FaceRecord]] = {}
    for face in faces:
        groups.setdefault(face.frame, []).append(face)
    return groups


def readable_strings(value: Any) -> Any:
    """``value`` with every string in it ``readable`` (dicts and lists walked)."""
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {key: readable_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [readable_strings(item) for item in value]
    return value


# The file record's fields in output order (before ``faces``), and those written only when set.
FILE_FIELDS = ("path", "sha256", "size", "format", "width", "height", "status", "error")
OPTIONAL_FILE_FIELDS = (
    "also_named",
    "video",
    "annotation",
    "explanation_error",
    "smallest_face",
    "pictures_in_file",
    "pictures_passed_over",
    "pictures_unread",
    "decoder_warnings",
    "changed_during_scan",
    "phash",
)


@dataclass
class FileRecord:
    path: str
    sha256: str | None = None
    size: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    status: str = STATUS_OK
    error: str | None = None
    faces: list[FaceRecord] = field(default_factory=list)
    # the other names the inputs reached this file by, folded into this record (a symbolic link
    # to it, the file named twice); None when there is none (``inputs.collect_inputs``)
    also_named: list[str] | None = None
    video: dict[str, Any] | None = None  # sampling and per-video summary, videos only
    # with --annotate: {"path": copy}, a video's {"paths": one copy per frame with faces}, or
    # {"error": why not}
    annotation: dict[str, Any] | None = None
    explanation_error: str | None = None  # with --explain: why a face's PNG was not written
    smallest_face: int | None = None  # pixels, where --detect-max-side raised it above the meta's
    # a still image of several pictures (a TIFF's pages, a HEIF's images, an MPO's views): how
    # many; each is scanned, its faces' ``frame`` its index (``decode.StillPictures``)
    pictures_in_file: int | None = None
    # those passed over as no view of their own: a copy or map of another (a reduced-resolution
    # page, an MPO's thumbnail or gain map)
    pictures_passed_over: list[int] | None = None
    # those that could not be decoded: [{"picture": index, "error": why}] (adds to the exit code)
    pictures_unread: list[dict[str, Any]] | None = None
    # what the image decoder warned of as it read the file past damage, each once, in order
    # (``faces.decoder_warnings``); the file was read: no exit code
    decoder_warnings: list[str] | None = None
    # what the file says about its origin (C2PA, metadata, watermarks); None with --no-provenance
    provenance: ProvenanceRecord | None = None
    phash: str | None = None  # with --duplicates, images only: 64-bit DCT pHash, 16 hex digits
    # true when the input was written to while it was read or scanned (then an error, no hash)
    changed_during_scan: bool | None = None
    # the input as read once (never serialised): an image's bytes, which ``sha256`` names, and
    # the image decoded from them (``evidence.ImageBytes``), for what the run draws or checks
    # later; dropped once every report has the record
    source: Any = field(default=None, repr=False, compare=False)
    # an input a resumed run skipped as done (never serialised): the reports rewritten whole get
    # its earlier record in its place (``ResumeState.earlier``)
    resumed: bool = field(default=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        record = {"type": "file", **{key: getattr(self, key) for key in FILE_FIELDS}}
        record["faces"] = [face.to_dict() for face in self.faces]
        for extra in OPTIONAL_FILE_FIELDS:
            if getattr(self, extra) is not None:
                record[extra] = getattr(self, extra)
        if self.provenance is not None:
            record["provenance"] = self.provenance.to_dict()
        record = readable_strings(record)
        if record["path"] != self.path:  # the exact name, whatever its bytes
            record["path_bytes"] = os.fsencode(self.path).hex()
        if record.get("also_named", self.also_named) != self.also_named:  # each name likewise
            record["also_named_bytes"] = [
                None if written == name else os.fsencode(name).hex()
                for written, name in zip(record["also_named"], self.also_named or [])
            ]
        return record

    @staticmethod
    def path_of(document: dict[str, Any]) -> str:
        """The input's path as the file system names it: from ``path_bytes`` where the name is
        not UTF-8 (``path`` then shows it readably), else ``path``."""
        exact = document.get("path_bytes")
        return os.fsdecode(bytes.fromhex(exact)) if exact else document["path"]

    @staticmethod
    def other_names_of(document: dict[str, Any]) -> list[str] | None:
        """``also_named`` as the file system names them, each from its entry in
        ``also_named_bytes`` where that is set (as ``path_of``)."""
        names = document.get("also_named")
        if not names:
            return None
        exact = document.get("also_named_bytes") or [None] * len(names)
        return [os.fsdecode(bytes.fromhex(raw)) if raw else n for n, raw in zip(names, exact)]

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "FileRecord":
        """The inverse of ``to_dict`` (extra keys such as ``type`` are ignored)."""
        faces = [
            FaceRecord(**{"frame": None, "timestamp": None, **face})
            for face in document.get("faces", [])
        ]
        names = (*FILE_FIELDS, *OPTIONAL_FILE_FIELDS)
        provenance = document.get("provenance")
        return cls(
            **{key: document.get(key) for key in names if key not in ("path", "also_named")},
            path=cls.path_of(document),
            also_named=cls.other_names_of(document),
            faces=faces,
            provenance=None if provenance is None else ProvenanceRecord.from_dict(provenance),
        )

    @property
    def failed(self) -> bool:
        """Whether this file adds to the exit code as an error: unreadable (a video, or a file of
        several pictures, in part), or an annotated copy or explanation that could not be
        written."""
        annotation_failed = bool(self.annotation and "error" in self.annotation)
        return (
            self.status == STATUS_ERROR
            or annotation_failed
            or self.explanation_error is not None
            or bool(self.video and self.video.get("incomplete"))
            or bool(self.pictures_unread)
        )

    @property
    def animated(self) -> bool:
        """An animation scanned as a video (``DecodedImage.animated``): a video summary, and the
        format of an image (a video's is its container's and codec's)."""
        return self.video is not None and self.format in ANIMATION_FORMATS

    @property
    def stills(self) -> bool:
        """A still image of several pictures, each scanned (``decode.StillPictures``): its faces'
        ``frame`` is the picture's index."""
        return self.pictures_in_file is not None and self.video is None

    @property
    def first_scanned(self) -> int | None:
        """The first of a still image's pictures that was scanned: neither passed over nor
        unread."""
        unread = {entry["picture"] for entry in self.pictures_unread or ()}
        skipped = unread | set(self.pictures_passed_over or ())
        return next((i for i in range(self.pictures_in_file or 0) if i not in skipped), None)

    def names_picture(self, face: FaceRecord) -> bool:
        """Whether the reports name the picture ``face`` is in: a still image's where more than
        one was scanned, or another than the first (whose size the record gives; audit AF F9);
        not a photo's beside its gain map, as for any photo."""
        if not self.stills or face.frame is None:
            return False
        passed_over = len(self.pictures_passed_over or ())
        return face.frame != 0 or (self.pictures_in_file or 0) - passed_over > 1

    @property
    def framed(self) -> bool:
        """Whether its faces carry the frame they were found in: a video's, an animation's, or a
        still image's of several pictures (the picture's index)."""
        return self.video is not None or self.stills

    @property
    def pictures_note(self) -> str | None:
        """What the reports say of an image file of several pictures: which could not be
        decoded (numbered from 1, as people count pages; the records' indices count from 0),
        not those passed over as copies or maps of another (a thumbnail, an HDR photo's gain
        map: most phone photos hold one, and a note on each said nothing); or, of an animation,
        that frames were passed over between the sampling instants (its frames are often
        distinct pictures, and a short one at 1 fps gives one)."""
        video = self.video or {}
        sampled, frames = video.get("frames_sampled", 0), video.get("frame_count", 0)
        unread = video.get("frames_unread", 0)  # damaged: no sampling takes more of them
        if self.animated and sampled + unread < frames:
            return f"{sampled} of its {frames} frames sampled (--fps or --frames N takes more)"
        count = self.pictures_in_file
        if count is None or self.status == STATUS_ERROR or not self.pictures_unread:
            return None
        first = self.pictures_unread[0]
        return (
            f"{len(self.pictures_unread)} of its {count} pictures could not be decoded"
            f" (picture {first['picture'] + 1}: {first['error']})"
        )

    @property
    def decoder_note(self) -> str | None:
        """What the reports say of the decoder's warnings (``decoder_warnings``)."""
        if not self.decoder_warnings:
            return None
        return "the decoder read past damage: " + "; ".join(self.decoder_warnings)

    def heard(self, warnings: list[str]) -> None:
        """The decoder's warnings heard while this file was read, added to those it has."""
        known = self.decoder_warnings or []
        added = [text for text in warnings if text not in known]
        if added:
            self.decoder_warnings = known + added

    @property
    def declares_ai(self) -> bool:
        """Whether evidence in the file itself declares an AI origin (``--fail-on-declared-ai``)."""
        return self.provenance is not None and self.provenance.declares_ai

    @property
    def outcome(self) -> tuple[bool, bool, bool, bool]:
        """What this file adds to the exit code: (failed, a conclusive fake, an inconclusive
        face, its own evidence declares an AI origin)."""
        labels = {face.label for face in self.faces}
        return (
            self.failed,
            any(face.conclusive_fake for face in self.faces),
            INCONCLUSIVE in labels,
            self.declares_ai,
        )

    def fail(self, message: str) -> "FileRecord":
        self.status, self.error, self.faces = STATUS_ERROR, message, []
        return self

    def changed(self, message: str) -> "FileRecord":
        """An input written to while it was read or scanned: an error, flagged, and without the
        hash and size of bytes other than those analysed (so a resume scans it again)."""
        self.fail(message)
        self.sha256 = self.size = None
        self.changed_during_scan = True
        return self
