"""The inconclusive band: when a face's verdict is not one an analyst should act on.

A face is ``inconclusive`` (its label kept as ``leaning``) for any of these reasons:

- ``uncertain``: its uncertainty is above the checkpoint's stored threshold;
- ``ood``: its embedding is out of the training distribution (``scoring/ood.py``);
- ``unstable``: with ``scan --stability``, its real-vs-fake call changes under one of the
  documented re-encodings of its crop;
- ``operating_point``: the fake threshold in use (``--fake-threshold``, an ``fpr:X`` operating
  point above 0.5) calls it real while its call at 0.5, the one the band's threshold is fitted
  for, is fake: a face at p(fake) 0.90 under an ``fpr:0.01`` threshold of 0.93 leans fake, yet
  would be a conclusive ``real``. A threshold under 0.5 calls more faces fake on purpose (a
  stricter gate): those stay conclusive. Only where a threshold is stored.

A face's uncertainty is that of the call the threshold is fitted for, real vs fake: the binary
entropy of (p(real), 1 - p(real)) over log 2, 0 sure, 1 at 0.5 (``measure: binary``). A
checkpoint calibrated before report format 2.10.0 stores a threshold fitted on the entropy of all
three probabilities (``3-class``, the record has no ``measure``); that measure is kept for it, so
its stored threshold still means what it was fitted for. Under it a face sure to be fake but split
between diffusion and gan was inconclusive; under ``binary`` it is a conclusive fake whose
*family* is uncertain, which the family threshold below says.

The uncertainty threshold is chosen on the validation split, never test, by one rule: sort the
val faces by uncertainty; the threshold is the largest val uncertainty ``u`` such that the
real-vs-fake accuracy (fake at 1 - p(real) >= 0.5) of the val faces with uncertainty <= ``u`` is
at least the target (default 0.95). Faces above it are where, on val, the model's verdicts stop
being right often enough. When no such ``u`` exists (not even the most certain faces reach the
target) the threshold is 0: every face is inconclusive, and the record says the target was not
reached. Uncertainties and the threshold are compared at the 6 digits a face record gives (the
val face that sets the threshold stays conclusive, and a record's verdict can be checked from the
record). A threshold counts only where the val faces it keeps also show, at 95 % (their exact
binomial lower bound), an accuracy above one half: without it a near-uniform model (temperature at
its upper bound) "reached" the target on its single surest val face and called real faces fake
conclusively.

The family threshold is the same rule on the val fakes called fake, with the family uncertainty
(the binary entropy of p(diffusion) and p(gan) given fake) and whether the family (the larger of
the two) is right. A face called fake above it keeps its label and counts as fake; its record says
``family_uncertain``. Both are part of the calibration record (``fit_calibration``), so ``mfclip
calibrate`` and the end of training store them in the checkpoint. Definitions: docs/verdicts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mfclip_cli.labels import CLASS_NAMES, REAL_INDEX
from mfclip_cli.scoring.fpr_bounds import fpr_upper_bound

INCONCLUSIVE = "inconclusive"
TARGET_ACCURACY = 0.95
FIT_FAKE_THRESHOLD = 0.5  # the fake threshold the val accuracy is measured at
# the kept val faces' 95 % lower bound on accuracy must exceed this for a threshold to count
MIN_LOWER_BOUND = 0.5
REASONS = ("uncertain", "ood", "unstable", "operating_point")  # in the order a record lists them
BINARY, THREE_CLASS = "binary", "3-class"  # the uncertainty measures (module docstring)
FAMILIES = ("diffusion", "gan")
_FAMILY_COLUMNS = [CLASS_NAMES.index(family) for family in FAMILIES]


def _normalised_entropy(values: np.ndarray) -> np.ndarray:
    """[N] entropy of each row of ``values`` [N, C] (made to sum to one) over log(C); a row of
    zeros, which holds no information, is 1."""
    total = values.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(total > 0, values / total, 1.0 / values.shape[1])
        terms = np.where(shares > 0, shares * np.log(shares), 0.0)
    return 0.0 - terms.sum(axis=1) / np.log(values.shape[1])  # 0.0 - x: never -0.0


def _clipped(probs: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)


def uncertainties(probs: np.ndarray, measure: str = BINARY) -> np.ndarray:
    """[N] each face's uncertainty, in [0, 1], from its probabilities [N, 3]: under ``binary``
    the entropy of its real-vs-fake call, under ``3-class`` that of all three classes (the
    measure of checkpoints calibrated before 2.10.0)."""
    values = _clipped(probs)
    if measure == THREE_CLASS:
        return _normalised_entropy(values)
    if measure != BINARY:
        raise ValueError(f"no uncertainty measure {measure!r} (known: {BINARY}, {THREE_CLASS})")
    real = values[:, REAL_INDEX]
    return _normalised_entropy(np.stack([real, values.sum(axis=1) - real], axis=1))


def family_uncertainties(probs: np.ndarray) -> np.ndarray:
    """[N] how unsure each face's family is, given fake: the binary entropy of its diffusion
    and gan probabilities (renormalised), 0 sure, 1 even."""
    return _normalised_entropy(_clipped(probs)[:, _FAMILY_COLUMNS])


def _said_fake(probs: np.ndarray) -> np.ndarray:
    """[N] each face's call at ``FIT_FAKE_THRESHOLD``: fake or not."""
    return 1.0 - np.asarray(probs)[:, REAL_INDEX] >= FIT_FAKE_THRESHOLD


