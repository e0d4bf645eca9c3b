"""The precision the model runs at (``--precision``), and whether int8 keeps a checkpoint's
verdicts.

On a CPU the int8 model (``model/quantize.py``) scores faces faster; whether it says what the
fp32 model says is measured, not assumed: ``mfclip calibrate`` (and the end of training) scores
the validation split with both (``engines/fitting.fit_int8_calibration``), fits the int8 model's
own temperature, thresholds and band (int8 moves the logits a little, so the fp32 ones would be
slightly off for it) and records, inside the checkpoint's calibration, the largest change of the
reported p(fake), the faces whose verdict changes (label at 0.5, the band's inconclusive
verdict, the label at each stored ``fpr:X`` threshold, each model at its own fit), and the AUC
and ECE of both. ``--precision auto`` runs int8 on a CPU only where the exact 95 % bound on the
share of faces whose verdict changes is at most ``MAX_LABEL_CHANGE_SHARE``: what the val split
shows, not what it happened to see (0 changes among 18 faces show nothing; 299 faces without a
change show 1 %). GPUs keep bf16 autocast (or fp32, asked for). Definitions:
docs/performance.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from mfclip_cli.errors import UsageError
from mfclip_cli.labels import REAL_INDEX
from mfclip_cli.model import Detector
from mfclip_cli.model.quantize import quantize_int8
from mfclip_cli.scoring.calibration import softmax
from mfclip_cli.scoring.fpr_bounds import fpr_upper_bound, reals_needed
from mfclip_cli.scoring.inconclusive import inconclusive_mask, stored_band
from mfclip_cli.scoring.metrics import (
    calibration_metrics,
    fake_scores,
    json_safe,
    roc_auc,
    verdict_labels,
)

FP32, BF16, INT8, AUTO = "fp32", "bf16", "int8", "auto"
REQUESTABLE = (AUTO, FP32, INT8)
# the largest share of faces whose verdict may change (its 95 % bound) for auto to choose int8
MAX_LABEL_CHANGE_SHARE = 0.01
INT8_KEY = "int8"  # the calibration record's entry for the int8 model
LABEL_THRESHOLD = 0.5  # parity compares labels at scan's default fake threshold


@dataclass(frozen=True)
class Precision:
    """What ran: ``used`` (fp32, bf16 or int8) for ``requested`` (auto, fp32 or int8), and
    why; ``warning`` when int8 was asked for where it is not known to keep the verdicts."""

    requested: str
    used: str
    reason: str
    warning: str | None = None

    def record(self) -> dict[str, str]:
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def default_precision(device: torch.device) -> str:
    """What runs where no int8 model is chosen: bf16 autocast on CUDA, fp32 elsewhere."""
    return BF16 if device.type == "cuda" else FP32


def device_default(device: torch.device) -> Precision:
    """The precision of a model no one chose one for (never int8)."""
    return Precision("auto", default_precision(device), "the device's default")


def int8_parity(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parity a checkpoint records for its int8 model, or None."""
    return ((calibration or {}).get(INT8_KEY) or {}).get("parity")


def changed_faces(parity: dict[str, Any]) -> int:
    """The faces whose verdict int8 changed: any verdict where the parity records them (since
    2.10.0), the labels at 0.5 in an older record."""
    return int(parity.get("verdict_changes", {}).get("faces", parity.get("label_changes", 0)))


def _changed_share_bound(parity: dict[str, Any]) -> float:
    """The exact 95 % upper bound on the share of faces whose verdict changed: as the parity
    records it (since 2.10.0; computed once, at the fit, not at every scan's start), else from
    an older record's label changes."""
    recorded = parity.get("verdict_changes", {}).get("share_upper_95")
    changes, samples = changed_faces(parity), parity["samples"]
    # a bound below what its own counts allow (no bound on k of n lies under k / n, nor under
    # that of 0 changes) is not taken: an edited one made auto run int8 with a reason saying
    # "2 of 113 changed; at most 0.50 %" (audit R F14)
    floor = max(fpr_upper_bound(0, samples), changes / samples) if samples else math.inf
    if recorded is not None and float(recorded) >= floor:
        return float(recorded)
    return fpr_upper_bound(changes, samples)


