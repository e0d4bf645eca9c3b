"""Decoding evidence files into upright 8-bit RGB pixels, with a clear error for anything else.

Images go through Pillow (HEIC/HEIF through pillow-heif's plugin): EXIF orientation applied,
grey / 16-bit / palette / CMYK / alpha images converted, the first picture of a file of several
(an animation's frames are sampled as a video's: ``sample_animation``; a TIFF's pages, a HEIF's
images and an MPO's views each read alone: ``StillPictures``), a decompression-bomb limit checked
from the header before any pixel is decoded, and truncated or corrupt files refused rather than
half-decoded. Videos go through OpenCV and are sampled at a rate or a number of frames.

The modules: ``kinds`` (what a file is), ``pixels`` (what every decoding shares), ``jpeg`` and
``chunks`` (walks of a JPEG's segments and a PNG's or WebP's chunks), ``still``, ``video`` and
``animation`` (each kind decoded). The names below are what the rest of mfclip and its tests
use.
"""

from mfclip_cli.faces.decode.animation import Timeline, animation_frames, sample_animation
from mfclip_cli.faces.decode.chunks import PNG_SIGNATURE, crc_holds, png_chunks, png_of_its_pixels
from mfclip_cli.faces.decode.kinds import (
    HEIF_BRANDS,
    IMAGE_SUFFIXES,
    holds_video,
    is_media,
    is_video,
    readable_by_pillow,
)
from mfclip_cli.faces.decode.pixels import (
    ANIMATION_FORMATS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    VideoFrame,
    exif_damage,
    too_large_to_read,
)
from mfclip_cli.faces.decode.still import (
    UNINDEXED_JPEG,
    StillPictures,
    decode_image,
    read_image_bytes,
)
from mfclip_cli.faces.decode.video import (
    FrameReader,
    VideoInfo,
    open_video,
    sample_video,
    spread_indices,
    video_frames,
)

__all__ = [
    "ANIMATION_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "HEIF_BRANDS",
    "IMAGE_SUFFIXES",
    "PNG_SIGNATURE",
    "UNINDEXED_JPEG",
    "DecodeError",
    "DecodedImage",
    "FrameReader",
    "StillPictures",
    "Timeline",
    "VideoFrame",
    "VideoInfo",
    "animation_frames",
    "crc_holds",
    "decode_image",
    "exif_damage",
    "holds_video",
    "is_media",
    "is_video",
    "open_video",
    "png_chunks",
    "png_of_its_pixels",
    "read_image_bytes",
    "readable_by_pillow",
    "sample_animation",
    "sample_video",
    "spread_indices",
    "too_large_to_read",
    "video_frames",
]
