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
alike, a cut one score alone. Probes are taken at ``PROBE_RATE`` a second or at every sampled
frame where the scan samples faster (a cut is placed between two probes a tenth of a second
apart, however sparsely faces are sampled), and a cut is kept at least ``MIN_SHOT_S`` after the
last one (a flash is one cut, not two).
"""

from __future__ import annotations

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
    """A cut between shots: ``frame`` and ``time`` are the first probe of the new shot's."""

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
class ShotFinder:
    """The probes of one video's frames, in reading order; ``cuts()`` once the video is read."""

    rate: float = PROBE_RATE
    _frames: list[int] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _scores: list[float] = field(default_factory=list)
    _last: np.ndarray | None = None

    def due(self, time: float) -> bool:
        """Whether the frame at ``time`` is the next to probe (the first at or after each
        1/rate seconds)."""
        return not self._times or time >= self._times[-1] + 1.0 / self.rate - 1e-6

    def add(self, frame: int, time: float, pixels: np.ndarray) -> None:
        """Probe a frame (any frame past the last probed: a sampled one always is)."""
        current = probe(pixels)
        self._scores.append(0.0 if self._last is None else score(self._last, current))
        self._frames.append(frame)
        self._times.append(time)
        self._last = current

    def cuts(self) -> list[Cut]:
        """The cuts found, in order (the adaptive rule of the module's docstring)."""
        scores, found = self._scores, []
        # a full window on each side, as PySceneDetect's: a score near either end has too few
        # neighbours to be told from motion (a cut in a video's first or last 0.2 s is missed)
        for i in range(1 + WINDOW, len(scores) - WINDOW):
            around = scores[i - WINDOW : i] + scores[i + 1 : i + 1 + WINDOW]
            if scores[i] < MIN_SCORE:
                continue
            mean = sum(around) / len(around)
            if scores[i] < RATIO * mean:
                continue
            if found and self._times[i] - found[-1].time < MIN_SHOT_S:
                continue
            found.append(Cut(self._frames[i], self._times[i]))
        return found
