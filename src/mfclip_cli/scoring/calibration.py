"""Probabilities an analyst can defend: temperature scaling and operating points chosen on val.

A checkpoint's calibration is one record, fitted on the validation split only (never test): a
temperature T, so that the reported probabilities are softmax(logits / T) with T minimising the
validation NLL, and, on those calibrated fake scores 1 - p(real), the thresholds whose validation
false-positive rate is at most 1 % and 0.1 %, each with what the split can show about it
(``fpr_bounds.py``: the false positives seen, an exact 95 % upper bound, whether the split has
enough reals to support the target at all). The record travels in the safetensors header next
to the model config (``model/checkpoint.py``), so the checkpoint's SHA-256 covers it and a lost
sidecar does not lose it; ``mfclip calibrate`` writes it into a new checkpoint. Definitions:
docs/calibration.md.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mfclip_cli.errors import UsageError
from mfclip_cli.labels import CLASS_NAMES, REAL_INDEX
from mfclip_cli.scoring.fpr_bounds import fpr_support, unsupported_message
from mfclip_cli.scoring.inconclusive import INCONCLUSIVE, TARGET_ACCURACY, fit_uncertainty_threshold
from mfclip_cli.scoring.metrics import rates_at_threshold, threshold_at_fpr
from mfclip_cli.timestamps import utc_now

FPR_TARGETS = (0.01, 0.001)
TEMPERATURE_BOUNDS = (0.01, 100.0)


def temperature_warning(record: dict[str, Any] | None) -> str | None:
    """What a temperature at a bound of its search means, or None: at the low bound val is
    (nearly) separated and the probabilities are near 0 or 1; at the high bound the logits tell
    val's classes apart hardly at all (or the wrong way round) and the probabilities are near
    uniform, every face inconclusive."""
    if not record or not record.get("at_bound"):
        return None
    temperature = record["temperature"]
    if temperature < 1:
        return (
            f"the temperature is at its lower search bound (T = {temperature:.3g}): the val "
            "split is (nearly) separated, so the calibrated probabilities are near 0 or 1; "
            "calibrate on a larger val split"
        )
    return (
        f"the temperature is at its upper search bound (T = {temperature:.3g}): on the val split "
        "the model's scores hardly tell the classes apart (or point the wrong way), so the "
        "calibrated probabilities are near uniform and every face will be inconclusive; check "
        "that the checkpoint was trained for this data, or train it longer"
    )


class CalibrationError(UsageError):
    """Data that cannot calibrate a checkpoint (exit code 2)."""


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / T) over the last axis, in float64, without overflow."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The class probabilities every report gives: softmax(logits / T), float64."""
    return np.exp(log_softmax(logits, temperature))


