"""Face detection with facenet-pytorch's MTCNN networks and weights, batched over images.

The cascade (``cascade.py``) handles a batch of equally sized images in one pass; we group the
images of a chunk by their detection size so every group is one batch. Images are detected at full
resolution by default: the pyramid then starts at ``min_face`` pixels of the original, and every
face that facenet-pytorch's MTCNN finds there is found. With ``max_side`` set, larger images are
detected on a copy whose longest side is ``max_side`` (boxes and landmarks are mapped back to the
full-resolution upright image, where alignment takes its crops); that is faster on large photos
but cannot see faces smaller than ``smallest_face`` of the original.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mfclip_cli.faces import MTCNN_THRESHOLDS
from mfclip_cli.faces.cascade import MTCNN_MIN_WINDOW, MTCNNCascade

# Pixels per cascade call. On CPU two 1024 px images per call ran fastest (sixteen were 1.7x slower:
# their pyramids no longer fit the caches). A GPU wants many images per call; sixteen 1024 px images
# need about 1 GB of GPU memory for P-Net's finest level (not yet measured on a GPU).
BATCH_PIXELS = {"cpu": 2 * 1024 * 1024, "cuda": 16 * 1024 * 1024}


@dataclass
class Detection:
    box: np.ndarray  # [4] x1, y1, x2, y2 in the upright image's pixels (clipped to the image)
    landmarks: np.ndarray  # [5, 2] left eye, right eye, nose, mouth left, mouth right (x, y)
    score: float


class FaceDetector:
    def __init__(
        self,
        device: torch.device | str = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS,
        max_side: int = 0,
        factor: float = 0.709,
    ):
        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.cascade = MTCNNCascade(self.device, thresholds, factor)

    def detection_scale(self, height: int, width: int) -> float:
        """How much an image of this size is shrunk before detection (``max_side``), 1 for none."""
        longest = max(height, width)
        return (
            min(1.0, self.max_side / longest) if self.max_side and longest > self.max_side else 1.0
        )

    def _pyramid_min_size(self, scale: float) -> float:
        """The smallest face, in detection pixels: ``min_face`` scaled, but never below P-Net's
        window."""
        return max(float(MTCNN_MIN_WINDOW), self.min_face_size * scale)

    @property
    def full_resolution_smallest_face(self) -> float:
        return self._pyramid_min_size(1.0)

    def smallest_face(self, height: int, width: int) -> float:
        """The smallest face searched for in an image of this size, in its own (original) pixels."""
        scale = self.detection_scale(height, width)
        return self._pyramid_min_size(scale) / scale

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Faces of each RGB uint8 image [H, W, 3], highest detection score first."""
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, int, float], list[int]] = defaultdict(list)
        scaled: dict[int, np.ndarray] = {}
        scales: dict[int, float] = {}
        for i, pixels in enumerate(images):
            height, width = pixels.shape[:2]
            scale = self.detection_scale(height, width)
            if scale < 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                scaled[i] = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            else:
                scaled[i] = pixels
            scales[i] = scale
            min_size = self._pyramid_min_size(scale)
            groups[(*scaled[i].shape[:2], min_size)].append(i)
        for (height, width, min_size), members in groups.items():
            if min(height, width) < MTCNN_MIN_WINDOW:
                continue  # too small to hold any face MTCNN can find
            per_call = max(
                1, BATCH_PIXELS.get(self.device.type, BATCH_PIXELS["cpu"]) // (height * width)
            )
            for start in range(0, len(members), per_call):
                chunk = members[start : start + per_call]
                batch = torch.from_numpy(np.stack([scaled[i] for i in chunk])).to(self.device)
                for i, (image_boxes, image_points) in zip(chunk, self.cascade(batch, min_size)):
                    results[i] = self._to_detections(
                        image_boxes,
                        image_points,
                        scales[i],
                        images[i].shape[:2],
                        self.min_face_size,
                    )
        return results

    @staticmethod
    def _to_detections(
        boxes: np.ndarray, points: np.ndarray, scale: float, shape: tuple[int, int], min_face: float
    ) -> list[Detection]:
        """Boxes in the full-resolution image, best first; faces smaller than ``min_face`` are
        dropped.

        The pyramid starts at ``min_face``, but the box regression can still shrink a box below it
        (``--min-face 150`` found 71 px faces): a face is kept when its box's longer side reaches
        it.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        height, width = shape
        detections = []
        for box, landmarks in zip(boxes, points):
            xyxy = box[:4] / scale
            if max(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]) < min_face:
                continue
            xyxy[[0, 2]] = np.clip(xyxy[[0, 2]], 0, width)
            xyxy[[1, 3]] = np.clip(xyxy[[1, 3]], 0, height)
            if xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
                continue
            detections.append(Detection(xyxy, landmarks / scale, float(box[4])))
        detections.sort(key=lambda d: -d.score)
        return detections
