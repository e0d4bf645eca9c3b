"""What a trained checkpoint carries besides its weights, fitted on a protocol's train and val
splits: the out-of-distribution statistics (``scoring/ood.py``), the generator fingerprints for
attribution (``scoring/attribution.py``) and the int8 model's own calibration and parity with
fp32 (``scoring/precision.py``). The end of training and ``mfclip calibrate`` both fit them here,
from passes over the splits (``inference.py``); the numerics they fit live in ``scoring``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch

from mfclip_cli.data.perturb import parse_perturbations
from mfclip_cli.data.protocols import Splits
from mfclip_cli.data.samples import Sample, Unreadable
from mfclip_cli.engines.inference import (
    FaceSource,
    Fingerprints,
    Outputs,
    predict_fingerprints,
    predict_outputs,
    require_all_read,
)
from mfclip_cli.model.checkpoint import ATTRIBUTION_KEY, OOD_KEY, Fitted
from mfclip_cli.model.detectors import Detector
from mfclip_cli.model.quantize import quantize_int8
from mfclip_cli.scoring.attribution import (
    LAUNDERING,
    attribution_problem,
    fit_attribution,
    fit_sample,
)
from mfclip_cli.scoring.calibration import fit_calibration
from mfclip_cli.scoring.inconclusive import TARGET_ACCURACY
from mfclip_cli.scoring.ood import OodStatistics, fit_ood, ood_problem
from mfclip_cli.scoring.precision import measure_parity

FITTED_NAMES = {
    OOD_KEY: "out-of-distribution statistics",
    ATTRIBUTION_KEY: "generator fingerprints for attribution",
}  # in the warnings of train and calibrate; every detector's checkpoint can carry both


def protocol_fitted_on(splits: Splits) -> dict[str, Any]:
    """The protocol a fit was made under, as its ``fitted_on`` records it (training's and
    calibrate's alike): by name, and whole with the values it held out, so that eval can
    recompute the splits fitted on (``held_out.calibration_overlap``)."""
    return {
        "protocol": splits.protocol.name,
        "protocol_definition": splits.protocol.to_dict(),
        "held_out": list(splits.held_out),
    }


@dataclass
class FitOutcome:
    fitted: dict[str, Fitted] = field(default_factory=dict)  # keyed as checkpoint.FITTED
    ood: OodStatistics | None = None  # the OOD statistics fitted, as scans apply them
    refused: dict[str, str] = field(default_factory=dict)  # key: why it could not be fitted
    # the samples left out of the fits because they could not be read, by path
    unreadable: dict[str, Unreadable] = field(default_factory=dict)


def fit_statistics(
    model: Detector,
    source: FaceSource,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    wanted: Sequence[str],
    fitted_on: dict[str, Any],
    val_embeddings: np.ndarray | None = None,
) -> FitOutcome:
    """The ``wanted`` statistics (``ood``, ``attribution``) of the inference ``model``; the
    embeddings of ``val`` may be given (calibrate has them)."""
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

    def embeddings(samples: Sequence[Sample]) -> tuple[np.ndarray, list[Sample]]:
        """The readable samples' embeddings, and those samples."""
        outputs = predict_outputs(model, source, samples, embeddings=True)
        outcome.unreadable.update((missing.path, missing) for missing in outputs.unreadable)
        embedded = outputs.embeddings
        return (embedded if embedded is not None else np.zeros((0, 1))), outputs.samples

    if OOD_KEY in todo:
        train_rows, train_scored = embeddings(train)
        outcome.ood = fit_ood(
            train_rows,
            [s.label for s in train_scored],
            val_embeddings if val_embeddings is not None else embeddings(val)[0],
            fitted_on=fitted_on,
        )
        outcome.fitted[OOD_KEY] = outcome.ood.fitted()
    if ATTRIBUTION_KEY in todo:
        outcome.fitted[ATTRIBUTION_KEY], missing = _fit_generator_model(
            model.crop_size, source, train, val, fitted_on=fitted_on
        )
        outcome.unreadable.update((sample.path, sample) for sample in missing)
    return outcome


def _fit_generator_model(
    crop_size: int,
    source: FaceSource,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    fitted_on: dict[str, Any],
) -> tuple[Fitted, list[Unreadable]]:
    """Attribution's generator model from the fakes ``fit_sample`` takes of each split, each
    face's fingerprint read as stored and under every ``LAUNDERING`` (no model runs), and the
    samples left out of it because they could not be read."""
    train_sample = [train[i] for i in fit_sample(train)]
    val_sample = [val[i] for i in fit_sample(val, {sample.generator for sample in train_sample})]

    def fingerprints(samples: Sequence[Sample], perturbation: str | None) -> Fingerprints:
        (degraded,) = parse_perturbations([perturbation]) if perturbation else (None,)
        return predict_fingerprints(source, samples, crop_size, perturbation=degraded)

    # the stored faces first: a sample that cannot be read is left out of every view
    stored_train, train_sample, missing_train = fingerprints(train_sample, None)
    stored_val, val_sample, missing_val = fingerprints(val_sample, None)

    def views(perturbation: str) -> tuple[np.ndarray, np.ndarray]:
        passes = fingerprints(train_sample, perturbation), fingerprints(val_sample, perturbation)
        for laundered in passes:  # the rows must pair with the stored faces'
            require_all_read(laundered, source.root)
        return passes[0].rows, passes[1].rows

    attributor = fit_attribution(
        train_sample,
        stored_train,
        val_sample,
        stored_val,
        fitted_on=fitted_on,
        laundered={name: views(name) for name in LAUNDERING},
    )
    return attributor.fitted(), missing_train + missing_val


def fit_int8_calibration(
    model: Detector,
    source: FaceSource,
    samples: Sequence[Sample],
    *,
    fp32_outputs: Outputs | None,
    fp32_fit: dict[str, Any],
    fitted_on: dict[str, Any],
    ood: OodStatistics | None = None,
    target_accuracy: float = TARGET_ACCURACY,
) -> dict[str, Any]:
    """The int8 entry of a checkpoint's calibration: the int8 model's own temperature and
    thresholds and band on the validation ``samples``, what was quantized, and its parity with
    the fp32 model at its own fit ``fp32_fit`` (temperature, thresholds, band), and with ``ood``
    (the statistics scans apply to either model's embeddings) the OOD flags of both.

    ``fp32_outputs`` are the fp32 model's on ``samples`` (with embeddings where ``ood`` is
    given) where the caller has them (None on a GPU, whose logits are bf16: they are computed
    here with autocast off, and a sample that cannot be read is left out); the int8 model runs
    on the CPU, the only place its kernels exist.
    """
    embeddings = ood is not None
    if fp32_outputs is None:
        fp32_outputs = predict_outputs(model, source, samples, embeddings=embeddings, bf16=False)
        samples = fp32_outputs.samples
    quantized, summary = quantize_int8(model)
    int8 = predict_outputs(
        quantized, replace(source, device=torch.device("cpu")), samples, embeddings=embeddings
    )
    require_all_read(int8, source.root)
    labels = [sample.label for sample in samples]
    record = fit_calibration(
        int8.logits, labels, fitted_on=fitted_on, target_accuracy=target_accuracy
    )
    record["quantization"] = summary.record()
    flags = None
    if ood is not None:
        flags = tuple(
            ood.flags(ood.distances(outputs.embeddings)) for outputs in (fp32_outputs, int8)
        )
    record["parity"] = measure_parity(
        fp32_outputs.logits, int8.logits, labels, fp32_fit, record, ood_flags=flags
    )
    return record
