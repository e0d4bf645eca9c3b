"""The scanner: inputs -> decode -> detect -> align -> classify -> per-file records.

Images are processed in chunks (detection batched per chunk, classification batched over all
faces of the chunk), so memory stays flat in the number of files while records still come out
one per input, in input order. A failure in one file never stops the run: it becomes that file's
error record.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from mfclip_cli.engines.runtime import (
    available_cores,
)
from mfclip_cli.engines.scan.duplicates import perceptual_hash
from mfclip_cli.engines.scan.evidence import HeldVideo, InputChanged, read_image
from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.records import (
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
    FaceEvidence,
    FaceRecord,
    FileRecord,
    verdict,
)
from mfclip_cli.engines.scan.stability import (
    STABILITY_PERTURBATIONS,
    reencoded_crops,
    stability_record,
)
from mfclip_cli.engines.scan.tracks import link_tracks, track_summaries
from mfclip_cli.faces.decode import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    VideoFrame,
    decode_image,
    is_video,
    sample_video,
)
from mfclip_cli.faces.detect import Detection
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch, FoundFaces
from mfclip_cli.model import Detector
from mfclip_cli.model.explain import explain as explain_faces
from mfclip_cli.provenance import ProvenanceOptions, ProvenanceRecord, inspect, inspect_video
from mfclip_cli.scoring.attribution import Attributor
from mfclip_cli.scoring.inconclusive import reasons as inconclusive_reasons
from mfclip_cli.scoring.ood import OodStatistics
from mfclip_cli.scoring.precision import BF16, Precision, default_precision


@dataclass(frozen=True)
class ScanSettings:
    device: str = "auto"
    batch_size: int = 32  # faces per model batch
    # images (or video frames) analysed together; 0: 8 on CPU, a model batch (<= 32) on a GPU
    chunk_images: int = 0
    # threads opening files ahead; 0: one per core on CPU, all cores but one (up to 16) on a GPU
    workers: int = 0
    min_face: int = 20  # pixels, in the upright full-resolution image
    detection_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    # 0: detect at full resolution; N: on a copy no longer than N (faster, coarser)
    detect_max_side: int = 0
    fake_threshold: float = 0.5  # a face is fake when 1 - p(real) >= this
    # --fake-threshold fpr:X: the checkpoint's threshold for validation FPR X, set by run_scan
    fake_threshold_fpr: float | None = None
    fps: float = 1.0
    frames: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # heatmaps and richest patches for --explain: one backward pass per model batch
    explain: bool = False
    # fp32, int8 or auto (int8 on a CPU where the checkpoint's parity allows): scoring/precision.py
    precision: str = "auto"
    # the provenance checks and their C2PA trust anchors; None: --no-provenance
    provenance: ProvenanceOptions | None = field(default_factory=ProvenanceOptions)
    # the inconclusive band (docs/verdicts.md); --no-inconclusive: every face keeps its label
    inconclusive: bool = True
    # --stability: each face scored again under STABILITY_PERTURBATIONS of its region
    stability: bool = False
    # --duplicates: each image's perceptual hash, for the report's near-duplicate groups
    duplicates: bool = False


class FoundFace(NamedTuple):
    detection: Detection
    probs: np.ndarray  # [3] calibrated class probabilities
    evidence: FaceEvidence | None = None  # with ScanSettings.explain
    richest_patch: list[int] | None = None  # with explain and a noise branch
    ood_distance: float | None = None  # where the checkpoint has OOD statistics
    # where the checkpoint stores label-set embeddings: the face record's ``attribution``
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
    attribution: Attributor | None = None  # its label-set embeddings, for each face's generator
    # the inconclusive band's threshold its calibration stores (None: none stored)
    uncertainty_threshold: float | None = None
    precision: Precision | None = None  # what ``model`` runs at; None: the device's default

    @property
    def geometry(self) -> tuple[int, float]:
        """The aligned crop it reads: (crop_size, margin)."""
        return self.model.crop_size, self.model.crop_margin


class Scanner:
    """Faces and their class probabilities for files, in input order, by one checkpoint or by
    several side by side."""

    def __init__(
        self,
        model: Detector | Sequence[Scorer],
        settings: ScanSettings,
        device: torch.device,
        temperature: float = 1.0,
        ood: OodStatistics | None = None,
        attribution: Attributor | None = None,
    ):
        """``model``: one checkpoint's detector, with its calibration ``temperature``, ``ood``
        statistics and ``attribution``; or the scorers of several, the primary first. Each face
        is detected once and aligned once per crop geometry the checkpoints read."""
        scorers = (
            model
            if isinstance(model, (list, tuple))
            else [Scorer(model, temperature, ood, attribution=attribution)]
        )
        # scanning never trains: fold LoRA in
        default = Precision("auto", default_precision(device), "the device's default")
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
        # On CPU each worker analyses whole images (or frames); on a GPU the workers only decode and
        # analysis is batched here on the device. Tests switch this to run the GPU layout on CPU.
        self.analyse_in_workers = device.type == "cpu"
        self.classes = self.primary.model.classes
        # On a GPU a chunk is one detection batch and, at a face or more per image, a full model
        # batch, up to 32 images: two chunks of decoded 24-megapixel photos are then 4.6 GB of
        # memory.
        gpu_chunk = min(max(8, settings.batch_size), 32)
        self.chunk_images = settings.chunk_images or (8 if device.type == "cpu" else gpu_chunk)
        (crop_size, margin), *more = dict.fromkeys(scorer.geometry for scorer in self.scorers)
        self.cropper = FaceCropper(
            FaceSearch(
                crop_size=crop_size,
                margin=margin,
                min_face=settings.min_face,
                thresholds=settings.detection_thresholds,
                detect_max_side=settings.detect_max_side,
                more_crops=tuple(more),
            ),
            device,
        )

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

    @staticmethod
    def _attributions(
        embeddings: torch.Tensor, distances: list[float | None], scorer: Scorer
    ) -> list[dict[str, Any] | None]:
        """Each face's attribution by ``scorer`` (None without stored label-set embeddings); a
        face out of distribution is of an unknown generator."""
        if scorer.attribution is None:
            return [None] * len(embeddings)
        threshold = None if scorer.ood is None else scorer.ood.threshold
        flags = [None if d is None else d > threshold for d in distances]
        result = scorer.attribution.attribute(embeddings.float().cpu().numpy(), flags)
        return [result.record(i) for i in range(len(embeddings))]

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
            probs = torch.softmax(logits.float() / scorer.temperature, dim=-1).cpu().numpy()
            distances = self._ood_distances(embeddings, scorer)
            attributions = self._attributions(embeddings, distances, scorer)
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
            pixels = (batch.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu()
            heatmaps = result.heatmaps.float().cpu().numpy()
            boxes = result.richest_patch.tolist() if result.richest_patch is not None else None
            distances = self._ood_distances(result.embeddings, scorer)
            attributions = self._attributions(result.embeddings, distances, scorer)
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
        real = self.classes.index("real")
        if 1.0 - probs[real] < self.fake_threshold(scorer):
            return "real"
        fakes = [i for i in range(len(self.classes)) if i != real]
        return self.classes[max(fakes, key=lambda i: probs[i])]

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

    def faces_of(self, images: Sequence[np.ndarray]) -> list[list[FoundFace]]:
        """Detect, align and classify (or explain) the faces of several RGB images: detected
        once, each checkpoint scoring its own crops of them (the primary, with --stability, its
        re-encoded crops too)."""
        found = self.cropper(images)
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
        """``scorer``'s verdict on ``face`` as ``records.verdict`` words it."""
        return verdict(
            dict(zip(self.classes, face.probs.tolist())),
            self.label(face.probs, scorer),
            face.ood_distance,
            None if scorer.ood is None else scorer.ood.threshold,
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

    def _face_records(self, found: list[FoundFace], start: int = 0, frame=None) -> list[FaceRecord]:
        records = []
        for i, face in enumerate(found):
            label = self.label(face.probs)
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
                # which generator made it is asked only of a face not labelled real
                attribution=None if label == "real" else face.attribution,
            )
            record.evidence, record.richest_patch = face.evidence, face.richest_patch
            record.stability = face.stability
            if self.settings.inconclusive:
                flips = None if face.stability is None else face.stability["flips"]
                threshold = self.primary.uncertainty_threshold
                record.mark_inconclusive(
                    inconclusive_reasons(record.uncertainty, threshold, record.ood, flips)
                )
            records.append(record)
        return records

    # -- files -------------------------------------------------------------------------------
    @property
    def smallest_face(self) -> float:
        """The smallest face searched for, in original pixels, wherever detection is at full
        resolution."""
        return self.cropper.detector.full_resolution_smallest_face

    def _note_smallest_face(self, record: FileRecord) -> None:
        """A file detected on a downscaled copy (``--detect-max-side``) says how small a face it
        could see."""
        smallest = self.cropper.detector.smallest_face(record.height, record.width)
        if smallest > self.smallest_face * (1 + 1e-9):
            record.smallest_face = math.ceil(smallest)

    def open_record(self, item: InputItem) -> FileRecord:
        """The record of one input, its bytes read once (``scan/evidence.py``): an image whole,
        hashed, to be decoded from the same buffer; a video held open by its descriptor and
        hashed through it. Its ``source`` holds what was read."""
        record = FileRecord(path=item.display)
        if item.error:
            return record.fail(item.error)
        try:
            if is_video(item.path):
                source = HeldVideo(item.path)
            else:
                source = read_image(item.path, self.settings.max_pixels)
        except DecodeError as error:
            return record.fail(str(error))
        except InputChanged as error:
            return record.changed(str(error))
        record.source, record.sha256, record.size = source, source.sha256, source.size
        return record

    def _finish_images(
        self, pending: list[tuple[FileRecord, np.ndarray | None, object]]
    ) -> Iterator[FileRecord]:
        """Records for decoded images, their faces found by the workers (CPU) or here in one batch
        (GPU)."""
        waiting = [
            i
            for i, (_, pixels, faces) in enumerate(pending)
            if pixels is not None and faces is None
        ]
        for i, faces in zip(
            waiting, _each_isolated(self.faces_of, [pending[i][1] for i in waiting])
        ):
            pending[i] = (pending[i][0], pending[i][1], faces)
        for record, pixels, faces in pending:
            if pixels is not None:
                if isinstance(faces, Exception):
                    record.fail(f"face analysis failed: {type(faces).__name__}: {faces}")
                else:
                    record.faces = self._face_records(faces)
                    record.status = STATUS_OK if faces else STATUS_NO_FACE
            yield record

    def _analysed_frames(
        self, frames: Iterator[VideoFrame]
    ) -> Iterator[tuple[VideoFrame, list[tuple[Detection, np.ndarray]]]]:
        """Each sampled frame with its classified faces, in frame order.

        On CPU the workers analyse one frame each, as they do images, while this thread decodes the
        next ones (at most two per worker ahead); on a GPU frames go to the device in chunks.
        """
        if not self.analyse_in_workers:
            while chunk := list(itertools.islice(frames, self.chunk_images)):
                yield from zip(chunk, self.faces_of([frame.pixels for frame in chunk]))
            return
        with self.worker_pool("frames") as pool:
            for frame, (found,) in _in_order_ahead(
                pool, lambda frame: self.faces_of([frame.pixels]), frames, 2 * self.workers
            ):
                yield frame, found

    def scan_video(self, path: Path, record: FileRecord) -> FileRecord:
        """The record of a video held open by ``open_record``: its frames decoded through the
        descriptor that was hashed, and an error without the hash when the file was written to
        between the hash and the last frame."""
        settings = self.settings
        video, record.source = record.source, None
        sampled, with_faces, indices = 0, 0, []
        with video:
            try:
                info, frames = sample_video(
                    video.decoder_path, fps=settings.fps, frames=settings.frames
                )
                record.format = f"{path.suffix.lstrip('.').upper()} ({info.codec})"
                record.width, record.height = info.width, info.height
                self._note_smallest_face(record)
                for frame, found in self._analysed_frames(frames):
                    sampled += 1
                    with_faces += bool(found)
                    indices.append(frame.index)
                    record.faces += self._face_records(found, start=len(record.faces), frame=frame)
            except DecodeError as error:
                record.fail(str(error))
            try:
                video.check_unchanged()
            except InputChanged as error:
                return record.changed(str(error))
        if record.status == STATUS_ERROR:
            return record
        if sampled == 0:
            return record.fail("video has no readable frames")
        probs = np.array(
            [[face.probs[name] for name in self.classes] for face in record.faces]
        ).reshape(-1, 3)
        record.video = {
            "fps": round(info.fps, 3),
            "frame_count": info.frame_count,
            "duration": round(info.duration, 3),
            "sampling": {"frames": settings.frames} if settings.frames else {"fps": settings.fps},
            "frames_sampled": sampled,
            "frames_with_faces": with_faces,
            "faces": len(record.faces),
            "mean": dict(zip(self.classes, np.round(probs.mean(0), 6).tolist()))
            if len(probs)
            else None,
            "max": dict(zip(self.classes, np.round(probs.max(0), 6).tolist()))
            if len(probs)
            else None,
        }
        link_tracks(record.faces, indices)
        record.video["tracks"] = track_summaries(record.faces, self.classes, self.label)
        record.status = STATUS_OK if record.faces else STATUS_NO_FACE
        return record

    def _open(self, item: InputItem, skip: Callable[[FileRecord], bool] | None):
        """Read, hash, decode and, on CPU, analyse one input (in a worker thread).

        Returns (record, pixels, the classified faces or the error that stopped them, or None when
        still to do), or None when ``skip`` says the input is done already.
        """
        record = self.open_record(item)
        if record.status == STATUS_ERROR:
            return record, None, None
        if skip is not None and skip(record):
            if isinstance(record.source, HeldVideo):
                record.source.close()
            return None
        if is_video(item.path):
            self._inspect_provenance(item.path, record, None)
            return record, None, None
        try:
            # the bytes just hashed, never the path again
            image = record.source.image = decode_image(record.source.data, self.settings.max_pixels)
        except DecodeError as error:
            self._inspect_provenance(item.path, record, None)
            return record.fail(str(error)), None, None
        self._inspect_provenance(item.path, record, image.pixels)
        record.format, record.width, record.height = image.format, image.width, image.height
        if self.settings.duplicates:
            record.phash = perceptual_hash(image.pixels)
        self._note_smallest_face(record)
        faces = (
            _each_isolated(self.faces_of, [image.pixels])[0] if self.analyse_in_workers else None
        )
        return record, image.pixels, faces

    def _inspect_provenance(self, path: Path, record: FileRecord, pixels: np.ndarray | None):
        """The file's own evidence of its origin, beside (never inside) the model's opinion."""
        options = self.settings.provenance
        if options is None:
            return
        source = record.source
        try:
            if isinstance(source, HeldVideo):
                # the file held open and hashed (streamed by the C2PA library, never held)
                with open(source.decoder_path, "rb") as stream:
                    record.provenance = inspect_video(stream, path.suffix, options)
            else:
                # the bytes the scan read once: those its SHA-256 names
                record.provenance = inspect(source.data, path.suffix, pixels, options)
        except OSError as error:
            record.provenance = ProvenanceRecord.failed(f"cannot read file: {error.strerror}")

    @property
    def workers(self) -> int:
        """On CPU one per core. On a GPU they only hash and decode, and the GPU target needs many of
        them (800 images/s of 1024 px JPEGs at 8-10 ms each is about 8 cores): all cores but the one
        that drives the GPU, up to 16, so the look-ahead stays within two chunks."""
        if self.settings.workers:
            return self.settings.workers
        cores = available_cores()
        return cores if self.analyse_in_workers else min(16, max(2, cores - 1))

    @contextlib.contextmanager
    def worker_pool(self, name: str) -> Iterator[ThreadPoolExecutor]:
        """``workers`` threads; those that analyse run one torch thread each, and this thread's
        count is restored after."""
        single = self.analyse_in_workers
        threads = torch.get_num_threads()
        pool = ThreadPoolExecutor(
            self.workers,
            thread_name_prefix=name,
            initializer=torch.set_num_threads if single else None,
            initargs=(1,) if single else (),
        )
        try:
            yield pool
        finally:
            # after an interruption, nothing more is started
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)

    def _opened(
        self, items: Iterable[InputItem], skip
    ) -> Iterator[tuple[InputItem, FileRecord, np.ndarray | None, object]]:
        """Inputs opened ahead by worker threads (``_open``), in input order, at most a chunk ahead.

        On CPU there is one worker per core, each running the whole per-image pipeline with one
        torch thread: MTCNN's small convolutions keep the cores busier that way than one image on
        every core, and no thread pool waits on another (on the 2-core CPU, with the model batched
        on a third thread, the model stage took 8x longer than alone). On a GPU the workers only
        hash and decode, and detection and the model are batched on the device. The bounded
        look-ahead keeps memory flat in the number of files.
        """
        # with the chunk being filled: at most two chunks in memory
        lookahead = max(self.chunk_images, 2 * self.workers)
        with self.worker_pool("open") as pool:
            for item, opened in _in_order_ahead(
                pool, lambda item: self._open(item, skip), items, lookahead
            ):
                if opened is not None:
                    yield item, *opened

    def scan(
        self, items: Iterable[InputItem], skip: Callable[[FileRecord], bool] | None = None
    ) -> Iterator[FileRecord]:
        pending: list[tuple[FileRecord, np.ndarray | None, object]] = []
        decoded = 0
        for item, record, pixels, found in self._opened(items, skip):
            if record.status != STATUS_ERROR and is_video(item.path):
                yield from self._finish_images(pending)
                pending, decoded = [], 0
                yield self.scan_video(item.path, record)
                continue
            pending.append((record, pixels, found))
            decoded += pixels is not None
            if decoded >= self.chunk_images:
                yield from self._finish_images(pending)
                pending, decoded = [], 0
        yield from self._finish_images(pending)


def _in_order_ahead(
    pool: ThreadPoolExecutor, function: Callable, items: Iterable, ahead: int
) -> Iterator[tuple]:
    """(item, ``function(item)``) on ``pool``, in input order, with at most ``ahead`` items
    submitted beyond the one being waited for: the workers stay busy and memory stays bounded."""
    queue: deque[tuple[object, Future]] = deque()
    for item in items:
        queue.append((item, pool.submit(function, item)))
        if len(queue) > ahead:
            first, future = queue.popleft()
            yield first, future.result()
    while queue:
        first, future = queue.popleft()
        yield first, future.result()


def _each_isolated(analyse: Callable[[list], list], items: list) -> list:
    """``analyse(items)``, or, when that fails, ``analyse([item])`` for each item with its error
    in its place.

    One file that breaks a batch must not cost the other files of the batch their results.
    """
    if not items:
        return []
    try:
        return list(analyse(items))
    except Exception:  # noqa: BLE001 - retried one by one below
        results = []
        for item in items:
            try:
                results.extend(analyse([item]))
            except Exception as error:  # noqa: BLE001 - reported in that file's record
                results.append(error)
        return results
