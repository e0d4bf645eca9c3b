"""Evaluation metrics for the real / diffusion / GAN detector, in plain numpy.

The binary metrics treat "fake" (diffusion or GAN) as the positive class and score each sample
by how fake it looks, so one ROC / AUC / AP / EER covers both generator families. They match
scikit-learn's definitions (ties included) without making scikit-learn a runtime dependency.

A metric that is undefined on the data given (an evaluation subset holding only real or only fake
faces has no ROC curve) is ``nan``, not an exception, so one thin subset cannot abort a whole
evaluation. ``detection_metrics`` turns those ``nan`` into ``None`` so its result is valid JSON.

The curve metrics (AUC, EER, TPR at a false-positive rate) are computed from ROC rates that may
carry a leading axis of bootstrap replicates, so the confidence intervals of
``bootstrap_intervals`` use the very same definitions as the point estimates. Calibration
(reliability bins, ECE, Brier) and operating points are defined in docs/calibration.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from mfclip_cli.labels import CLASS_NAMES, REAL_INDEX

if TYPE_CHECKING:
    from mfclip_cli.data import Sample

CALIBRATION_BINS = 15


def _binary_inputs(y_true: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
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
    if not np.isfinite(s).all():  # two infinite scores differ by NaN: they would not tie
        raise ValueError("score contains NaN or an infinity")
    return y.astype(np.int64), s


def _curve_counts(
    y: np.ndarray, s: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct score, highest score first.

    Tied scores form one threshold, so a tie between a real and a fake face counts as a
    diagonal step of the curve rather than an arbitrary order between them (as scikit-learn).
    With ``weights`` (B, N), how often each sample is drawn in each of B bootstrap replicates,
    the counts get one row per replicate: the distinct scores, hence the thresholds, are the same
    in every row, and a sample not drawn adds nothing to its row.
    """
    order = np.argsort(s, kind="mergesort")[::-1]
    s = s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    drawn = np.ones(s.size, dtype=np.int64) if weights is None else weights[:, order]
    positives = drawn * y[order]
    tps = np.cumsum(positives, axis=-1)[..., last_of_tie]
    fps = np.cumsum(drawn - positives, axis=-1)[..., last_of_tie]
    return tps, fps, s[last_of_tie]


