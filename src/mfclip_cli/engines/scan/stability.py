"""``scan --stability``: does a face's verdict survive the re-encodings every shared photo goes
through?

Each face is scored again on ``STABILITY_PERTURBATIONS`` (eval --perturb's own definitions,
``data/perturb.py``: JPEG quality 75 and 50 with 4:2:0 chroma, and down to half size and back,
bicubic) applied to its region of the original, full-resolution picture, then aligned exactly as
the face itself. The region's top-left corner lies on the 16-pixel JPEG grid (and on the
aligner's pooling grid), with a margin around what the crop reads, so each re-encoded crop is the
crop of the whole picture re-saved that way: only the face's region is encoded, not the picture.
The re-encoded crops ride in the same model batches as the faces themselves. Definitions and
cost: docs/verdicts.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from mfclip_cli.data.perturb import Perturbation, parse_perturbations
from mfclip_cli.faces.align import align_faces, similarity_transforms, template_points
from mfclip_cli.labels import CLASS_NAMES

STABILITY_PERTURBATIONS: tuple[Perturbation, ...] = tuple(
    parse_perturbations(["jpeg:75,50", "resize:0.5"])
)
JPEG_GRID = 16  # pixels: a 4:2:0 JPEG's minimum coded unit
_SEED = 0  # the perturbations used here draw no noise; apply() takes a seed all the same


def face_region(
    landmarks: np.ndarray, crop_size: int, margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture holding everything the face's aligned crop, and
    the re-encodings' filters around it, read; left and top on the JPEG and pooling grids."""
    source = torch.as_tensor(np.asarray(landmarks)[None], dtype=torch.float64)
    target = torch.as_tensor(template_points(crop_size, margin), dtype=torch.float64)
    a, t = similarity_transforms(source, target)[0]
    corners = torch.tensor(
        [0, crop_size, 1j * crop_size, crop_size + 1j * crop_size], dtype=torch.complex128
    )
    points = (corners - t) / a
    factor = max(1, math.floor(1.0 / abs(a.item())))
    step = math.lcm(JPEG_GRID, factor)
    pad = 3 * factor + 24  # the aligner's margin, and bicubic's reach at half size
    left = max(0, math.floor(points.real.min().item()) - pad) // step * step
    top = max(0, math.floor(points.imag.min().item()) - pad) // step * step
    # an even size inside the picture: halved, it keeps the whole picture's scale exactly
    right = min(width, left + _even(math.ceil(points.real.max().item()) + pad + 1 - left))
    bottom = min(height, top + _even(math.ceil(points.imag.max().item()) + pad + 1 - top))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _even(size: int) -> int:
    return size + size % 2


def reencoded_crops(
    pixels: np.ndarray,
    landmarks: Sequence[np.ndarray],
    crop_size: int,
    margin: float,
    device: torch.device,
    perturbations: Sequence[Perturbation] = STABILITY_PERTURBATIONS,
) -> torch.Tensor:
    """[F * V, 3, S, S] crops of the F faces of one RGB uint8 picture under each of the V
    ``perturbations``, face-major (face f under perturbation v at row f * V + v)."""
    height, width = pixels.shape[:2]
    crops = []
    for points in landmarks:
        left, top, right, bottom = face_region(points, crop_size, margin, width, height)
        region = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]))
        shifted = np.asarray(points)[None] - np.array([left, top])
        for perturbation in perturbations:
            degraded = np.asarray(perturbation.apply(region, "", _SEED))
            tensor = torch.from_numpy(np.array(degraded)).to(device).permute(2, 0, 1)
            crops.append(align_faces(tensor, shifted, crop_size, margin))
    if not crops:
        return torch.zeros(0, 3, crop_size, crop_size, device=device)
    return torch.cat(crops)


def stability_record(
    probs: np.ndarray,
    variants: Sequence[np.ndarray],
    label_of: Callable[[np.ndarray], str],
    perturbations: Sequence[Perturbation] = STABILITY_PERTURBATIONS,
    real_index: int = 0,
) -> dict[str, Any]:
    """A face's ``stability``: p(fake) and the label under each re-encoding, the spread of
    p(fake) (max - min over the face and its re-encodings) and whether any re-encoding turns the
    face's call, real or fake, the other way. A change between diffusion and gan alone is no
    flip (the labels show it): a face sure to be fake must not pass ``--fail-on-fake`` as
    inconclusive because its family wavers."""
    real = CLASS_NAMES[real_index]
    is_fake = label_of(probs) != real
    fake = [1.0 - float(row[real_index]) for row in (probs, *variants)]
    labels = [label_of(row) for row in variants]
    return {
        "p_fake": {p.name: round(value, 6) for p, value in zip(perturbations, fake[1:])},
        "labels": {p.name: name for p, name in zip(perturbations, labels)},
        "spread": round(max(fake) - min(fake), 6),
        "flips": any((name != real) != is_fake for name in labels),
    }
