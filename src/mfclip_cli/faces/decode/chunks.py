"""PNG and WebP chunk walks: the chunks a PNG's pixels need, and an animated WebP cut short
mended to its whole frames."""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

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


def is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _animated_webp(head: bytes) -> bool:
    """Whether a file's first bytes are an animated WebP's (its VP8X chunk's animation flag)."""
    return is_webp(head) and head[12:16] == b"VP8X" and len(head) > 20 and head[20] & 2 > 0


def webp_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """A WebP's chunks after its header, each as its name, where its body starts and its size,
    to the first cut short."""
    position = 12
    while position + 8 <= len(data):
        size = struct.unpack_from("<I", data, position + 4)[0]
        if position + 8 + size > len(data):  # the chunk the file was cut in
            return
        yield data[position : position + 4], position + 8, size
        position += 8 + size + (size & 1)


def whole_webp_frames(data: bytes) -> tuple[bytes, bool] | None:
    """An animated WebP cut short (its RIFF size past its last byte) as its whole chunks alone,
    its size mended, and whether a frame was cut (not a metadata chunk after the frames), or
    None for any other file: libwebp refuses the whole file (audit AB L3), where a GIF or an
    APNG cut short gives the frames before the cut."""
    if not _animated_webp(data[:32]) or struct.unpack_from("<I", data, 4)[0] + 8 <= len(data):
        return None
    position, frames = 12, 0
    for kind, start, size in webp_chunks(data):
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
