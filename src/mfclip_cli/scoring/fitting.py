"""What a trained checkpoint carries besides its weights, fitted on a protocol's train and val
splits: the out-of-distribution statistics (``ood.py``) and, for MFCLIP, the label-set
embeddings for attribution (``attribution.py``). The end of training and ``mfclip calibrate``
both fit them here, from one pass over each split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfclip_cli.data.samples import Sample
from mfclip_cli.model.checkpoint import ATTRIBUTION_KEY, OOD_KEY, Fitted, load_checkpoint
from mfclip_cli.model.config import MFCLIP_DETECTOR
from mfclip_cli.model.detectors import Detector, detector_of
from mfclip_cli.scoring.attribution import attribution_problem, fit_attribution
from mfclip_cli.scoring.inference import predict_outputs
from mfclip_cli.scoring.ood import fit_ood, ood_problem

FITTED_NAMES = {
    OOD_KEY: "out-of-distribution statistics",
    ATTRIBUTION_KEY: "label-set embeddings for attribution",
}  # in the warnings of train and calibrate


@dataclass
class FitOutcome:
    fitted: dict[str, Fitted] = field(default_factory=dict)  # keyed as checkpoint.FITTED
    refused: dict[str, str] = field(default_factory=dict)  # key: why it could not be fitted


def fittable(config: Any) -> tuple[str, ...]:
    """The statistics a detector (by its config) can carry: attribution needs MFCLIP's
    prompts."""
    if detector_of(config) == MFCLIP_DETECTOR:
        return (OOD_KEY, ATTRIBUTION_KEY)
    return (OOD_KEY,)


def fit_statistics(
    model: Detector,
    checkpoint: Path,
    root: Path,
    train: Sequence[Sample],
    val: Sequence[Sample],
    device: torch.device,
    *,
    wanted: Sequence[str],
    batch_size: int,
    workers: int,
    fitted_on: dict[str, Any],
    val_embeddings: np.ndarray | None = None,
) -> FitOutcome:
    """The ``wanted`` statistics (``ood``, ``attribution``) of the checkpoint at ``checkpoint``,
    whose inference model is ``model``; the embeddings of ``val`` may be given (calibrate has
    them). Attribution loads the checkpoint once more with its language encoder: the stored text
    embeddings are the trained encoder's own."""
    outcome = FitOutcome()
    problems = {
        OOD_KEY: ood_problem([sample.label for sample in train], len(val)),
        ATTRIBUTION_KEY: attribution_problem([sample.label_set for sample in train], val),
    }
    wanted = [key for key in wanted if key in fittable(model.config)]
    for key in wanted:
        if problems[key]:
            outcome.refused[key] = problems[key]
    todo = [key for key in wanted if not problems[key]]
    if not todo:
        return outcome

    def embed(samples: Sequence[Sample]) -> np.ndarray:
        _, embedded = predict_outputs(
            model, root, samples, device, batch_size=batch_size, workers=workers, embeddings=True
        )
        return embedded if embedded is not None else np.zeros((0, 1))

    if val_embeddings is None:
        val_embeddings = embed(val)
    if OOD_KEY in todo:
        statistics = fit_ood(
            embed(train), [s.label for s in train], val_embeddings, fitted_on=fitted_on
        )
        outcome.fitted[OOD_KEY] = statistics.fitted()
    if ATTRIBUTION_KEY in todo:
        with_language, _ = load_checkpoint(checkpoint, device)
        attributor = fit_attribution(
            with_language,
            [sample.label_set for sample in train],
            val,
            val_embeddings,
            fitted_on=fitted_on,
        )
        outcome.fitted[ATTRIBUTION_KEY] = attributor.fitted()
    return outcome
