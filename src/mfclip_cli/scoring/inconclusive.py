"""The inconclusive band: when a face's verdict is not one an analyst should act on.

A face is ``inconclusive`` (its label kept as ``leaning``) for any of these reasons:

- ``uncertain``: its uncertainty (the calibrated distribution's normalised entropy, 0 sure,
  1 uniform) is above the checkpoint's stored threshold;
- ``ood``: its embedding is out of the training distribution (``scoring/ood.py``);
- ``unstable``: with ``scan --stability``, its label changes under one of the documented
  re-encodings of its crop.

The uncertainty threshold is chosen on the validation split, never test, by one rule: sort the
val faces by uncertainty; the threshold is the largest val uncertainty ``u`` such that the
real-vs-fake accuracy (fake at 1 - p(real) >= 0.5) of the val faces with uncertainty <= ``u`` is
at least the target (default 0.95). Faces above it are where, on val, the model's verdicts stop
being right often enough. When no such ``u`` exists (not even the most certain faces reach the
target) the threshold is 0: every face is inconclusive, and the record says the target was not
reached. Uncertainties and the threshold are compared at the 6 digits a face record gives (the
val face that sets the threshold stays conclusive, and a record's verdict can be checked from the
record). It is part of the calibration record (``fit_calibration``), so ``mfclip calibrate`` and
the end of training store it in the checkpoint. Definitions: docs/verdicts.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mfclip_cli.labels import CLASS_NAMES
from mfclip_cli.scoring.fpr_bounds import fpr_upper_bound

INCONCLUSIVE = "inconclusive"
TARGET_ACCURACY = 0.95
FIT_FAKE_THRESHOLD = 0.5  # the fake threshold the val accuracy is measured at
REASONS = ("uncertain", "ood", "unstable")  # in the order a record lists them
_REAL = CLASS_NAMES.index("real")


def uncertainties(probs: np.ndarray) -> np.ndarray:
    """[N] normalised entropy of each row of ``probs`` [N, C] over its largest possible value,
    in [0, 1]: every face record's uncertainty."""
    values = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    values = values / values.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(values > 0, values * np.log(values), 0.0)
    return -terms.sum(axis=1) / np.log(values.shape[1])


def binary_right(labels: Sequence[str], probs: np.ndarray) -> np.ndarray:
    """[N] whether each face's real-vs-fake call at ``FIT_FAKE_THRESHOLD`` is right."""
    is_fake = np.array([label != "real" for label in labels])
    said_fake = 1.0 - np.asarray(probs)[:, _REAL] >= FIT_FAKE_THRESHOLD
    return said_fake == is_fake


def fit_uncertainty_threshold(
    labels: Sequence[str], probs: np.ndarray, target: float = TARGET_ACCURACY
) -> dict[str, Any]:
    """The band's record from the val split's labels and calibrated probabilities [N, 3]: the
    threshold by the module's rule, and what it gives on val."""
    if not 0 < target <= 1:
        raise ValueError(f"the target accuracy lies in (0, 1], not {target}")
    spread = np.round(uncertainties(probs), 6)  # as face records give them, and verdicts compare
    right = binary_right(labels, probs)
    order = np.argsort(spread, kind="stable")
    cumulative = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    sorted_spread = spread[order]
    # a threshold keeps every face tied with it: look only at the last face of each tie
    last_of_tie = np.append(sorted_spread[1:] != sorted_spread[:-1], True)
    reaching = np.flatnonzero(last_of_tie & (cumulative >= target - 1e-12))
    threshold = float(sorted_spread[reaching[-1]]) if len(reaching) else 0.0
    conclusive = spread <= threshold if len(reaching) else np.zeros(len(spread), bool)
    kept = int(conclusive.sum())
    errors = kept - int(right[conclusive].sum())
    return {
        "uncertainty_threshold": threshold,
        "rule": "largest val uncertainty whose val faces at or below it are right (real vs "
        f"fake at {FIT_FAKE_THRESHOLD}) at least target_accuracy of the time",
        "target_accuracy": target,
        "reached": bool(len(reaching)),
        "val_conclusive_share": float(conclusive.mean()) if len(spread) else None,
        "val_conclusive_accuracy": float(right[conclusive].mean()) if conclusive.any() else None,
        # what so few faces can show: the exact binomial (Clopper-Pearson) 95 % lower bound on
        # the accuracy of faces like the conclusive ones, from their error count
        "val_conclusive_faces": kept,
        "val_conclusive_accuracy_lower_95": 1.0 - fpr_upper_bound(errors, kept) if kept else None,
        "val_accuracy": float(right.mean()) if len(right) else None,
    }


