"""The model stage of a scan: aligned face crops -> each checkpoint's calibrated verdicts ->
face records.

It knows nothing of files: the scanner (``scanner.py``) decodes, detects and schedules, and hands
it the faces it found. With several ``--weights`` each checkpoint is a ``Scorer`` scoring its own
crops of the same detected faces; the first is the primary, whose label a face record carries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from mfclip_cli.engines.scan.records import FaceEvidence, FaceRecord, verdict
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.stability import (
    STABILITY_PERTURBATIONS,
    reencoded_crops,
    stability_record,
)
from mfclip_cli.errors import CheckpointError
from mfclip_cli.faces.decode import VideoFrame
from mfclip_cli.faces.detect import Detection
from mfclip_cli.faces.pipeline import FoundFaces
from mfclip_cli.model import Detector
from mfclip_cli.model.explain import explain as explain_faces
from mfclip_cli.scoring.attribution import Attributor
from mfclip_cli.scoring.fingerprints import face_fingerprints
from mfclip_cli.scoring.inconclusive import FIT_FAKE_THRESHOLD, Band, called_real_leaning_fake
from mfclip_cli.scoring.inconclusive import reasons as inconclusive_reasons
from mfclip_cli.scoring.metrics import verdict_labels
from mfclip_cli.scoring.ood import OodStatistics
from mfclip_cli.scoring.precision import BF16, Precision, device_default


class FoundFace(NamedTuple):
    detection: Detection
    probs: np.ndarray  # [3] calibrated class probabilities
    evidence: FaceEvidence | None = None  # with ScanSettings.explain
    richest_patch: list[int] | None = None  # with explain and a noise branch
    ood_distance: float | None = None  # where the checkpoint has OOD statistics
    # where the checkpoint stores generator fingerprints and the face is not labelled real: the
    # face record's ``attribution``, within the family of its label
    attribution: dict[str, Any] | None = None
    # with several checkpoints: the others' verdicts on this face (no detection), in their order
    compared: tuple[FoundFace, ...] = ()
    stability: dict[str, Any] | None = None  # with ScanSettings.stability: stability_record's


@dataclass(frozen=True)
class Scorer:
    """One checkpoint as a scan scores faces with it. ``scan --weights A --weights B`` runs
    several on the same detected faces, each on crops aligned for it, at its own calibration."""

    model: Detector
    temperature: float = 1.0  # its calibration: probs = softmax(logits / T)
    ood: OodStatistics | None = None  # its statistics, for each face's OOD flag
    fake_threshold: float | None = None  # its own (from fpr:X); None: the settings'
    weights: dict[str, Any] | None = None  # its weights record, naming it beside the others
    attribution: Attributor | None = None  # its generator model, for each face's generator
    # the inconclusive band its calibration stores (thresholds None: none stored)
    band: Band = Band()
    precision: Precision | None = None  # what ``model`` runs at; None: the device's default

    @property
    def geometry(self) -> tuple[int, float]:
        """The aligned crop it reads: (crop_size, margin)."""
        return self.model.crop_size, self.model.crop_margin


def _refuse_non_finite(probs: np.ndarray, scorer: Scorer) -> None:
    """A checkpoint whose probabilities are not finite numbers (weights that overflow, at a
    precision or on an input) stops the scan as a checkpoint fault, exit 1, as eval's does: a
    NaN face was reported with a leaning and an attribution read from NaN (audit R F1)."""
    if np.isfinite(probs).all():
        return
    name = (scorer.weights or {}).get("name", "the checkpoint")
    precision = scorer.precision.used if scorer.precision is not None else "fp32"
    raise CheckpointError(
        f"{name} gives probabilities that are not finite numbers (NaN or an infinity) at "
        f"precision {precision}: its weights may be damaged"
    )


class ModelStage:
    """Calibrated verdicts on aligned face crops by one checkpoint or several side by side."""

    def __init__(self, scorers: Sequence[Scorer], settings: ScanSettings, device: torch.device):
        # scanning never trains: fold LoRA in
        default = device_default(device)
        self.scorers = [
            replace(
                scorer,
                model=scorer.model.eval().to(device).merge_adapters(),
                precision=scorer.precision or default,
            )
            for scorer in scorers
        ]
        self.primary = self.scorers[0]
        self.settings = settings
        self.device = device
        self.classes = self.primary.model.classes

    @property
    def ood(self) -> OodStatistics | None:
        """The primary checkpoint's OOD statistics."""
        return self.primary.ood

    # -- model stage -------------------------------------------------------------------------
    def _batches(self, crops: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, len(crops), self.settings.batch_size):
            yield crops[start : start + self.settings.batch_size].to(self.device, non_blocking=True)

    @staticmethod
    def _ood_distances(embeddings: torch.Tensor, scorer: Scorer) -> list[float | None]:
        if scorer.ood is None:
            return [None] * len(embeddings)
        return scorer.ood.distances(embeddings.float().cpu().numpy()).tolist()

    def _attributions(
        self, faces: torch.Tensor, probs: np.ndarray, distances: list[float | None], scorer: Scorer
    ) -> list[dict[str, Any] | None]:
        """Each face's attribution by ``scorer`` from its fingerprint, among the generators of
        the family ``scorer`` labels it (an inconclusive face's leaning label: the band does not
        change it); None for a face labelled real, or without a stored generator model. A face
        out of distribution is of an unknown generator."""
        if scorer.attribution is None:
            return [None] * len(faces)
        threshold = None if scorer.ood is None else scorer.ood.threshold
        flags = [None if d is None else d > threshold for d in distances]
        families = [self.leaning_label(row, scorer) for row in probs]
        fingerprints = face_fingerprints(faces).cpu().numpy()
        result = scorer.attribution.attribute(fingerprints, families, flags)
        # which generator made it is asked only of a face not labelled real
        return [None if label == "real" else result.record(i) for i, label in enumerate(families)]

    @torch.no_grad()
    def classify(self, crops: torch.Tensor, scorer: Scorer | None = None) -> list[FoundFace]:
        """Class probabilities of aligned crops by ``scorer`` (the primary by default), and their
        OOD distances where it has statistics (``FoundFace`` without its detection), at the
        scorer's precision."""
        scorer = scorer or self.primary
        assert scorer.precision is not None  # set by __init__
        bf16 = scorer.precision.used == BF16
        found = []
        for batch in self._batches(crops):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                embeddings, logits = scorer.model.embed_and_classify(batch)
            # in float64, as eval's and calibration's: thresholds sit one float64 step above a
            # val face's score (scoring/metrics.threshold_at_fpr)
            probs = torch.softmax(logits.double() / scorer.temperature, dim=-1).cpu().numpy()
            _refuse_non_finite(probs, scorer)
            distances = self._ood_distances(embeddings, scorer)
            attributions = self._attributions(batch, probs, distances, scorer)
            for row, distance, attribution in zip(probs, distances, attributions):
                found.append(FoundFace(None, row, ood_distance=distance, attribution=attribution))
        return found

    def classify_with_evidence(self, crops: torch.Tensor) -> list[FoundFace]:
        """The primary's probabilities with the evidence behind them (``FoundFace`` without its
        detection): the same forward pass, plus one backward pass per batch."""
        scorer = self.primary
        assert scorer.precision is not None  # set by __init__: fp32, or bf16 on a GPU
        bf16 = scorer.precision.used == BF16
        found = []
        for batch in self._batches(crops):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                result = explain_faces(scorer.model, batch, scorer.temperature)
            probs = result.probs.cpu().numpy()
            _refuse_non_finite(probs, scorer)
            pixels = (batch.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu()
            heatmaps = result.heatmaps.float().cpu().numpy()
            boxes = result.richest_patch.tolist() if result.richest_patch is not None else None
            distances = self._ood_distances(result.embeddings, scorer)
            attributions = self._attributions(batch, probs, distances, scorer)
            for i in range(len(batch)):
                evidence = FaceEvidence(crop=pixels[i].numpy(), heatmap=heatmaps[i])
                patch = boxes[i] if boxes else None
                found.append(
                    FoundFace(None, probs[i], evidence, patch, distances[i], attributions[i])
                )
        return found

    def fake_threshold(self, scorer: Scorer | None = None) -> float:
        """``scorer``'s fake threshold (the primary's by default): its own, else the settings'."""
        threshold = (scorer or self.primary).fake_threshold
        return self.settings.fake_threshold if threshold is None else threshold

    def label(self, probs: np.ndarray, scorer: Scorer | None = None) -> str:
        """One face's label by ``scorer``'s threshold: the rule int8's parity check applies."""
        return self.classes[int(verdict_labels(probs[None], self.fake_threshold(scorer))[0])]

    def leaning_label(self, probs: np.ndarray, scorer: Scorer | None = None) -> str:
        """The label a face's probabilities stand for: ``label``'s, except for a face the band
        marks ``operating_point`` (a fake threshold above 0.5 calls it real, its call at 0.5 is
        fake), which leans to its call at 0.5: a face at p(gan) 0.83 under a threshold of 0.93
        leans gan, and is attributed within the gan family, not "leaning real"."""
        scorer = scorer or self.primary
        threshold = self.fake_threshold(scorer)
        marked = (
            self.settings.inconclusive
            and scorer is self.primary
            and scorer.band.threshold is not None
            and bool(called_real_leaning_fake(probs[None], threshold)[0])
        )
        fit = FIT_FAKE_THRESHOLD if marked else threshold
        return self.classes[int(verdict_labels(probs[None], fit)[0])]

    def _scored(self, scorer: Scorer, crops: list[torch.Tensor]) -> list[FoundFace]:
        """``scorer``'s verdicts on the faces of ``crops``; with --explain the primary's carry
        their evidence."""
        if not crops:
            return []
        if self.settings.explain and scorer is self.primary:
            return self.classify_with_evidence(torch.cat(crops))
        return self.classify(torch.cat(crops), scorer)

    def _scored_with_stability(
        self, crops: list[torch.Tensor], images: list[tuple[np.ndarray, FoundFaces]]
    ) -> list[FoundFace]:
        """The primary's verdicts on the faces of ``crops``, each with its ``stability``: the
        re-encoded crops of ``images`` (pixels, faces) scored in the same model batches (apart,
        with --explain: they need no heatmap)."""
        scorer, count, device = self.primary, len(STABILITY_PERTURBATIONS), self.device
        size, margin = scorer.geometry
        variants = [
            reencoded_crops(pixels, [d.landmarks for d in found.detections], size, margin, device)
            for pixels, found in images
        ]
        faces = sum(len(crop) for crop in crops)
        if self.settings.explain:
            clean = self._scored(scorer, crops)
            shaken = self.classify(torch.cat(variants), scorer) if faces else []
        else:
            both = self._scored(scorer, crops + variants)
            clean, shaken = both[:faces], both[faces:]
        real = self.classes.index("real")
        return [
            face._replace(
                stability=stability_record(
                    face.probs,
                    [other.probs for other in shaken[i * count : (i + 1) * count]],
                    lambda probs: self.label(probs, scorer),
                    real_index=real,
                )
            )
            for i, face in enumerate(clean)
        ]

    def score(self, images: Sequence[np.ndarray], found: list[FoundFaces]) -> list[list[FoundFace]]:
        """The verdicts on the faces ``found`` in ``images`` (one list per image, in detection
        order): each checkpoint scores its own crops of them (the primary, with --stability, its
        re-encoded crops too)."""
        with_faces = [faces for faces in found if faces.detections]
        verdicts = [
            self._scored_with_stability(
                [faces.crops_at(scorer.geometry) for faces in with_faces],
                [(pixels, faces) for pixels, faces in zip(images, found) if faces.detections],
            )
            if self.settings.stability and scorer is self.primary
            else self._scored(scorer, [faces.crops_at(scorer.geometry) for faces in with_faces])
            for scorer in self.scorers
        ]
        scored = [face._replace(compared=tuple(others)) for face, *others in zip(*verdicts)]
        results, offset = [], 0
        for faces in found:
            count = len(faces.detections)
            results.append(
                [
                    face._replace(detection=detection)
                    for detection, face in zip(faces.detections, scored[offset : offset + count])
                ]
            )
            offset += count
        return results

    def _verdict(self, scorer: Scorer, face: FoundFace) -> dict[str, Any]:
        """``scorer``'s verdict on ``face`` as ``records.verdict`` words it: the label its face
        record holds or leans to (the primary's entry said "real" beside a face inconclusive and
        leaning gan at the operating point: audit Q L1), its uncertainty by the primary's
        measure (the one meta.verdicts names)."""
        return verdict(
            dict(zip(self.classes, face.probs.tolist())),
            self.leaning_label(face.probs, scorer),
            face.ood_distance,
            None if scorer.ood is None else scorer.ood.threshold,
            self.primary.band.measure,  # side by side, every entry's uncertainty alike
        )

    def _detectors(self, face: FoundFace) -> list[dict[str, Any]] | None:
        """With several checkpoints, each one's verdict on ``face``, named, in their order."""
        if len(self.scorers) == 1:
            return None
        entries = []
        for scorer, found in zip(self.scorers, (face, *face.compared)):
            weights = scorer.weights or {}
            named = {"weights": weights.get("name"), "sha256": weights.get("sha256")}
            said = self._verdict(scorer, found)
            entries.append({**named, **{key: v for key, v in said.items() if v is not None}})
        return entries

    def face_records(
        self, found: list[FoundFace], start: int = 0, frame: VideoFrame | None = None
    ) -> list[FaceRecord]:
        """The records of one image's (or frame's) faces, numbered from ``start``, each with
        the primary's label and, with the band on, why it is inconclusive."""
        records = []
        for i, face in enumerate(found):
            # its label at the threshold, or, where the band will mark it operating_point
            # (inconclusive), the fake label it leans to, which mark_inconclusive keeps
            label = self.leaning_label(face.probs)
            record = FaceRecord.create(
                index=start + i,
                box=face.detection.box,
                landmarks=face.detection.landmarks,
                det_score=face.detection.score,
                probs=dict(zip(self.classes, face.probs.tolist())),
                label=label,
                frame=None if frame is None else frame.index,
                timestamp=None if frame is None else frame.timestamp,
                ood_distance=face.ood_distance,
                ood_threshold=None if self.ood is None else self.ood.threshold,
                detectors=self._detectors(face),
                attribution=face.attribution,  # of its label's family, as ``label`` gives it
                measure=self.primary.band.measure,
            )
            record.evidence, record.richest_patch = face.evidence, face.richest_patch
            record.stability = face.stability
            if self.settings.inconclusive:
                flips = None if face.stability is None else face.stability["flips"]
                band = self.primary.band
                off_call = called_real_leaning_fake(face.probs[None], self.fake_threshold())[0]
                record.mark_inconclusive(
                    inconclusive_reasons(
                        record.uncertainty, band.threshold, record.ood, flips, off_call
                    )
                )
                record.family_uncertain = band.family_uncertain(record.family_uncertainty)
            records.append(record)
        return records
