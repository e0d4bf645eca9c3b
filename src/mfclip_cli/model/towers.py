"""The CLIP towers MFCLIP is built on, and the architecture configs that describe them.

Training builds both towers through open_clip (``backbone.py``). Inference needs the image tower
only, and for the plain ViTs of most architectures ``inference_towers`` builds it without
importing open_clip (``vit.py``), reading the architecture's JSON config from open_clip's installed
package (found through its import spec, which does not run it) or from mfclip's own folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mfclip_cli.model.config import ClipSettings

OPEN_CLIP_CONFIG_DIR = Path(__file__).parent / "open_clip_configs"


@dataclass
class ClipTowers:
    visual: nn.Module
    text: nn.Module | None  # None for inference, which never needs the text tower
    tokenizer: Callable[..., torch.Tensor] | None
    embed_dim: int
    image_size: int
    quick_gelu: bool


def _config_folders() -> list[Path]:
    folders = [OPEN_CLIP_CONFIG_DIR]
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "model_configs")
    return folders


@functools.cache
def architecture_config(architecture: str) -> dict[str, Any] | None:
    """open_clip's JSON config of ``architecture`` (embed_dim, vision_cfg, ...), or None."""
    for folder in _config_folders():
        path = folder / f"{architecture}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def inference_towers(settings: ClipSettings) -> ClipTowers | None:
    """The image tower alone, randomly initialised for a checkpoint to fill, when ``vit.py`` can
    build this architecture (None otherwise: open_clip must)."""
    from mfclip_cli.model.vit import VisionTransformer, supports

    config = architecture_config(settings.architecture)
    if config is None or not supports(config["vision_cfg"]):
        return None
    # as open_clip decides it: the architecture's own flag, or forced by the resolved setting
    quick_gelu = bool(config.get("quick_gelu", False) or settings.quick_gelu)
    size = config["vision_cfg"].get("image_size", 224)
    return ClipTowers(
        visual=VisionTransformer(config["vision_cfg"], config["embed_dim"], quick_gelu),
        text=None,
        tokenizer=None,
        embed_dim=config["embed_dim"],
        image_size=size if isinstance(size, int) else size[0],
        quick_gelu=quick_gelu,
    )
