"""What a validation split can say about a false-positive rate: exact binomial bounds.

A threshold chosen so that ``k`` of ``n`` validation reals score at or above it has an observed
FPR of ``k / n``, but the true rate on faces like them can be higher. The one-sided
Clopper-Pearson bound is the largest rate ``p`` still consistent, at 95 % confidence, with seeing
at most ``k`` false positives: ``P(Binomial(n, p) <= k) = 0.05``, the 95 % quantile of
``Beta(k + 1, n - k)``. With ``k = 0`` it is ``1 - 0.05 ** (1 / n)`` (about ``3 / n``, the "rule
of three"), so a split shows a target rate ``a`` at best once ``(1 - a) ** n <= 0.05``; a target
it cannot show is recorded as unsupported, with the number of reals it would need.
Definitions: docs/calibration.md.
"""

from __future__ import annotations

import math
from typing import Any

CONFIDENCE = 0.95
# what a threshold's record says about its support, in report order
OPERATING_POINT_FIELDS = (
    "n_real",
    "resolution",
    "false_positives",
    "fpr_upper_95",
    "supported",
    "reals_needed",
)


def fpr_upper_bound(false_positives: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The exact one-sided Clopper-Pearson upper bound on a rate seen ``false_positives`` times
    in ``n`` trials: the ``p`` with ``P(Binomial(n, p) <= false_positives) = 1 - confidence``
    (1 when every trial was a false positive; ``nan`` without trials)."""
    if n <= 0:
        return math.nan
    if not 0 <= false_positives <= n:
        raise ValueError(f"{false_positives} false positives out of {n} trials")
    if false_positives == n:
        return 1.0
    if false_positives == 0:  # closed form, exact to the last bit
        return -math.expm1(math.log(1.0 - confidence) / n)
    from scipy.special import betaincinv  # only where a bound is computed, not at start-up

    return float(betaincinv(false_positives + 1, n - false_positives, confidence))


def exact_interval(hits: int, n: int, level: float = CONFIDENCE) -> list[float] | None:
    """The two-sided Clopper-Pearson interval of a rate seen ``hits`` times in ``n`` trials (None
    without trials). Unlike a percentile bootstrap it leaves the boundary: 0 of 300 test reals
    over a threshold bounds their FPR at [0, 0.0122], not [0, 0]."""
    if n <= 0:
        return None
    if not 0 <= hits <= n:
        raise ValueError(f"{hits} hits out of {n} trials")
    from scipy.stats import beta  # only where an interval is computed, not at start-up

    tail = (1.0 - level) / 2
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(1.0 - tail, hits + 1, n - hits))
    return [low, high]


def reals_needed(target_fpr: float, confidence: float = CONFIDENCE) -> int:
    """The fewest validation reals whose zero false positives bound the FPR at ``target_fpr``:
    the smallest ``n`` with ``(1 - target_fpr) ** n <= 1 - confidence``."""
    alpha = 1.0 - confidence
    n = max(1, math.ceil(math.log(alpha) / math.log1p(-target_fpr)))
    while (1.0 - target_fpr) ** n > alpha:  # float rounding of the ceiling, either way
        n += 1
    while n > 1 and (1.0 - target_fpr) ** (n - 1) <= alpha:
        n -= 1
    return n


def fpr_support(target_fpr: float, n_real: int, false_positives: int) -> dict[str, Any]:
    """What a split of ``n_real`` reals, ``false_positives`` of them at or above a threshold,
    says about that threshold's FPR, as the calibration record and the reports keep it."""
    needed = reals_needed(target_fpr)
    return {
        "n_real": int(n_real),
        "resolution": 1.0 / n_real if n_real else None,  # the smallest non-zero FPR it can see
        "false_positives": int(false_positives),
        "fpr_upper_95": fpr_upper_bound(false_positives, n_real) if n_real else None,
        "supported": n_real >= needed,
        "reals_needed": needed,
    }


def unsupported_message(name: str, support: dict[str, Any]) -> str:
    """Why a threshold cannot be shown to hold its target FPR, in the words of an error."""
    bound = support["fpr_upper_95"]
    seen = (
        f"{support['false_positives']} false positive(s) among {support['n_real']} validation "
        f"reals bound its FPR at {bound:.2%} (95 %)"
        if bound is not None
        else "its validation split had no real faces"
    )
    return (
        f"{name} is unsupported: {seen}; showing that rate needs at least "
        f"{support['reals_needed']} validation reals"
    )