def binary_right(labels: Sequence[str], probs: np.ndarray) -> np.ndarray:
    """[N] whether each face's real-vs-fake call at ``FIT_FAKE_THRESHOLD`` is right."""
    return _said_fake(probs) == np.array([label != "real" for label in labels])


def _family_of(probs: np.ndarray) -> np.ndarray:
    """[N] the family each face's probabilities name (the larger; diffusion on a tie)."""
    columns = np.asarray(probs)[:, _FAMILY_COLUMNS]
    return np.array(FAMILIES)[np.argmax(columns, axis=1)]


def _better_than_a_constant(kept: int, right: int, right_first: int) -> bool:
    """Whether ``right`` of ``kept`` faces (``right_first`` of them of the first of the two
    classes told apart) show, at 95 %, an accuracy above one half (the exact Clopper-Pearson
    lower bound: one right face of one shows 0.05, four of four 0.47, five of five 0.55), with
    faces of both classes right: what one answer given to every face cannot do. Five fakes of
    five, which a model calling every face fake gets right, showed a near-uniform checkpoint's
    band "reached", and it labelled a real face fake conclusively (audit AK F1)."""
    bound = 1.0 - fpr_upper_bound(kept - right, kept)
    return bound > MIN_LOWER_BOUND and 0 < right_first < right


def _rule_threshold(
    spread: np.ndarray, right: np.ndarray, target: float, first_class: np.ndarray
) -> tuple[float, bool, np.ndarray]:
    """The module's rule on faces of uncertainty ``spread`` (6 digits), correctness ``right``
    and true class (``first_class``: whether each is of the first of the two classes told
    apart): (threshold, whether the target was reached, which faces it keeps)."""
    order = np.argsort(spread, kind="stable")
    hits = np.cumsum(right[order])
    cumulative = hits / np.arange(1, len(order) + 1)
    first_hits = np.cumsum((right & first_class)[order])
    sorted_spread = spread[order]
    # a threshold keeps every face tied with it: look only at the last face of each tie
    last_of_tie = np.append(sorted_spread[1:] != sorted_spread[:-1], True)
    reaching = [
        int(i)
        for i in np.flatnonzero(last_of_tie & (cumulative >= target - 1e-12))
        if _better_than_a_constant(int(i) + 1, int(hits[i]), int(first_hits[i]))
    ]
    if not reaching:
        return 0.0, False, np.zeros(len(spread), bool)
    threshold = float(sorted_spread[reaching[-1]])
    return threshold, True, spread <= threshold


