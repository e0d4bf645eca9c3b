"""The CSV report: a row per face (and per faceless file), written as each file finishes.

A spreadsheet opens it, ``cat`` or ``column -t`` shows it on a terminal, and the file names in
it are the evidence's, chosen by whoever made the files: a text cell is written as the table
shows it where it must be (``shown``: control characters such as ESC, which would restyle or
rewrite the terminal, and invisible format characters escaped, and then a backslash doubled),
and one that a
spreadsheet would run as a formula (starting ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return; OWASP's "CSV injection") with a leading ``'``, which shows it as text. Where the ``path``
cell is then not the exact name, ``path_bytes`` holds the name's bytes. The other names a file
was reached by (``also_named``) are one cell, a JSON array of them (a name may hold a space, a
comma or a semicolon, but a JSON string ends only at an unescaped quote). The JSON reports keep
every value exactly.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from mfclip_cli.engines.scan.records import (
    FILE_FIELDS,
    FaceRecord,
    FileRecord,
    readable_strings,
)
from mfclip_cli.engines.scan.writers.common import CLASS_COLUMNS, report_file, side_by_side
from mfclip_cli.files import shown

# the file's provenance in brief (the JSON reports hold all of it); empty with --no-provenance
PROVENANCE_CSV_COLUMNS = (
    "c2pa",  # trusted | valid | invalid | remote | none_found | not_checked | error
    "declared_source_type",  # each IPTC source type with where it is declared: c2pa:, xmp: ...
    "c2pa_signer",
    "generator",  # front end and model of generation parameters found in the file
    "watermark",  # "sdxl 48/48" for each mark found, else none_found / not_checked / error
    "declares_ai",
    "provenance_errors",  # each check that failed and why, "; "-separated (then declares_ai is
    # what the other checks found)
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
        # every declaration with its source: C2PA's alone hid an XMP one saying otherwise, and
        # a row read digitalCapture beside declares_ai true (audit O L2)
        "declared_source_type": " ".join(
            dict.fromkeys(
                [f"c2pa:{kind}" for kind in c2pa.digital_source_types or ()]
                + [f"c2pa-ingredient:{kind}" for kind in c2pa.ingredient_digital_source_types or ()]
                + ([f"xmp:{metadata.digital_source_type}"] if metadata.digital_source_type else [])
            )
        )
        or None,
        "c2pa_signer": c2pa.signer,
        "generator": None if made is None else " ".join(filter(None, [made.tool, made.model])),
        "watermark": " ".join(marks) or found.watermark.status,
        "declares_ai": str(found.declares_ai).lower(),
        "provenance_errors": "; ".join(found.errors) or None,
    }


CSV_COLUMNS = [
    *FILE_FIELDS,
    "frame",
    "timestamp",
    "video_incomplete",  # why a video was read only in part (exit code 3; its status stays ok)
    # a still image of several pictures (a TIFF's pages): how many (each scanned, a face's
    # frame its index), those passed over as no view of their own (a reduced-resolution copy,
    # an MPO's thumbnail or gain map; space-separated), and
    # those that could not be decoded (a JSON array of {"picture", "error"}; exit code 3)
    "pictures_in_file",
    "pictures_passed_over",
    "pictures_unread",
    "decoder_warnings",  # what the decoder warned of as it read past damage (a JSON array)
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
    "family_uncertainty",  # a face labelled (or leaning) diffusion or gan
    "family_uncertain",  # true above the checkpoint's family threshold (band on)
    "p_fake_spread",  # with --stability
    "flips",  # with --stability
    "explanation",
    "richest_patch",  # "x1 y1 x2 y2" in the aligned crop, with --explain
    "weights_sha256",
    "demo",
    *PROVENANCE_CSV_COLUMNS,
    "also_named",  # the other names the file was reached by (a link to it): a JSON array
    "path_bytes",  # the name's exact bytes (hex), where the path cell is not the exact name
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_shown(value: str) -> str:
    """``value`` as the table shows it (``shown``) where it holds a character the table escapes,
    else as it is (a model's Windows path keeps its single backslashes)."""
    text = shown(value)
    return value if text == value.replace("\\", "\\\\") else text  # only backslashes doubled


def _cell(value: Any) -> Any:
    """A text cell ``_as_shown``, never a formula. Other values as they are."""
    if not isinstance(value, str):
        return value
    text = _as_shown(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _inert(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every text cell inert (``_cell``)."""
    return {key: _cell(value) for key, value in row.items()}


# with several --weights, per compared checkpoint k (1, 2, ... after the primary): "real@1", ...
COMPARED_CSV_COLUMNS = (*CLASS_COLUMNS, "label", "weights_sha256")


def attribution_cells(attribution: dict[str, Any] | None) -> dict[str, Any]:
    """A face's top-1 attribution columns (empty without one)."""
    if attribution is None:
        return {}
    return {
        "attributed_generator": attribution["generator"],
        "attribution_probability": attribution["probability"],
    }


class CsvSink:
    """One row per face; a file with no face or an error gets one row with empty face columns.
    With several checkpoints, each compared one k adds ``real@k`` ... ``weights_sha256@k``."""

    whole_report = True

    def __init__(self, path: str, *, force: bool = False):
        self.file = report_file(path, force=force)
        self.target, self.stream = self.file.target, self.file.stream
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
        base["video_incomplete"] = (record.video or {}).get("incomplete")
        base["pictures_in_file"] = record.pictures_in_file
        if record.pictures_passed_over:
            base["pictures_passed_over"] = " ".join(map(str, record.pictures_passed_over))
        if record.pictures_unread:
            unread = readable_strings(record.pictures_unread)
            base["pictures_unread"] = json.dumps(unread, ensure_ascii=False)
        if record.decoder_warnings:
            heard = readable_strings(record.decoder_warnings)
            base["decoder_warnings"] = json.dumps(heard, ensure_ascii=False)
        if record.also_named:  # each name as a text cell is written, not-UTF-8 bytes as \xNN
            names = [_as_shown(name) for name in readable_strings(record.also_named)]
            base["also_named"] = json.dumps(names, ensure_ascii=False)
        if _cell(record.path) != record.path:  # escaped or guarded: the exact name beside it
            base["path_bytes"] = os.fsencode(record.path).hex()
        if not record.faces:
            self.writer.writerow(_inert(base))
        for face in record.faces:
            x1, y1, x2, y2 = face.box
            row = _inert(
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
                    "family_uncertainty": face.family_uncertainty,
                    "family_uncertain": None
                    if face.family_uncertain is None
                    else str(face.family_uncertain).lower(),
                    "p_fake_spread": face.stability["spread"] if face.stability else None,
                    "flips": str(face.stability["flips"]).lower() if face.stability else None,
                    "explanation": face.explanation,
                    "richest_patch": " ".join(map(str, face.richest_patch or [])) or None,
                    **self._compared(face),
                }
            )
            self.writer.writerow(row)
        self.stream.flush()

    def close(self, summary: dict[str, Any]) -> None:
        self.file.close()

    def discard(self) -> None:
        self.file.discard()
