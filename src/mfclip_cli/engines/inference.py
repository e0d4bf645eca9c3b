"""Scoring a dataset's faces with a detector: the one inference loop that eval, calibrate,
training's validation and the out-of-distribution fit share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from rich.markup import escape

from mfclip_cli.data import DataError, DataIndex, Sample, Unreadable
from mfclip_cli.data.faceset import FaceImages, collate_faces
from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.data.samples import prepared_geometry
from mfclip_cli.files import shown
from mfclip_cli.model.detectors import Detector
from mfclip_cli.scoring.fingerprints import FEATURES, face_fingerprints
from mfclip_cli.scoring.metrics import detection_metrics, video_metrics


class Outputs(NamedTuple):
    """What one pass over a dataset's faces gives: a row per readable sample, in ``samples``'
    order; the samples whose images could not be decoded are left out, in ``unreadable``."""

    logits: np.ndarray  # [N, 3] class logits
    embeddings: np.ndarray | None  # [N, D] face embeddings, where asked for
    fingerprints: np.ndarray | None  # [N, F] generator fingerprints (fingerprints.py), if asked
    samples: list[Sample]  # the N samples scored
    unreadable: list[Unreadable]  # the others


class Fingerprints(NamedTuple):
    """The generator fingerprints of one pass, a row per readable sample as in ``Outputs``."""

    rows: np.ndarray  # [N, F]
    samples: list[Sample]
    unreadable: list[Unreadable]


@dataclass(frozen=True)
class FaceSource:
    """Where a pass over a dataset reads its faces and how: the dataset's root folder, the
    device the batches go to, their size and the loader's worker processes."""

    root: Path
    device: torch.device
    batch_size: int = 64
    workers: int = 0


def _readable_batches(
    source: FaceSource,
    samples: Sequence[Sample],
    crop_size: int,
    perturbation: Perturbation | None,
    seed: int,
    unreadable: list[Unreadable],
) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """The samples' faces, each degraded by ``perturbation`` first, in batches on the source's
    device with their sample indices; the samples that cannot be read are added to
    ``unreadable``."""
    images = FaceImages(
        source.root,
        [sample.path for sample in samples],
        crop_size,
        perturbation=perturbation,
        perturbation_seed=seed,
    )
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=source.batch_size,
        num_workers=source.workers,
        collate_fn=collate_faces,
        pin_memory=source.device.type == "cuda",
        generator=torch.Generator(),  # not torch's global one: training's validation, resumed
    )
    for batch in loader:
        unreadable.extend(batch.unreadable)
        if batch.indices:
            yield batch.faces.to(source.device, non_blocking=True), batch.indices


@torch.no_grad()
def predict_fingerprints(
    source: FaceSource,
    samples: Sequence[Sample],
    crop_size: int,
    *,
    perturbation: Perturbation | None = None,
    seed: int = 0,
) -> Fingerprints:
    """The generator fingerprints [N, F] of the readable dataset samples: no model runs."""
    rows, scored, unreadable = [], [], []
    for faces, indices in _readable_batches(
        source, samples, crop_size, perturbation, seed, unreadable
    ):
        rows.append(face_fingerprints(faces).cpu())
        scored.extend(samples[i] for i in indices)
    return Fingerprints(
        torch.cat(rows).numpy() if rows else np.zeros((0, FEATURES), np.float32),
        scored,
        unreadable,
    )


