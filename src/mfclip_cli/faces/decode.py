"""Decoding evidence files into upright 8-bit RGB pixels, with a clear error for anything else.

Images go through Pillow: EXIF orientation applied, grey / 16-bit / palette / CMYK / alpha images
converted, the first frame of animated images, a decompression-bomb limit checked from the header
before any pixel is decoded, and truncated or corrupt files refused rather than half-decoded.
Videos go through OpenCV and are sampled at a rate or a number of frames.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mfclip_cli.files import open_regular

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
    # phones' (3GPP), camcorders' (AVCHD), DVDs' and broadcast MXF; .ts is left out (TypeScript
    # too): named, or listed on stdin, any file is attempted
    | {".3gp", ".3g2", ".mts", ".m2ts", ".ogv", ".vob", ".mxf"}
)
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",  # a camera's multi-picture JPEG: its first picture
        ".png",
        ".bmp",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".jp2",
        ".j2k",
        ".avif",
        # no decoder here, but a phone's photos must not vanish from a folder's report: each is
        # an error record that says why (HEIF_BRANDS)
        ".heic",
        ".heif",
    }
)
# ISO BMFF brands of HEIF still images (bytes 8-12, after "ftyp")
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"hevc", b"hevx"})
DEFAULT_MAX_PIXELS = 100_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey picture
Image.MAX_IMAGE_PIXELS = None  # our own limit (checked from the header) gives the clearer message


class DecodeError(Exception):
    """A file that cannot be turned into pixels; the message is meant for the report."""


@dataclass
class DecodedImage:
    pixels: np.ndarray  # [H, W, 3] uint8 RGB, upright
    format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass
class VideoFrame:
    index: int
    timestamp: float  # seconds
    pixels: np.ndarray


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


# the first bytes of each kind, where they say it beyond doubt
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3",)  # Matroska / WebM (EBML)
STILL_BRANDS = HEIF_BRANDS | {b"avif", b"avis"}  # ISO BMFF brands of still images


def holds_video(path: Path) -> bool:
    """Whether ``path`` is read as a video: as its name says, unless its first bytes say beyond
    doubt that it is the other kind. Evidence comes misnamed (a JPEG saved as .mp4 failed as a
    video "with no readable frames", an MP4 named .jpg as "not a recognised image format"); a
    file that cannot be read here keeps what its name says, and fails as that."""
    named_video, head = is_video(path), _head(path)
    riff = head[:4] == b"RIFF"
    if named_video:
        return not (head.startswith(IMAGE_MAGIC) or (riff and head[8:12] == b"WEBP"))
    container = head[4:8] == b"ftyp" and head[8:12] not in STILL_BRANDS
    return container or head.startswith(VIDEO_MAGIC) or (riff and head[8:12] == b"AVI ")


def is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
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
    """A file's first 16 bytes, where it has them: empty for one that cannot be read, and for a
    FIFO or device, which is never waited on."""
    try:
        stream, _ = open_regular(path)
        with stream:
            return stream.read(16)
    except OSError:
        return b""


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Upright RGB pixels of an image file, or of its bytes as read once (so that a hash of those
    bytes names what was decoded), or ``DecodeError`` saying why not."""
    if isinstance(source, bytes):
        size, stream, suffix = len(source), io.BytesIO(source), ""
    else:
        try:
            size = source.stat().st_size
        except OSError as error:
            raise DecodeError(f"cannot read file: {error.strerror or error}") from error
        stream, suffix = source, source.suffix.lstrip(".").upper()
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DecodeError(
                        f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                        "over the "
                        f"{max_pixels / 1e6:.0f}-megapixel decompression-bomb limit"
                    )
                image_format = image.format or suffix or "unknown"
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)  # animated: the first frame
                image.load()
                upright = ImageOps.exif_transpose(image)
                pixels = _to_rgb(upright)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        head = source[:12] if isinstance(source, bytes) else _head(source)
        if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
            raise DecodeError(
                "HEIC/HEIF image: this build has no HEIF decoder; convert it (to PNG or JPEG) to "
                "scan it"
            ) from None
        raise DecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DecodeError(f"decompression bomb: {error}") from None
    except OSError as error:
        message = str(error) or type(error).__name__
        if "truncated" in message or "broken data stream" in message:
            raise DecodeError(f"truncated or corrupt image: {message}") from None
        raise DecodeError(f"cannot decode image: {message}") from None
    except (ValueError, SyntaxError, MemoryError, EOFError) as error:
        raise DecodeError(f"corrupt image: {error or type(error).__name__}") from None
    except Exception as error:  # noqa: BLE001 - a damaged file breaks a plugin in any way
        # (a TIFF page without its size tags: TypeError); that file fails, never the scan
        raise DecodeError(f"corrupt image: {type(error).__name__}: {error}") from None
    # a writable copy
    return DecodedImage(np.array(pixels, dtype=np.uint8, order="C"), image_format)


