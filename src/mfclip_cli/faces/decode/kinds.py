"""What an evidence file is, from its name and its first bytes: an image, a video, or neither
(a misnamed file is read as what its bytes say, where they say it beyond doubt)."""

from __future__ import annotations

import functools
from pathlib import Path

from mfclip_cli.files import open_regular

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
    # phones' (3GPP), camcorders' (AVCHD), DVDs' and broadcast MXF; .ts is left out (TypeScript
    # too): named, or listed on stdin, it is read as a video where its bytes are MPEG-TS
    | {".3gp", ".3g2", ".mts", ".m2ts", ".ogv", ".vob", ".mxf"}
)
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",  # a camera's multi-picture JPEG: each view scanned (``StillPictures``)
        ".png",
        ".bmp",
        ".gif",
        ".apng",  # an animated PNG named as such
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".pfm",
        ".jp2",
        ".j2k",
        ".jpf",  # JPEG 2000 (JPX) as Photoshop and Preview save it
        ".jpx",
        ".j2c",
        ".jpc",
        ".avif",
        ".avifs",  # an AVIF image sequence
        ".heic",  # a phone's photos (the iPhone's default), read through pillow-heif
        ".heif",
        ".hif",  # HEIF as cameras name it (Canon, Fujifilm, Sony)
        ".heics",  # HEIF image sequences
        ".heifs",
        ".psd",  # a Photoshop file: its composite scanned, its layers passed over
        ".fli",  # an Autodesk animation
        ".flc",
    }
)


# ISO BMFF brands of HEIF still images (bytes 8-12, after "ftyp")
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"hevc", b"hevx"})


def is_heif(head: bytes) -> bool:
    """Whether a file's first bytes are a HEIC/HEIF still image's (its ``ftyp`` brand)."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


@functools.cache
def _register_heif_opener() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()


def readable_by_pillow(head: bytes) -> None:
    """Let Pillow open the file whose first bytes are ``head``: a HEIC/HEIF one needs
    pillow-heif's plugin (libheif), registered the first time such a file comes, so that a scan
    of none does not pay its import. libheif applies the file's own rotation and mirroring, and
    the plugin then sets the EXIF orientation it hands Pillow to 1, so an upright picture is
    never turned twice."""
    if is_heif(head):
        _register_heif_opener()


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


# the first bytes of each kind, where they say it beyond doubt
IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000 (JP2)
    b"\xffO\xffQ",  # JPEG 2000 codestream
)
BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}  # the DIB headers a BMP file may carry
VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3",)  # Matroska / WebM (EBML)
STILL_BRANDS = HEIF_BRANDS | {b"avif", b"avis"}  # ISO BMFF brands of still images


def holds_video(path: Path) -> bool:
    """Whether ``path`` is read as a video: as its name says, unless its first bytes say beyond
    doubt that it is the other kind. Evidence comes misnamed (a JPEG saved as .mp4 failed as a
    video "with no readable frames", an MP4 named .jpg as "not a recognised image format"); a
    file that cannot be read here keeps what its name says, and fails as that."""
    named_video, head = is_video(path), file_head(path)
    riff = head[:4] == b"RIFF"
    still_brand = head[8:12] in STILL_BRANDS  # a HEIC or AVIF photo, in an ISO BMFF box too
    if named_video:
        still = still_brand and head[4:8] == b"ftyp"
        return not (_still_image(head) or still or (riff and head[8:12] == b"WEBP"))
    container = head[4:8] == b"ftyp" and not still_brand
    avi = riff and head[8:12] == b"AVI "
    return container or head.startswith(VIDEO_MAGIC) or avi or _transport_stream(head)


def _still_image(head: bytes) -> bool:
    """Whether ``head`` opens an image beyond doubt: a signature of its own, a BMP's ``BM`` with
    zero reserved bytes and a known header size, or a PNM's ``P1``-``P6`` and a blank (a BMP or
    PPM named .mp4 was decoded by FFmpeg as a one-frame video: no orientation, no provenance)."""
    bitmap = (
        head[:2] == b"BM"
        and head[6:10] == bytes(4)
        and int.from_bytes(head[14:18], "little") in BMP_HEADER_SIZES
    )
    netpbm = len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2] in b" \t\r\n"
    return head.startswith(IMAGE_MAGIC) or bitmap or netpbm


def _transport_stream(head: bytes) -> bool:
    """Whether ``head`` opens an MPEG transport stream (a .ts broadcast capture or HLS segment):
    the sync byte 0x47 starting each of its first three 188-byte packets, or 192-byte ones after
    a 4-byte time code (Blu-ray's M2TS)."""
    return any(
        len(head) > first + 2 * size and all(head[first + k * size] == 0x47 for k in range(3))
        for first, size in ((0, 188), (4, 192))
    )


def is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def file_head(path: Path) -> bytes:
    """A file's first 512 bytes (three MPEG-TS packets), where it has them: empty for one that
    cannot be read, and for a FIFO or device, which is never waited on."""
    try:
        stream, _ = open_regular(path)
        with stream:
            return stream.read(512)
    except OSError:
        return b""