@torch.no_grad()
def predict_outputs(
    model: Detector,
    source: FaceSource,
    samples: Sequence[Sample],
    *,
    embeddings: bool = False,
    fingerprints: bool = False,
    perturbation: Perturbation | None = None,
    seed: int = 0,
    bf16: bool | None = None,
) -> Outputs:
    """Class logits [N, 3] of the readable dataset samples (what calibration fits) and, with
    ``embeddings``, their face embeddings [N, D] from the same forward pass, with ``fingerprints``
    the faces' generator fingerprints (None without); with bf16 autocast (``bf16``; None: on
    CUDA) or in the model's own precision. A ``perturbation`` degrades each face first (its noise
    seeded by ``seed``)."""
    model.eval()
    results, vectors, prints, scored, unreadable = [], [], [], [], []
    autocast = source.device.type == "cuda" if bf16 is None else bf16
    for faces, indices in _readable_batches(
        source, samples, model.crop_size, perturbation, seed, unreadable
    ):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            embedded, logits = model.embed_and_classify(faces)
        results.append(logits.float().cpu())
        if embeddings:
            vectors.append(embedded.float().cpu())
        if fingerprints:
            prints.append(face_fingerprints(faces).cpu())
        scored.extend(samples[i] for i in indices)
    logits = (
        torch.cat(results).numpy() if results else np.zeros((0, len(model.classes)), np.float32)
    )
    fingerprint_rows = torch.cat(prints).numpy() if prints else np.zeros((0, FEATURES), np.float32)
    return Outputs(
        logits,
        torch.cat(vectors).numpy() if vectors else None,
        fingerprint_rows if fingerprints else None,
        scored,
        unreadable,
    )


def require_all_read(outputs: Outputs | Fingerprints, root: Path) -> None:
    """Refuse a pass over samples read a moment ago where one could no longer be read: its rows
    would no longer pair with the earlier pass's."""
    if outputs.unreadable:
        missing = outputs.unreadable[0]
        raise DataError(
            f"{root / missing.path}: {missing.error} (it was read a moment ago: did the dataset "
            "change while it was scored?)"
        )


def crop_mismatch_warning(index: DataIndex, detector: Detector, name: str) -> str | None:
    """Words for the ``--data`` folders whose crops ``mfclip prepare`` made for another crop size
    or margin than ``detector`` reads (None where there are none): the loader resizes them
    without a word, so the model is trained or scored on other pixels than scan gives it (which
    aligns each face at the model's own size and margin). Folders prepare did not write are not
    known to be face crops of any geometry and are not said."""
    wanted = (detector.crop_size, float(detector.crop_margin))
    roots = [source.root for source in index.sources] or [index.root]
    other = [
        f"{shown(str(root))} ({size} px, margin {margin:g})"
        for root in roots
        if (prepared := prepared_geometry(root)) is not None and prepared != wanted
        for size, margin in [prepared]
    ]
    if not other:
        return None
    return (
        f"[bold yellow]warning:[/] the faces of {escape(', '.join(other))} were prepared for "
        f"another model than {escape(name)}, which reads {wanted[0]} px crops aligned at margin "
        f"{wanted[1]:g}: they are resized as they are read, so it meets other pixels here than "
        "scan gives it. Prepare them again with its config (mfclip prepare SOURCE --out NEW "
        "--config ...)"
    )


def untested_warning(values: Sequence[str], protocol: str) -> str:
    """Words for held-out values the test split has no sample of (``Splits.untested_held_out``)."""
    return (
        f"[bold yellow]warning:[/] protocol {escape(protocol)} holds out "
        f"{escape(', '.join(values))} from training, but the test split has none of it (no "
        "sample in its publisher's test folders): it is neither trained on nor tested"
    )


def unreadable_warning(split: str, missing: Unreadable, fate: str) -> str:
    """The stderr line for a ``split`` sample that cannot be read and its ``fate`` (rich markup,
    the name shown inertly)."""
    return (
        f"[bold yellow]warning:[/] {split} sample {escape(shown(missing.path))} cannot be read "
        f"({escape(missing.error)}); {fate}"
    )


def score_samples(samples: Sequence[Sample], probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Detection metrics of one set of samples, plus video-level ones when frames have video
    keys."""
    labels = [sample.label for sample in samples]
    result = detection_metrics(labels, probs, threshold=threshold)
    result["video"] = video_metrics([sample.video for sample in samples], labels, probs, threshold)
    return result
