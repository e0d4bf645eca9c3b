"""What a trained checkpoint carries besides its weights, fitted on a protocol's train and val
splits: the out-of-distribution statistics (``ood.py``) and the generator fingerprints for
attribution (``attribution.py``). The end of training and ``mfclip calibrate`` both fit them
here, from one pass over each split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfclip_cli.data.samples import Sample
from mfclip_cli.model.checkpoint import ATTRIBUTION_KEY, OOD_KEY, Fitted
from mfclip_cli.model.detectors import Detector
from mfclip_cli.scoring.attribution import attribution_problem, fit_attribution
from mfclip_cli.scoring.inference import Outputs, predict_outputs
from mfclip_cli.scoring.ood import fit_ood, ood_problem

FITTED_NAMES = {
    OOD_KEY: "out-of-distribution statistics",
    ATTRIBUTION_KEY: "generator fingerprints for attribution",
}  # in the warnings of train and calibrate; every detector's checkpoint can carry both


@dataclass
class FitOutcome:
    fitted: dict[str, Fitted] = field(default_factory=dict)  # keyed as checkpoint.FITTED
    refused: dict[str, str] = field(default_factory=dict)  # key: why it could not be fitted


def fit_statistics(
    model: Detector,
    root: Path,
    train: Sequence[Sample],
    val: Sequence[Sample],
    device: torch.device,
    *,
    wanted: Sequence[str],
    batch_size: int,
    workers: int,
    fitted_on: dict[str, Any],
    val_outputs: Outputs | None = None,
) -> FitOutcome:
    """The ``wanted`` statistics (``ood``, ``attribution``) of the inference ``model``; the
    outputs of ``val`` may be given (calibrate has them), with the embeddings and fingerprints
    that are wanted."""
    outcome = FitOutcome()
    problems = {
        OOD_KEY: ood_problem([sample.label for sample in train], len(val)),
        ATTRIBUTION_KEY: attribution_problem([sample.label_set for sample in train], val),
    }
    for key in wanted:
        if problems[key]:
            outcome.refused[key] = problems[key]
    todo = [key for key in wanted if not problems[key]]
    if not todo:
        return outcome

    def outputs(samples: Sequence[Sample]) -> Outputs:
        return predict_outputs(
            model,
            root,
            samples,
            device,
            batch_size=batch_size,
            workers=workers,
            embeddings=OOD_KEY in todo,
            fingerprints=ATTRIBUTION_KEY in todo,
        )

    train_outputs, val_outputs = outputs(train), val_outputs or outputs(val)
    if OOD_KEY in todo:
        statistics = fit_ood(
            _rows(train_outputs.embeddings),
            [s.label for s in train],
            _rows(val_outputs.embeddings),
            fitted_on=fitted_on,
        )
        outcome.fitted[OOD_KEY] = statistics.fitted()
    if ATTRIBUTION_KEY in todo:
        attributor = fit_attribution(
            train,
            _rows(train_outputs.fingerprints),
            val,
            _rows(val_outputs.fingerprints),
            fitted_on=fitted_on,
        )
        outcome.fitted[ATTRIBUTION_KEY] = attributor.fitted()
    return outcome


def _rows(values: np.ndarray | None) -> np.ndarray:
    return values if values is not None else np.zeros((0, 1))
