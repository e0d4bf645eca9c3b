"""Resuming a JSON Lines report: what an earlier run did, and the settings it must share."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfclip_cli.engines.scan.records import (
    FileRecord,
)
from mfclip_cli.engines.scan.writers.common import ReportError, side_by_side


def _each_key(
    name: str, was: dict[str, Any] | None, now: dict[str, Any] | None
) -> list[tuple[str, Any, Any]]:
    """A record's settings compared key by key (``verdicts.near_duplicate_bits``), so that a
    refusal names what differs, not the whole record twice (audit AK F5)."""
    was, now = was or {}, now or {}
    return [(f"{name}.{key}", was.get(key), now.get(key)) for key in sorted({*was, *now})]


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


def _provenance_checks(meta: dict[str, Any]) -> tuple[str | None, str]:
    """A report's provenance setting as a resume must match it: what is compared (off, on, or
    on with the SHA-256 of the ``--c2pa-trust`` anchors: the certificates, not the file's name,
    which another certificate could have been copied over, audit O M3) and its words (a refusal
    read "provenance trust False there, True now" for checks turned on)."""
    provenance = meta.get("provenance")
    if provenance is None:
        return None, "off (--no-provenance)"
    trust, digest = provenance.get("c2pa_trust"), provenance.get("c2pa_trust_sha256")
    if not trust:
        return "on", "on"
    return digest, f"on with the C2PA trust anchors of {trust} (SHA-256 {str(digest)[:12]})"


@dataclass
class ResumeState:
    """What an earlier report holds: the inputs it has done, and what its records add to the exit
    code.

    Inputs are keyed by the file they name (the real path, resolved from the folder the earlier
    run started in) and its SHA-256, so ``photos/a.jpg`` and ``/case/photos/a.jpg`` are one input.
    Each done input keeps where its record starts in the report, not the record: memory stays
    flat, and ``earlier`` reads it back when a report rewritten whole needs it.
    """

    report: Path | None = None
    # (real path, SHA-256) of each input done: the byte offset of its record's line
    done: dict[tuple[str, str], int] = field(default_factory=dict)
    # real path: FileRecord.outcome, (error, conclusive fake, inconclusive, declared AI)
    records: dict[str, tuple[bool, bool, bool, bool]] = field(default_factory=dict)

    def done_at(self, record: FileRecord) -> int | None:
        """Where the earlier record of ``record``'s input starts, if it is done: found by its
        name or by another it was reached by (two hard links of a file are one input, kept under
        the name met first, which an earlier run may have met second: audit Y L1)."""
        for name in (record.path, *(record.also_named or ())):
            offset = self.done.get((self.key(name), record.sha256 or ""))
            if offset is not None:
                return offset
        return None

    def earlier(self, record: FileRecord) -> FileRecord:
        """The earlier record of an input this run skipped as done (``record``, marked
        ``resumed``), named as this run names it (its other names too)."""
        offset = self.done_at(record)
        assert offset is not None  # skipped as done
        with open(self.report, "rb") as stream:  # type: ignore[arg-type]
            stream.seek(offset)
            earlier = FileRecord.from_dict(json.loads(stream.readline()))
        earlier.path, earlier.also_named = record.path, record.also_named
        return earlier

    @staticmethod
    def key(path: str, cwd: str | None = None) -> str:
        return os.path.realpath(os.path.join(cwd or os.getcwd(), path))

    @classmethod
    def from_report(
        cls, path: Path, lines: list[tuple[int, dict[str, Any]]], meta: dict[str, Any]
    ) -> "ResumeState":
        """The state of the report at ``path`` from its lines, each with its byte offset."""
        if not lines or lines[0][1].get("type") != "meta":
            raise ReportError(
                f"{path} does not start with an mfclip meta line; cannot resume from it"
            )
        previous = lines[0][1]
        differences = [
            f"{name} {was!r} there, {now!r} now"
            for name, was, now in [
                ("weights", _checkpoint_hashes(previous), _checkpoint_hashes(meta)),
                *(
                    (f"thresholds.{key}", previous.get("thresholds", {}).get(key), value)
                    for key, value in meta["thresholds"].items()
                ),
                ("video sampling", previous.get("video_sampling"), meta["video_sampling"]),
                # the meta line names the format of every line after it
                ("report format", previous.get("schema_version"), meta["schema_version"]),
                *_each_key("verdicts", previous.get("verdicts"), meta["verdicts"]),
                # int8 and fp32 may label a face differently
                ("precision", _precision_used(previous), _precision_used(meta)),
            ]
            if was != now
        ]
        (was, then), (now, words) = _provenance_checks(previous), _provenance_checks(meta)
        if was != now:  # said in words, not as values
            differences.append(f"provenance checks {then} there, {words} now")
        if differences:
            # a report format of its own: another build of mfclip wrote it, whose results may
            # differ (audit AA L4: the message did not say so)
            build = previous.get("schema_version") != meta["schema_version"]
            raise ReportError(
                f"{path} was written with other settings ({'; '.join(differences)}); "
                + (
                    "it was written by another build of mfclip: resuming would mix results; "
                    "scan again into a new report"
                    if build
                    else "resuming would mix results: scan again into a new report, or resume "
                    "with the same settings"
                )
            )
        state = cls(report=path)
        for offset, line in lines[1:]:
            if line.get("type") != "file":
                continue
            key = cls.key(FileRecord.path_of(line), previous.get("cwd"))
            if line.get("sha256"):
                state.done[(key, line["sha256"])] = offset
                # and by its other names: a resume naming only one of them (audit Z L1)
                for name in FileRecord.other_names_of(line) or []:
                    state.done.setdefault(
                        (cls.key(name, previous.get("cwd")), line["sha256"]), offset
                    )
            earlier = FileRecord.from_dict({**line, "path": key})
            state.records[key] = earlier.outcome
        return state