NOTHING_CONCLUSIVE = -1.0  # below every uncertainty: the band's target was not reached


def stored_threshold(calibration: dict[str, Any] | None) -> float | None:
    """The uncertainty threshold a checkpoint's calibration stores, as the verdicts apply it:
    ``NOTHING_CONCLUSIVE`` where its target was not reached (stored as 0, which would leave the
    surest faces conclusive), None where there is none (calibrated before the band existed, or
    not calibrated)."""
    band = (calibration or {}).get(INCONCLUSIVE)
    if not band:
        return None
    return float(band["uncertainty_threshold"]) if band.get("reached", True) else NOTHING_CONCLUSIVE


def shown_threshold(threshold: float | None) -> float | None:
    """A threshold as reports give it: the stored 0 for one whose target was not reached."""
    return None if threshold is None else max(threshold, 0.0)


def _above(spread: Any, threshold: float) -> Any:
    """Uncertainty above the threshold, both at the 6 digits a face record gives."""
    return np.round(spread, 6) > round(threshold, 6)


def reasons(
    uncertainty: float | None,
    threshold: float | None,
    ood: bool | None = None,
    flips: bool | None = None,
) -> list[str]:
    """Why a face is inconclusive, in ``REASONS`` order; empty when its verdict stands."""
    uncertain = threshold is not None and uncertainty is not None
    holds = {
        "uncertain": uncertain and bool(_above(uncertainty, threshold)),
        "ood": bool(ood),
        "unstable": bool(flips),
    }
    return [reason for reason in REASONS if holds[reason]]


def inconclusive_mask(
    probs: np.ndarray, threshold: float | None, ood: np.ndarray | None = None
) -> np.ndarray:
    """[N] which faces of an evaluation set the band marks: uncertainty above ``threshold`` (as
    ``stored_threshold`` gives it), or out of distribution."""
    marked = np.zeros(len(probs), dtype=bool)
    if threshold is not None:
        marked |= _above(uncertainties(probs), threshold)
    if ood is not None:
        marked |= np.asarray(ood, dtype=bool)
    return marked


def band_report(
    labels: Sequence[str],
    probs: np.ndarray,
    threshold: float | None,
    ood: np.ndarray | None,
    fake_threshold: float,
) -> dict[str, Any]:
    """What the band does to an evaluation set at ``threshold``: the share of faces it marks and
    the field's metrics on the rest (``detection_metrics``, fake at ``fake_threshold``)."""
    from mfclip_cli.scoring.metrics import detection_metrics

    marked = inconclusive_mask(probs, threshold, ood)
    kept = ~marked
    return {
        "uncertainty_threshold": shown_threshold(threshold),
        "ood": ood is not None,
        "n": int(len(marked)),
        "n_inconclusive": int(marked.sum()),
        "share": float(marked.mean()) if len(marked) else None,
        "conclusive": detection_metrics(
            [label for label, keep in zip(labels, kept) if keep], probs[kept], fake_threshold
        ),
    }


def band_curve(
    labels: Sequence[str],
    probs: np.ndarray,
    ood: np.ndarray | None,
    fake_threshold: float,
    points: int = 100,
) -> dict[str, list]:
    """The trade-off as the uncertainty threshold sweeps the set's own uncertainties (at most
    ``points`` quantiles of them, and the value that keeps every face): per threshold, the share
    inconclusive and the accuracy and AUC on the conclusive rest (None where undefined)."""
    spread = np.round(uncertainties(probs), 6)
    candidates = np.unique(np.quantile(spread, np.linspace(0, 1, points))) if len(spread) else []
    curve: dict[str, list] = {"threshold": [], "share": [], "acc": [], "auc": []}
    for threshold in candidates:
        report = band_report(labels, probs, float(threshold), ood, fake_threshold)
        curve["threshold"].append(float(threshold))
        curve["share"].append(report["share"])
        curve["acc"].append(report["conclusive"]["acc"])
        curve["auc"].append(report["conclusive"]["auc"])
    return curve
