""" "Stealth" PNG info: generation parameters hidden in the least significant bits of a PNG's
pixels, which survive a site that strips text chunks (not a re-encoding). NovelAI writes its
metadata so; AUTOMATIC1111's and ComfyUI's stealth-pnginfo extensions its parameters text.

The format, as those writers and their readers have it: bits taken column by column (x outer,
y inner), from the alpha channel's low bit (one a pixel) or from red, green and blue's (three);
a 15-byte signature (``stealth_pnginfo`` or ``stealth_pngcomp`` in alpha, ``stealth_rgbinfo``
or ``stealth_rgbcomp`` in RGB; ``comp``: gzip), a 32-bit big-endian count of the payload's
bits, then the payload, bytes most significant bit first.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURES = {  # channels -> {signature: gzip-compressed}
    "alpha": {b"stealth_pnginfo": False, b"stealth_pngcomp": True},
    "rgb": {b"stealth_rgbinfo": False, b"stealth_rgbcomp": True},
}
HEADER_BITS = 15 * 8 + 32
MAX_PIXELS = 64_000_000  # a larger PNG is not decoded for it (the scan's faces have their limit)
MAX_PAYLOAD = 1 << 20  # a payload that inflates beyond this is refused


SIGNATURE_ROWS = {4: 120, 3: 40}  # column 0's rows that hold a signature, by channels


class StealthError(ValueError):
    """A signature found, and a payload that cannot be read (the message is for the report)."""


def _low_bits(pixels: np.ndarray, channels: str, count: int) -> np.ndarray:
    """The first ``count`` hidden bits, column by column, of ``channels``."""
    planes = pixels[..., 3:4] if channels == "alpha" else pixels[..., :3]
    height, per_pixel = planes.shape[0], planes.shape[2]
    columns = -(-count // (height * per_pixel))
    return (planes[:, :columns].transpose(1, 0, 2).reshape(-1) & 1)[:count]


def read_stealth(image: Image.Image) -> tuple[str, str] | None:
    """(the payload as text, its signature) hidden in ``image``'s pixels, or None: none there,
    the image not 8-bit RGB(A), or over ``MAX_PIXELS``. Decodes the pixels."""
    if image.mode not in ("RGB", "RGBA") or image.width * image.height > MAX_PIXELS:
        return None
    pixels = np.asarray(image)
    capacity = {"alpha": 1, "rgb": 3}
    for channels in ("alpha", "rgb") if image.mode == "RGBA" else ("rgb",):
        available = pixels.shape[0] * pixels.shape[1] * capacity[channels]
        if available < HEADER_BITS:
            continue
        header = np.packbits(_low_bits(pixels, channels, HEADER_BITS)).tobytes()
        signature, length = header[:15], int.from_bytes(header[15:], "big")
        if signature not in SIGNATURES[channels]:
            continue
        name = signature.decode()
        if length % 8 or HEADER_BITS + length > available:
            raise StealthError(f"{name}: a payload of {length} bits does not fit the image")
        payload = np.packbits(_low_bits(pixels, channels, HEADER_BITS + length)[HEADER_BITS:])
        data = payload.tobytes()
        if SIGNATURES[channels][signature]:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
            try:
                data = inflate.decompress(data, MAX_PAYLOAD)
            except zlib.error as error:
                raise StealthError(f"{name}: the payload is not gzip: {error}") from None
            if inflate.unconsumed_tail:
                raise StealthError(f"{name}: the payload inflates beyond {MAX_PAYLOAD} bytes")
            if not inflate.eof:  # a prefix inflates without error: its figures would be wrong
                raise StealthError(f"{name}: the payload's gzip stream is cut short")
        return data.decode("utf-8", "replace"), name
    return None


def signature_possible(data: bytes) -> bool:
    """Whether a PNG's pixels may begin with a signature, told without decoding the image: the
    first pixel of each of the rows the signature lies in (column 0, where the bits begin),
    inflated only as far as those rows. Every plain PNG was otherwise decoded a second time,
    a 62-megapixel one for 2.4 s and 476 MB. True where it cannot be told so (an interlaced
    PNG, a short one, an unknown filter): the decoder then judges."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None:
        return False  # no stealth writer's PNG (grey, palette, 16-bit)
    rows = SIGNATURE_ROWS[channels]
    if interlace or height < rows:
        return True
    stride = 1 + width * channels
    raw = _inflated_start(data, rows * stride)
    if raw is None or len(raw) < rows * stride:
        return True
    above = np.zeros(channels, np.int32)
    firsts = np.empty((rows, channels), np.uint8)
    for row in range(rows):
        line = raw[row * stride : row * stride + 1 + channels]
        pixel = np.frombuffer(line[1:], np.uint8).astype(np.int32)
        # a row's first pixel has no left neighbour: Paeth then predicts the one above, as Up
        predicted = {0: 0, 1: 0, 2: above, 3: above // 2, 4: above}.get(line[0])
        if predicted is None:
            return True
        above = (pixel + predicted) & 0xFF
        firsts[row] = above
    if channels == 4 and np.packbits(firsts[:, 3] & 1).tobytes() in SIGNATURES["alpha"]:
        return True
    rgb = np.packbits(firsts[: SIGNATURE_ROWS[3], :3].reshape(-1) & 1).tobytes()
    return rgb in SIGNATURES["rgb"]


def _inflated_start(data: bytes, length: int) -> bytes | None:
    """The first ``length`` bytes of a PNG's inflated pixel rows (filter bytes included), or
    None where its chunks cannot be walked."""
    inflate, out, offset = zlib.decompressobj(), b"", 8
    try:
        while offset + 8 <= len(data) and len(out) < length:
            size, kind = struct.unpack(">I4s", data[offset : offset + 8])
            if kind == b"IDAT":
                body = data[offset + 8 : offset + 8 + size]
                out += inflate.decompress(body, length - len(out))
            elif kind == b"IEND":
                break
            offset += 12 + size
    except zlib.error:
        return None
    return out
