"""Videos through OpenCV: opened with a clear error where a container's boxes say why not,
sampled at a rate or a number of frames, every frame grabbed so that an index always means the
same frame, damage and truncation said."""

from __future__ import annotations

import itertools
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from mfclip_cli.faces.decode.kinds import file_head
from mfclip_cli.faces.decode.pixels import DecodeError, VideoFrame
from mfclip_cli.files import open_regular

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
    head = file_head(path)
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
            kind = "animation" if self.to_end else "video"
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


def video_frames(path: Path, indices: Iterable[int]) -> Iterator[VideoFrame]:
    """The frames of a video at ``indices`` (a scan's sampled frames, to show them again), in
    frame order; an index past the end is left out."""
    capture, info = open_video(path)
    return FrameReader(capture, info, sorted(set(indices)), exact=_is_avi(path))