def int8_allowed(parity: dict[str, Any]) -> bool:
    """Whether auto may run int8: the exact 95 % bound on the share of faces whose verdict
    changed is at most ``MAX_LABEL_CHANGE_SHARE``."""
    return bool(parity.get("samples")) and _changed_share_bound(parity) <= MAX_LABEL_CHANGE_SHARE


def _parity_words(parity: dict[str, Any]) -> str:
    """The parity as a reason says it, with what so many faces can show: 0 changes in 113 bound
    the share at 2.6 % (95 %), not at the 1 % auto asks for, which takes 299 faces."""
    changes, samples = changed_faces(parity), parity["samples"]
    what = "verdicts" if "verdict_changes" in parity else "labels"
    words = (
        f"int8 changed {changes} of {samples} validation {what}, p(fake) by at most "
        f"{parity['max_fake_change']:.4f}"
    )
    if not samples:
        return words
    bound = _changed_share_bound(parity)
    if bound <= MAX_LABEL_CHANGE_SHARE:
        return f"{words}; at most {bound:.2%} with 95 % confidence (auto allows 1 %)"
    if changes:
        return f"{words}: up to {bound:.2%} with 95 % confidence, over the 1 % auto allows"
    needed = reals_needed(MAX_LABEL_CHANGE_SHARE)
    return (
        f"{words}; so few faces bound the share only at {bound:.2%} (95 %), over the "
        f"{MAX_LABEL_CHANGE_SHARE:.0%} auto allows: {needed} would be needed to show it"
    )


def choose_precision(
    requested: str,
    device: torch.device,
    calibration: dict[str, Any] | None,
    *,
    explain: bool = False,
) -> Precision:
    """The precision a checkpoint runs at on ``device``: ``auto`` is int8 on a CPU where its
    recorded parity allows, else the device's default; ``--explain`` needs the fp32 model's
    gradients. A usage error for int8 on a GPU or with ``--explain``."""
    if requested not in REQUESTABLE:
        raise UsageError(f"--precision {requested!r}: choose from {', '.join(REQUESTABLE)}")
    if device.type != "cpu":
        if requested == INT8:
            raise UsageError(
                "--precision int8 is the CPU path; on a GPU the model runs bf16 (auto) or fp32"
            )
        if requested == FP32:
            return Precision(requested, FP32, "asked for")
        return Precision(requested, BF16, "bf16 autocast on the GPU")
    if explain:
        if requested == INT8:
            raise UsageError(
                "--explain runs in fp32 (its heatmaps need gradients the int8 model has not); "
                "drop --precision int8"
            )
        return Precision(requested, FP32, "--explain runs in fp32 (heatmaps need gradients)")
    if requested == FP32:
        return Precision(requested, FP32, "asked for")
    parity = int8_parity(calibration)
    allowed = parity is not None and int8_allowed(parity)
    if requested == INT8:
        if parity is None:
            unknown = "this checkpoint records no int8 parity (mfclip calibrate measures it)"
            return Precision(requested, INT8, f"asked for; {unknown}", f"int8: {unknown}")
        words = _parity_words(parity)
        return Precision(requested, INT8, f"asked for; {words}", None if allowed else words)
    if parity is None:
        return Precision(
            requested, FP32, "no int8 parity recorded in this checkpoint (mfclip calibrate)"
        )
    return Precision(requested, INT8 if allowed else FP32, _parity_words(parity))


def calibration_at(calibration: dict[str, Any] | None, used: str) -> dict[str, Any] | None:
    """The calibration a precision's probabilities are computed with: the int8 model's own fit
    where the checkpoint has one, the checkpoint's otherwise."""
    if used == INT8 and calibration and calibration.get(INT8_KEY):
        return calibration[INT8_KEY]
    return calibration


def model_at(model: Detector, used: str) -> Detector:
    """The model that runs at precision ``used``: an int8 copy for int8, ``model`` otherwise."""
    return quantize_int8(model)[0] if used == INT8 else model


