"""Out-of-distribution flag: is a face's embedding far from everything its checkpoint trained on?

A face the detector has never seen the like of (another camera pipeline, a generator family of
a new kind, a drawing) gets probabilities as confident as any other: the softmax cannot say "I
do not know". The flag rests instead on where the face embedding (the vision encoder's output
that the 3-way head reads) lies: its Mahalanobis distance to the nearest class mean of the
training embeddings, under one covariance shared by the classes (Lee et al., NeurIPS 2018),

    d(x) = min_c sqrt((x - mu_c)^T P (x - mu_c)),

where P is the inverse of the within-class covariance, estimated with Ledoit-Wolf shrinkage
(scikit-learn) because a training set can hold fewer faces than the embedding has dimensions. A
face is flagged when d exceeds the 99th percentile of the validation faces' distances, so about
1 % of faces like the validation split's are flagged by chance.

The means [C, D] and the precision [D, D] travel as tensors in the checkpoint (a header is too
small for them), the rest (threshold, classes, shrinkage, what it was fitted on) as its ``ood``
record; both are covered by the checkpoint's SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from mfclip_cli.errors import CheckpointError
from mfclip_cli.labels import CLASS_NAMES
from mfclip_cli.model.checkpoint import (
    OOD_TENSOR_PREFIX,
    CheckpointInfo,
    Fitted,
    read_fitted_tensors,
)
from mfclip_cli.timestamps import utc_now

OOD_QUANTILE = 0.99
MEANS, PRECISION = f"{OOD_TENSOR_PREFIX}class_means", f"{OOD_TENSOR_PREFIX}precision"
_ROWS_PER_CHUNK = 4096  # bounds the [rows, C, D] differences a distance computation holds


@dataclass
class OodStatistics:
    """The training embeddings' class means and shared precision, and the flag's threshold."""

    class_means: np.ndarray  # [C, D] float64, one row per class in record["classes"]
    precision: np.ndarray  # [D, D] float64
    record: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.record["threshold"])

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """[N] Mahalanobis distance of each embedding [N, D] to its nearest class mean."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.precision.shape[0]:
            raise CheckpointError(  # the checkpoint's fault, not the face's: the scan stops
                f"embeddings of shape {embeddings.shape} do not match the checkpoint's "
                f"{self.precision.shape[0]}-dimensional OOD statistics"
            )
        parts = []
        for start in range(0, len(embeddings), _ROWS_PER_CHUNK):
            chunk = embeddings[start : start + _ROWS_PER_CHUNK]
            diff = chunk[:, None, :] - self.class_means[None, :, :]  # [n, C, D]
            squared = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
            parts.append(np.sqrt(np.clip(squared, 0.0, None)).min(axis=1))
        return np.concatenate(parts) if parts else np.zeros(0)

    def flags(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.threshold

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            MEANS: torch.from_numpy(np.ascontiguousarray(self.class_means)),
            PRECISION: torch.from_numpy(np.ascontiguousarray(self.precision)),
        }

    def fitted(self) -> Fitted:
        """What a checkpoint stores of it (``save_fitted``)."""
        return Fitted(self.record, self.tensors())


def ood_problem(train_labels: Sequence[str], val_count: int) -> str | None:
    """Why these splits cannot give OOD statistics, or None."""
    if len(train_labels) < 2:
        return f"the training split holds {len(train_labels)} face(s); the covariance needs two"
    if len(set(train_labels)) == len(train_labels):
        return "no class has two training faces: a within-class covariance needs them"
    if val_count == 0:
        return "the validation split is empty: the threshold is its 99th percentile"
    return None


def fit_ood(
    train_embeddings: np.ndarray,
    train_labels: Sequence[str],
    val_embeddings: np.ndarray,
    *,
    fitted_on: dict[str, Any],
) -> OodStatistics:
    """Class means and shrunk shared precision from the training embeddings [N, D]; the threshold
    at the 99th percentile of the validation embeddings' distances. Raises ValueError for splits
    ``ood_problem`` refuses."""
    from sklearn.covariance import LedoitWolf  # imported here: training and calibrate only

    problem = ood_problem(train_labels, len(val_embeddings))
    if problem:
        raise ValueError(problem)
    train = np.asarray(train_embeddings, dtype=np.float64)
    labels = np.asarray(train_labels)
    classes = [name for name in CLASS_NAMES if np.any(labels == name)]
    means = np.stack([train[labels == name].mean(axis=0) for name in classes])
    residuals = train - means[[classes.index(label) for label in labels]]
    estimate = LedoitWolf(assume_centered=True).fit(residuals)
    precision = np.linalg.pinv(estimate.covariance_, hermitian=True)
    statistics = OodStatistics(means, precision, {})
    val = statistics.distances(val_embeddings)
    threshold = float(np.quantile(val, OOD_QUANTILE))
    statistics.record = {
        "method": "Mahalanobis distance to the nearest class mean, shared covariance "
        "(Ledoit-Wolf shrinkage)",
        "embedding": "vision encoder output (the head's input)",
        "classes": classes,
        "dimensions": int(train.shape[1]),
        "shrinkage": float(estimate.shrinkage_),
        "quantile": OOD_QUANTILE,
        "threshold": threshold,
        "val_flagged": float(np.mean(val > threshold)),
        "fitted_on": {**fitted_on, "train_samples": len(train), "val_samples": len(val)},
        "fitted_utc": utc_now(),
    }
    return statistics


def ood_of(info: CheckpointInfo) -> OodStatistics | None:
    """A checkpoint's OOD statistics, or None where it has none."""
    if not info.ood:
        return None
    tensors = read_fitted_tensors(info.path, OOD_TENSOR_PREFIX)
    means, precision = tensors.get(MEANS), tensors.get(PRECISION)
    if (
        means is None
        or precision is None
        or means.ndim != 2
        or tuple(precision.shape) != (means.shape[1], means.shape[1])
    ):
        raise CheckpointError(
            f"{info.path}: its OOD statistics' tensors {MEANS} and {PRECISION} are missing or "
            "of shapes that do not fit together: the file was altered"
        )
    return OodStatistics(means.double().numpy(), precision.double().numpy(), info.ood)


def ood_summary(statistics: OodStatistics | None) -> dict[str, Any]:
    """What a scan's meta says about the flag."""
    if statistics is None:
        return {"available": False}
    record = statistics.record
    return {
        "available": True,
        "threshold": record["threshold"],
        "quantile": record["quantile"],
        "fitted_on": record["fitted_on"],
    }
