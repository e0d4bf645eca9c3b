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

from mfclip_cli.data.perturb import parse_perturbations
from mfclip_cli.data.samples import Sample
from mfclip_cli.model.checkpoint import ATTRIBUTION_KEY, OOD_KEY, Fitted
from mfclip_cli.model.detectors import Detector
from mfclip_cli.scoring.attribution import (
    LAUNDERING,
    attribution_problem,
    fit_attribution,
    fit_sample,
)
from mfclip_cli.scoring.inference import Outputs, predict_fingerprints, predict_outputs
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
        outcome.fitted[ATTRIBUTION_KEY] = _fit_generator_model(
            model,
            root,
            device,
            (train, _rows(train_outputs.fingerprints)),
            (val, _rows(val_outputs.fingerprints)),
            batch_size=batch_size,
            workers=workers,
            fitted_on=fitted_on,
        )
    return outcome


def _fit_generator_model(
    model: Detector,
    root: Path,
    device: torch.device,
    train: tuple[Sequence[Sample], np.ndarray],
    val: tuple[Sequence[Sample], np.ndarray],
    *,
    batch_size: int,
    workers: int,
    fitted_on: dict[str, Any],
) -> Fitted:
    """Attribution's generator model from the fakes ``fit_sample`` takes of each split (given
    with their fingerprints as stored), each face read again under every ``LAUNDERING``."""
    train_at = fit_sample(train[0])
    val_at = fit_sample(val[0], {train[0][i].generator for i in train_at})
    fitting = [train[0][i] for i in train_at], [val[0][i] for i in val_at]

    def laundered(name: str) -> tuple[np.ndarray, np.ndarray]:
        (perturbation,) = parse_perturbations([name])
        train_rows, val_rows = (
            predict_fingerprints(
                root,
                samples,
                model.crop_size,
                device,
                batch_size=batch_size,
                workers=workers,
                perturbation=perturbation,
            )
            for samples in fitting
        )
        return train_rows, val_rows

    attributor = fit_attribution(
        fitting[0],
        train[1][train_at],
        fitting[1],
        val[1][val_at],
        fitted_on=fitted_on,
        laundered={name: laundered(name) for name in LAUNDERING},
    )
    return attributor.fitted()


def _rows(values: np.ndarray | None) -> np.ndarray:
    return values if values is not None else np.zeros((0, 1))
