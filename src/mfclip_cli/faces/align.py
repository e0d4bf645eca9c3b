"""5-point similarity alignment of faces, batched, with crops taken from the full-resolution image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# The widely used 5-point template (eyes, nose, mouth corners) on a 112x112 face (ArcFace).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def template_points(crop_size: int, margin: float) -> np.ndarray:
    """Template landmarks in a ``crop_size`` crop whose face area is 1/``margin`` of its side."""
    return (TEMPLATE_112 - 56.0) * (crop_size / margin / 112.0) + (crop_size - 1) / 2.0


def similarity_transforms(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) source -> target.

    ``source`` [F, 5, 2], ``target`` [5, 2]; returns complex scale ``a`` [F] and shift ``t`` [F]
    with target ~ a * source + t, points read as complex numbers x + iy (Umeyama in 2-D).
    """
    src = torch.complex(source[..., 0], source[..., 1])
    dst = torch.complex(target[..., 0], target[..., 1]).expand_as(src)
    src_mean, dst_mean = src.mean(dim=-1, keepdim=True), dst.mean(dim=-1, keepdim=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = (src_c.conj() * dst_c).sum(-1) / (src_c.abs() ** 2).sum(-1).clamp_min(1e-12)
    t = dst_mean.squeeze(-1) - a * src_mean.squeeze(-1)
    return torch.stack([a, t], dim=-1)


def align_faces(image: torch.Tensor, landmarks: np.ndarray, crop_size: int, margin: float) -> torch.Tensor:
    """Aligned crops [F, 3, S, S] in [0, 1] of the faces of one image.

    ``image`` is [3, H, W] float in [0, 1] (on the target device), ``landmarks`` [F, 5, 2] in its
    pixels. Faces much larger than the crop are taken from a box-filtered copy (integer factor)
    so the crop is not aliased; the rest of the scale is bilinear.
    """
    if len(landmarks) == 0:
        return image.new_zeros(0, 3, crop_size, crop_size)
    device = image.device
    source = torch.as_tensor(np.asarray(landmarks), dtype=torch.float64, device=device)
    target = torch.as_tensor(template_points(crop_size, margin), dtype=torch.float64, device=device)
    transform = similarity_transforms(source, target)
    a, t = transform[:, 0], transform[:, 1]
    factors = torch.clamp(torch.floor(1.0 / a.abs()), min=1).to(torch.int64).tolist()

    coords = torch.arange(crop_size, device=device, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    crop_points = torch.complex(grid_x, grid_y)  # [S, S]
    crops = image.new_empty(len(landmarks), 3, crop_size, crop_size)
    for factor in sorted(set(factors)):
        members = [i for i, f in enumerate(factors) if f == factor]
        pooled = F.avg_pool2d(image[None], factor, stride=factor)[0] if factor > 1 else image
        height, width = pooled.shape[-2:]
        index = torch.tensor(members, device=device)
        src = (crop_points[None] - t[index, None, None]) / a[index, None, None]  # [F, S, S] source px
        # source pixel centre x maps to pooled pixel centre (x - (k - 1) / 2) / k
        x = (src.real - (factor - 1) / 2.0) / factor
        y = (src.imag - (factor - 1) / 2.0) / factor
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).to(image.dtype)
        sampled = F.grid_sample(
            pooled[None].expand(len(members), -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        crops[index] = sampled
    return crops.clamp(0.0, 1.0)

