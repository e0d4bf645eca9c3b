"""Faces followed through a video: the faces of consecutive sampled frames linked into tracks,
and a summary per track.

Linking, frame by frame in sampling order: each face of a frame is matched to at most one open
track (one whose last face was seen at most ``MAX_GAP_S`` seconds earlier, by the frames'
presentation times) by the minimum total cost over all pairs (Hungarian assignment, scipy), where
a pair's cost is

    (1 - IoU of the boxes) + (mean distance of the five landmarks / diagonal of the track's box),

and a pair is allowed only when IoU >= ``MIN_IOU`` or the landmark term <= ``MAX_LANDMARK``. Two
people crossing keep their tracks while both are seen: their landmarks stay apart even where
their boxes overlap. A face left unmatched starts a new track. A track stays open for
``MAX_GAP_S`` seconds after its last face (and ``GAP_SLACK_S`` for the sampled frames' own
timing), however many frames are sampled meanwhile, then ends; a face that reappears later
starts a new track (with ``--frames N`` on a long video, samples further apart than that are each
a track of their own: who it is cannot be told across minutes). A track that goes unseen where
a face of the frame covers a tenth or more of its last box ends at once: a face hidden behind
another cannot be told from it when they part (two people crossing in front of each other
swapped tracks). Every track ends at a cut between shots (``faces.shots``): across one, where a
face stands says nothing of who it is (a shot and its reverse shot put two people there).
Tracks are numbered from 0 in order of first appearance.

Track verdict: a track's faces that are not inconclusive are its conclusive faces. When they are
fewer than half of its faces, the track is ``inconclusive`` (leaning to the label of the mean of
all its faces' probabilities). Otherwise, when at least ``MIN_FAKE_FACES`` of its conclusive faces
are labelled fake, the track is fake, with the fake label most of them hold (a tie: the one of
higher summed probability): a spliced segment of a few seconds must not be averaged away by the
real footage around it (``fake_faces`` counts them). Else its label is the scan's label rule
(``--fake-threshold``) applied to the mean probabilities of its conclusive faces. A track seen in
a single frame has a
summary and a verdict like any other, marked ``"single_frame": true``: one glimpse is weaker
evidence than a face followed for seconds. Definitions: docs/verdicts.md.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from mfclip_cli.engines.scan.records import INCONCLUSIVE, FaceRecord, faces_by_frame

MIN_IOU = 0.3
MAX_LANDMARK = 0.5  # mean landmark distance over the box diagonal
# seconds after its last face before a track ends: three samples apart at scan's 1 fps
MAX_GAP_S = 3.0
# a sampled frame is the first at or after its instant, up to a frame late: three samples of a
# 29.97 fps video are 3.003 s apart, which must not split a track that 30 fps keeps
GAP_SLACK_S = 0.25
MIN_FAKE_FACES = 2  # conclusive fake faces that make a track fake, whatever its mean says
# the share of an unseen track's last box another face must cover to have hidden it
HIDDEN_SHARE = 0.1


def _area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return width * height


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _covered(box: Sequence[float], by: Sequence[float]) -> bool:
    """Whether ``by`` covers at least ``HIDDEN_SHARE`` of ``box``'s area: a face there hides the
    face last seen at ``box`` (two people side by side, boxes touching, do not)."""
    area = _area(box)
    return area > 0 and _intersection(box, by) >= HIDDEN_SHARE * area


def pair_cost(last: FaceRecord, face: FaceRecord) -> float | None:
    """The cost of continuing ``last``'s track with ``face``; None when the pair is not allowed."""
    overlap = _iou(last.box, face.box)
    diagonal = float(np.hypot(last.box[2] - last.box[0], last.box[3] - last.box[1])) or 1.0
    shift = np.linalg.norm(np.subtract(last.landmarks, face.landmarks), axis=1).mean()
    landmark = float(shift) / diagonal
    if overlap < MIN_IOU and landmark > MAX_LANDMARK:
        return None
    return (1.0 - overlap) + landmark


