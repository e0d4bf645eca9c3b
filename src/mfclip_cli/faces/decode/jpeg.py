"""A JPEG's marker segments walked: damage libjpeg-turbo sees that Pillow hides, an MPO's MP
header, and the JPEGs after the first where a damaged MP index hides them."""

from __future__ import annotations

from typing import Iterator

from PIL import Image

from mfclip_cli.faces.decode.pixels import DecodeError

# Pillow's names for JPEG files (a camera's MPO: several JPEGs, one after another) and libjpeg's
# warnings that a JPEG's coded data is damaged (jerror.h: JWRN_HIT_MARKER, JWRN_EXTRANEOUS_DATA,
# JWRN_JPEG_EOF...)
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")


SOS, EOI, APP2 = 0xDA, 0xD9, 0xE2
# markers that stand alone, no length after them: TEM, the restarts, SOI and EOI
STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def markers(data: bytes, start: int) -> Iterator[tuple[int, int, int]]:
    """Each marker of the JPEG that begins at ``start`` (its SOI), after the SOI: (marker, where
    its 0xFF is, where its segment ends: past the marker alone where it has no length). A
    segment's body is passed over by its length (an EXIF thumbnail's markers lie in one); bytes
    that start no marker between them (an encoder's padding, a scan's coded data, a stuffed
    ``FF 00``, fill bytes) are passed over, as is a marker declaring a length shorter than its
    own two bytes (damage: no segment starts there, and the walk goes on to find the end past
    it). It stops where a segment runs past the end of ``data``."""
    position = start + 2
    while (at := data.find(b"\xff", position)) >= 0:
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes
            at += 1
        if at + 1 >= len(data):
            return
        marker = data[at + 1]
        if marker == 0x00:  # a stuffed 0xFF in coded data: no marker
            position = at + 2
            continue
        if marker in STANDALONE:
            yield marker, at, at + 2
            position = at + 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if at + 4 > len(data) or at + 2 + length > len(data):
            return
        if length < 2:
            position = at + 2
            continue
        yield marker, at, at + 2 + length
        position = at + 2 + length


def refuse_damaged_jpeg(data: bytes) -> None:
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


def unindexed_jpegs(image: Image.Image, data: bytes) -> int:
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
    """Where the JPEG that begins at ``start`` ends (past its EOI marker), or None where it is
    cut short (an EXIF thumbnail's EOI lies in a segment, and is passed over with it)."""
    return next((end for marker, _, end in markers(data, start) if marker == EOI), None)


def _without_header_padding(data: bytes) -> bytes:
    """A JPEG's bytes with whatever lies between its marker segments before the first scan
    (SOS) left out, the segments and everything from the scan on as they are; ``data`` itself
    where its segments cannot be followed. Padding may hold 0xFF bytes that start no segment
    (Pillow's jpeg_ff00_header.jpg: ``FF 00 00 02`` before its tables, refused: audit AH F1):
    passed over to the next that does, as is a marker declaring a length under 2."""
    kept = [data[:2]]  # SOI
    for marker, at, end in markers(data, 0):
        if marker == SOS:  # the first scan: the rest is coded data, kept whole
            return b"".join(kept) + data[at:]
        if end > at + 2:  # a header segment; a marker of none before the scan is padding
            kept.append(data[at:end])
    return data


def mp_header(data: bytes) -> int:
    """Where the MP header (its byte-order mark) of a JPEG's MPF APP2 segment starts, its
    segments walked from the start of image to the first scan; -1 where there is none."""
    for marker, at, _ in markers(data, 0):
        if marker == SOS:
            break
        if marker == APP2 and data[at + 4 : at + 8] == b"MPF\x00":
            return at + 8
    return -1
