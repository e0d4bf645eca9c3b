"""One entry point for every provenance check of a file, each isolated: a check that fails
becomes that check's error in the record, and the others still report."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar

import numpy as np

from mfclip_cli.provenance.record import (
    ERROR,
    NOT_CHECKED,
    C2paEvidence,
    MetadataEvidence,
    ProvenanceRecord,
    WatermarkEvidence,
)

Evidence = TypeVar("Evidence", C2paEvidence, MetadataEvidence, WatermarkEvidence)
MAX_ERROR = 300  # characters of a library's message kept in the record


class TrustError(ValueError):
    """A --c2pa-trust file that holds no PEM certificate."""


@dataclass(frozen=True)
class ProvenanceOptions:
    """How the checks run: the C2PA trust anchors (PEM text of ``--c2pa-trust``; none: no
    signer is trusted) and the file they came from, for the report's meta."""

    trust_pem: str | None = None
    trust_file: str | None = None

    @classmethod
    def with_trust_file(cls, path: str | None) -> "ProvenanceOptions":
        """Options reading ``path``'s anchors now, so a bad file is refused before a scan."""
        if not path:
            return cls()
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise TrustError(f"--c2pa-trust {path}: cannot read it as PEM: {error}") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise TrustError(f"--c2pa-trust {path}: no PEM certificate in it")
        import c2pa

        try:  # the library parses the anchors here, once, rather than failing on every file
            c2pa.Context.from_dict({"trust": {"trust_anchors": text}}).close()
        except c2pa.C2paError as error:
            raise TrustError(f"--c2pa-trust {path}: {error}") from None
        return cls(trust_pem=text, trust_file=str(path))

    def meta(self) -> dict[str, Any]:
        """Which checks run, with which libraries: the report's ``meta.provenance``."""
        return {
            "checks": {
                "c2pa": f"c2pa-python {version('c2pa-python')}",
                "metadata": f"Pillow {version('pillow')}, sd-parsers {version('sd-parsers')}",
                "watermark": "dwtDct (invisible-watermark 0.2.0's decoder, reimplemented)",
            },
            "c2pa_trust": self.trust_file,
            # the anchors themselves: a resume compares these, not the file's name
            "c2pa_trust_sha256": (
                hashlib.sha256(self.trust_pem.encode("ascii")).hexdigest()
                if self.trust_pem
                else None
            ),
        }


# an object's repr in a library's message (Pillow: "<_io.BytesIO object at 0x7f...>") names a
# memory address: the same file's report would differ from run to run
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _guarded(check: Callable[[], Evidence], empty: Callable[..., Evidence]) -> Evidence:
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - any failure is this check's error, not the scan's
        # a library's private class (c2pa's _C2paOther) is named by its public base
        kind = next(c.__name__ for c in type(error).__mro__ if not c.__name__.startswith("_"))
        message = _OBJECT_REPR.sub("", f"{kind}: {error}")[:MAX_ERROR]
        return empty(ERROR, error=message)


def inspect(
    data: bytes,
    suffix: str,
    pixels: np.ndarray | None = None,
    options: ProvenanceOptions = ProvenanceOptions(),
) -> ProvenanceRecord:
    """Every provenance check of an image file: ``data`` its bytes (read once by the caller),
    ``suffix`` its name's extension, ``pixels`` its decoded upright RGB image (None: it could
    not be decoded, and the watermark is not checked)."""
    from mfclip_cli.provenance.c2pa import read_c2pa
    from mfclip_cli.provenance.metadata import read_metadata
    from mfclip_cli.provenance.watermark import read_watermarks

    return ProvenanceRecord(
        c2pa=_guarded(lambda: read_c2pa(data, suffix, options.trust_pem), C2paEvidence),
        metadata=_guarded(lambda: read_metadata(data), MetadataEvidence),
        watermark=(
            _guarded(lambda: read_watermarks(pixels), WatermarkEvidence)
            if pixels is not None
            # of a file of several pictures, its first (the others scanned: audit AF F8)
            else WatermarkEvidence(NOT_CHECKED, note="its (first) picture could not be decoded")
        ),
    )


def inspect_video(
    stream: BinaryIO, suffix: str, options: ProvenanceOptions = ProvenanceOptions()
) -> ProvenanceRecord:
    """A video's C2PA manifest, streamed by the library (a video is never held in memory);
    its metadata and watermarks are not checked."""
    from mfclip_cli.provenance.c2pa import read_c2pa

    note = "not checked in videos"
    return ProvenanceRecord(
        c2pa=_guarded(lambda: read_c2pa(stream, suffix, options.trust_pem), C2paEvidence),
        metadata=MetadataEvidence(NOT_CHECKED, note=note),
        watermark=WatermarkEvidence(NOT_CHECKED, note=note),
    )
