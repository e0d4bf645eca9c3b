"""The noise branch of the vision encoder: richest patch, SRM residuals, and their encoder.

Generators leave their traces in high-frequency noise, which CLIP's resized image branch cannot
see. From the aligned face at full crop resolution we pick the patch with the richest texture (the
least homogeneous grey-level co-occurrence matrix), take its SRM high-pass residuals and encode
them with a small CNN. Everything is batched tensor work on the model's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma, as in PIL's "L" mode (scikit-image's rgb2gray weighs by BT.709 instead:
# the grey images, and so the patch chosen, would differ).
GREY_WEIGHTS = (0.299, 0.587, 0.114)
SRM_HALO = 2  # half-size of the largest SRM kernel (5x5)


def _srm_kernels() -> torch.Tensor:
    """The three fixed SRM high-pass filters (Fridrich & Kodovsky; Zhou et al.), on a 5x5 grid.

    Kept as integers, so each sums to exactly zero; ``SRM_NORMALISERS`` divides them afterwards.
    """
    second_order = torch.zeros(5, 5)
    second_order[1:4, 1:4] = torch.tensor([[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]])
    kv = torch.tensor(
        [
            [-1.0, 2.0, -2.0, 2.0, -1.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-2.0, 8.0, -12.0, 8.0, -2.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-1.0, 2.0, -2.0, 2.0, -1.0],
        ]
    )
    horizontal = torch.zeros(5, 5)
    horizontal[2, 1:4] = torch.tensor([1.0, -2.0, 1.0])
    return torch.stack([second_order, kv, horizontal])


# [3, 5, 5] correlation kernels (applied as F.conv2d does); made on the CPU even when this module
# is first imported inside a device context (a checkpoint's load builds its model on "meta" first)
with torch.device("cpu"):
    SRM_KERNELS = _srm_kernels()
SRM_NORMALISERS = (4.0, 12.0, 2.0)


def grey_levels(faces: torch.Tensor) -> torch.Tensor:
    """Integer grey levels 0..255 of RGB faces in [0, 1], shape [B, 3, H, W] -> [B, H, W]."""
    weights = torch.tensor(GREY_WEIGHTS, device=faces.device, dtype=torch.float32).view(1, 3, 1, 1)
    grey = (faces.float() * 255.0 * weights).sum(dim=1)
    return grey.round().clamp(0, 255)


def patch_homogeneity(grey: torch.Tensor, patch_size: int) -> torch.Tensor:
    """GLCM homogeneity (distance 1, angle 0) of each non-overlapping patch: [B, H, W] ->
    [B, rows, cols].

    Homogeneity is sum_ij P(i, j) / (1 + (i - j)^2) over the normalised co-occurrence matrix of
    horizontally adjacent pixels, which equals the mean of 1 / (1 + (a - b)^2) over those pixel
    pairs: no 256x256 matrix is needed. Pixels beyond the last whole patch are ignored.
    """
    batch, height, width = grey.shape
    rows, cols = height // patch_size, width // patch_size
    patches = grey[:, : rows * patch_size, : cols * patch_size]
    patches = patches.reshape(batch, rows, patch_size, cols, patch_size).permute(0, 1, 3, 2, 4)
    difference = patches[..., 1:] - patches[..., :-1]
    return (1.0 / (1.0 + difference.square())).mean(dim=(-2, -1))


def richest_patch_index(faces: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Row-major index of the least homogeneous patch of each face: [B, 3, H, W] -> [B]."""
    homogeneity = patch_homogeneity(grey_levels(faces), patch_size)
    return homogeneity.flatten(1).argmin(dim=1)


def srm_residuals(
    faces: torch.Tensor,
    patch_index: torch.Tensor,
    patch_size: int,
    clip: float,
    pixel_range: float = 255.0,
) -> torch.Tensor:
    """SRM residuals of the chosen patch of each face, per colour channel: [B, 9, P, P].

    The patch is cut with a 2-pixel halo from the reflect-padded face, so its residuals equal
    filtering the whole face and cropping the patch. Pixel values are on the 0..pixel_range scale
    (255 in the SRM rich models) and the residuals are truncated to [-clip, clip].
    """
    batch, channels, height, width = faces.shape
    cols = width // patch_size
    padded = F.pad(faces.float() * pixel_range, (SRM_HALO,) * 4, mode="reflect")
    span = patch_size + 2 * SRM_HALO
    top = (patch_index // cols) * patch_size
    left = (patch_index % cols) * patch_size
    offsets = torch.arange(span, device=faces.device)
    rows_index = (
        (top[:, None] + offsets)
        .view(batch, 1, span, 1)
        .expand(batch, channels, span, width + 2 * SRM_HALO)
    )
    strip = padded.gather(2, rows_index)
    cols_index = (
        (left[:, None] + offsets).view(batch, 1, 1, span).expand(batch, channels, span, span)
    )
    window = strip.gather(3, cols_index)
    kernels = SRM_KERNELS.to(device=faces.device, dtype=window.dtype)
    weight = kernels.unsqueeze(1).repeat(channels, 1, 1, 1)  # [3 * C, 1, 5, 5], grouped per channel
    normalisers = torch.tensor(SRM_NORMALISERS, device=faces.device, dtype=window.dtype).repeat(
        channels
    )
    # fp32 even under bf16 autocast: bf16 keeps 8 significant bits, so pixels on the 0..255 scale
    # would be rounded by up to a grey level, about the size of the residuals themselves
    with torch.autocast(faces.device.type, enabled=False):
        residual = F.conv2d(window, weight, groups=channels) / normalisers.view(1, -1, 1, 1)
    return residual.clamp(-clip, clip)


class NoiseEncoder(nn.Module):
    """A small CNN from the 9 clipped SRM residual maps to an embedding."""

    def __init__(self, embed_dim: int, width: int, clip: float):
        super().__init__()
        self.clip = clip

        def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(8, c_out), c_out),
                nn.GELU(),
            )

        self.features = nn.Sequential(
            stage(3 * len(SRM_KERNELS), width, 1),
            stage(width, 2 * width, 2),
            stage(2 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.project = nn.Linear(4 * width, embed_dim)
        # Start from zero so that, before training, the fused embedding is CLIP's own.
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, residuals: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(residuals / self.clip))


class NoiseBranch(nn.Module):
    """Aligned faces in [0, 1] -> noise embedding of each face's richest patch."""

    def __init__(
        self, embed_dim: int, patch_size: int, width: int, clip: float, pixel_range: float = 255.0
    ):
        super().__init__()
        self.patch_size = patch_size
        self.clip = clip
        self.pixel_range = pixel_range
        self.encoder = NoiseEncoder(embed_dim, width, clip)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            index = richest_patch_index(faces, self.patch_size)
            residuals = srm_residuals(faces, index, self.patch_size, self.clip, self.pixel_range)
        return self.encoder(residuals)
