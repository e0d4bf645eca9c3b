"""What a scan is asked to do: one frozen record, read by the scanner and its model stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from mfclip_cli.faces import MTCNN_THRESHOLDS
from mfclip_cli.faces.decode import DEFAULT_MAX_PIXELS
from mfclip_cli.provenance import ProvenanceOptions


@dataclass(frozen=True)
class ScanSettings:
    device: str = "auto"
    batch_size: int = 32  # faces per model batch
    # threads opening files ahead; 0: one per core on CPU, all cores but one (up to 16) on a GPU
    workers: int = 0
    min_face: int = 20  # pixels, in the upright full-resolution image
    detection_thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS
    # 0: detect at full resolution; N: on a copy no longer than N (faster, coarser)
    detect_max_side: int = 0
    fake_threshold: float = 0.5  # a face is fake when 1 - p(real) >= this
    # --fake-threshold fpr:X: the checkpoint's threshold for validation FPR X, set by run_scan
    fake_threshold_fpr: float | None = None
    # --accept-unsupported-fpr: use an fpr:X threshold its validation split cannot support
    accept_unsupported_fpr: bool = False
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
