"""The open_clip backbone: building its two towers and putting LoRA adapters on them.

open_clip builds the architecture and loads pretrained weights (a tag it knows, or a local
``.safetensors`` file); peft injects the LoRA adapters. The base weights are frozen. Importing this
module imports open_clip and peft (seconds): the model core imports it only when it builds a model
to train or one that ``vit.py`` cannot express, never for a plain inference load.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any, Iterator

import open_clip
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from torch.func import functional_call

from mfclip_cli.errors import BackboneError
from mfclip_cli.files import check_safetensors
from mfclip_cli.model.config import ClipSettings, LoraSettings
from mfclip_cli.model.towers import OPEN_CLIP_CONFIG_DIR, ClipTowers

# Inside one residual block of an open_clip transformer: the attention module
# (nn.MultiheadAttention, whose in- and out-projections peft adapts together) and the two MLP
# linears. Targeting ``attn.out_proj`` alone would do nothing: nn.MultiheadAttention never calls
# that submodule.
LORA_TARGETS = r".*transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"


@functools.cache
def register_open_clip_configs() -> None:
    """Make mfclip's own open_clip architectures (``mfclip-tiny``) known to open_clip."""
    open_clip.add_model_config(OPEN_CLIP_CONFIG_DIR)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns on the root logger whenever it initialises randomly, which we often mean
    to."""
    notice_filter = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)


def _resolve_quick_gelu(settings: ClipSettings) -> bool:
    """The activation the weights were trained with: the setting, else the tag's, else the
    architecture's.

    A local file does not say which it was: OpenAI, DFN and MetaCLIP weights use QuickGELU, LAION
    and DataComp ones GELU, often for the same architecture. Building with the wrong one gives no
    error, only worse features, so an architecture whose tags disagree must be told.
    """
    if settings.quick_gelu is not None:
        return settings.quick_gelu
    architecture, pretrained = settings.architecture, settings.pretrained
    if not pretrained:
        return False
    if not os.path.isfile(pretrained):
        return bool(open_clip.get_pretrained_cfg(architecture, pretrained).get("quick_gelu", False))
    if (open_clip.get_model_config(architecture) or {}).get("quick_gelu"):
        return True  # a -quickgelu architecture: open_clip builds it with QuickGELU anyway
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    if any(open_clip.get_pretrained_cfg(architecture, tag).get("quick_gelu") for tag in tags):
        raise BackboneError(
            f"{pretrained}: {architecture} weights are trained with QuickGELU (OpenAI, DFN, "
            "MetaCLIP) or with GELU (LAION, DataComp), and a local file does not say which: "
            "set clip.quick_gelu in the model config, or register the file with "
            "'mfclip weights import-clip --quick-gelu' (or --gelu)"
        )
    return False


def create_clip_towers(settings: ClipSettings, *, load_weights: bool = True) -> ClipTowers:
    """Build the open_clip model named by ``settings`` and return its vision and text towers.

    ``settings.pretrained`` is an open_clip tag (fetched by open_clip, so it needs internet), a
    local ``.safetensors`` file, or ``None``. With ``load_weights=False`` or ``None`` the towers are
    randomly initialised (the architecture, QuickGELU included, still follows the tag).
    """
    register_open_clip_configs()
    architecture = settings.architecture
    pretrained = settings.pretrained if load_weights else None
    if architecture not in open_clip.list_models():
        raise BackboneError(f"unknown open_clip architecture {architecture!r}")
    if pretrained and os.path.exists(pretrained):
        check_safetensors(pretrained)
        if not pretrained.endswith(".safetensors"):
            raise BackboneError(f"local CLIP weights must be a .safetensors file: {pretrained}")
    elif pretrained and not open_clip.get_pretrained_cfg(architecture, pretrained):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(architecture)) or "none"
        raise BackboneError(
            f"{pretrained!r} is neither a local file nor an open_clip tag of {architecture} "
            f"(tags: {known})"
        )
    quick_gelu = _resolve_quick_gelu(settings)
    try:
        with _quiet_random_init_warning():
            model = open_clip.create_model(
                architecture,
                pretrained=pretrained,
                force_custom_text=True,
                force_quick_gelu=quick_gelu,
                pretrained_text=False,
                device=torch.get_default_device(),
            )
    # open_clip raises any of these for weights that do not fit (shapes, names, missing tensors)
    except (RuntimeError, AssertionError, KeyError, ValueError) as error:
        hint = ""
        if pretrained and not os.path.exists(pretrained):
            hint = (
                " (open_clip tags are downloaded from the model hub; offline, pass a local "
                ".safetensors file instead)"
            )
        raise BackboneError(
            f"could not build {architecture} with weights {pretrained!r}: {error}{hint}"
        ) from error
    model_config = open_clip.get_model_config(architecture)
    image_size = model_config["vision_cfg"]["image_size"]
    tokenizer = open_clip.get_tokenizer(architecture)
    return ClipTowers(
        visual=model.visual,
        text=model.text,
        tokenizer=tokenizer,
        embed_dim=model_config["embed_dim"],
        image_size=image_size if isinstance(image_size, int) else image_size[0],
        quick_gelu=quick_gelu,
    )


class FunctionalLoraMultiheadAttention(PeftLoraMultiheadAttention):
    """peft's LoRA for ``nn.MultiheadAttention`` without touching the frozen base weights.

    peft's own layer merges the adapter into ``in_proj_weight`` before every forward and subtracts
    it afterwards, so the frozen weights drift by rounding error at every step and are re-created
    as new Parameters. Here the adapted weights are passed to the base module functionally: the
    base tensors are never written, and gradients reach only the adapters.
    """

    def forward(  # type: ignore[override]
        self, query: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_forward_args(query, *args, **kwargs)
        base = self.get_base_layer()
        active = [name for name in self.active_adapters if name in self.lora_A]
        if self.disable_adapters or self.merged or not active:
            return base(query, *args, **kwargs)
        out_linear = base.out_proj.get_base_layer()
        in_weight, out_weight = base.in_proj_weight, out_linear.weight
        for name in active:
            in_weight = in_weight + self.get_delta_weight(name).to(in_weight.dtype)
            out_weight = out_weight + base.out_proj.get_delta_weight(name).to(out_weight.dtype)
        return functional_call(
            base,
            {"in_proj_weight": in_weight, "out_proj.base_layer.weight": out_weight},
            (query, *args),
            kwargs,
        )

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the adapters into the base weights in place, keeping them Parameters.

        peft 0.21's own merge adds the out-projection's update twice (once itself, once through
        the out-projection's LoRA layer) and swaps the Parameters for plain tensors that ``.to()``
        skips.
        """
        base = self.get_base_layer()
        for name in check_adapters_to_merge(self, adapter_names):
            if name in self.lora_A:
                base.in_proj_weight.data += self.get_delta_weight(name).to(
                    base.in_proj_weight.dtype
                )
                base.out_proj.merge(safe_merge=safe_merge, adapter_names=[name])
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        base = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            base.in_proj_weight.data -= self.get_delta_weight(name).to(base.in_proj_weight.dtype)
        base.out_proj.unmerge()


def apply_lora(tower: nn.Module, settings: LoraSettings) -> nn.Module:
    """Freeze ``tower`` and inject LoRA adapters into its attention and MLP layers (in place)."""
    for parameter in tower.parameters():
        parameter.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=LORA_TARGETS,
        bias="none",
    )
    config._register_custom_module({nn.MultiheadAttention: FunctionalLoraMultiheadAttention})
    inject_adapter_in_model(config, tower)
    adapters = [name for name, _ in tower.named_parameters() if "lora_" in name]
    if not adapters:
        raise BackboneError("LoRA found no attention or MLP layers to adapt in this architecture")
    return tower


@torch.no_grad()
def merge_lora(module: nn.Module) -> None:
    """Fold every LoRA adapter in ``module`` into its frozen base weight, for inference.

    The forward then skips the adapters' extra matmuls and element-wise passes (ViT-B-16 on CPU:
    10 % of a forward). Outputs agree with the unmerged model to float rounding.
    """
    for (
        layer
    ) in module.modules():  # an attention layer comes before its out-projection, which it merges
        if isinstance(layer, BaseTunerLayer) and not layer.merged:
            layer.merge()
