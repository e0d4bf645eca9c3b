"""Scoring a dataset's faces with a detector: the one inference loop that eval, calibrate,
training's validation and the out-of-distribution fit share."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from mfclip_cli.data import Sample
from mfclip_cli.data.faceset import FaceImages, collate_faces
from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.model.detectors import Detector
from mfclip_cli.scoring.calibration import softmax
from mfclip_cli.scoring.fingerprints import FEATURES, face_fingerprints
from mfclip_cli.scoring.metrics import detection_metrics, video_metrics


class Outputs(NamedTuple):
    """What one pass over a dataset's faces gives, in sample order."""

    logits: np.ndarray  # [N, 3] class logits
    embeddings: np.ndarray | None  # [N, D] face embeddings, where asked for
    fingerprints: np.ndarray | None  # [N, F] generator fingerprints (fingerprints.py), if asked


def _face_batches(
    root: Path,
    samples: Sequence[Sample],
    crop_size: int,
    device: torch.device,
    batch_size: int,
    workers: int,
    perturbation: Perturbation | None,
    seed: int,
) -> torch.utils.data.DataLoader:
    """The samples' aligned faces in batches, each degraded by ``perturbation`` first."""
    images = FaceImages(
        root,
        [sample.path for sample in samples],
        crop_size,
        perturbation=perturbation,
        perturbation_seed=seed,
    )
    return torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_faces,
        pin_memory=device.type == "cuda",
    )


@torch.no_grad()
def predict_fingerprints(
    root: Path,
    samples: Sequence[Sample],
    crop_size: int,
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
    perturbation: Perturbation | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The generator fingerprints [N, F] of dataset samples alone: no model runs."""
    loader = _face_batches(
        root, samples, crop_size, device, batch_size, workers, perturbation, seed
    )
    rows = [face_fingerprints(faces.to(device)).cpu() for faces, _ in loader]
    return torch.cat(rows).numpy() if rows else np.zeros((0, FEATURES), np.float32)


@torch.no_grad()
def predict_outputs(
    model: Detector,
    root: Path,
    samples: Sequence[Sample],
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
    embeddings: bool = False,
    fingerprints: bool = False,
    perturbation: Perturbation | None = None,
    seed: int = 0,
    bf16: bool | None = None,
) -> Outputs:
    """Class logits [N, 3] of dataset samples (what calibration fits) and, with ``embeddings``,
    their face embeddings [N, D] from the same forward pass, with ``fingerprints`` the faces'
    generator fingerprints (None without); with bf16 autocast (``bf16``; None: on CUDA) or in the
    model's own precision. A ``perturbation`` degrades each face first (its noise seeded by
    ``seed``)."""
    model.eval()
    loader = _face_batches(
        root, samples, model.crop_size, device, batch_size, workers, perturbation, seed
    )
    results, vectors, prints = [], [], []
    autocast = device.type == "cuda" if bf16 is None else bf16
    for faces, _ in loader:
        faces = faces.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            embedded, logits = model.embed_and_classify(faces)
        results.append(logits.float().cpu())
        if embeddings:
            vectors.append(embedded.float().cpu())
        if fingerprints:
            prints.append(face_fingerprints(faces).cpu())
    logits = (
        torch.cat(results).numpy() if results else np.zeros((0, len(model.classes)), np.float32)
    )
    fingerprint_rows = torch.cat(prints).numpy() if prints else np.zeros((0, FEATURES), np.float32)
    return Outputs(
        logits,
        torch.cat(vectors).numpy() if vectors else None,
        fingerprint_rows if fingerprints else None,
    )


def predict(
    model: Detector,
    root: Path,
    samples: Sequence[Sample],
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
) -> np.ndarray:
    """Uncalibrated class probabilities [N, 3] of dataset samples (model selection in training)."""
    outputs = predict_outputs(model, root, samples, device, batch_size=batch_size, workers=workers)
    return softmax(outputs.logits)


def score_samples(samples: Sequence[Sample], probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Detection metrics of one set of samples, plus video-level ones when frames have video
    keys."""
    labels = [sample.label for sample in samples]
    result = detection_metrics(labels, probs, threshold=threshold)
    result["video"] = video_metrics([sample.video for sample in samples], labels, probs, threshold)
    return result
