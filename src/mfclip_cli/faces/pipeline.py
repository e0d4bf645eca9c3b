"""Detect-then-align: the part of the face pipeline that scan and prepare share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mfclip_cli.faces.align import align_faces
from mfclip_cli.faces.detect import Detection, FaceDetector


@dataclass(frozen=True)
class FaceSearch:
    """What counts as a face and how it is cropped."""

    crop_size: int
    margin: float
    min_face: int = 20  # pixels, in the upright full-resolution image
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    # 0: detect at full resolution; N: on a copy no longer than N (faster, coarser)
    detect_max_side: int = 0


@dataclass
class FoundFaces:
    detections: list[Detection]
    crops: torch.Tensor  # [F, 3, crop, crop] in [0, 1], on the cropper's device


class FaceCropper:
    """Every face of a batch of upright RGB uint8 images, detected together and aligned together."""

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
        size = self.search.crop_size
        for pixels, found in zip(images, self.detector.detect(list(images))):
            if not found:
                results.append(FoundFaces([], torch.zeros(0, 3, size, size, device=self.device)))
                continue
            pixels = (
                pixels
                if pixels.flags.writeable and pixels.flags.c_contiguous
                else np.array(pixels, order="C")
            )
            # uint8: align_faces converts what it reads
            tensor = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)
            landmarks = np.stack([d.landmarks for d in found])
            results.append(
                FoundFaces(found, align_faces(tensor, landmarks, size, self.search.margin))
            )
        return results
