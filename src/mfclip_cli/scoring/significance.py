"""DeLong's test: is one detector's ROC AUC different from another's on the same samples?

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach", Biometrics 44(3). With m positives X
(label 1, fake) and n negatives Y (label 0, real), and psi(x, y) = 1 if x > y, 1/2 if x = y, 0
otherwise, each detector r has

* the structural components (placement values) V10_r(X_i) = (1/n) sum_j psi(X_i, Y_j) and
  V01_r(Y_j) = (1/m) sum_i psi(X_i, Y_j), whose means are both the AUC (the Mann-Whitney
  statistic);
* S10 and S01, the sample covariance matrices (divisor m - 1 and n - 1) of the V10 and of the V01
  across the detectors, and S = S10 / m + S01 / n the covariance matrix of the AUC estimates.

For two detectors, var(AUC_a - AUC_b) = S_aa + S_bb - 2 S_ab, and z = difference / sqrt(var) is
referred to the standard normal (two-sided). That variance is computed as S10 / m + S01 / n of the
differences V10_a - V10_b and V01_a - V01_b, which is the same number, never negative, and exactly
0 for two identical score vectors. The placement values come from sorted scores and binary
search, O((m + n) log(m + n)), not from the m x n comparison matrix.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def _inputs(labels: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels as a boolean 'positive' mask and the scores as float64, validated; bad input is a
    caller bug, so it raises."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError(
            "labels must be a 1-D sequence of 0 (negative, real) and 1 (positive, fake)"
        )
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    for array in arrays:
        if array.shape != y.shape:
            raise ValueError(
                f"scores of shape {array.shape} do not match labels of shape {y.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError("scores must be finite (no NaN or infinity)")
    positive = y == 1
    counts = int(positive.sum()), int((~positive).sum())
    if min(counts) < 2:
        raise ValueError(
            "DeLong's test needs at least two positive and two negative samples (the variance of "
            f"the placement values is a sample variance); got {counts[0]} positive and "
            f"{counts[1]} negative"
        )
    return positive, arrays


def placement_values(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The structural components (V10 over the positives, V01 over the negatives) of one score
    vector; ties count 1/2."""
    x, y = scores[positive], scores[~positive]
    xs, ys = np.sort(x), np.sort(y)
    below, not_above = np.searchsorted(ys, x, side="left"), np.searchsorted(ys, x, side="right")
    v10 = (below + not_above) / (2 * y.size)  # (#negatives below + 1/2 #tied) / n
    under, not_over = np.searchsorted(xs, y, side="left"), np.searchsorted(xs, y, side="right")
    v01 = (2 * x.size - under - not_over) / (2 * x.size)  # (#positives above + 1/2 #tied) / m
    return v10, v01


def _variance(v10: np.ndarray, v01: np.ndarray) -> float:
    """S10 / m + S01 / n of one vector of components."""
    return float(np.var(v10, ddof=1)) / v10.size + float(np.var(v01, ddof=1)) / v01.size


def delong_variance(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) of one score vector (higher = more positive)."""
    positive, (array,) = _inputs(labels, scores)
    v10, v01 = placement_values(positive, array)
    return float(v10.mean()), _variance(v10, v01)


def delong_test(
    labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike
) -> dict[str, float | int]:
    """DeLong's two-sided test of AUC_a = AUC_b for two detectors scored on the same samples.

    Returns both AUCs, their variances and covariance, ``difference`` (a - b), its standard
    error, ``z`` and ``p_value``. A zero standard error (identical scores, or two detectors
    whose placement values differ by a constant) gives z = 0 and p = 1 when the AUCs are equal,
    an infinite z and p = 0 when they are not.
    """
    positive, (a, b) = _inputs(labels, scores_a, scores_b)
    v10_a, v01_a = placement_values(positive, a)
    v10_b, v01_b = placement_values(positive, b)
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    variance_a, variance_b = _variance(v10_a, v01_a), _variance(v10_b, v01_b)
    variance = _variance(v10_a - v10_b, v01_a - v01_b)
    difference = auc_a - auc_b
    error = math.sqrt(variance)
    if error > 0:
        z = difference / error
    else:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": difference,
        "variance_a": variance_a,
        "variance_b": variance_b,
        "covariance": (variance_a + variance_b - variance) / 2,
        "standard_error": error,
        "z": z,
        "p_value": math.erfc(abs(z) / math.sqrt(2)),
        "positives": v10_a.size,
        "negatives": v01_a.size,
    }
