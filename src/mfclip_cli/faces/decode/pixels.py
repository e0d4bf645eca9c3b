"""What every decoding shares: its error, the pictures it gives (upright 8-bit RGB), Pillow's
limits, and the wording of why a picture could not be decoded."""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

# still-image formats whose several pictures are an animation's frames, each shown for a time:
# scanned as a video's (a TIFF's pages, a HEIF's images and an MPO's views are each scanned as a
# picture of their own: ``StillPictures``)
ANIMATION_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF", "FLI"})  # FLI: Autodesk FLI/FLC


DEFAULT_MAX_PIXELS = 100_000_000
# An image file larger than this cannot hold an image within the decompression-bomb limit: 8 bytes
# a pixel (16-bit RGBA, uncompressed) plus room for metadata (EXIF, ICC profiles, previews). It is
# refused before it is read, so a huge file named .jpg cannot fill the memory.
BYTES_PER_PIXEL = 8
METADATA_BYTES = 64 << 20


def too_large_to_read(size: int, max_pixels: int) -> str | None:
    """Why a file of ``size`` bytes is not read whole to be decoded as an image (it cannot hold
    one within ``max_pixels``), or None."""
    limit = BYTES_PER_PIXEL * max_pixels + METADATA_BYTES
    if size <= limit:
        return None
    return (
        f"file is {size:,} bytes, more than an image within the {max_pixels / 1e6:.0f}-megapixel "
        f"decompression-bomb limit can hold ({limit:,}); not read"
    )


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


def to_rgb(image: Image.Image) -> np.ndarray:
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


def picture_count(image: Image.Image) -> int:
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


def upright(image: Image.Image) -> Image.Image:
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
