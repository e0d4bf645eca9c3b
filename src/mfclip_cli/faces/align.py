"""5-point similarity alignment of faces, batched, with crops taken from the full-resolution
image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# The widely used 5-point template (eyes, nose, mouth corners) on a 112x112 face (ArcFace).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
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


def align_faces(
    image: torch.Tensor, landmarks: np.ndarray, crop_size: int, margin: float
) -> torch.Tensor:
    """Aligned crops [F, 3, S, S] in [0, 1] of the faces of one image, on the 8-bit grid (k / 255):
    what ``prepare`` stores as PNG and training, calibration and eval read back. Unrounded, scan
    gave the model other pixels than it was trained and calibrated on, by up to 0.5 / 255, and
    the SRM noise branch, which reads the finest residuals, moved probabilities by up to 0.93
    (audit G H1).

    ``image`` is [3, H, W], uint8 or float in [0, 1] (on the target device), ``landmarks``
    [F, 5, 2] in its pixels. Faces much larger than the crop are taken from a box-filtered copy
    (integer factor) so the crop is not aliased; the rest of the scale is bilinear. Only the region
    the crops sample is converted and filtered (a 24-megapixel photo is 290 MB as floats, and
    converting and filtering all of it took longer than detecting its faces).
    """
    device = image.device
    dtype = image.dtype if image.is_floating_point() else torch.float32
    if len(landmarks) == 0:
        return torch.zeros(0, 3, crop_size, crop_size, device=device, dtype=dtype)
    source = torch.as_tensor(np.asarray(landmarks), dtype=torch.float64, device=device)
    target = torch.as_tensor(template_points(crop_size, margin), dtype=torch.float64, device=device)
    transform = similarity_transforms(source, target)
    a, t = transform[:, 0], transform[:, 1]
    factors = torch.clamp(torch.floor(1.0 / a.abs()), min=1).to(torch.int64).tolist()

    coords = torch.arange(crop_size, device=device, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    crop_points = torch.complex(grid_x, grid_y)  # [S, S]
    crops = torch.empty(len(landmarks), 3, crop_size, crop_size, device=device, dtype=dtype)
    for factor in sorted(set(factors)):
        members = [i for i, f in enumerate(factors) if f == factor]
        index = torch.tensor(members, device=device)
        src = (crop_points[None] - t[index, None, None]) / a[
            index, None, None
        ]  # [F, S, S] source px
        (left, top), (right, bottom) = _sampled_region(
            src, factor, image.shape[-1], image.shape[-2]
        )
        region = image[:, top:bottom, left:right]
        region = region if region.is_floating_point() else region.to(dtype).div_(255.0)
        pooled = F.avg_pool2d(region[None], factor, stride=factor)[0] if factor > 1 else region
        height, width = pooled.shape[-2:]
        # source pixel centre x maps to pooled pixel centre (x - left - (k - 1) / 2) / k
        x = (src.real - left - (factor - 1) / 2.0) / factor
        y = (src.imag - top - (factor - 1) / 2.0) / factor
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).to(
            pooled.dtype
        )
        sampled = F.grid_sample(
            pooled[None].expand(len(members), -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        crops[index] = sampled
    return crops.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)


def _sampled_region(
    src: torch.Tensor, factor: int, width: int, height: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The image rectangle (left, top), (right, bottom) that holds every pixel the crops at
    ``src`` read.

    Two pooled pixels of margin cover bilinear's neighbours. Left and top are multiples of
    ``factor`` and the rectangle holds at least one whole block, so its pooling blocks are the
    whole image's; where the crops reach past the image it stops at the image's edge, so border
    padding clamps where it did on the whole image.
    """
    margin = 2 * factor
    bounds = []
    for values, size in ((src.real, width), (src.imag, height)):
        last_block = max(size // factor - 1, 0) * factor
        low = (
            min(max(int(np.floor(values.min().item())) - margin, 0), last_block) // factor * factor
        )
        high = min(max(int(np.ceil(values.max().item())) + margin + 1, low + factor), size)
        bounds.append((low, high))
    (left, right), (top, bottom) = bounds
    return (left, top), (right, bottom)