def _assign(costs: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost pairs (row, column) of a cost matrix whose forbidden pairs are inf."""
    from scipy.optimize import linear_sum_assignment  # scipy comes with scikit-learn

    finite = np.where(np.isfinite(costs), costs, 1e6)
    rows, columns = linear_sum_assignment(finite)
    return [(r, c) for r, c in zip(rows.tolist(), columns.tolist()) if np.isfinite(costs[r, c])]


def link_tracks(faces: Sequence[FaceRecord], cuts: Sequence[int] = ()) -> None:
    """Set each face of a video's sampled frames (``frame`` and ``timestamp`` set) its
    ``track``; ``cuts``: the sorted frames that begin a new shot, where every track ends."""
    by_frame = faces_by_frame(faces)
    open_tracks: list[tuple[int, FaceRecord]] = []  # (track, its last face)
    count, shot = 0, 0
    for frame in sorted(by_frame):
        current = by_frame[frame]
        now = current[0].timestamp
        frame_shot = bisect.bisect_right(cuts, frame)  # cuts at or before it
        open_tracks = [
            (track, last)
            for track, last in open_tracks
            if now - last.timestamp <= MAX_GAP_S + GAP_SLACK_S  # type: ignore[operator]
            and frame_shot == shot
        ]
        shot = frame_shot
        costs = np.full((len(open_tracks), len(current)), np.inf)
        for r, (_, last) in enumerate(open_tracks):
            for c, face in enumerate(current):
                cost = pair_cost(last, face)
                costs[r, c] = np.inf if cost is None else cost
        matched = _assign(costs) if costs.size else []
        for r, c in matched:
            current[c].track = open_tracks[r][0]
        for face in current:
            if face.track is None:
                face.track, count = count, count + 1
        continued = {open_tracks[r][0] for r, _ in matched}
        open_tracks = [
            (t, last)
            for t, last in open_tracks
            if t not in continued and not any(_covered(last.box, face.box) for face in current)
        ]  # unseen and covered by a face of this frame: hidden behind it, it ends here
        open_tracks += [(face.track, face) for face in current]  # type: ignore[misc]


def track_summaries(
    faces: Sequence[FaceRecord],
    classes: Sequence[str],
    label_of: Callable[[np.ndarray], str],
    leaning_of: Callable[[np.ndarray], str] | None = None,
) -> list[dict[str, Any]]:
    """Per track, in track order: its frames, first and last time, mean and max of each class
    probability, how many faces were inconclusive, and its verdict (the module's rule): a label
    by ``label_of``, an inconclusive track's leaning by ``leaning_of`` (a face's rule, by default
    ``label_of``: faces called real at a fake threshold above 0.5 and fake at 0.5 lean fake, and
    their track with them, not "real": audit Q M1)."""
    leaning_of = leaning_of or label_of
    tracks: dict[int, list[FaceRecord]] = {}
    for face in faces:
        tracks.setdefault(face.track, []).append(face)  # type: ignore[arg-type]
    summaries = []
    for track in sorted(tracks):
        members = tracks[track]
        probs = np.array([[face.probs[name] for name in classes] for face in members])
        conclusive = [i for i, face in enumerate(members) if face.label != INCONCLUSIVE]
        fakes = [i for i, face in enumerate(members) if face.conclusive_fake]
        summary: dict[str, Any] = {
            "track": track,
            "faces": len(members),
            "frames": [face.frame for face in members],
            "first": members[0].timestamp,
            "last": members[-1].timestamp,
            "mean": dict(zip(classes, np.round(probs.mean(0), 6).tolist())),
            "max": dict(zip(classes, np.round(probs.max(0), 6).tolist())),
            "inconclusive_faces": len(members) - len(conclusive),
            "fake_faces": len(fakes),
            # which fake labels they hold: a track of 3 diffusion and 1 gan faces showed only 4
            "fake_labels": dict(sorted(Counter(members[i].label for i in fakes).items())),
            "single_frame": len(members) == 1,
        }
        if 2 * len(conclusive) < len(members):
            summary["label"], summary["leaning"] = INCONCLUSIVE, leaning_of(probs.mean(0))
        elif len(fakes) >= MIN_FAKE_FACES:
            summary["label"] = _most_held([members[i] for i in fakes])
        else:
            summary["label"] = label_of(probs[conclusive].mean(0))
        summaries.append(summary)
    return summaries


def _most_held(faces: Sequence[FaceRecord]) -> str:
    """The label most of ``faces`` hold; of two held as often, the one of higher summed
    probability."""
    labels = {face.label for face in faces}
    return max(
        sorted(labels),
        key=lambda label: (
            sum(face.label == label for face in faces),
            sum(face.probs[label] for face in faces),
        ),
    )
