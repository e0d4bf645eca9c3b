"""open_clip's ViT image tower, rebuilt for inference without importing open_clip.

Importing open_clip imports torchvision (and with it ``torch._dynamo``) and, where it is installed,
transformers: 3-6 s of a one-image scan's start-up on a 2-core CPU, for a model whose inference
needs only the image tower. This module builds the plain CLIP ViT that open_clip builds for most
of its architectures (``ViT-B-16``, ``ViT-L-14``, ``mfclip-tiny``, ...): the same modules under the
same parameter names, so the tower's weights load unchanged, and the same operations in the same
order (``nn.MultiheadAttention``, open_clip's dtype-preserving LayerNorm), so its outputs equal
open_clip's. Anything else open_clip's ViT can be configured to do (attentional pooling, custom
attention blocks, timm or ResNet towers) is left to open_clip: ``supports`` says which.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

# vision_cfg keys this module follows; any other key of open_clip's CLIPVisionCfg must be at its
# default (false, none, 'default') for the tower to be built here
_FOLLOWED = {
    "layers",
    "width",
    "head_width",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "ls_init_value",
    "patch_dropout",  # training only: the identity at inference
    "no_ln_pre",
    "pos_embed_type",  # the embedding is a tensor of the checkpoint whichever way it was made
    "final_ln_after_pool",
    "pool_type",
    "output_tokens",
}


def supports(vision_cfg: Mapping[str, Any]) -> bool:
    """Whether this module builds the tower open_clip would build from ``vision_cfg``."""
    unfollowed = {k: v for k, v in vision_cfg.items() if k not in _FOLLOWED}
    return (
        all(value in (None, False, "default", 0, 0.0, {}) for value in unfollowed.values())
        and isinstance(vision_cfg.get("layers", 12), int)
        and vision_cfg.get("pool_type", "tok") in ("tok", "avg")
        and not vision_cfg.get("output_tokens", False)
    )


class LayerNorm(nn.LayerNorm):
    """open_clip's LayerNorm: the result cast back to the input's dtype (under autocast too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The GELU approximation the OpenAI CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    def __init__(
        self, width: int, heads: int, mlp_width: int, quick_gelu: bool, ls_init: float | None
    ):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = LayerScale(width, ls_init) if ls_init is not None else nn.Identity()
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, mlp_width)),
                    ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
                    ("c_proj", nn.Linear(mlp_width, width)),
                ]
            )
        )
        self.ls_2 = LayerScale(width, ls_init) if ls_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(x)
        x = x + self.ls_1(self.attn(normed, normed, normed, need_weights=False)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, blocks: list[ResidualAttentionBlock]):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """Patches, class token and positions, the transformer, pooling and the projection to the
    joint embedding: images [B, 3, H, W] (normalised) -> embeddings [B, embed_dim]."""

    def __init__(self, vision_cfg: Mapping[str, Any], embed_dim: int, quick_gelu: bool):
        super().__init__()
        width, patch = vision_cfg.get("width", 768), vision_cfg.get("patch_size", 16)
        size = vision_cfg.get("image_size", 224)
        height, image_width = (size, size) if isinstance(size, int) else size
        heads = width // vision_cfg.get("head_width", 64)
        mlp_width = int(width * vision_cfg.get("mlp_ratio", 4.0))
        self.pool_type = vision_cfg.get("pool_type", "tok")
        self.final_ln_after_pool = vision_cfg.get("final_ln_after_pool", False)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        tokens = (height // patch) * (image_width // patch) + 1
        self.positional_embedding = nn.Parameter(torch.zeros(tokens, width))
        self.ln_pre = nn.Identity() if vision_cfg.get("no_ln_pre") else LayerNorm(width)
        self.transformer = Transformer(
            [
                ResidualAttentionBlock(
                    width, heads, mlp_width, quick_gelu, vision_cfg.get("ls_init_value")
                )
                for _ in range(vision_cfg.get("layers", 12))
            ]
        )
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [B, patches, width]
        token = self.class_embedding.view(1, 1, -1).expand(len(x), -1, -1).to(x.dtype)
        x = torch.cat([token, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        if not self.final_ln_after_pool:
            x = self.ln_post(x)
        pooled = x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]
        if self.final_ln_after_pool:
            pooled = self.ln_post(pooled)
        return pooled @ self.proj