def _kept_figures(right: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """What the faces a threshold keeps give on val, and what so few faces can show: the exact
    binomial (Clopper-Pearson) 95 % lower bound on their accuracy. The threshold was chosen to
    keep them, so it is not a 95 % bound for new faces (audit E F7: where uncertainty says
    little of correctness it exceeded their accuracy in ~15 % of simulated splits)."""
    count = int(kept.sum())
    errors = count - int(right[kept].sum())
    return {
        "val_conclusive_share": float(kept.mean()) if len(kept) else None,
        "val_conclusive_accuracy": float(right[kept].mean()) if count else None,
        "val_conclusive_faces": count,
        "val_conclusive_accuracy_lower_95": 1.0 - fpr_upper_bound(errors, count) if count else None,
        "val_accuracy": float(right.mean()) if len(right) else None,
    }


def fit_family_threshold(
    labels: Sequence[str], probs: np.ndarray, target: float = TARGET_ACCURACY
) -> dict[str, Any] | None:
    """The family threshold's record from the val fakes the model calls fake (None when there
    is none): the module's rule on their family uncertainty and whether their family is right."""
    probs = np.asarray(probs)
    is_fake = np.array([label != "real" for label in labels], dtype=bool)
    chosen = is_fake & _said_fake(probs) if len(probs) else is_fake
    if not chosen.any():
        return None
    spread = np.round(family_uncertainties(probs[chosen]), 6)
    truth = np.asarray(labels, dtype=object)[chosen]
    right = _family_of(probs[chosen]) == truth
    threshold, reached, kept = _rule_threshold(spread, right, target, truth == FAMILIES[0])
    return {
        "uncertainty_threshold": threshold,
        "rule": "the same rule on the val fakes called fake: family uncertainty, and whether the "
        "family (the larger of p(diffusion), p(gan)) is right",
        "target_accuracy": target,
        "reached": reached,
        **_kept_figures(right, kept),
    }


def fit_uncertainty_threshold(
    labels: Sequence[str], probs: np.ndarray, target: float = TARGET_ACCURACY
) -> dict[str, Any]:
    """The band's record from the val split's labels and calibrated probabilities [N, 3]: the
    threshold by the module's rule (``binary`` measure), the family threshold, and what they
    give on val."""
    if not 0 < target <= 1:
        raise ValueError(f"the target accuracy lies in (0, 1], not {target}")
    spread = np.round(uncertainties(probs), 6)  # as face records give them, and verdicts compare
    right = binary_right(labels, probs)
    is_fake = np.array([label != "real" for label in labels], dtype=bool)
    threshold, reached, kept = _rule_threshold(spread, right, target, is_fake)
    return {
        "uncertainty_threshold": threshold,
        "measure": BINARY,
        "rule": "largest val uncertainty whose val faces at or below it are right (real vs "
        f"fake at {FIT_FAKE_THRESHOLD}) at least target_accuracy of the time, and show an "
        f"accuracy above {MIN_LOWER_BOUND} at 95 %, with real and fake faces both right",
        "target_accuracy": target,
        "reached": reached,
        **_kept_figures(right, kept),
        "family": fit_family_threshold(labels, probs, target),
    }


NOTHING_CONCLUSIVE = -1.0  # below every uncertainty: the band's target was not reached


def _applied(record: dict[str, Any]) -> float:
    """A stored threshold as verdicts apply it: ``NOTHING_CONCLUSIVE`` where its target was not
    reached (stored as 0, which would leave the surest faces conclusive)."""
    return (
        float(record["uncertainty_threshold"])
        if record.get("reached", True)
        else (NOTHING_CONCLUSIVE)
    )


@dataclass(frozen=True)
class Band:
    """The band as a checkpoint's calibration stores it, as verdicts apply it: thresholds are
    None where none is stored (calibrated before they existed, or not calibrated)."""

    threshold: float | None = None
    measure: str = BINARY  # of an uncalibrated checkpoint too: the measure records give
    family_threshold: float | None = None

    def uncertainties(self, probs: np.ndarray) -> np.ndarray:
        return uncertainties(probs, self.measure)

    def family_uncertain(self, family_uncertainty: float | None) -> bool | None:
        """Whether a face called fake is unsure of its family (None: no family threshold)."""
        if self.family_threshold is None or family_uncertainty is None:
            return None
        return bool(_above(family_uncertainty, self.family_threshold))


def stored_band(calibration: dict[str, Any] | None) -> Band:
    """The band a checkpoint's calibration stores (a record without ``measure`` was fitted on
    the 3-class entropy, before 2.10.0)."""
    band = (calibration or {}).get(INCONCLUSIVE)
    if not band:
        return Band()
    family = band.get("family")
    return Band(
        threshold=_applied(band),
        measure=band.get("measure", THREE_CLASS),
        family_threshold=_applied(family) if family else None,
    )


def shown_threshold(threshold: float | None) -> float | None:
    """A threshold as reports give it: the stored 0 for one whose target was not reached."""
    return None if threshold is None else max(threshold, 0.0)


def _above(spread: Any, threshold: float) -> Any:
    """Uncertainty above the threshold, both at the 6 digits a face record gives."""
    return np.round(spread, 6) > round(threshold, 6)


def called_real_leaning_fake(probs: np.ndarray, fake_threshold: float) -> np.ndarray:
    """[N] whether ``fake_threshold`` calls each face real while its call at
    ``FIT_FAKE_THRESHOLD``, the one the band vouches for, is fake (fake scores compared in
    float64, as the labels are). A lower threshold's extra fakes are not counted: a stricter gate
    asked for them."""
    score = 1.0 - np.asarray(probs, dtype=np.float64)[:, REAL_INDEX]
    return (score >= FIT_FAKE_THRESHOLD) & (score < fake_threshold)


def reasons(
    uncertainty: float | None,
    threshold: float | None,
    ood: bool | None = None,
    flips: bool | None = None,
    off_call: bool | None = None,
) -> list[str]:
    """Why a face is inconclusive, in ``REASONS`` order; empty when its verdict stands.
    ``off_call`` (``called_real_leaning_fake``) counts only where a threshold is stored."""
    stored = threshold is not None
    holds = {
        "uncertain": stored and uncertainty is not None and bool(_above(uncertainty, threshold)),
        "ood": bool(ood),
        "unstable": bool(flips),
        "operating_point": stored and bool(off_call),
    }
    return [reason for reason in REASONS if holds[reason]]


def inconclusive_mask(
    probs: np.ndarray,
    band: Band,
    ood: np.ndarray | None = None,
    fake_threshold: float = FIT_FAKE_THRESHOLD,
) -> np.ndarray:
    """[N] which faces of an evaluation set the band marks: uncertainty (by the band's measure)
    above its threshold, called real at ``fake_threshold`` but fake at 0.5 (where a threshold is
    stored), or out of distribution."""
    marked = np.zeros(len(probs), dtype=bool)
    if band.threshold is not None:
        marked |= _above(band.uncertainties(probs), band.threshold)
        marked |= called_real_leaning_fake(probs, fake_threshold)
    if ood is not None:
        marked |= np.asarray(ood, dtype=bool)
    return marked


def _family_figures(
    labels: Sequence[str], probs: np.ndarray, band: Band, chosen: np.ndarray
) -> dict[str, Any] | None:
    """The family threshold on the ``chosen`` faces (conclusive fakes called fake): how many it
    marks unsure, and how often the family of the rest is right (None without a threshold)."""
    if band.family_threshold is None:
        return None
    unsure = chosen & _above(family_uncertainties(probs), band.family_threshold)
    sure = chosen & ~unsure
    right = _family_of(probs) == np.asarray(labels, dtype=object) if len(probs) else sure
    return {
        "uncertainty_threshold": shown_threshold(band.family_threshold),
        "n": int(chosen.sum()),
        "n_uncertain": int(unsure.sum()),
        "accuracy_certain": float(right[sure].mean()) if sure.any() else None,
        "accuracy_uncertain": float(right[unsure].mean()) if unsure.any() else None,
    }


def band_report(
    labels: Sequence[str],
    probs: np.ndarray,
    band: Band,
    ood: np.ndarray | None,
    fake_threshold: float,
) -> dict[str, Any]:
    """What ``band`` does to an evaluation set: the share of faces it marks, the field's
    metrics on the rest (``detection_metrics``, fake at ``fake_threshold``), and the family
    threshold on the conclusive fakes called fake."""
    from mfclip_cli.scoring.metrics import detection_metrics

    marked = inconclusive_mask(probs, band, ood, fake_threshold)
    kept = ~marked
    is_fake = np.array([label != "real" for label in labels], dtype=bool)
    called_fake = (
        1.0 - np.asarray(probs)[:, REAL_INDEX] >= fake_threshold if len(probs) else is_fake
    )
    return {
        "uncertainty_threshold": shown_threshold(band.threshold),
        "measure": band.measure,
        "ood": ood is not None,
        "n": int(len(marked)),
        "n_inconclusive": int(marked.sum()),
        "share": float(marked.mean()) if len(marked) else None,
        "conclusive": detection_metrics(
            [label for label, keep in zip(labels, kept) if keep], probs[kept], fake_threshold
        ),
        "family": _family_figures(labels, probs, band, kept & is_fake & called_fake),
    }


def band_curve(
    labels: Sequence[str],
    probs: np.ndarray,
    ood: np.ndarray | None,
    fake_threshold: float,
    measure: str = BINARY,
    points: int = 100,
) -> dict[str, list]:
    """The trade-off as the uncertainty threshold sweeps the set's own uncertainties (at most
    ``points`` quantiles of them, and the value that keeps every face): per threshold, the share
    inconclusive and the accuracy and AUC on the conclusive rest (None where undefined)."""
    spread = np.round(uncertainties(probs, measure), 6)
    candidates = np.unique(np.quantile(spread, np.linspace(0, 1, points))) if len(spread) else []
    curve: dict[str, list] = {"threshold": [], "share": [], "acc": [], "auc": []}
    for threshold in candidates:
        band = Band(float(threshold), measure)
        report = band_report(labels, probs, band, ood, fake_threshold)
        curve["threshold"].append(float(threshold))
        curve["share"].append(report["share"])
        curve["acc"].append(report["conclusive"]["acc"])
        curve["auc"].append(report["conclusive"]["auc"])
    return curve