def _quality(labels: Sequence[str], probs: np.ndarray) -> dict[str, Any]:
    is_fake = np.array([label != "real" for label in labels], dtype=np.int64)
    return {
        "auc": json_safe(roc_auc(is_fake, fake_scores(probs))),
        "ece_fake": calibration_metrics(labels, probs)["ece_fake"],
    }


def _inconclusive(
    probs: np.ndarray, calibration: dict[str, Any], ood: np.ndarray | None
) -> np.ndarray:
    """[N] which faces one model's own band (and OOD flags, where given) marks inconclusive."""
    return inconclusive_mask(probs, stored_band(calibration), ood)


def _operating_point_changes(
    fp32: np.ndarray, int8: np.ndarray, fp32_fit: dict[str, Any], int8_fit: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per ``fpr:X`` threshold both fits store: which faces' labels differ, each model at its
    own threshold."""
    thresholds = (fp32_fit.get("thresholds") or {}, int8_fit.get("thresholds") or {})
    return {
        name: verdict_labels(fp32, entry["threshold"])
        != verdict_labels(int8, thresholds[1][name]["threshold"])
        for name, entry in thresholds[0].items()
        if name in thresholds[1]
    }


def measure_parity(
    fp32_logits: np.ndarray,
    int8_logits: np.ndarray,
    labels: Sequence[str],
    fp32_fit: dict[str, Any],
    int8_fit: dict[str, Any],
    ood_flags: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """How far the int8 model's reported probabilities and verdicts are from the fp32 model's
    on the same faces, each model at its own calibration (``fp32_fit``, ``int8_fit``: their
    temperature, thresholds and band) and, where given, with each model's OOD flags (fp32,
    int8) under the checkpoint's statistics, as a scan applies them."""
    fp32_temperature, int8_temperature = fp32_fit["temperature"], int8_fit["temperature"]
    fp32 = softmax(fp32_logits, fp32_temperature)
    int8 = softmax(int8_logits, int8_temperature)
    change = np.abs(fp32[:, REAL_INDEX] - int8[:, REAL_INDEX])  # |change of 1 - p(real)|
    label_changed = verdict_labels(fp32, LABEL_THRESHOLD) != verdict_labels(int8, LABEL_THRESHOLD)
    flags = ood_flags or (None, None)
    band_changed = _inconclusive(fp32, fp32_fit, flags[0]) != _inconclusive(
        int8, int8_fit, flags[1]
    )
    points = _operating_point_changes(fp32, int8, fp32_fit, int8_fit)
    ood_changed = np.zeros(len(labels), bool) if ood_flags is None else flags[0] != flags[1]
    # a face's OOD flag is reported even where the band marks it either way: a change of its own
    any_changed = label_changed | band_changed | ood_changed
    for changed in points.values():
        any_changed = any_changed | changed
    samples = len(labels)
    share = int(label_changed.sum()) / samples if samples else 0.0
    parity = {
        "split": "val",
        "samples": samples,
        "max_fake_change": float(change.max(initial=0.0)),
        "mean_fake_change": float(change.mean()) if samples else 0.0,
        "label_threshold": LABEL_THRESHOLD,
        "label_changes": int(label_changed.sum()),
        "label_change_share": share,
        # every verdict a scan can give: the label at 0.5, the band's inconclusive verdict (its
        # threshold, and the OOD flag where statistics exist), the label at each stored
        # operating point; ``faces`` counts a face once
        "verdict_changes": {
            "faces": int(any_changed.sum()),
            "inconclusive": int(band_changed.sum()),
            **({} if ood_flags is None else {"ood": int(ood_changed.sum())}),
            "operating_points": {name: int(changed.sum()) for name, changed in points.items()},
            "share_upper_95": fpr_upper_bound(int(any_changed.sum()), samples) if samples else 1.0,
        },
        "max_label_change_share": MAX_LABEL_CHANGE_SHARE,
        "fp32": {"temperature": fp32_temperature, **_quality(labels, fp32)},
        "int8": {"temperature": int8_temperature, **_quality(labels, int8)},
    }
    parity["int8_allowed"] = int8_allowed(parity)
    return parity
