"""C2PA Content Credentials through the Content Authenticity Initiative's own library
(c2pa-python, the Rust c2pa-rs SDK underneath): presence, validation state, signer, declared
digital source types. Offline: remote manifests and OCSP are never fetched."""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

from mfclip_cli.faces.decode import HEIF_BRANDS
from mfclip_cli.provenance.record import (
    FOUND,
    NONE_FOUND,
    NOT_CHECKED,
    SIGNER_TRUSTED,
    SIGNER_UNTRUSTED,
    C2paEvidence,
)

# The container formats we scan that the library reads, by file suffix (where the first bytes
# do not say, see mime_type).
MIME_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".mpo": "image/jpeg",  # a camera's multi-picture JPEG
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
    ".avi": "video/avi",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
# the first bytes of each format, where they say it beyond doubt
MAGIC_MIME_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
RIFF_MIME_TYPES = {b"WEBP": "image/webp", b"AVI ": "video/avi"}
# ISO BMFF brands (bytes 8-12, after "ftyp") the library names apart; other brands are MP4
BRAND_MIME_TYPES = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"qt  ": "video/quicktime",
}
IPTC_PREFIX = "digitalsourcetype/"
# Every embedding (JPEG APP11, PNG caBX, BMFF and RIFF boxes, TIFF tags) stores the JUMBF manifest
# store uncompressed, labelled "c2pa"; a manifest kept elsewhere is referenced from XMP's
# dcterms:provenance. Bytes with neither cannot hold one, and the library need not be loaded.
_MARKERS = (b"c2pa", b"provenance")


def source_type_name(uri: str) -> str:
    """``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` ->
    ``trainedAlgorithmicMedia`` (a value that is not an IPTC URI is kept whole)."""
    return uri.rsplit(IPTC_PREFIX, 1)[-1] if IPTC_PREFIX in uri else uri


def mime_type(head: bytes, suffix: str) -> str | None:
    """The library's name for a file's format: what its first 12 bytes say where they say it
    (evidence comes misnamed, and an iPhone's HEIC is not an AVIF), else what its suffix says;
    None for a format the library does not read."""
    for magic, mime in MAGIC_MIME_TYPES:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] in RIFF_MIME_TYPES:
        return RIFF_MIME_TYPES[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        default = "image/heic" if brand in HEIF_BRANDS else "video/mp4"
        return BRAND_MIME_TYPES.get(brand, default)
    return MIME_TYPES.get(suffix.lower())


def read_c2pa(source: bytes | BinaryIO, suffix: str, trust_pem: str | None = None) -> C2paEvidence:
    """The C2PA manifest store in ``source`` (a file's bytes, or a seekable stream for a video),
    validated against ``trust_pem``'s anchors (none: a good signature is "valid", never
    "trusted"). Library errors propagate: the caller records them as this check's error."""
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source[:12])
    else:
        start = source.tell()
        head = source.read(12)
        source.seek(start)
    mime = mime_type(head, suffix)
    if mime is None:
        return C2paEvidence(NOT_CHECKED, note=f"the C2PA library does not read {suffix} files")
    if isinstance(source, (bytes, bytearray)):
        if not any(marker in source for marker in _MARKERS):
            return C2paEvidence(NONE_FOUND)
        source = io.BytesIO(source)
    import c2pa

    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_pem:
        settings["trust"] = {"trust_anchors": trust_pem}
    context = c2pa.Context.from_dict(settings)
    try:
        reader = c2pa.Reader.try_create(mime, source, None, context)
    except c2pa.C2paError as error:
        # the library names it "Remote: must fetch remote manifests from url ..."
        if not str(error).startswith(("Remote", "RemoteManifest")):
            raise
        return C2paEvidence(FOUND, remote_url=_remote_url(str(error)), note="not fetched")
    finally:
        context.close()
    if reader is None:
        return C2paEvidence(NONE_FOUND)
    with reader:
        store = json.loads(reader.json())
        remote = None if reader.is_embedded() else reader.get_remote_url()
    return _evidence(store, remote)