def _rates(tps: np.ndarray, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC rates ``(fpr, tpr)`` from cumulative counts, the (0, 0) point first; all ``nan`` where
    a class is absent."""
    start = np.zeros((*tps.shape[:-1], 1), dtype=tps.dtype)
    tps, fps = np.concatenate([start, tps], axis=-1), np.concatenate([start, fps], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0: the class is absent
        return fps / fps[..., -1:], tps / tps[..., -1:]


def roc_curve(y_true: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` for labels 1 = fake and scores where higher = more
    fake.

    Like ``sklearn.metrics.roc_curve(drop_intermediate=False)``: one point per distinct score,
    starting at (0, 0) with threshold ``inf``. A rate whose class is absent is all ``nan``.
    """
    y, s = _binary_inputs(y_true, score)
    tps, fps, thresholds = _curve_counts(y, s)
    fpr, tpr = _rates(tps, fps)
    return fpr, tpr, np.r_[np.inf, thresholds]


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def _area(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Trapezoid area under ROC polylines (the last axis)."""
    return np.sum(np.diff(fpr, axis=-1) * (tpr[..., 1:] + tpr[..., :-1]), axis=-1) / 2


def _crossing(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Where ROC polylines (the last axis) cross FPR == FNR; see ``equal_error_rate``."""
    gap = fpr - (1 - tpr)
    after = np.argmax(gap >= 0, axis=-1)[..., None]  # gap ends at +1, and starts at -1
    before = np.maximum(after - 1, 0)

    def at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, index, axis=-1)[..., 0]

    gap0, gap1, fpr0, fpr1 = at(gap, before), at(gap, after), at(fpr, before), at(fpr, after)
    with np.errstate(invalid="ignore", divide="ignore"):  # only where gap1 == 0, not used there
        interpolated = fpr0 + (-gap0 / (gap1 - gap0)) * (fpr1 - fpr0)
    return np.where(gap1 == 0, fpr1, interpolated)


def _best_tpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> np.ndarray:
    """The highest TPR of a ROC point with FPR <= target (the last axis); ``nan`` where the
    rates are."""
    best = np.max(np.where(fpr <= target, tpr, -np.inf), axis=-1)
    return np.where(np.isnan(fpr[..., -1]) | np.isnan(tpr[..., -1]), np.nan, best)


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve by the trapezoid rule (equals ``roc_auc_score``); ``nan`` with one
    class."""
    y, s = _binary_inputs(y_true, score)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    return float(_area(fpr, tpr))


def average_precision(y_true: ArrayLike, score: ArrayLike) -> float:
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


def equal_error_rate(y_true: ArrayLike, score: ArrayLike) -> float:
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
    return float(_crossing(fpr, tpr))


def _check_rate(target: float) -> None:
    if not 0 < target < 1:
        raise ValueError(f"a false-positive rate lies strictly between 0 and 1, not {target}")


def tpr_at_fpr(y_true: ArrayLike, score: ArrayLike, target: float) -> float:
    """The test's own best TPR at FPR <= ``target``: the highest TPR among the ROC points whose
    FPR is at most ``target`` (no interpolation). An oracle figure: its threshold was picked on
    the data it is measured on. ``nan`` with one class."""
    _check_rate(target)
    y, s = _binary_inputs(y_true, score)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    return float(_best_tpr(fpr, tpr, target))


def threshold_at_fpr(y_true: ArrayLike, score: ArrayLike, target: float) -> float:
    """The lowest fake-score threshold (fake at ``score >= threshold``) whose FPR is at most
    ``target``: the most fakes caught at that false-alarm rate.

    A threshold is a score of the data (an ROC point), except where even the highest-scoring real
    face alone exceeds ``target``: then it lies just above the highest real score, and nothing
    at or below it is called fake. ``nan`` without real faces (no false-positive rate).
    """
    _check_rate(target)
    y, s = _binary_inputs(y_true, score)
    if not (y == 0).any():
        return math.nan
    fpr, _, thresholds = roc_curve(y, s)
    i = int(np.flatnonzero(fpr <= target)[-1])
    return float(thresholds[i]) if i else float(np.nextafter(thresholds[1], np.inf))


def rates_at_threshold(
    y_true: ArrayLike, score: ArrayLike, threshold: float
) -> tuple[float, float]:
    """``(fpr, tpr)`` when a face is called fake at ``score >= threshold``; ``nan`` for a class
    absent."""
    y, s = _binary_inputs(y_true, score)
    said_fake = s >= threshold
    return (
        _ratio(float(said_fake[y == 0].sum()), float((y == 0).sum())),
        _ratio(float(said_fake[y == 1].sum()), float((y == 1).sum())),
    )


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """Percentile interval of the defined replicate values; ``None`` when none is defined."""
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    tail = 50 * (1 - level)
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(
    y_true: ArrayLike,
    score: ArrayLike,
    *,
    fprs: Sequence[float] = (),
    thresholds: Sequence[float] = (),
    units: Sequence[Hashable] | None = None,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_cells: int = 1_000_000,
) -> dict:
    """Percentile bootstrap intervals of AUC, EER, TPR at each of ``fprs`` (as ``tpr_at_fpr``)
    and the (FPR, TPR) at each fixed threshold of ``thresholds``.

    ``units`` (one key per sample, e.g. its video) makes it a cluster bootstrap: whole units are
    drawn with replacement, so frames of one video, which are not independent, move together;
    by default each sample is its own unit. Replicates are drawn with a ``seed``ed generator as
    draw counts per sample, ``max_cells`` samples x replicates at a time, and every statistic of
    a chunk is computed at once from its ROC rates. A replicate that lacks a class defines no
    curve metric and is left out (``valid`` counts the others); an interval with no defined
    replicate is ``None``.
    """
    y, s = _binary_inputs(y_true, score)
    if units is None:
        members = np.arange(y.size)
    else:
        if len(units) != y.size:
            raise ValueError(f"units and score differ in length ({len(units)} vs {y.size})")
        slot: dict[Hashable, int] = {}
        members = np.array([slot.setdefault(unit, len(slot)) for unit in units], dtype=np.int64)
    n_units = int(members.max()) + 1 if y.size else 0
    names = ["auc", "eer", *(("tpr", f) for f in fprs)]
    names += [(kind, t) for t in thresholds for kind in ("fpr_at", "tpr_at")]
    values: dict = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    per_chunk = max(1, max_cells // max(1, y.size))
    for start in range(0, replicates if y.size else 0, per_chunk):
        count = min(per_chunk, replicates - start)
        drawn = rng.integers(0, n_units, size=(count, n_units))
        rows = (drawn + n_units * np.arange(count)[:, None]).ravel()
        per_unit = np.bincount(rows, minlength=count * n_units).reshape(count, n_units)
        tps, fps, distinct = _curve_counts(y, s, per_unit[:, members])
        fpr, tpr = _rates(tps, fps)
        values["auc"].append(_area(fpr, tpr))
        values["eer"].append(_crossing(fpr, tpr))
        for f in fprs:
            values[("tpr", f)].append(_best_tpr(fpr, tpr, f))
        for t in thresholds:
            column = int(np.count_nonzero(distinct >= t))  # the ROC point of "fake at >= t"
            values[("fpr_at", t)].append(fpr[:, column])
            values[("tpr_at", t)].append(tpr[:, column])
    stacked = {
        name: np.concatenate(chunks) if chunks else np.zeros(0) for name, chunks in values.items()
    }
    return {
        "method": "percentile bootstrap",
        "level": level,
        "replicates": replicates,
        "valid": int(np.count_nonzero(~np.isnan(stacked["auc"]))),
        "seed": seed,
        "units": n_units,
        "auc": _interval(stacked["auc"], level),
        "eer": _interval(stacked["eer"], level),
        "tpr_at_fpr": [_interval(stacked[("tpr", f)], level) for f in fprs],
        "at_threshold": [
            {
                "fpr": _interval(stacked[("fpr_at", t)], level),
                "tpr": _interval(stacked[("tpr_at", t)], level),
            }
            for t in thresholds
        ],
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def json_safe(value: object) -> object:
    """``nan`` is not valid JSON; ``None`` (null) is, and reads as "undefined"."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _class_indices(labels: Sequence[str]) -> np.ndarray:
    unknown = sorted(set(labels) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; labels must be one of {list(CLASS_NAMES)}")
    return np.array([CLASS_NAMES.index(label) for label in labels], dtype=np.int64)


def _probs_matrix(probs: ArrayLike, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, len(CLASS_NAMES)):
        raise ValueError(
            f"probs must have shape ({n}, {len(CLASS_NAMES)}) in {CLASS_NAMES} order, got {p.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or infinity")
    return p


def detection_metrics(labels: Sequence[str], probs: ArrayLike, threshold: float = 0.5) -> dict:
    """Binary real-vs-fake and 3-way metrics for one evaluation set, as a flat JSON-safe dict.

    ``probs`` is (N, 3) in ``CLASS_NAMES`` order. The binary metrics score each face by
    1 - p(real) and call it fake at ``score >= threshold``. ``macro_f1`` averages over the
    classes present in the labels or the predictions (as scikit-learn's ``f1_score``), so a
    subset without GAN faces is not punished for the class it lacks. ``confusion`` has true
    classes as rows and predicted classes as columns. Undefined values are ``None``.
    """
    y = _class_indices(labels)
    p = _probs_matrix(probs, y.size)
    is_fake = y != REAL_INDEX
    fake_score = 1.0 - p[:, REAL_INDEX]
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
        key: json_safe(float(v) if isinstance(v, np.floating) else v) for key, v in result.items()
    }


# the figures a mean over report subsets is given for (a count is not meaned)
MEANED_METRICS = ("auc", "ap", "eer", "acc", "real_acc", "fake_acc", "acc3", "macro_f1")


def subset_mean(subsets: Sequence[dict]) -> dict:
    """The unweighted mean of each of ``MEANED_METRICS`` over ``subsets`` (``detection_metrics``
    results): the figure papers headline (GenImage's "Avg Acc" over its generators,
    DeepfakeBench's ``avg`` over its test sets), which the pooled test split is not where subsets
    differ in size. Null where a subset leaves the metric undefined."""
    mean: dict[str, object] = {"subsets": len(subsets)}
    for name in MEANED_METRICS:
        values = [subset.get(name) for subset in subsets]
        defined = all(v is not None and math.isfinite(v) for v in values) and values
        mean[name] = float(np.mean(values)) if defined else None
    return mean


def video_level(
    keys: Sequence[str | None], labels: Sequence[str], probs: ArrayLike
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
    keys: Sequence[str | None], labels: Sequence[str], probs: ArrayLike, threshold: float = 0.5
) -> dict | None:
    """``detection_metrics`` over ``video_level`` items, or ``None`` when no sample has a video key.

    Samples without a key count as one-frame items, so the result covers the whole set. The
    accuracies use the same fake-score ``threshold`` as the frame-level ones.
    """
    if all(key is None for key in keys):
        return None
    _, video_labels, video_probs = video_level(keys, labels, probs)
    return detection_metrics(video_labels, video_probs, threshold=threshold)


def reliability_bins(
    prob: ArrayLike, outcome: ArrayLike, bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of predicted probability: ``(count, mean prediction, observed
    frequency)``.

    Bin k of ``bins`` holds predictions in (k / bins, (k + 1) / bins], the first one 0 as well;
    an empty bin has ``nan`` means. ``outcome`` is 1 where the predicted event happened.
    """
    p = np.asarray(prob, dtype=np.float64)
    o = np.asarray(outcome, dtype=np.float64)
    if p.ndim != 1 or p.shape != o.shape:
        raise ValueError(f"prob and outcome must be 1-D and alike, got {p.shape} and {o.shape}")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("probabilities must lie in [0, 1]")
    which = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p, side="left")
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: nan
        mean = np.bincount(which, weights=p, minlength=bins) / count
        frequency = np.bincount(which, weights=o, minlength=bins) / count
    return count, mean, frequency


def expected_calibration_error(
    prob: ArrayLike, outcome: ArrayLike, bins: int = CALIBRATION_BINS
) -> float:
    """ECE: the sample-weighted mean gap |observed frequency - mean prediction| over the
    ``reliability_bins``; ``nan`` without samples."""
    count, mean, frequency = reliability_bins(prob, outcome, bins)
    filled = count > 0
    if not filled.any():
        return math.nan
    gaps = count[filled] * np.abs(frequency[filled] - mean[filled])
    return float(gaps.sum() / count.sum())


def calibration_metrics(
    labels: Sequence[str], probs: ArrayLike, bins: int = CALIBRATION_BINS
) -> dict:
    """How far the probabilities are from frequencies, JSON-safe.

    ``ece_fake`` and ``brier_fake`` treat the fake score 1 - p(real) as the binary probability of
    "fake"; ``ece_top_label`` bins the top class's probability against whether that class is
    right; ``brier`` is the 3-class Brier score, sum over classes of (p - onehot)^2, in [0, 2].
    """
    y = _class_indices(labels)
    p = _probs_matrix(probs, y.size)
    is_fake = (y != REAL_INDEX).astype(np.float64)
    fake_score = 1.0 - p[:, REAL_INDEX]
    right = (p.argmax(axis=1) == y).astype(np.float64)
    onehot = np.eye(len(CLASS_NAMES))[y]
    result = {
        "n": int(y.size),
        "bins": bins,
        "ece_fake": expected_calibration_error(fake_score, is_fake, bins),
        "ece_top_label": expected_calibration_error(p.max(axis=1, initial=0.0), right, bins),
        "brier_fake": float(np.mean((fake_score - is_fake) ** 2)) if y.size else math.nan,
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))) if y.size else math.nan,
    }
    return {key: json_safe(value) for key, value in result.items()}


def fake_labels(samples: Sequence[Sample]) -> np.ndarray:
    """1 for each fake sample, 0 for each real one: the positives of every detection metric."""
    return np.array([sample.label != "real" for sample in samples], dtype=np.int64)


def fake_scores(probs: np.ndarray) -> np.ndarray:
    """The fake score 1 - p(real) of each row of class probabilities."""
    return 1.0 - probs[:, CLASS_NAMES.index("real")]


def verdict_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Each face's label as a scan gives it (class indices): real when the fake score
    1 - p(real) is under ``threshold``, else the likelier fake class. Compared in float64: a
    face one float32 step under the threshold was called fake."""
    values = np.array(probs, dtype=np.float64)
    said_real = fake_scores(values) < threshold
    values[:, CLASS_NAMES.index("real")] = -np.inf
    return np.where(said_real, CLASS_NAMES.index("real"), values.argmax(axis=1))
