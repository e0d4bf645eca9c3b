"""Animations (GIF, APNG, animated WebP and AVIF, FLI/FLC) read as videos: each frame as a
viewer shows it, at the time it is first shown, timed from the file's blocks where they are
whole and plain, else as the frames are decoded."""

from __future__ import annotations

import io
import itertools
import math
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from mfclip_cli.faces.decode.chunks import png_chunks, webp_chunks, whole_webp_frames
from mfclip_cli.faces.decode.pixels import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    VideoFrame,
    hold_pillow_to,
    picture_count,
    to_rgb,
    undecodable_because,
    upright,
)
from mfclip_cli.faces.decode.video import (
    MAX_UNDECODABLE_RUN,
    TIME_SLACK_S,
    FrameReader,
    VideoInfo,
    spread_indices,
)


def _webp_frame_lengths(data: bytes) -> list[float]:
    """Seconds each frame of an animated WebP is shown, from its frames' chunks (ANMF: a
    24-bit duration in milliseconds after the frame's place and size), as libwebp times them:
    each frame was decoded to be timed, then again to be read (audit AB M8: half the time of
    an animated WebP's scan)."""
    return [
        _shown_for(int.from_bytes(data[start + 12 : start + 15], "little"))
        for kind, start, size in webp_chunks(data)
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
            rgb = to_rgb(upright(frame))
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
    (``picture_count``, on an image of its own: its walk past a damaged frame leaves Pillow's
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
        count = picture_count(counted)
    with Image.open(io.BytesIO(data)) as image:
        codec, (width, height) = image.format or "animation", upright(image).size
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
