"""Detect-then-align: the part of the face pipeline that scan and prepare share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mfclip_cli.faces import MTCNN_THRESHOLDS
from mfclip_cli.faces.align import align_faces
from mfclip_cli.faces.detect import Detection, FaceDetector


@dataclass(frozen=True)
class FaceSearch:
    """What counts as a face and how it is cropped."""

    crop_size: int
    margin: float
    min_face: int = 20  # pixels, in the upright full-resolution image
    thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS
    # 0: detect at full resolution; N: on a copy no longer than N (faster, coarser)
    detect_max_side: int = 0
    # further (crop_size, margin) each face is aligned at too: checkpoints that read differently
    # aligned faces share one detection
    more_crops: tuple[tuple[int, float], ...] = ()


@dataclass
class FoundFaces:
    detections: list[Detection]
    # the faces [F, 3, crop, crop] in [0, 1], on the cropper's device, at every geometry searched
    # by (crop_size, margin): the search's own first, then its ``more_crops``
    aligned: dict[tuple[int, float], torch.Tensor]

    @property
    def crops(self) -> torch.Tensor:
        """The faces at the search's own crop size and margin."""
        return next(iter(self.aligned.values()))

    def crops_at(self, geometry: tuple[int, float]) -> torch.Tensor:
        """The faces aligned at ``geometry`` (crop_size, margin), one the search named."""
        return self.aligned[geometry]


class FaceCropper:
    """Every face of a batch of upright RGB uint8 images, detected together and aligned together,
    once per crop geometry the search names."""

    def __init__(self, search: FaceSearch, device: torch.device | str = "cpu"):
        self.search = search
        self.device = torch.device(device)
        self.detector = FaceDetector(
            self.device,
            min_face_size=search.min_face,
            thresholds=search.thresholds,
            max_side=search.detect_max_side,
        )

    def __call__(self, images: Sequence[np.ndarray]) -> list[FoundFaces]:
        results = []
        main = (self.search.crop_size, self.search.margin)
        geometries = dict.fromkeys((main, *self.search.more_crops))
        for pixels, found in zip(images, self.detector.detect(list(images))):
            if not found:
                empty = {
                    (size, margin): torch.zeros(0, 3, size, size, device=self.device)
                    for size, margin in geometries
                }
                results.append(FoundFaces([], empty))
                continue
            pixels = (
                pixels
                if pixels.flags.writeable and pixels.flags.c_contiguous
                else np.array(pixels, order="C")
            )
            # uint8: align_faces converts what it reads
            tensor = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)
            landmarks = np.stack([d.landmarks for d in found])
            aligned = {
                (size, margin): align_faces(tensor, landmarks, size, margin)
                for size, margin in geometries
            }
            results.append(FoundFaces(found, aligned))
        return results