def _remote_url(message: str) -> str:
    """The URL a remote-manifest error names, else the message."""
    for word in message.split():
        if word.startswith(("http://", "https://")):
            return word.rstrip(".,;)")
    return message


def _evidence(store: dict[str, Any], remote_url: str | None) -> C2paEvidence:
    """The active manifest of a manifest store (c2pa-rs's JSON) as the report holds it."""
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    signature = manifest.get("signature_info") or {}
    failures, ingredient_failures = _failures(store)
    own = (store.get("validation_results") or {}).get("activeManifest") or {}
    checked_signer = [
        entry.get("code") for entry in own.get("success", []) + own.get("failure", [])
    ]
    actions = _actions(manifest)
    return C2paEvidence(
        FOUND,
        state=str(store.get("validation_state", "")).lower() or None,
        failures=failures,
        ingredient_failures=ingredient_failures,
        signer_trusted=(
            SIGNER_TRUSTED in checked_signer
            if {SIGNER_TRUSTED, SIGNER_UNTRUSTED} & set(checked_signer)
            else None
        ),
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        signing_time=signature.get("time"),
        claim_generator=_claim_generator(manifest),
        digital_source_types=_source_types(actions),
        ingredient_digital_source_types=_ingredient_source_types(store, manifest),
        actions=[str(action.get("action")) for action in actions],
        ingredients=len(manifest.get("ingredients", [])),
        remote_url=remote_url,
    )


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The actions a manifest's ``c2pa.actions`` assertions list."""
    return [
        action
        for assertion in manifest.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in (assertion.get("data") or {}).get("actions", [])
    ]


def _source_types(actions: list[dict[str, Any]]) -> list[str]:
    """The IPTC digital source types the actions declare, once each."""
    names = (
        source_type_name(str(action["digitalSourceType"]))
        for action in actions
        if action.get("digitalSourceType")
    )
    return list(dict.fromkeys(names))


def _ingredient_source_types(store: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """The digital source types declared by the manifests of ``manifest``'s ingredients, and of
    theirs in turn: an editor's manifest over a generated image declares none (it opened and
    cropped it), and the generator's declaration is its parent's."""
    manifests = store.get("manifests", {})
    found: list[str] = []
    seen: set[str] = set()
    pending = [manifest]
    while pending:
        for ingredient in pending.pop().get("ingredients", []):
            label = ingredient.get("active_manifest")
            if label in manifests and label not in seen:
                seen.add(label)
                found += _source_types(_actions(manifests[label]))
                pending.append(manifests[label])
    return list(dict.fromkeys(found))


def _failures(store: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The failing status codes of the active manifest itself, and those of the ingredients'
    manifests it carries: the library's state and its ``validation_status`` cover the whole
    store, and an ingredient's untrusted signer read as this file's."""
    results = store.get("validation_results") or {}
    own_url = f"/c2pa/{store.get('active_manifest')}/"
    statuses = store.get("validation_status") or []
    if "activeManifest" in results:
        own = [entry.get("code") for entry in results["activeManifest"].get("failure", [])]
    else:  # a library without per-manifest results: each code by the manifest its url names
        own = [entry.get("code") for entry in statuses if own_url in entry.get("url", own_url)]
    theirs = [
        entry.get("code")
        for delta in results.get("ingredientDeltas") or []
        for entry in (delta.get("validationDeltas") or {}).get("failure", [])
    ] + [entry.get("code") for entry in statuses if own_url not in entry.get("url", own_url)]
    return _codes(own), _codes(theirs)


def _codes(codes: list[Any]) -> list[str]:
    """Status codes once each, in order."""
    return list(dict.fromkeys(str(code) for code in codes if code))


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    """The claim generator: v1's string, or v2's first ``claim_generator_info`` name/version."""
    if manifest.get("claim_generator"):
        return str(manifest["claim_generator"])
    for info in manifest.get("claim_generator_info") or []:
        if info.get("name"):
            return " ".join(str(info[key]) for key in ("name", "version") if info.get(key))
    return None