def nll(logits: np.ndarray, classes: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true ``classes`` (indices) under softmax(logits / T);
    from the logits, so a confident mistake costs its true (large) price rather than a clip's."""
    if not len(classes):
        return math.nan
    log_p = log_softmax(logits, temperature)
    # + 0.0: every face certain gives -0.0, printed "-0.0000" (audit N L3)
    return float(-log_p[np.arange(len(classes)), classes].mean()) + 0.0


def fit_temperature(
    logits: np.ndarray,
    classes: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = 1e-6,
) -> float:
    """The T in ``bounds`` minimising ``nll(logits, classes, T)``, by golden-section search on
    log T.

    The NLL is convex in 1 / T (a log-sum-exp of a linear function of it, less a linear term),
    hence unimodal in log T, so the search finds the global minimum in the bounds; it is
    deterministic and stops when the bracket is under ``tolerance`` (relative, in T).
    """
    if not len(classes):
        raise CalibrationError("temperature scaling needs samples; the validation split is empty")
    if not np.ptp(np.asarray(logits, dtype=np.float64), axis=-1).any():
        # every row's logits equal: the NLL is the same at every T, and the search ran to its
        # lower bound, read as a separated val split (audit E F12); no scaling is the answer
        return 1.0
    ratio = (math.sqrt(5) - 1) / 2
    low, high = math.log(bounds[0]), math.log(bounds[1])

    def cost(log_t: float) -> float:
        return nll(logits, classes, math.exp(log_t))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    cost_a, cost_b = cost(a), cost(b)
    while high - low > tolerance:
        if cost_a <= cost_b:
            high, b, cost_b = b, a, cost_a
            a = high - ratio * (high - low)
            cost_a = cost(a)
        else:
            low, a, cost_a = a, b, cost_b
            b = low + ratio * (high - low)
            cost_b = cost(b)
    return math.exp((low + high) / 2)


def _class_indices(labels: Sequence[str]) -> np.ndarray:
    return np.array([CLASS_NAMES.index(label) for label in labels], dtype=np.int64)


def calibration_problem(labels: Sequence[str]) -> str | None:
    """Why these validation labels cannot calibrate a checkpoint, or None when they can.

    A threshold at a false-positive rate needs real faces, its true-positive rate and a
    meaningful temperature need fakes as well.
    """
    if not labels:
        return "the validation split is empty (temperature scaling needs samples)"
    reals = sum(label == "real" for label in labels)
    if reals in (0, len(labels)):
        only = "fake" if reals == 0 else "real"
        return (
            f"the validation split holds only {only} faces ({len(labels)}); calibration needs "
            "real faces (a threshold's false-positive rate) and fake ones"
        )
    return None


def threshold_key(fpr: float) -> str:
    """How a threshold is named in the checkpoint and on the command line: ``fpr:0.01``."""
    return f"fpr:{fpr:g}"


def fit_calibration(
    logits: np.ndarray,
    labels: Sequence[str],
    *,
    fitted_on: dict[str, Any],
    fprs: Sequence[float] = FPR_TARGETS,
    target_accuracy: float = TARGET_ACCURACY,
) -> dict[str, Any]:
    """The calibration record of a checkpoint from its validation logits [N, 3] and labels.

    ``fitted_on`` says where the split came from (data root, layout, protocol); the split, its
    size and class counts are added here. The inconclusive band's uncertainty threshold is chosen
    on the calibrated probabilities for ``target_accuracy`` (``scoring/inconclusive.py``).
    Raises ``CalibrationError`` for a split that cannot calibrate (``calibration_problem``).
    """
    problem = calibration_problem(labels)
    if problem:
        raise CalibrationError(problem)
    classes = _class_indices(labels)
    temperature = fit_temperature(logits, classes)
    is_fake = (classes != REAL_INDEX).astype(np.int64)
    score = 1.0 - softmax(logits, temperature)[:, REAL_INDEX]
    n_real = int(len(labels) - is_fake.sum())
    thresholds = {}
    for fpr in fprs:
        threshold = threshold_at_fpr(is_fake, score, fpr)
        val_fpr, val_tpr = rates_at_threshold(is_fake, score, threshold)
        false_positives = int((score[is_fake == 0] >= threshold).sum())
        thresholds[threshold_key(fpr)] = {
            "fpr": fpr,
            "threshold": threshold,
            "val_fpr": val_fpr,
            "val_tpr": val_tpr,
            **fpr_support(fpr, n_real, false_positives),
        }
    low, high = TEMPERATURE_BOUNDS
    return {
        "method": "temperature scaling",
        "temperature": temperature,
        # the optimum lies at a bound: val is (nearly) separable, or the model is inverted
        "at_bound": bool(math.isclose(temperature, low, rel_tol=1e-4))
        or bool(math.isclose(temperature, high, rel_tol=1e-4)),
        "nll": {"before": nll(logits, classes), "after": nll(logits, classes, temperature)},
        "thresholds": thresholds,
        INCONCLUSIVE: fit_uncertainty_threshold(
            labels, softmax(logits, temperature), target_accuracy
        ),
        "fitted_on": {
            **fitted_on,
            "split": "val",
            "samples": len(labels),
            "n_real": n_real,
            "n_fake": int(is_fake.sum()),
        },
        "fitted_utc": utc_now(),
    }


def temperature_of(calibration: dict[str, Any] | None) -> float:
    """The temperature a checkpoint's probabilities are computed at (1: uncalibrated)."""
    return float(calibration["temperature"]) if calibration else 1.0


def calibration_summary(calibration: dict[str, Any] | None) -> dict[str, Any]:
    """What every report says about its probabilities: calibrated or not, at what T, on what."""
    if not calibration:
        return {"calibrated": False, "temperature": 1.0}
    return {
        "calibrated": True,
        "method": calibration["method"],
        "temperature": calibration["temperature"],
        "fitted_on": calibration["fitted_on"],
        "thresholds": {
            name: entry["threshold"] for name, entry in calibration.get("thresholds", {}).items()
        },
        **(
            {INCONCLUSIVE: calibration[INCONCLUSIVE]["uncertainty_threshold"]}
            if calibration.get(INCONCLUSIVE)
            else {}
        ),
    }


def parse_fake_threshold(text: str) -> tuple[float | None, float | None]:
    """``--fake-threshold``: a number in [0, 1] -> (number, None); ``fpr:X`` -> (None, X), the
    checkpoint's threshold for validation FPR X. Raises ValueError with the reason."""
    if text.strip().lower().startswith("fpr:"):
        try:
            fpr = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"{text!r}: fpr: takes a rate, e.g. fpr:0.01") from None
        if not 0 < fpr < 1:
            raise ValueError(f"{text!r}: the false-positive rate lies strictly between 0 and 1")
        return None, fpr
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number in [0, 1] nor fpr:RATE") from None
    if not 0 <= number <= 1:
        raise ValueError(f"{text!r} is not in [0, 1]")
    return number, None


def operating_point(calibration: dict[str, Any] | None, fpr: float) -> dict[str, Any]:
    """The threshold entry a checkpoint records for validation FPR ``fpr``, with its support
    (``fpr_bounds.fpr_support``; derived from ``fitted_on.n_real`` and ``val_fpr`` for a record
    written before it was kept); a usage error naming the ones it has when it has none."""
    recorded = (calibration or {}).get("thresholds") or {}
    for entry in recorded.values():
        if math.isclose(entry["fpr"], fpr, rel_tol=1e-9):
            if "supported" in entry:
                return dict(entry)
            n_real = int((calibration or {}).get("fitted_on", {}).get("n_real", 0))
            seen = round(entry["val_fpr"] * n_real) if n_real else 0
            return {**entry, **fpr_support(entry["fpr"], n_real, seen)}
    if not recorded:
        raise UsageError(
            f"--fake-threshold {threshold_key(fpr)}: this checkpoint records no thresholds "
            "(write a calibrated copy with mfclip calibrate)"
        )
    raise UsageError(
        f"--fake-threshold {threshold_key(fpr)}: this checkpoint records thresholds for "
        f"{', '.join(recorded)} only"
    )


def threshold_for_fpr(
    calibration: dict[str, Any] | None, fpr: float, *, accept_unsupported: bool = False
) -> float:
    """The fake-score threshold a checkpoint records for validation FPR ``fpr``. A usage error
    when it has none, or when its validation split cannot support that rate and
    ``accept_unsupported`` is not given."""
    entry = operating_point(calibration, fpr)
    if not entry["supported"] and not accept_unsupported:
        raise UsageError(
            f"--fake-threshold {threshold_key(fpr)}: "
            f"{unsupported_message('this threshold', entry)}. Calibrate on more real faces, "
            "or pass --accept-unsupported-fpr to use it anyway (the report records that)"
        )
    return float(entry["threshold"])
