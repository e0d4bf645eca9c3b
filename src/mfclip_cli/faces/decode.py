"""Decoding evidence files into upright 8-bit RGB pixels, with a clear error for anything else.

Images go through Pillow (HEIC/HEIF through pillow-heif's plugin): EXIF orientation applied,
grey / 16-bit / palette / CMYK / alpha images converted, the first picture of a file of several
(an animation's frames are sampled as a video's: ``sample_animation``; a TIFF's pages, a HEIF's
images and an MPO's views each read alone: ``StillPictures``), a decompression-bomb limit checked
from the header before any pixel is decoded, and truncated or corrupt files refused rather than
half-decoded.
Videos go through OpenCV and are sampled at a rate or a number of frames.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

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
# Pillow's names for JPEG files (a camera's MPO: several JPEGs, one after another) and libjpeg's
# warnings that a JPEG's coded data is damaged (jerror.h: JWRN_HIT_MARKER, JWRN_EXTRANEOUS_DATA,
# JWRN_JPEG_EOF...)
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# still-image formats whose several pictures are an animation's frames, each shown for a time:
# scanned as a video's (a TIFF's pages, a HEIF's images and an MPO's views are each scanned as a
# picture of their own: ``StillPictures``)
ANIMATION_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF", "FLI"})  # FLI: Autodesk FLI/FLC
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
# TIFF compressions (Pillow's names) that every libtiff build Pillow links decodes
TIFF_COMMON_COMPRESSIONS = frozenset(
    {None, "raw", "packbits", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "jpeg",
     "tiff_jpeg", "group3", "group4", "tiff_ccitt", "tiff_raw_16"}
)  # fmt: skip
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


DEFAULT_MAX_PIXELS = 100_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey picture
# a PNG text chunk may inflate to 4 MiB (Pillow's 1 MiB refused a large ComfyUI workflow, and
# with it the whole file), as an XMP packet may (provenance/metadata.py)
PngImagePlugin.MAX_TEXT_CHUNK = 4 << 20
# Pillow's own bomb check is what stops a picture nested in another (an ICNS's PNG: Pillow's fuzz
# file oom-8ed3316a.icns declares a 256 x 256 icon and asked for 24 GB); ``hold_pillow_to`` sets
# it to the scan's limit, past twice which it raises. Our own check, from each header, refuses
# past the limit itself, with a clearer message; Pillow's warning between the two is not ours
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# a damaged EXIF block is the metadata check's error in the file's record (``exif_damage``);
# Pillow's warning of it, as it opens a JPEG for its resolution, named no file on stderr
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


def hold_pillow_to(max_pixels: int) -> None:
    """Pillow's bomb check set to ``max_pixels`` (one limit for a process: every decoding in a
    scan holds to the same). It raises past twice that: the bound on a nested picture, whose
    size no header we read shows."""
    Image.MAX_IMAGE_PIXELS = max_pixels


hold_pillow_to(DEFAULT_MAX_PIXELS)


class DecodeError(Exception):
    """A file that cannot be turned into pixels; the message is meant for the report."""


class _Sized:
    """The height and width of a decoded picture's ``pixels`` ([H, W, 3])."""

    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass
class DecodedImage(_Sized):
    pixels: np.ndarray  # [H, W, 3] uint8 RGB, upright
    format: str
    # the pictures the file holds (an animation's frames, a TIFF's pages, a HEIF's images): the
    # first (a HEIF's primary) is the one decoded, ``index`` its place among them
    pictures: int = 1
    index: int = 0

    @property
    def animated(self) -> bool:
        """An animation (GIF, APNG, animated WebP or AVIF, FLI/FLC): its frames, sampled as a
        video's (``sample_animation``), not only the first."""
        return self.pictures > 1 and self.format in ANIMATION_FORMATS

    @property
    def stills(self) -> bool:
        """A still image of several pictures (a TIFF's pages, a HEIF's images, an MPO's views):
        each is scanned (``StillPictures``)."""
        return self.pictures > 1 and self.format not in ANIMATION_FORMATS


