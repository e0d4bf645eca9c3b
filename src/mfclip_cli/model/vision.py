"""Multi-modal vision encoder (MVE): CLIP's image branch plus the SRM noise branch, fused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.model.noise import NoiseBranch


class Fusion(nn.Module):
    """Combine image and noise embeddings: a plain sum, or a learned per-dimension gate on the
    noise."""

    def __init__(self, embed_dim: int, mode: str):
        super().__init__()
        self.mode = mode
        self.gate = nn.Linear(2 * embed_dim, embed_dim) if mode == "gated" else None

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return image + noise
        gate = torch.sigmoid(self.gate(torch.cat([image, noise], dim=-1)))
        return image + gate * noise


class MultiModalVisionEncoder(nn.Module):
    """Aligned faces [B, 3, crop, crop] in [0, 1] -> fused visual embedding [B, D].

    The image branch sees the face resized to the CLIP tower's input size and normalised; the
    noise branch works on the full-resolution crop. Without a noise branch (``noise.enabled``
    false, the ablation) there is nothing to fuse and the image embedding is the visual one.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        noise_branch: NoiseBranch | None,
        fusion: Fusion | None,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ):
        super().__init__()
        if (noise_branch is None) != (fusion is None):
            raise ValueError("a noise branch and its fusion come together, or neither")
        self.image_tower = image_tower
        self.noise_branch = noise_branch
        self.fusion = fusion
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def image_input(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.shape[-1] != self.image_size or faces.shape[-2] != self.image_size:
            faces = F.interpolate(
                faces,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return (faces - self.mean) / self.std

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        image = self.image_tower(self.image_input(faces)).float()
        if self.noise_branch is None or self.fusion is None:
            return image
        return self.fusion(image, self.noise_branch(faces).float())
