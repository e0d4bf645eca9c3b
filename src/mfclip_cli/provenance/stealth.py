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
        return data.decode("utf-8", "replace"), name
    return None
