"""Cuts between shots of a video, found from small probes of its frames as they are read.

A video's faces are linked into tracks by where they stand (engines/scan/tracks.py); across a cut
that says nothing of who they are: an interview's shot and reverse shot put two people at the
same place, and their faces became one track with one verdict. The scan ends every track at a
cut instead.

The method is PySceneDetect's adaptive detector (``AdaptiveDetector``: its published algorithm and
defaults, our own few lines, since we feed it probes the frame reader already holds): each probe
is the frame shrunk to ``PROBE_SIDE`` pixels on its longer side, in HSV; a probe's score is the
mean of its three channels' mean absolute difference from the probe before (0-255); a cut comes
before a probe whose score is at least ``MIN_SCORE`` and at least ``RATIO`` times the mean score
of the ``WINDOW`` probes on each side of it. A camera moving fast raises every score around it
alike, a cut one score alone. Probes are taken at ``PROBE_RATE`` a second whatever the scan
samples (a cut is found between two probes a tenth of a second apart, however sparsely faces are
sampled, and the same cuts whatever the sampling), a sampled frame between two probes going to
the shot of the one it is nearer to; a cut is kept at least ``MIN_SHOT_S`` after the last one (a
flash is one cut, not two). In an animation, a picture held ``MIN_SHOT_S`` or more and followed by
one that scores at least ``MIN_SCORE`` is a cut too: its slide is probed once, so it has no probes
around it to compare (``held_pictures``; a video's frames half a second apart are a camera's,
whose motion scores that much).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PROBE_RATE = 10.0  # probes a second
# pixels, a probe's longer side: small enough that noise and texture moving between probes
# average out, large enough that a shot's layout shows (PySceneDetect shrinks to ~256 px at every
# frame; probes a tenth of a second apart see more motion, which a smaller probe smooths)
PROBE_SIDE = 32
MIN_SCORE = 15.0  # PySceneDetect's min_content_val
RATIO = 3.0  # its adaptive_threshold
WINDOW = 2  # its window_width
MIN_SHOT_S = 0.5  # its min_scene_len, 15 frames at 30 fps, in seconds


@dataclass(frozen=True)
class Cut:
    """A cut between shots: ``frame`` and ``time`` are the new shot's first frame read (its first
    probe, or a sampled frame before it that is nearer to it than to the probe before)."""

    frame: int
    time: float


def probe(pixels: np.ndarray) -> np.ndarray:
    """A frame as OpenCV decodes it (BGR) as a probe: small, HSV, as float32."""
    import cv2

    height, width = pixels.shape[:2]
    scale = PROBE_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV).astype(np.float32)


def score(before: np.ndarray, after: np.ndarray) -> float:
    """How much two probes differ: the mean over H, S and V of their mean absolute difference."""
    if before.shape != after.shape:  # a stream whose size changes mid-way: a cut, if any is
        return 255.0
    return float(np.abs(after - before).mean())


@dataclass
class _Between:
    """A sampled frame read between two probes: how far it is from each, to place a cut."""

    frame: int
    time: float
    probe: np.ndarray | None  # until the next probe is taken
    before: float = 0.0  # its score against the probe before it
    after: float = 0.0  # and against the probe after it


@dataclass
class ShotFinder:
    """The probes of one video's frames, in reading order; ``cuts()`` once the video is read.

    Probes are taken at the first frame at or after each 1/``rate`` seconds, whatever frames
    the scan samples, so that the cuts found do not depend on its sampling (audit Y L4: a wipe
    was a cut at --fps 30, not at --fps 1). A sampled frame between two probes (``between``)
    only places a cut: it belongs to the shot of the probe it is nearer to."""

    rate: float = PROBE_RATE
    # an animation's: a picture held MIN_SHOT_S or more, then another, is a cut too
    held_pictures: bool = False
    _frames: list[int] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _scores: list[float] = field(default_factory=list)
    _last: np.ndarray | None = None
    _next: float = 0.0  # when the next probe is due
    # per probe, the sampled frames read between it and the one before
    _between: list[list[_Between]] = field(default_factory=lambda: [[]])

    def due(self, time: float) -> bool:
        """Whether the frame at ``time`` is the next to probe."""
        return time >= self._next - 1e-6

    def add(self, frame: int, time: float, pixels: np.ndarray) -> None:
        """Probe the frame (``due``)."""
        current = probe(pixels)
        self._scores.append(0.0 if self._last is None else score(self._last, current))
        for sampled in self._between[-1]:
            sampled.after = score(sampled.probe, current)  # type: ignore[arg-type]
            sampled.probe = None
        self._between.append([])
        self._frames.append(frame)
        self._times.append(time)
        self._last = current
        self._next = (math.floor(time * self.rate + 1e-6) + 1) / self.rate

    def between(self, frame: int, time: float, pixels: np.ndarray) -> None:
        """Note a sampled frame that is not due for a probe."""
        current = probe(pixels)
        before = 255.0 if self._last is None else score(self._last, current)
        self._between[-1].append(_Between(frame, time, current, before))

    def cuts(self) -> list[Cut]:
        """The cuts found, in order (the adaptive rule of the module's docstring), each at the
        first frame read of the new shot: its first probe, or a sampled frame before it nearer
        to it than to the probe before."""
        scores, times, found = self._scores, self._times, []
        for i in range(1, len(scores)):
            if scores[i] < MIN_SCORE:
                continue
            # an animation's picture held MIN_SHOT_S or more, then another (its slides): no
            # probes around it for the adaptive rule (a held frame is probed once). Not a
            # video's: a 2 fps video of a pan was cut at every frame, each face its own track
            # (audit AC M1), as a camera's frames a second apart differ that much
            held = self.held_pictures and times[i] - times[i - 1] >= MIN_SHOT_S - 1e-6
            # else a full window on each side, as PySceneDetect's: a score near either end has
            # too few neighbours to be told from motion (a cut in the first or last 0.2 s is
            # missed)
            if not held and not 1 + WINDOW <= i < len(scores) - WINDOW:
                continue
            around = scores[i - WINDOW : i] + scores[i + 1 : i + 1 + WINDOW]
            if not held and scores[i] < RATIO * sum(around) / len(around):
                continue
            if found and times[i] - found[-1].time < MIN_SHOT_S:
                continue
            # the sampled frames between probes i - 1 and i (the list after probe i - 1)
            nearer = [s for s in self._between[i] if s.after < s.before]
            first = nearer[0] if nearer else None
            found.append(Cut(first.frame, first.time) if first else Cut(self._frames[i], times[i]))
        return found
