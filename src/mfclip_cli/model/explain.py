"""Where the model looked: a heatmap of the regions that drove each face's fake score.

Each patch's relevance is the first-order contribution of its token to the fake score
(1 - p(real)): the token's activation times the score's gradient, summed over channels, positive
part only (gradient x activation, as in Grad-CAM but without pooling the gradient over tokens),
taken where the tokens enter the image tower's transformer, before attention mixes them. Measured
on a tiny model trained to see a checkerboard pasted into one quadrant (``tests/test_explain.py``):
on its 4 x 4 token grid this put 99 % of the fakes' relevance on that quadrant (0.6-0.9 of each
map once upsampled to the crop, which bleeds past the quadrant's edge), while Grad-CAM's
token-pooled channel weights on the last block's input put 2-7 % there: a ViT's tokens are no
feature map whose channels mean the same everywhere. One forward and one backward pass per batch;
the probabilities come from the same forward pass. The noise branch adds the square it read (the
richest patch), which the map cannot show through CLIP's tokens. The scan's worker threads share
one model: each call keeps only the tokens its own thread produced.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mfclip_cli.model.mfclip import MFCLIP
from mfclip_cli.model.noise import richest_patch_index


@dataclass
class Explanation:
    probs: torch.Tensor  # [B, 3] class probabilities (softmax of logits / T), same forward pass
    embeddings: torch.Tensor  # [B, D] the face embeddings the head read, same forward pass
    heatmaps: torch.Tensor  # [B, crop, crop] in [0, 1], 1 = most relevant to the fake score
    richest_patch: torch.Tensor | None  # [B, 4] x1 y1 x2 y2 in crop pixels; None: no noise branch


def _first_block(model: MFCLIP) -> torch.nn.Module:
    try:
        return model.vision.image_tower.transformer.resblocks[0]
    except AttributeError as error:
        raise ValueError("heatmaps need a ViT image tower (transformer.resblocks)") from error


def richest_patch_boxes(faces: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The noise branch's patch of each face as a box [B, 4] (x1 y1 x2 y2, end-exclusive)."""
    columns = faces.shape[-1] // patch_size
    index = richest_patch_index(faces, patch_size)
    corner = torch.stack([index % columns, index // columns], 1) * patch_size
    return torch.cat([corner, corner + patch_size], 1)


def explain(model: MFCLIP, faces: torch.Tensor, temperature: float = 1.0) -> Explanation:
    """Probabilities, fake-score heatmaps and noise patches of aligned faces [B, 3, crop, crop];
    the probabilities, and the fake score explained, are calibrated by ``temperature``."""
    captured: dict[str, torch.Tensor] = {}
    caller = threading.get_ident()

    def keep_input(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if threading.get_ident() != caller:  # another thread's forward through the same model
            return
        tokens = inputs[0]
        tokens.retain_grad()
        captured["tokens"] = tokens

    handle = _first_block(model).register_forward_pre_hook(keep_input)
    try:
        with torch.enable_grad():
            inputs = faces.detach().requires_grad_(True)  # so the tower's graph is recorded
            embeddings, logits = model.embed_and_classify(inputs)
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            fake = 1.0 - probs[:, model.classes.index("real")]
            fake.sum().backward()
    finally:
        handle.remove()
    tokens, gradients = captured["tokens"].detach(), captured["tokens"].grad
    # [B, patches]: each patch token's contribution, the class token dropped
    relevance = (tokens[:, 1:].float() * gradients[:, 1:].float()).sum(-1).clamp(min=0)
    side = int(round(relevance.shape[1] ** 0.5))
    grid = relevance.view(-1, 1, side, side)
    heatmaps = F.interpolate(grid, size=faces.shape[-2:], mode="bilinear", align_corners=False)
    heatmaps = heatmaps[:, 0]
    peak = heatmaps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    noise = model.vision.noise_branch
    boxes = richest_patch_boxes(faces, noise.patch_size) if noise is not None else None
    return Explanation(probs.detach(), embeddings.detach(), (heatmaps / peak).detach(), boxes)