@dataclass
class VideoFrame(_Sized):
    """A video's or an animation's frame (``timestamp``: when it is shown, in seconds), or one
    picture of a still image of several (``StillPictures``: its index, no time)."""

    index: int
    timestamp: float | None
    pixels: np.ndarray


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
    named_video, head = is_video(path), _head(path)
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


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        top = grey.max(initial=0)
        # a 32-bit image's range is told by its values: 8, 16 or 32 bits (signed, as PIL's "I")
        peak = 65535.0 if mode.startswith("I;16") or 255 < top <= 65535 else 255.0
        peak = 2.0**31 - 1 if top > 65535 else peak
        grey = np.clip(np.round(grey * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        scale = 255.0 if grey.max(initial=0) <= 1.0 else 1.0
        grey = np.clip(np.round(grey * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _head(path: Path) -> bytes:
    """A file's first 512 bytes (three MPEG-TS packets), where it has them: empty for one that
    cannot be read, and for a FIFO or device, which is never waited on."""
    try:
        stream, _ = open_regular(path)
        with stream:
            return stream.read(512)
    except OSError:
        return b""


UNRECOGNISED = "not a recognised image format"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the chunks a PNG's upright pixels need: the critical ones, transparency and EXIF (orientation)
PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"eXIf"})


def png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Each chunk of a PNG's bytes: (type, the chunk whole: length, type, data, CRC, a view of
    ``data``, no copy of the pixels), to its IEND (bytes after it are no chunk). It stops at the
    first chunk that runs past the end (a truncated file)."""
    view = memoryview(data)
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack(">I4s", view[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            return
        yield kind, view[offset:end]
        if kind == b"IEND":
            return
        offset = end


def crc_holds(chunk: bytes | memoryview) -> bool:
    """Whether a PNG chunk (whole, as ``png_chunks`` gives it) matches its CRC."""
    return zlib.crc32(chunk[4:-4]) == struct.unpack(">I", chunk[-4:])[0]


def ancillary(kind: bytes) -> bool:
    """Whether a PNG chunk type is ancillary (a decoder may skip it), by its first letter's
    case."""
    return bool(kind[0] & 0x20)


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Upright RGB pixels of an image file, or of its bytes as read once (so that a hash of those
    bytes names what was decoded), or ``DecodeError`` saying why not."""
    hold_pillow_to(max_pixels)
    if isinstance(source, bytes):
        return _decode_stream(io.BytesIO(source), len(source), "", max_pixels)
    try:  # opened once: its head, Pillow and a PNG's retry read the same open file
        stream, status = open_regular(source)
    except OSError as error:
        raise DecodeError(f"cannot read file: {error.strerror or error}") from error
    with stream:
        return _decode_stream(stream, status.st_size, source.suffix.lstrip(".").upper(), max_pixels)


def _decode_stream(stream: BinaryIO, size: int, suffix: str, max_pixels: int) -> DecodedImage:
    """``decode_image``'s work on an open ``stream`` of ``size`` bytes, at its start."""
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        head = stream.read(512)
        stream.seek(0)
    except OSError as error:
        raise DecodeError(f"cannot read file: {error.strerror or error}") from error
    readable_by_pillow(head)
    try:
        return _decoded(stream, head, suffix, max_pixels)
    except DecodeError as error:
        # a PNG may fail for a chunk its pixels do not need, a WebP for being cut short (an
        # animated one has whole frames before the cut); a bomb is refused by its size
        if (head[:8] != PNG_SIGNATURE and not _webp(head)) or "decompression" in str(error):
            raise
        failure = error
    try:
        stream.seek(0)
        data = stream.read()
    except OSError:
        raise failure from None
    if head[:8] != PNG_SIGNATURE:
        return _webp_again(data, failure, max_pixels)
    return _png_again(data, failure, suffix, max_pixels)


def _webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _animated_webp(head: bytes) -> bool:
    """Whether a file's first bytes are an animated WebP's (its VP8X chunk's animation flag)."""
    return _webp(head) and head[12:16] == b"VP8X" and len(head) > 20 and head[20] & 2 > 0


def _webp_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """A WebP's chunks after its header, each as its name, where its body starts and its size,
    to the first cut short."""
    position = 12
    while position + 8 <= len(data):
        size = struct.unpack_from("<I", data, position + 4)[0]
        if position + 8 + size > len(data):  # the chunk the file was cut in
            return
        yield data[position : position + 4], position + 8, size
        position += 8 + size + (size & 1)


def _webp_frame_lengths(data: bytes) -> list[float]:
    """Seconds each frame of an animated WebP is shown, from its frames' chunks (ANMF: a
    24-bit duration in milliseconds after the frame's place and size), as libwebp times them:
    each frame was decoded to be timed, then again to be read (audit AB M8: half the time of
    an animated WebP's scan)."""
    return [
        _shown_for(int.from_bytes(data[start + 12 : start + 15], "little"))
        for kind, start, size in _webp_chunks(data)
        if kind == b"ANMF" and size >= 16
    ]


def _gif_frame_lengths(data: bytes) -> list[float] | None:
    """Seconds each frame of a GIF is shown, from its blocks (a frame's delay in its graphic
    control extension, in hundredths, as Pillow reads it), without decoding a frame (audit AB
    M8: each was decoded to be timed, then again to be read). None where the blocks are not
    all whole and plain up to the trailer, or a frame reaches past the canvas (one far past
    it ends the frames: ``_load_frame``): the frames are then timed as they are decoded."""
    if len(data) < 13 or data[:3] != b"GIF":
        return None
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    lengths: list[float] = []
    delay: int | None = None  # the next frame's, in milliseconds

    def after_sub_blocks(position: int) -> int:
        while position < len(data) and data[position]:
            position += 1 + data[position]
        return position + 1

    while position < len(data):
        kind = data[position]
        if kind == 0x3B:  # the trailer
            return lengths
        if kind == 0x21 and position + 2 < len(data):  # an extension
            label, block = data[position + 1], position + 2
            if label == 0xF9 and data[block] >= 3 and block + 4 <= len(data):
                delay = 10 * int.from_bytes(data[block + 2 : block + 4], "little")
            position = after_sub_blocks(block)
        elif kind == 0x2C and position + 10 <= len(data):  # a frame
            left, top, frame_width, frame_height, frame_flags = struct.unpack_from(
                "<HHHHB", data, position + 1
            )
            if left + frame_width > width or top + frame_height > height:
                return None
            position += 10 + (3 << ((frame_flags & 7) + 1) if frame_flags & 0x80 else 0)
            position = after_sub_blocks(position + 1)  # past the LZW code size, its data
            lengths.append(_shown_for(delay))
            delay = None
        else:
            return None
    return None


def whole_webp_frames(data: bytes) -> tuple[bytes, bool] | None:
    """An animated WebP cut short (its RIFF size past its last byte) as its whole chunks alone,
    its size mended, and whether a frame was cut (not a metadata chunk after the frames), or
    None for any other file: libwebp refuses the whole file (audit AB L3), where a GIF or an
    APNG cut short gives the frames before the cut."""
    if not _animated_webp(data[:32]) or struct.unpack_from("<I", data, 4)[0] + 8 <= len(data):
        return None
    position, frames = 12, 0
    for kind, start, size in _webp_chunks(data):
        frames += kind == b"ANMF"
        position = start + size + (size & 1)
    if not frames:
        return None
    # the name of the chunk cut short, or what is left of it: a frame was cut where it is (or
    # may be) a frame's; none where the file ends between chunks or in one of metadata (audit
    # AF F6: a RIFF size 8 bytes too large, a lost padding byte, gained a frame)
    kind = data[position : position + 4]
    frame_cut = bool(kind) and b"ANMF".startswith(kind)
    body = data[12 : min(position, len(data))]
    body += b"\x00" * (len(body) & 1)  # the last chunk's padding, where the cut took it
    whole = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    return whole, frame_cut


def _webp_again(data: bytes, failure: DecodeError, max_pixels: int) -> DecodedImage:
    """A WebP that failed to decode: an animated one cut short decoded from its whole frames
    (``whole_webp_frames``), the cut frame counted among its pictures (it fails as it is read,
    and is said, as a GIF's does); one cut short before a whole picture said to be; else
    ``failure``."""
    mended = whole_webp_frames(data)
    declared = struct.unpack_from("<I", data, 4)[0] + 8 if len(data) >= 8 else 0
    if mended is None and declared > len(data):
        raise DecodeError(
            f"truncated or corrupt image: the WebP stops at byte {len(data)} of the {declared} "
            "its header declares, before a whole picture"
        )
    if mended is None:
        raise failure
    whole, frame_cut = mended
    image = _decoded(io.BytesIO(whole), whole[:512], "", max_pixels)
    return DecodedImage(image.pixels, image.format, image.pictures + frame_cut)


def png_of_its_pixels(data: bytes) -> bytes | None:
    """A PNG's bytes with only the chunks its pixels need, the critical ones as they are, an
    ancillary one only where its CRC holds (an animation's, texts and profiles left out): what
    the scan reads where the whole file does not decode (``_png_again``). None where that
    leaves every chunk."""
    chunks = list(png_chunks(data))
    kept = [
        chunk
        for kind, chunk in chunks
        if kind in PIXEL_CHUNKS and (not ancillary(kind) or crc_holds(chunk))
    ]
    return None if len(kept) == len(chunks) else PNG_SIGNATURE + b"".join(kept)


def _png_again(data: bytes, failure: DecodeError, suffix: str, max_pixels: int) -> DecodedImage:
    """A PNG that failed to decode, decoded again with only the chunks its pixels need (an
    ancillary one kept only where its CRC holds): a damaged comment, or a workflow inflating
    past Pillow's limit, made the whole file undecodable (audit O M4). Else ``failure``, or the
    retry's own where Pillow's first was "not a recognised image format" (stopped by a damaged
    chunk, not the pixels' fault), or, for a file that stops before its IEND chunk, that it is
    truncated, whatever stopped Pillow first."""
    chunks = list(png_chunks(data))
    if not chunks or chunks[-1][0] != b"IEND":  # no chunk dropping mends a truncated file
        raise DecodeError("truncated or corrupt image: the PNG stops before its IEND chunk")
    mended = png_of_its_pixels(data)
    if mended is None:
        raise failure
    try:
        return _decoded(io.BytesIO(mended), PNG_SIGNATURE, suffix, max_pixels)
    except DecodeError as again:
        # Pillow's first word, stopped by a damaged chunk, named no fault of the pixels
        raise (again if str(failure) == UNRECOGNISED else failure) from None


def _decoded(stream: Any, head: bytes, suffix: str, max_pixels: int) -> DecodedImage:
    """Pillow's decoding of an open ``stream`` whose first bytes are ``head``."""
    try:
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(over_the_limit("image", width, height, max_pixels))
            image_format = image.format or suffix or "unknown"
            pictures = _frame_count(image)
            index = _at_first_picture(image, pictures)
            _load(image)
            if image_format in JPEG_FORMATS:
                stream.seek(0)
                data = stream.read()
                _refuse_damaged_jpeg(data)
                pictures += _unindexed_jpegs(image, data)
            pixels = _to_rgb(_upright(image))
    except DecodeError:
        raise
    except UnidentifiedImageError:
        if is_heif(head):  # libheif found no image it can decode in it
            raise DecodeError("corrupt HEIC/HEIF image: no decodable picture in it") from None
        raise DecodeError(UNRECOGNISED) from None
    except Exception as error:  # noqa: BLE001 - a damaged file breaks a plugin in any way
        # (a TIFF page without its size tags: TypeError); that file fails, never the scan
        raise DecodeError(undecodable_because(error)) from None
    # a writable copy
    return DecodedImage(np.array(pixels, dtype=np.uint8, order="C"), image_format, pictures, index)


def _load(image: Image.Image) -> None:
    """``image`` decoded; a TIFF page that fails, compressed otherwise than every libtiff build
    decodes, names its compression: libtiff says only "decoder error -2" of a codec its build
    lacks (its own words, which name it, go to stderr: "WEBP compression support is not
    configured"), as it does of damage."""
    try:
        image.load()
    except OSError as error:
        compression = image.info.get("compression") if image.format == "TIFF" else None
        if compression in TIFF_COMMON_COMPRESSIONS or "decoder error" not in str(error):
            raise
        raise DecodeError(
            f"{undecodable_because(error)} (its compression, {compression}, may be one this "
            "build of libtiff cannot decode)"
        ) from None


def _at_first_picture(image: Image.Image, pictures: int) -> int:
    """The index of the picture scanned first, ``image`` set at it: picture 0, but a HEIF's
    primary image, whose size was checked (image 0 could be another, and a bomb: audit P H2).
    A PSD is at its composite as it opens (Pillow names it frame 1, as it does the first
    layer, and cannot seek back to it: ``_frame_count``)."""
    if image.format == "HEIF":
        return image.tell()
    if pictures > 1 and image.format != "PSD":
        image.seek(0)
    return 0


def _frame_count(image: Image.Image) -> int:
    """Pillow's count of the pictures ``image`` holds (an animation's frames, a TIFF's pages;
    a PSD's composite, then its layers, passed over: ``_not_a_view``). Where a damaged one
    stops Pillow's own count (a GIF cut short in a frame's header: IndexError; a TIFF page
    without its size: TypeError), the pictures before it and the damaged one, which then fails
    as it is decoded and is said: the whole file failed before, its first pictures with it."""
    try:
        if image.format == "PSD":
            return 1 + len(getattr(image, "layers", []))
        return getattr(image, "n_frames", 1)
    except Exception:  # noqa: BLE001 - damage breaks a plugin's count in any way
        if image.format == "PSD":  # its composite reads without its layers
            return 1
    count = 1
    try:
        image.seek(0)
        while True:
            image.seek(count)
            count += 1
    except Exception:  # noqa: BLE001 - the damaged picture (an end too, where the count failed)
        return count + 1


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says; a damaged EXIF block is not read: the
    picture as stored (the record says why)."""
    if exif_damage(image.info.get("exif")) is not None:
        return image
    return ImageOps.exif_transpose(image)


def exif_damage(raw: bytes | None) -> str | None:
    """Why an EXIF block (a JPEG's APP1, a PNG's eXIf) cannot be read, or None: its TIFF header
    and first directory checked where they point. Pillow read a damaged one as empty, with a
    bare "Corrupt EXIF data" warning on stderr naming no file, and the record said nothing
    found, nor that an orientation it held was not applied (audit W L2): such a block is not
    given to Pillow, and the metadata check says why (``provenance.metadata``)."""
    if not raw:
        return None
    block = re.sub(b"^(Exif\x00\x00){1,2}", b"", raw)  # as Pillow reads it: twice, from a PNG
    order = {b"II": "<", b"MM": ">"}.get(block[:2])
    if order is None or len(block) < 8 or struct.unpack(f"{order}H", block[2:4])[0] != 42:
        reason = "no TIFF header"
    else:
        (offset,) = struct.unpack(f"{order}I", block[4:8])
        entries = (
            struct.unpack(f"{order}H", block[offset : offset + 2])[0]
            if offset + 2 <= len(block)
            else None
        )
        if entries is None:
            reason = "its directory lies past its end"
        elif offset + 2 + 12 * entries > len(block):
            reason = "its directory runs past its end"
        else:
            return None
    return f"the EXIF block is damaged ({reason}): an orientation it holds was not applied"


def _refuse_damaged_jpeg(data: bytes) -> None:
    """A ``DecodeError`` where libjpeg-turbo reports the JPEG's coded data damaged: Pillow
    decodes a JPEG cut short and closed with an end marker (a carved or recovered file) without a
    word, the rest of its picture grey, and hides libjpeg's warnings. simplejpeg's strict decode
    raises them; at an eighth of the size, since every coded byte is read at any scale."""
    damage = _strict_error(data)
    # the warnings that mean its pixels are not all there; others (an unknown JFIF revision, a
    # bad ICC marker, a request this decoder cannot serve) leave them to Pillow
    if damage is None or not damage.startswith(JPEG_DAMAGE) or "ICC" in damage:
        return
    # bytes between the segments before the first scan (an encoder's padding) leave every pixel
    # whole: passed where the file without them decodes without a word (audit Y M1: refused as
    # "extraneous bytes"; audit Z M1: any other word keeps the refusal)
    if "extraneous bytes" in damage:
        unpadded = _without_header_padding(data)
        if unpadded != data and _strict_error(unpadded) is None:
            return
    raise DecodeError(f"truncated or corrupt image: {damage}")


def _strict_error(data: bytes) -> str | None:
    """What libjpeg-turbo says of a JPEG in strict mode (a warning raised as an error), or None
    where it decodes without a word."""
    import simplejpeg

    try:
        header = simplejpeg.decode_jpeg_header(data)
        colorspace = "CMYK" if header[2] in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, min_factor=8)
    except ValueError as error:
        return str(error).strip() or type(error).__name__
    return None


def _unindexed_jpegs(image: Image.Image, data: bytes) -> int:
    """How many JPEGs follow the first in a JPEG file whose MP index (an MPO's "MPF"
    APP2 segment, which lists its pictures) Pillow could not read, ``image`` its opening of
    ``data``; none where it could. Pillow then reads the file as its first JPEG alone, with a
    warning: a stereo camera's second view, a face in it, went unscanned (audit AH F2). What
    such a JPEG is (a view, a thumbnail, a gain map) only the index said: each is unread."""
    if image.format != "JPEG" or "mp" not in image.info:
        return 0
    try:
        image._getmp()  # Pillow's own reading of the index (an MPO or Ultra HDR's: it holds)
    except Exception:  # noqa: BLE001 - a damaged index breaks the reading in any way
        pass
    else:
        return 0
    count, end = 0, _jpeg_end(data, 0)
    while end is not None and (start := data.find(b"\xff\xd8\xff", end)) >= 0:
        count += 1
        end = _jpeg_end(data, start)
    return count


def _jpeg_end(data: bytes, start: int) -> int | None:
    """Where the JPEG that begins at ``start`` ends (past its EOI marker), its segments and
    coded data walked (an EXIF thumbnail's EOI lies in a segment, coded data holds no marker
    but restarts and stuffed bytes); None where it is cut short."""
    position = start + 2
    while True:
        marker_at = data.find(b"\xff", position)
        if marker_at < 0 or marker_at + 1 >= len(data):
            return None
        marker = data[marker_at + 1]
        if marker == 0xD9:
            return marker_at + 2
        if marker in (0x00, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:  # no segment: coded data
            position = marker_at + 1
            continue
        if marker_at + 4 > len(data):
            return None
        position = marker_at + 2 + int.from_bytes(data[marker_at + 2 : marker_at + 4], "big")


def _without_header_padding(data: bytes) -> bytes:
    """A JPEG's bytes with whatever lies between its marker segments before the first scan
    (SOS) left out, the segments and everything from the scan on as they are; ``data`` itself
    where its segments cannot be followed. Padding may hold 0xFF bytes that start no segment
    (Pillow's jpeg_ff00_header.jpg: ``FF 00 00 02`` before its tables, refused: audit AH F1):
    passed over to the next that does."""
    kept, position = [data[:2]], 2  # SOI
    while position < len(data):
        start = data.find(b"\xff", position)
        while 0 <= start < len(data) - 1 and data[start + 1] == 0xFF:  # fill bytes
            start += 1
        if start < 0 or start + 4 > len(data):
            return data
        marker = data[start + 1]
        if marker == 0xDA:  # the first scan: the rest is coded data, kept whole
            return b"".join(kept) + data[start:]
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD9:  # no header segment: padding
            position = start + 1
            continue
        length = int.from_bytes(data[start + 2 : start + 4], "big")  # its own two bytes in it
        if length < 2:
            return data
        end = start + 2 + length
        kept.append(data[start:end])
        position = end
    return data


# A frame count over a week of video is no count: OpenCV says -9.2e16 for a Matroska file
# without a duration (a browser's MediaRecorder, a recording muxed to a pipe), -1.9e14 for a raw
# H.264 stream.
LONGEST_VIDEO_S = 7 * 24 * 3600.0
# A frame within this of a sampling instant is on it: Matroska keeps times in milliseconds.
TIME_SLACK_S = 0.001
# Frames that end this much before the container's duration are a truncated file; less is what
# the rounding of an estimated duration, a last frame's own length, or an MP4 edit list (a clip cut
# with ffmpeg -ss -c copy indexes frames it does not play) accounts for. An AVI header counts the
# frames it holds: a stream short of that count by any frame is truncated or damaged.
TAIL_SLACK_S = 0.5
# Grabs failing in a row after which a stream has ended: FFmpeg decodes in grab(), so a damaged
# frame fails it and the frames after it still come; failures that no frame follows are the end.
MAX_UNDECODABLE_RUN = 64


@dataclass
class VideoInfo:
    """What the container says of a video; ``FrameReader`` corrects the count and duration from
    the frames once it has read them to the end (Matroska and MPEG streams only estimate them)."""

    fps: float  # the container's rate: nominal, or an average over a variable-rate stream
    frame_count: int  # 0 where the container gives no believable count
    width: int
    height: int
    codec: str
    duration: float  # seconds, 0 where unknown


def spread_indices(count: int, frames: int) -> list[int]:
    """``frames`` frame indices evenly spread over ``count`` frames (all of them if fewer)."""
    if frames >= count:
        return list(range(count))
    return sorted({int(math.floor((i + 0.5) * count / frames)) for i in range(frames)})


def _boxes(stream: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISO BMFF boxes from ``start`` to ``end``: (type, payload start, end as declared,
    which lies past the file's where it was cut short)."""
    position = start
    while position + 8 <= end:
        stream.seek(position)
        header = stream.read(16)
        if len(header) < 8:  # a box declared past the file's end
            return
        size, kind = struct.unpack(">I4s", header[:8])
        offset = 8
        if size == 1 and len(header) == 16:
            size, offset = struct.unpack(">Q", header[8:])[0], 16
        elif size == 0:  # up to the end
            size = end - position
        if size < offset:
            return
        yield kind, position + offset, position + size
        position += size


def _child(stream: BinaryIO, span: tuple[int, int], kind: bytes) -> tuple[int, int] | None:
    """The payload span of the first box of type ``kind`` within ``span``."""
    return next(
        ((begin, end) for found, begin, end in _boxes(stream, *span) if found == kind), None
    )


def _iso_layout(path: Path) -> str | None:
    """What an MP4/MOV/3GP file's boxes show of its video: "no index" (no complete ``moov``: a
    file cut short or still being written), "no video" (no track handled as ``vide``),
    "fragmented" (frames listed in fragments, which OpenCV only estimates) or "indexed"; None
    for a file of another kind, or one that cannot be read."""
    try:
        stream, status = open_regular(path)
        with stream:
            if stream.read(8)[4:] != b"ftyp":
                return None
            moov = _child(stream, (0, status.st_size), b"moov")
            if moov is None or moov[1] > status.st_size:
                return "no index"
            handlers = set()
            for kind, begin, end in _boxes(stream, *moov):
                media = _child(stream, (begin, end), b"mdia") if kind == b"trak" else None
                handler = _child(stream, media, b"hdlr") if media else None
                if handler:
                    stream.seek(handler[0] + 8)  # after version, flags and pre_defined
                    handlers.add(stream.read(4))
            if b"vide" not in handlers:
                return "no video"
            return "fragmented" if _child(stream, moov, b"mvex") else "indexed"
    except OSError:
        return None


_EBML, _SEGMENT, _TRACKS, _TRACK_ENTRY, _TRACK_TYPE, _CLUSTER = (
    0x1A45DFA3,
    0x18538067,
    0x1654AE6B,
    0xAE,
    0x83,
    0x1F43B675,
)
_VIDEO_TRACK = 1  # Matroska's TrackType of a video track (2 audio, 17 subtitles, ...)
# the elements walked before a Segment's Tracks: SeekHead, Info, Void and a few tags come first in
# real files; a junk file of 2-byte elements took 5.4 s a 10 MB before the cap (audit P L3)
_MATROSKA_ELEMENTS_WALKED = 256


def _ebml_number(stream: BinaryIO, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length number at the stream's position: (value, length in bytes), the
    value -1 for an element of unknown size (all its bits set); None past the end."""
    first = stream.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = stream.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = int.from_bytes(first + rest, "big")
    if keep_marker:  # an element ID keeps its length marker
        return value, length
    value &= (1 << (7 * length)) - 1
    return (-1 if value == (1 << (7 * length)) - 1 else value), length


def _ebml_elements(stream: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The EBML elements from ``start`` to ``end``: (ID, payload start, payload end), an element
    of unknown size (a live recording's Segment) running to ``end``; at most
    ``_MATROSKA_ELEMENTS_WALKED`` of them."""
    position = start
    for _ in range(_MATROSKA_ELEMENTS_WALKED):
        if position >= end:
            return
        stream.seek(position)
        found, size = _ebml_number(stream, True), _ebml_number(stream, False)
        if found is None or size is None:
            return
        begin = position + found[1] + size[1]
        close = end if size[0] < 0 else min(end, begin + size[0])
        yield found[0], begin, close
        position = close


def _matroska_track_types(stream: BinaryIO, begin: int, end: int) -> list[int]:
    """The TrackType of each TrackEntry of the Tracks element spanning ``begin`` to ``end``."""
    types = []
    for entry, entry_begin, entry_end in list(_ebml_elements(stream, begin, end)):
        if entry != _TRACK_ENTRY:
            continue
        for field, field_begin, field_end in list(_ebml_elements(stream, entry_begin, entry_end)):
            if field == _TRACK_TYPE:
                stream.seek(field_begin)
                types.append(int.from_bytes(stream.read(field_end - field_begin), "big"))
    return types


def _matroska_layout(path: Path) -> str | None:
    """ "no video" for a Matroska/WebM file whose tracks hold none (an audio recording), else
    None: a video track, no track list before the first cluster, or a file of another kind."""
    try:
        stream, status = open_regular(path)
        with stream:
            if stream.read(4) != _EBML.to_bytes(4, "big"):
                return None
            top = list(_ebml_elements(stream, 0, status.st_size))
            for kind, begin, end in top:
                if kind != _SEGMENT:
                    continue
                for part, part_begin, part_end in _ebml_elements(stream, begin, end):
                    if part == _CLUSTER:  # the frames begin: no track list came before them
                        return None
                    if part == _TRACKS:
                        types = _matroska_track_types(stream, part_begin, part_end)
                        return None if _VIDEO_TRACK in types else "no video"
                return None
    except OSError:
        return None
    return None


def _counts_its_frames(path: Path) -> bool:
    """Whether the container's header counts the frames (an indexed MP4/MOV, an AVI), so that
    OpenCV's count is taken as it is; others only estimate it from their duration and nominal
    rate."""
    return _is_avi(path) or _iso_layout(path) == "indexed"


def _is_avi(path: Path) -> bool:
    """An AVI, whose header counts the frames it holds: no edit list hides any of them."""
    head = _head(path)
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


# why OpenCV could not open a file, where its boxes say it
UNOPENED = {
    "no index": "truncated or incomplete video: it has no index (no complete MP4 'moov' box), "
    "as a file cut short or still being written has none",
    "no video": "no video stream in this file (only audio or other tracks, or none)",
}


FFMPEG_LOG_LEVEL = "OPENCV_FFMPEG_LOGLEVEL"  # read once, when OpenCV first starts FFmpeg
FFMPEG_QUIET = "-8"  # AV_LOG_QUIET


def open_video(path: Path) -> tuple[Any, VideoInfo]:
    """An OpenCV capture of ``path`` and what it says of the video. FFmpeg's own log is off,
    whatever the environment asks: left at its default it prints to stderr, around the progress
    bar, a line per damaged frame (what failed is in the file's record already); at a level the
    user sets, OpenCV (5.1 here) prints it to stdout, into a ``--jsonl -`` stream."""
    import cv2

    os.environ[FFMPEG_LOG_LEVEL] = FFMPEG_QUIET
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DecodeError(
            UNOPENED.get(
                _iso_layout(path) or _matroska_layout(path) or "",
                "cannot open video (unsupported codec or corrupt file)",
            )
        )
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
    if count <= 0 or (fps > 0 and count / fps > LONGEST_VIDEO_S):
        count = 0.0
    info = VideoInfo(
        fps=fps,
        frame_count=int(count),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        codec="".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
        or "unknown",
        duration=count / fps if fps > 0 else 0.0,
    )
    return capture, info


def _stops_short(clock: _Clock, info: VideoInfo) -> bool:
    """Whether the frames read stop clearly before the container's duration: a truncated file,
    not an estimate's rounding, a last frame's own length, or a stream that starts late (a
    Matroska cut keeping its source's times: its duration runs from 0, its frames' times, as
    OpenCV gives them, from the first frame)."""
    return info.duration > 0 and _declared_end(clock, info) - clock.end > TAIL_SLACK_S


def _declared_end(clock: _Clock, info: VideoInfo) -> float:
    """Where the container says the stream ends, on its frames' clock: its duration, less the
    first frame's start where that accounts for the difference (a late start is no truncation,
    and its frames past the end none missed)."""
    late = clock.offset > 0 and abs(clock.end + clock.offset - info.duration) <= TAIL_SLACK_S
    return info.duration - clock.offset if late else info.duration


class _Clock:
    """Each frame's presentation time, in reading order: the decoder's, or, where that is not
    after the last frame's (a raw stream has no times: OpenCV says 0), one nominal frame later."""

    def __init__(self, fps: float):
        self.step = 1.0 / fps if fps > 0 else 0.0
        self.last: float | None = None
        self.offset = 0.0  # seconds the first frame starts after the container's zero

    def start(self, pts: float, decoder_ms: float) -> None:
        """The first frame's presentation time in frames (OpenCV's PTS) and on the clock."""
        self.offset = max(0.0, pts * self.step - decoder_ms / 1000.0)

    def time(self, decoder_ms: float) -> float:
        time = decoder_ms / 1000.0
        if self.last is not None and not time > self.last:
            time = self.last + self.step
        self.last = time
        return time

    @property
    def end(self) -> float:
        """Where the frames so far end: the last one's time and one nominal frame."""
        return 0.0 if self.last is None else self.last + self.step


def _grabs(capture: Any, clock: _Clock) -> Iterator[float | None]:
    """The time of each frame as it is grabbed (decoded, not converted), None for a frame that
    could not be decoded, to the stream's end: where grabbing fails more than
    ``MAX_UNDECODABLE_RUN`` times in a row (a first failure taken for the end left the rest of a
    video with one damaged frame unread; a header's count is no end either: it can be wrong)."""
    import cv2

    failed = 0
    while True:
        if capture.grab():
            yield from itertools.repeat(None, failed)
            failed = 0
            decoder_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if clock.last is None:
                clock.start(capture.get(cv2.CAP_PROP_PTS), decoder_ms)
            yield clock.time(decoder_ms)
        else:
            failed += 1
            if failed > MAX_UNDECODABLE_RUN:
                return


class FrameReader:
    """The sampled frames of a video (RGB), read in order once iterated: those at the sorted
    indices ``wanted``, or with ``rate`` the first frame at or after each 1/``rate`` seconds of
    presentation time, to the stream's end; the capture is released at the end. A frame's index
    is its place in the stream, its time the decoder's (a variable-rate video's frames are not
    evenly spaced).

    Every frame is grabbed and only the sampled ones decoded: seeking is not frame-exact in every
    codec, and a frame index must mean the same frame whenever the video is read. ``shots``
    probes ten frames a second, whatever is sampled, for the cuts between shots
    (``faces.shots``).

    Once read, ``unread`` counts the sampled frames that could not be decoded (damaged, or past
    where the stream ended; ``unread_from`` is the first), ``undecodable`` the frames of the
    stream read that could not be decoded (with ``rate``, the next frame that can stands in for a
    damaged one), ``truncated`` says whether the stream ended short of the container's count
    (``exact``: an AVI header's) or clearly before its duration, and a stream read to its end
    without that has set ``info``'s frame count and duration to its own.
    """

    def __init__(
        self,
        capture: Any,
        info: VideoInfo,
        wanted: list[int] | None = None,
        *,
        rate: float = 0.0,
        exact: bool = False,
        animation: bool = False,
    ):
        from mfclip_cli.faces.shots import ShotFinder

        self.capture, self.info, self.wanted, self.rate = capture, info, wanted or [], rate
        # an animation (``PictureCapture``) is read past its last frame wanted to its end: its
        # damage is then said, and its cuts found, as a video sampled by rate has them; its
        # count is its frames', and its cuts those of pictures held too (``ShotFinder``)
        self.to_end = animation
        self.counted_by = "counted in the file" if animation else "its header counts"
        # the cuts between shots, from probes of the frames read
        self.shots = ShotFinder(held_pictures=animation)
        self.exact = exact and info.frame_count > 0
        self.read = self.unread = 0
        self.damaged: list[int] = []
        self.undecodable: list[int] = []
        self.unread_from: int | None = None
        self.truncated = False
        self._end = 0.0  # where the frames read end, in seconds
        self._grabbed = 0  # frames of the stream read, decoded or not
        self._frames = self._read()  # one pass: chunks taken from it in turn continue it

    def __iter__(self) -> Iterator[VideoFrame]:
        return self._frames

    def __next__(self) -> VideoFrame:
        return next(self._frames)

    def _read(self) -> Iterator[VideoFrame]:
        import cv2

        clock, grabbed, ended = _Clock(self.info.fps), 0, False
        targets = iter(self.wanted)
        target = next(targets, None)
        due = 0  # with a rate, the next sampling instant is due / rate seconds
        try:
            if self.rate or target is not None:
                for index, time in enumerate(_grabs(self.capture, clock)):
                    grabbed = index + 1
                    if time is None:
                        self.undecodable.append(index)
                        if index == target:
                            self.damaged.append(index)
                            target = next(targets, None)
                            if target is None and not self.to_end:
                                break
                        continue
                    if index == target or (self.rate and time >= due / self.rate - TIME_SLACK_S):
                        ok, frame = self.capture.retrieve()
                        if ok:
                            self.read += 1
                            if self.shots.due(time):
                                self.shots.add(index, time, frame)
                            else:
                                self.shots.between(index, time, frame)
                            pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                            yield VideoFrame(index, round(time, 6), pixels)
                        else:
                            self.damaged.append(index)
                        if self.rate:
                            due = math.floor((time + TIME_SLACK_S) * self.rate) + 1
                        else:
                            target = next(targets, None)
                            if target is None and not self.to_end:
                                break
                    elif self.shots.due(time):
                        ok, frame = self.capture.retrieve()
                        if ok:
                            self.shots.add(index, time, frame)
                else:
                    ended = True
        finally:
            self.capture.release()
            self._account(grabbed, clock, ended, due)
        # ended with none read, or nothing to sample where the stream counts no frame at all
        nothing = not (self.rate or self.wanted) and self.info.frame_count == 0
        if (ended or nothing) and not self.read:
            kind = "animation" if isinstance(self.capture, PictureCapture) else "video"
            raise DecodeError(f"{kind} has no readable frames")

    def _account(self, grabbed: int, clock: _Clock, ended: bool, due: int) -> None:
        """The sampled frames missed, and the stream's own count and duration where it was read
        to its end (not clearly short of what the container declares)."""
        info = self.info
        if self.rate:  # the instants from the next due to the container's last frame (one a frame)
            rate = min(self.rate, info.fps) if info.fps > 0 else self.rate
            span = _declared_end(clock, info) - clock.step - due / self.rate + TIME_SLACK_S
            missed, first = (math.floor(span * rate) + 1 if ended and span >= 0 else 0), grabbed
        else:
            missed = len(self.wanted) - self.read - len(self.damaged)
            first = self.wanted[-missed] if missed else grabbed
        self.unread = missed + len(self.damaged)
        self.unread_from = min(self.damaged[:1] + ([first] if missed else []), default=None)
        if self.exact:
            self.truncated = ended and grabbed < info.frame_count
        else:
            self.truncated = ended and _stops_short(clock, info)
        self._end, self._grabbed = clock.end, grabbed
        self.undecodable = sorted(set(self.undecodable))  # with those known before reading
        # an exact count read whole keeps its duration (an animation's last frame is shown for
        # its own length, not the nominal one that clock.end gives it)
        if ended and not self.truncated and not (self.exact and grabbed == info.frame_count):
            info.frame_count, info.duration = grabbed, clock.end

    def shortfall(self) -> str | None:
        """Why sampled frames are missing, or frames of the stream could not be decoded, once
        read, or None: all read, or missing only where a container's estimated count or duration
        placed them past the stream's end."""
        if self.unread and (self.truncated or self.damaged):
            where = ""
            if self.truncated and self.exact:
                where = (
                    f"; its stream gives {self._grabbed} of the {self.info.frame_count} frames "
                    f"{self.counted_by}"
                )
            elif self.truncated:
                where = (
                    f"; its frames stop at {self._end:.1f} s of the {self.info.duration:.1f} s "
                    "it declares"
                )
            # with --fps the frames missed are instants past the stream's end, not frames it has
            past_end = self.rate and self.unread_from not in self.damaged
            start = "where the stream ends at" if past_end else "from"
            return (
                f"{self.unread} of the {self.read + self.unread} frames sampled could not be read "
                f"({start} frame {self.unread_from}): the file is truncated or damaged{where}"
            )
        held = self.info.frame_count
        if self.undecodable and self.to_end and self.undecodable[0] >= held:
            # an animation whose frames end in damage (an APNG declaring more than it holds, a
            # frame far off the canvas): no frame past the count to name as one of the file's
            return (
                f"its frames after frame {held - 1} could not be decoded: the file is damaged or "
                "cut short there; the frames sampled were read"
            )
        if self.undecodable:
            return (
                f"{len(self.undecodable)} frame(s) of the stream could not be decoded (from frame "
                f"{self.undecodable[0]}), the frames sampled were read: the file is damaged"
            )
        return None


def _count_frames(capture: Any, info: VideoInfo) -> None:
    """``info``'s frame count and duration from a pass grabbing every frame (``capture`` is
    released), where the container only estimates them."""
    clock = _Clock(info.fps)
    try:
        count = sum(1 for _ in _grabs(capture, clock))
    finally:
        capture.release()
    if not _stops_short(clock, info):  # else the frames past the end are missed, and said
        info.frame_count, info.duration = count, clock.end


def sample_video(
    path: Path, fps: float | None = 1.0, frames: int | None = None
) -> tuple[VideoInfo, FrameReader]:
    """Open a video and return its info and a reader of the sampled frames (RGB): ``frames``
    evenly spread over the frame count (counted first where the container only estimates it),
    else one at or after every 1/``fps`` seconds."""
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    capture, info = open_video(path)
    exact = _is_avi(path)
    if not frames:
        return info, FrameReader(capture, info, rate=fps or 1.0, exact=exact)
    if not _counts_its_frames(path):
        _count_frames(capture, info)
        capture, _ = open_video(path)
    # a stream without frames gives its error once read, after its format is known
    return info, FrameReader(capture, info, spread_indices(info.frame_count, frames), exact=exact)


# Browsers show a frame that asks for 10 ms or less (none: 0) for 100 ms; so is it timed here.
BRIEFEST_FRAME_MS = 10.0
SHOWN_INSTEAD_MS = 100.0
# A later frame may reach past an animation's canvas (a sloppy encoder's GIF: Pillow grows the
# canvas to hold it); browsers crop it to the canvas, and so is it here, up to this many times
# the canvas's pixels. Larger is damage read as a size (gigapixels): refused undecoded.
LARGEST_OVERHANG = 4


def _shown_for(duration: float | None) -> float:
    """Seconds a frame asking for ``duration`` milliseconds is shown, as a browser shows it."""
    milliseconds = float(duration or 0.0)
    return (SHOWN_INSTEAD_MS if milliseconds <= BRIEFEST_FRAME_MS else milliseconds) / 1000.0


class OffCanvas(DecodeError):
    """An animation's frame far larger than its canvas: damage, not decoded."""


def _load_frame(image: Image.Image, index: int, canvas: tuple[int, int], max_pixels: int) -> None:
    """Decode frame ``index`` of an animation whose canvas is ``canvas``. A GIF frame reaching
    past the canvas grows Pillow's size; one that grows it past ``LARGEST_OVERHANG`` times the
    canvas, or past ``max_pixels``, is ``OffCanvas``, refused before it is decoded (a GIF's
    frame after a damaged one read 5.8 gigapixels from the bytes there, and the scan was
    killed for memory). Pillow's own check (``hold_pillow_to``) may refuse it first, as it
    seeks: the same end."""
    try:
        image.seek(index)
    except Image.DecompressionBombError as error:
        raise OffCanvas(f"frame {index}: {undecodable_because(error)}") from None
    width, height = image.size
    if width * height > min(LARGEST_OVERHANG * canvas[0] * canvas[1], max_pixels):
        raise OffCanvas(f"frame {index} is {width}x{height}, on a {canvas[0]}x{canvas[1]} canvas")
    image.load()


class PictureCapture:
    """An animation's frames, decoded from its bytes by Pillow and given to ``FrameReader`` as
    OpenCV gives a video's (``grab``, ``retrieve``, ``get``, ``release``): each frame whole, as a
    viewer shows it (composited over the frames before, cropped to the canvas, upright,
    transparency over white), at the time it is first shown."""

    def __init__(self, data: bytes, timeline: Timeline, max_pixels: int):
        self.image = Image.open(io.BytesIO(data))
        self.canvas = self.image.size
        self.starts = timeline.starts  # seconds: when each frame is first shown
        self.skip = timeline.skip  # Pillow's frames before the animation's first
        self.max_pixels = max_pixels
        self.position = -1
        self.end = len(self.starts)  # the frames that can be reached

    def grab(self) -> bool:
        """Decode the next frame; False for one that cannot be (``FrameReader`` counts it) and
        past the last."""
        following = self.position + 1
        if following >= self.end:
            return False
        self.position = following
        try:
            _load_frame(self.image, self.skip + following, self.canvas, self.max_pixels)
        except OffCanvas:  # Pillow decodes a frame to reach the next: none after it is
            self.end = following
            return False
        except Exception:  # noqa: BLE001 - a damaged frame breaks a plugin in any way
            return False
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        """The frame grabbed, BGR as OpenCV's."""
        try:
            frame = self.image
            if frame.size != self.canvas:
                frame = frame.crop((0, 0, *self.canvas))
            rgb = _to_rgb(_upright(frame))
        except Exception:  # noqa: BLE001 - as in grab
            return False, None
        return True, np.ascontiguousarray(rgb[..., ::-1])

    def get(self, prop: int) -> float:
        import cv2

        if prop == cv2.CAP_PROP_POS_MSEC:
            return 1000.0 * self.starts[self.position]
        if prop == cv2.CAP_PROP_PTS:
            return float(self.position)
        return 0.0

    def release(self) -> None:
        self.image.close()


@dataclass
class Timeline:
    """When an animation's frames are shown: ``starts[i]`` the second frame ``i`` is first shown,
    ``duration`` the whole. Its frames are those a viewer shows: an APNG's default image (a still
    for viewers without APNG, which Pillow counts as frame 0) is not one of them (``skip``)."""

    starts: list[float]
    duration: float
    damaged: list[int]  # the frames that could not be decoded, or the first that ends them
    skip: int = 0  # Pillow's frames before the animation's first

    def at(self, rate: float) -> list[int]:
        """The frames shown at each 1/``rate`` seconds (a frame is held until the next starts; a
        video's sampling takes the first frame at or after each instant instead, which passes
        over an animation's frame held for seconds), in time linear in the frames."""
        instants = math.ceil(self.duration * rate - TIME_SLACK_S)  # 0, 1/rate, ... < duration
        taken = []
        for i, start in enumerate(self.starts):
            end = self.starts[i + 1] if i + 1 < len(self.starts) else math.inf
            first = max(0, math.ceil((start - TIME_SLACK_S) * rate))  # instant at/after start
            if first < instants and first < (end - TIME_SLACK_S) * rate:
                taken.append(i)
        return taken


def _timeline(image: Image.Image, count: int, max_pixels: int, cut: bool = False) -> Timeline:
    """``image``'s frames timed as a browser shows them. Every frame is decoded (a WebP's length
    is known once it is); one that cannot be lasts 100 ms and the frames after it are timed
    still. The frames are those the file holds: more than ``MAX_UNDECODABLE_RUN`` failing in a
    row are its end (an APNG declaring 30 million frames in 4 bytes holds 9), as is a frame the
    decoder cannot seek past (the last, counted as damaged), and a frame off the canvas ends
    them; ``damaged`` names each frame that failed, and the first of such an end, for the
    reading to say; so does a file ending before the ``count`` frames it holds
    (``_frame_count``, on an image of its own: its walk past a damaged frame leaves Pillow's
    state changed, and a GIF cut in a frame's palette then read as a whole shorter one: audit
    AF F5). ``cut``: ``image`` holds the whole frames of a file cut short, whose cut frame
    follows them (damaged, as a GIF's cut frame is)."""
    canvas, lengths, damaged = image.size, [], []
    skip = int(bool(image.info.get("default_image")))  # an APNG's still, for old viewers
    failing = 0  # frames failing in a row
    for index in range(count - skip):
        try:
            _load_frame(image, skip + index, canvas, max_pixels)
        except (EOFError, OffCanvas):  # no frame is reached after either
            damaged.append(index)
            break
        except Exception:  # noqa: BLE001 - a damaged frame breaks a plugin in any way
            # its seek failed: every later seek tries it again, and no frame after it is
            # reached (an APNG's or FLI's cut frame: each frame they declare after it was timed
            # 100 ms, and a cut file lasted longer than the whole one: audit AH F5). The file
            # ends at the frame before where that one failed (the cut), else before this one
            # (a count declared past the frames held), unless this is the last one counted
            if image.tell() != skip + index and (failing or index < count - skip - 1):
                if not failing:
                    damaged.append(index)
                break
            damaged.append(index)
            lengths.append(SHOWN_INSTEAD_MS / 1000.0)
            failing += 1
            if failing > MAX_UNDECODABLE_RUN:  # no frame follows: the file ends at the first
                end = index + 1 - failing
                del lengths[end:], damaged[len(damaged) - failing + 1 :]
                break
            continue
        failing = 0
        lengths.append(_shown_for(image.info.get("duration")))
    return _timed(lengths, damaged, skip, cut)


def _timed(lengths: list[float], damaged: list[int], skip: int, cut: bool) -> Timeline:
    """The ``Timeline`` of frames shown for ``lengths`` seconds, ``cut`` as ``_timeline``'s."""
    if cut:
        damaged.append(len(lengths))
        lengths.append(SHOWN_INSTEAD_MS / 1000.0)
    starts = [0.0, *itertools.accumulate(lengths[:-1])]
    return Timeline(starts, sum(lengths), damaged, skip)


def _apng_frame_lengths(data: bytes) -> list[float] | None:
    """Seconds each frame of an APNG is shown, from its frame control chunks (fcTL: a delay as
    a fraction of a second, a denominator of 0 meaning 100, as Pillow reads it), without
    decoding a frame (``_gif_frame_lengths``); its default image, where it is no frame, is not
    among them. None where the file stops before its IEND chunk, its frame and data chunks do
    not number themselves 0, 1, 2 ..., a frame has no data or reaches past the canvas: its
    frames are then timed as they are decoded, damage and all."""
    lengths: list[float] = []
    width = height = sequence = 0
    waiting = False  # for the data of the frame last controlled
    for kind, chunk in png_chunks(data):
        body = chunk[8:-4]
        if kind in (b"fcTL", b"IEND") and waiting:
            return None
        if kind == b"IEND":
            return lengths
        waiting = waiting and kind not in (b"IDAT", b"fdAT")
        if kind == b"IHDR" and len(body) >= 8:
            width, height = struct.unpack_from(">II", body)
        if kind not in (b"fcTL", b"fdAT"):
            continue
        if len(body) < (26 if kind == b"fcTL" else 4) or body[:4] != sequence.to_bytes(4, "big"):
            return None
        sequence += 1
        if kind == b"fcTL":
            frame_width, frame_height, left, top, numerator, denominator = struct.unpack_from(
                ">IIIIHH", body, 4
            )
            if left + frame_width > width or top + frame_height > height:
                return None
            lengths.append(_shown_for(1000.0 * numerator / (denominator or 100)))
            waiting = True
    return None


FRAMES_TIMED_BY_BLOCKS = {
    "GIF": _gif_frame_lengths,
    "WEBP": _webp_frame_lengths,
    "PNG": _apng_frame_lengths,
}


def open_animation(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[PictureCapture, VideoInfo, Timeline]:
    """A capture of the animation ``data`` holds (``DecodedImage.animated``), what it says of
    itself (its frame count the frames it holds, its duration theirs) and its ``Timeline``."""
    hold_pillow_to(max_pixels)
    mended = whole_webp_frames(data)  # a WebP cut short: its whole frames, and the cut one
    data, frame_cut = (data, False) if mended is None else mended
    with Image.open(io.BytesIO(data)) as counted:
        count = _frame_count(counted)
    with Image.open(io.BytesIO(data)) as image:
        codec, (width, height) = image.format or "animation", _upright(image).size
        # a GIF's, APNG's or WebP's frames timed from its blocks where they are those Pillow
        # counts; damage is found as they are read (``FrameReader``)
        timed_by = FRAMES_TIMED_BY_BLOCKS.get(image.format or "")
        lengths = timed_by(data) if timed_by else None
        skip = int(bool(image.info.get("default_image")))  # an APNG's still, for old viewers
        if lengths and len(lengths) + skip == count:
            timeline = _timed(lengths, [], skip, frame_cut)
        else:
            timeline = _timeline(image, count, max_pixels, cut=frame_cut)
    count = len(timeline.starts)
    info = VideoInfo(
        fps=count / timeline.duration if timeline.duration > 0 else 0.0,
        frame_count=count,
        width=width,
        height=height,
        codec=codec,
        duration=timeline.duration,
    )
    return PictureCapture(data, timeline, max_pixels), info, timeline


def _animation_reader(
    capture: PictureCapture, info: VideoInfo, timeline: Timeline, wanted: list[int]
) -> FrameReader:
    """A reader of an animation's ``wanted`` frames, which reads on to its last frame: damage
    anywhere in it is said (with what timing it found), and its cuts found, as a video's read by
    rate."""
    reader = FrameReader(capture, info, wanted, exact=True, animation=True)
    reader.undecodable += timeline.damaged
    return reader


def sample_animation(
    data: bytes,
    fps: float | None = 1.0,
    frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[VideoInfo, FrameReader]:
    """``sample_video`` for an animation's bytes: ``frames`` evenly spread over its frames, else
    the frame shown at every 1/``fps`` seconds (``Timeline.at``)."""
    capture, info, timeline = open_animation(data, max_pixels)
    if frames:
        wanted = spread_indices(info.frame_count, frames)
    else:
        wanted = timeline.at(fps or 1.0)
    return info, _animation_reader(capture, info, timeline, wanted)


def animation_frames(
    data: bytes, indices: Iterable[int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[VideoFrame]:
    """``video_frames`` for an animation's bytes."""
    capture, info, timeline = open_animation(data, max_pixels)
    return _animation_reader(capture, info, timeline, sorted(set(indices)))


# the MP types (CIPA DC-007, as Pillow names them) of an MPO's images that are views of their
# own: the primary, and a stereo camera's or a panorama's frames. The others are not: a large
# thumbnail (a smaller copy of the primary) and an image of undefined type, which is what an
# Ultra HDR or HDR phone photo's gain map is (a luminance map of the primary: its faces again)
MPO_VIEW_TYPES = ("Baseline MP Primary Image", "Multi-Frame Image")
UNINDEXED_JPEG = (
    "not scanned: the file's MP index is damaged, and without it whether this JPEG is another "
    "view, a thumbnail or a gain map cannot be told"
)
TIFF_REDUCED_COPY = 1  # a TIFF page's NewSubfileType (tag 254) bit: a smaller copy of a page


def _not_a_view(image: Image.Image, index: int, mp_entries: list[dict[str, Any]]) -> bool:
    """Whether picture ``index``, the one ``image`` is at, is no view of its own but a copy or
    a map of another picture of its file: a TIFF page marked reduced-resolution, an MPO's image
    other than its first that is typed neither primary nor multi-frame (a large thumbnail, a
    gain map), a PSD's layer (a part of its composite, picture 0, what the file shows)."""
    if image.format == "PSD":
        return index > 0
    if image.format == "TIFF":
        return bool(int(image.tag_v2.get(254, 0) or 0) & TIFF_REDUCED_COPY)
    if image.format == "MPO" and 0 < index < len(mp_entries):
        kind = str((mp_entries[index].get("Attribute") or {}).get("MPType", ""))
        return not kind.startswith(MPO_VIEW_TYPES)
    return False


def over_the_limit(what: str, width: int, height: int, max_pixels: int) -> str:
    """Why a picture over the decompression-bomb limit is not decoded."""
    return f"{what} is {width}x{height} = {_past_the_limit(width * height, max_pixels)}"


def _past_the_limit(pixels: int, max_pixels: int) -> str:
    def megapixels(pixels: int) -> str:  # a decimal where whole ones would read as equal
        return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f}"

    return (
        f"{megapixels(pixels)} megapixels, over the {megapixels(max_pixels)}-megapixel "
        "decompression-bomb limit (scan's --max-megapixels raises it)"
    )


def undecodable_because(error: Exception) -> str:
    """Why a picture could not be decoded, for the report, whatever the plugin raised: one
    wording for one damage, on a file's first picture or its third (audit AE L4)."""
    if isinstance(error, DecodeError):
        return str(error)
    message = str(error).strip() or type(error).__name__
    if isinstance(error, Image.DecompressionBombError):  # a picture past twice Pillow's limit
        found = re.search(r"\((\d+) pixels\)", message)
        if found and Image.MAX_IMAGE_PIXELS:
            return f"a picture of {_past_the_limit(int(found[1]), Image.MAX_IMAGE_PIXELS)}"
        return f"decompression bomb: {message}"
    if isinstance(error, OSError):
        if "truncated" in message.lower() or "broken data stream" in message:
            return f"truncated or corrupt image: {message}"
        return f"cannot decode image: {message}"
    if isinstance(error, (ValueError, SyntaxError, MemoryError, EOFError)):
        return f"corrupt image: {message}"
    return f"corrupt image: {type(error).__name__}: {message}"


class StillPictures:
    """The pictures of a still image file that holds several that are not an animation's frames
    (``DecodedImage.stills``): a TIFF's pages, a HEIF's images, an MPO's views. Each is a face's
    place as a video frame is (``VideoFrame`` with its index and no time), decoded alone,
    upright, each within ``max_pixels`` (a HEIF's other image may be larger than its primary:
    audit P H2), an MPO's view refused where its JPEG data is damaged, as a JPEG file is.

    A picture that is no view of its own (a TIFF's reduced-resolution page, an MPO's large
    thumbnail or gain map: ``_not_a_view``) is passed over (``passed_over``) where the file holds
    one that is a view, even where every view fails (a damaged photo's gain map, read in its
    place, was labelled: audit AF F1); one that cannot be decoded is left out, with why
    (``unread``), and the others read on. ``indices``: those pictures only, passed over
    or not (a report drawing again the pictures its faces were found in). ``most``: the
    pictures counted at most (an APNG read as stills: its default image and the frames found
    in it, not the count it declares)."""

    def __init__(
        self,
        data: bytes,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        indices: Iterable[int] | None = None,
        most: int | None = None,
    ):
        readable_by_pillow(data[:512])  # a HEIF's plugin, where nothing registered it yet
        hold_pillow_to(max_pixels)
        self.data, self.max_pixels = data, max_pixels
        self.image = Image.open(io.BytesIO(data))
        self.format = self.image.format
        self.indexed = _frame_count(self.image)  # the pictures Pillow reads
        if most is not None:
            self.indexed = min(self.indexed, most)
        self.count = self.indexed + _unindexed_jpegs(self.image, data)
        self._reopen()  # a count that met a damaged picture may leave Pillow's image half set
        self.unread: list[tuple[int, str]] = []
        mpinfo = getattr(self.image, "mpinfo", None) or {}
        self.mp_entries: list[dict[str, Any]] = mpinfo.get(0xB002) or []
        passed_over = [index for index in range(self.count) if self._no_view(index)]
        self.passed_over = passed_over if len(passed_over) < self.count else []
        self.asked = indices is not None
        wanted = range(self.count) if indices is None else sorted(set(indices))
        self.wanted = [index for index in wanted if index < self.count]

    @property
    def views(self) -> list[int]:
        """The pictures to scan: all but those passed over."""
        return [index for index in range(self.count) if index not in self.passed_over]

    def _no_view(self, index: int) -> bool:
        """``_not_a_view`` of picture ``index``: an MPO's by its MP index, without seeking (a view
        that fails to open leaves Pillow's image half overwritten: audit AE H1)."""
        if self.format != "TIFF":
            return _not_a_view(self.image, index, self.mp_entries)
        try:
            self.image.seek(index)
            return _not_a_view(self.image, index, self.mp_entries)
        except Exception:  # noqa: BLE001 - the reading says why (``unread``)
            self._reopen()
            return False

    def _reopen(self, seek_failed: bool = True) -> None:
        """A fresh image, where a failed seek or decode may have left Pillow's half set (an
        MPO's: audit AE H1; a TIFF's after a failed seek, whose next seek to that page then
        stayed on the page before and decoded it as that one). A TIFF whose page failed to
        decode, once its seek succeeded, is not reopened: its next seek reloads the page's
        directory from where it lies, and reopened, it walked every page before again, and
        damaged pages took quadratic time (audit AF F2: 1,000 of them 9 s)."""
        if self.format == "TIFF" and not seek_failed:
            return
        self.image.close()
        self.image = Image.open(io.BytesIO(self.data))

    def __iter__(self) -> Iterator[VideoFrame]:
        try:
            skipped = [] if self.asked else self.passed_over
            yield from self.read([i for i in self.wanted if i not in skipped])
        finally:
            self.close()

    def close(self) -> None:
        self.image.close()

    def pixels_of(self, indices: list[int]) -> int:
        """How many pixels the pictures at ``indices`` hold, from their headers (a picture whose
        header cannot be read counted as the largest of the others)."""
        sizes: list[int | None] = []
        for index in indices:
            try:
                self._seek(index)
                sizes.append(self.image.size[0] * self.image.size[1])
            except Exception:  # noqa: BLE001 - the reading says why (``unread``)
                self._reopen()
                sizes.append(None)
        largest = max((size for size in sizes if size is not None), default=0)
        return sum(largest if size is None else size for size in sizes)

    def read(self, indices: list[int]) -> Iterator[VideoFrame]:
        """The pictures at ``indices`` that decode; those that do not are said (``unread``)."""
        for index in indices:
            try:
                self._seek(index)
            except Exception as error:  # noqa: BLE001 - a damaged picture, in any way
                self.unread.append((index, undecodable_because(error)))
                self._reopen()
                continue
            try:
                pixels = self._decode(index)
            except Exception as error:  # noqa: BLE001 - a damaged picture, in any way
                self.unread.append((index, undecodable_because(error)))
                self._reopen(seek_failed=False)
                continue
            yield VideoFrame(index, None, pixels)

    def _seek(self, index: int) -> None:
        """The image set at picture ``index``. A PSD's picture 0 is its composite, which Pillow
        opens at and names frame 1, as it names the first layer: reopened for it, and set back
        to a frame of none before a seek to layer 1, which Pillow would take for no move. A JPEG
        after a damaged MP index is not read (``_unindexed_jpegs``)."""
        if index >= self.indexed:
            raise DecodeError(UNINDEXED_JPEG)
        if self.format != "PSD":
            self.image.seek(index)
            return
        self._reopen()
        if index:
            self.image.frame = 0
            self.image.seek(index)

    def _decode(self, index: int) -> np.ndarray:
        """Picture ``index``, the one the image is at."""
        image = self.image
        width, height = image.size
        if width * height > self.max_pixels:
            raise DecodeError(over_the_limit("picture", width, height, self.max_pixels))
        _load(image)
        if self.format == "MPO":
            _refuse_damaged_jpeg(self._view_bytes(index))
        return np.array(_to_rgb(_upright(image)), dtype=np.uint8, order="C")

    def _view_bytes(self, index: int) -> bytes:
        """An MPO view's JPEG: from where its MP index places it (offsets after the first
        view's count from the MP header of the first JPEG's APP2 segment, CIPA DC-007) to the
        next view, or the end; not by its recorded size, which an editor growing the first
        JPEG's header leaves short (audit AF F3), nor from the first "MPF" bytes anywhere (a
        comment may hold them: F4)."""
        header = _mp_header(self.data)
        starts = [0] + [header + int(entry.get("DataOffset") or 0) for entry in self.mp_entries[1:]]
        start = starts[index] if index < len(starts) and header >= 0 else 0
        ahead = [other for other in starts if other > start]
        return self.data[start : min(ahead, default=len(self.data))]


def _mp_header(data: bytes) -> int:
    """Where the MP header (its byte-order mark) of a JPEG's MPF APP2 segment starts, its
    segments walked from the start of image to the first scan; -1 where there is none."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # the first scan: no header segment follows
            break
        length = struct.unpack_from(">H", data, position + 2)[0]
        if marker == 0xE2 and data[position + 4 : position + 8] == b"MPF\x00":
            return position + 8
        position += 2 + length
    return -1


def video_frames(path: Path, indices: Iterable[int]) -> Iterator[VideoFrame]:
    """The frames of a video at ``indices`` (a scan's sampled frames, to show them again), in
    frame order; an index past the end is left out."""
    capture, info = open_video(path)
    return FrameReader(capture, info, sorted(set(indices)), exact=_is_avi(path))
