"""Evaluation metrics for the real / diffusion / GAN detector, in plain numpy.

The binary metrics treat "fake" (diffusion or GAN) as the positive class and score each sample
by how fake it looks, so one ROC / AUC / AP / EER covers both generator families. They match
scikit-learn's definitions (ties included) without making scikit-learn a runtime dependency.

A metric that is undefined on the data given (an evaluation subset holding only real or only fake
faces has no ROC curve) is ``nan``, not an exception, so one thin subset cannot abort a whole
evaluation. ``detection_metrics`` turns those ``nan`` into ``None`` so its result is valid JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mfclip_cli.files import atomic_writer
from mfclip_cli.model.config import CLASS_NAMES

_REAL = CLASS_NAMES.index("real")


def _binary_inputs(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten binary labels (1 = fake) and scores; bad input is a caller bug, so it
    raises."""
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(
            f"y_true and score must be 1-D and the same length, got shapes {y.shape} and {s.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (real) and 1 (fake)")
    if np.isnan(s).any():
        raise ValueError("score contains NaN")
    return y.astype(np.int64), s


def _curve_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct score, highest score first.

    Tied scores form one threshold, so a tie between a real and a fake face counts as a
    diagonal step of the curve rather than an arbitrary order between them (as scikit-learn).
    """
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return tps, fps, s[last_of_tie]


def roc_curve(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` for labels 1 = fake and scores where higher = more
    fake.

    Like ``sklearn.metrics.roc_curve(drop_intermediate=False)``: one point per distinct score,
    starting at (0, 0) with threshold ``inf``. A rate whose class is absent is all ``nan``.
    """
    y, s = _binary_inputs(y_true, score)
    tps, fps, thresholds = _curve_counts(y, s)
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    n_pos, n_neg = tps[-1], fps[-1]
    fpr = fps / n_neg if n_neg else np.full(fps.shape, np.nan)
    tpr = tps / n_pos if n_pos else np.full(tps.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve by the trapezoid rule (equals ``roc_auc_score``); ``nan`` with one
    class."""
    y, s = _binary_inputs(y_true, score)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def average_precision(y_true, score) -> float:
    """Step-wise average precision, sum of (recall gain) x precision per threshold.

    Equals ``average_precision_score`` (no interpolation). ``nan`` unless both classes are
    present: without fakes it is undefined, and without reals it is trivially 1 and says nothing.
    """
    y, s = _binary_inputs(y_true, score)
    if not _both_classes(y):
        return math.nan
    tps, fps, _ = _curve_counts(y, s)
    recall_gain = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_gain * tps / (tps + fps)))


def equal_error_rate(y_true, score) -> float:
    """The error rate where false positives and false negatives are equally likely.

    Defined as the point where the ROC polyline (ROC points joined by straight lines, as the
    AUC assumes) crosses FPR == FNR, with FNR = 1 - TPR. Along the curve FPR - FNR rises from -1
    to +1, so the crossing is unique: an exact ROC point, or a linear interpolation between the
    two points that straddle it. 0 means perfectly separable, 0.5 chance, 1 fully inverted;
    ``nan`` with one class.
    """
    y, s = _binary_inputs(y_true, score)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    gap = fpr - (1 - tpr)
    i = int(np.argmax(gap >= 0))  # gap ends at +1, so such a point always exists, and i >= 1
    if gap[i] == 0:
        return float(fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _json_safe(value):
    """``nan`` is not valid JSON; ``None`` (null) is, and reads as "undefined"."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _class_indices(labels: Sequence[str]) -> np.ndarray:
    unknown = sorted(set(labels) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; labels must be one of {list(CLASS_NAMES)}")
    return np.array([CLASS_NAMES.index(label) for label in labels], dtype=np.int64)


def _probs_matrix(probs, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, len(CLASS_NAMES)):
        raise ValueError(
            f"probs must have shape ({n}, {len(CLASS_NAMES)}) in {CLASS_NAMES} order, got {p.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or infinity")
    return p


def detection_metrics(labels: Sequence[str], probs, threshold: float = 0.5) -> dict:
    """Binary real-vs-fake and 3-way metrics for one evaluation set, as a flat JSON-safe dict.

    ``probs`` is (N, 3) in ``CLASS_NAMES`` order. The binary metrics score each face by
    1 - p(real) and call it fake at ``score >= threshold``. ``macro_f1`` averages over the
    classes present in the labels or the predictions (as scikit-learn's ``f1_score``), so a
    subset without GAN faces is not punished for the class it lacks. ``confusion`` has true
    classes as rows and predicted classes as columns. Undefined values are ``None``.
    """
    y = _class_indices(labels)
    p = _probs_matrix(probs, y.size)
    is_fake = y != _REAL
    fake_score = 1.0 - p[:, _REAL]
    said_fake = fake_score >= threshold
    binary_right = said_fake == is_fake

    predicted = p.argmax(axis=1)
    k = len(CLASS_NAMES)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    tp = np.diag(confusion)
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (support + predicted_count) > 0
    f1 = 2 * tp[present] / (support[present] + predicted_count[present])

    result = {
        "n": int(y.size),
        "n_real": int((~is_fake).sum()),
        "n_fake": int(is_fake.sum()),
        "auc": roc_auc(is_fake, fake_score),
        "ap": average_precision(is_fake, fake_score),
        "eer": equal_error_rate(is_fake, fake_score),
        "acc": _ratio(binary_right.sum(), y.size),
        "real_acc": _ratio(binary_right[~is_fake].sum(), (~is_fake).sum()),
        "fake_acc": _ratio(binary_right[is_fake].sum(), is_fake.sum()),
        "acc3": _ratio(tp.sum(), y.size),
        "macro_f1": float(f1.mean()) if f1.size else math.nan,
        "confusion": confusion.tolist(),
    }
    return {
        key: _json_safe(float(v) if isinstance(v, np.floating) else v) for key, v in result.items()
    }


def video_level(
    keys: Sequence[str | None], labels: Sequence[str], probs
) -> tuple[list, list[str], np.ndarray]:
    """Collapse frame predictions into one prediction per video: the mean of its frames'
    probabilities.

    Keys are compared verbatim, so 'A/000_003' and 'B/000_003' are different videos. A frame
    with key ``None`` (a still image) stays an item of its own. Items come out in order of first
    appearance. A video whose frames carry different labels is a data error and raises.
    """
    if len(keys) != len(labels):
        raise ValueError(f"keys and labels differ in length ({len(keys)} vs {len(labels)})")
    _class_indices(labels)
    p = _probs_matrix(probs, len(labels))
    slot_of: dict[str, int] = {}
    members: list[list[int]] = []
    out_keys: list[str | None] = []
    out_labels: list[str] = []
    for row, (key, label) in enumerate(zip(keys, labels)):
        if key is None or key not in slot_of:
            if key is not None:
                slot_of[key] = len(members)
            members.append([row])
            out_keys.append(key)
            out_labels.append(label)
            continue
        slot = slot_of[key]
        if out_labels[slot] != label:
            raise ValueError(
                f"video {key!r} has frames labelled both {out_labels[slot]!r} and {label!r}"
            )
        members[slot].append(row)
    video_probs = np.array([p[rows].mean(axis=0) for rows in members]).reshape(
        len(members), len(CLASS_NAMES)
    )
    return out_keys, out_labels, video_probs


def video_metrics(
    keys: Sequence[str | None], labels: Sequence[str], probs, threshold: float = 0.5
) -> dict | None:
    """``detection_metrics`` over ``video_level`` items, or ``None`` when no sample has a video key.

    Samples without a key count as one-frame items, so the result covers the whole set. The
    accuracies use the same fake-score ``threshold`` as the frame-level ones.
    """
    if all(key is None for key in keys):
        return None
    _, video_labels, video_probs = video_level(keys, labels, probs)
    return detection_metrics(video_labels, video_probs, threshold=threshold)


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]],
    path: str | Path,
    title: str,
    *,
    overwrite: bool = False,
) -> None:
    """Draw ROC curves ``{name: (fpr, tpr, auc)}`` with a chance diagonal to a PNG, written
    atomically.

    matplotlib is imported here so that computing metrics never pays for it. The figure is built
    on the Agg canvas directly, without pyplot, so no GUI backend or global figure state is
    involved. An existing ``path`` is replaced only with ``overwrite=True``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (fpr, tpr, auc) in curves.items():
        shown = "n/a" if auc is None or math.isnan(auc) else f"{auc:.3f}"
        axes.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {shown})")
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
    )
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    with atomic_writer(path, overwrite=overwrite) as handle:
        figure.savefig(handle, format="png")