@dataclass
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int
    codec: str

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _frame_plan(info: VideoInfo, fps: float | None, frames: int | None) -> list[int]:
    """Frame indices to sample: ``frames`` evenly spread, else one every 1/``fps`` seconds."""
    count = info.frame_count
    if count <= 0:
        return []
    if frames:
        if frames >= count:
            return list(range(count))
        return sorted({int(math.floor((i + 0.5) * count / frames)) for i in range(frames)})
    rate = fps or 1.0
    step = info.fps / rate if info.fps > 0 else 1.0
    plan, position = [], 0.0
    while round(position) < count:
        plan.append(int(round(position)))
        position += max(step, 1.0)
    return sorted(set(plan))


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
        raise DecodeError("cannot open video (unsupported codec or corrupt file)")
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    info = VideoInfo(
        fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        codec="".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
        or "unknown",
    )
    return capture, info


class FrameReader:
    """The frames at the sorted indices ``wanted`` (RGB), read in order once iterated; the
    capture is released at the end. ``unread`` then lists the wanted frames that could not be
    decoded: the stream ended before them (a truncated file, or a frame count that the container
    only estimates) or the frame is damaged.

    Every frame is grabbed and only the wanted ones decoded: seeking is not frame-exact in every
    codec, and a frame index must mean the same frame whenever the video is read.
    """

    def __init__(self, capture: Any, info: VideoInfo, wanted: list[int]):
        self.capture, self.info, self.wanted = capture, info, wanted
        self.unread: list[int] = []
        self._frames = self._read()  # one pass: chunks taken from it in turn continue it

    def __iter__(self) -> Iterator[VideoFrame]:
        return self._frames

    def __next__(self) -> VideoFrame:
        return next(self._frames)

    def _read(self) -> Iterator[VideoFrame]:
        import cv2

        read: set[int] = set()
        try:
            targets = iter(self.wanted)
            target = next(targets, None)
            index = 0
            while target is not None:
                if not self.capture.grab():
                    break
                if index == target:
                    ok, frame = self.capture.retrieve()
                    if ok:
                        read.add(index)
                        yield VideoFrame(
                            index,
                            index / self.info.fps if self.info.fps > 0 else 0.0,
                            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                        )
                    target = next(targets, None)
                index += 1
        finally:
            self.capture.release()
            self.unread = [index for index in self.wanted if index not in read]

    def shortfall(self) -> str | None:
        """Why some wanted frames are missing, once read, or None: all read, or only frames
        within the last second of the container's frame count (which some formats estimate)."""
        if not self.unread:
            return None
        last = max(set(self.wanted) - set(self.unread), default=-1)
        tail = all(index > last for index in self.unread)
        if tail and self.info.frame_count - (last + 1) <= max(self.info.fps, 1.0):
            return None
        return (
            f"{len(self.unread)} of the {len(self.wanted)} frames sampled could not be read "
            f"(from frame {self.unread[0]}): the file is truncated or damaged"
        )


def sample_video(
    path: Path, fps: float | None = 1.0, frames: int | None = None
) -> tuple[VideoInfo, FrameReader]:
    """Open a video and return its info and a reader of the sampled frames (RGB)."""
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    capture, info = open_video(path)
    wanted = _frame_plan(info, fps, frames)
    if not wanted:
        capture.release()
        raise DecodeError("video has no readable frames")
    return info, FrameReader(capture, info, wanted)


def video_frames(path: Path, indices: Iterable[int]) -> Iterator[VideoFrame]:
    """The frames of a video at ``indices`` (a scan's sampled frames, to show them again), in
    frame order; an index past the end is left out."""
    capture, info = open_video(path)
    return FrameReader(capture, info, sorted(set(indices)))
