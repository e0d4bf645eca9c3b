"""The MFCLIP model: vision encoder, language encoder, heads and loss in one module, its factory,
and its scoring-only build from a checkpoint's tensors (the LoRA adapters folded in)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mfclip_cli.errors import CheckpointError
from mfclip_cli.labels import LabelSet
from mfclip_cli.model.config import LoraSettings, ModelConfig
from mfclip_cli.model.detectors import Detector
from mfclip_cli.model.language import FineGrainedLanguageEncoder
from mfclip_cli.model.losses import LossBreakdown, MFCLIPLoss
from mfclip_cli.model.noise import NoiseBranch
from mfclip_cli.model.towers import ClipTowers, inference_towers
from mfclip_cli.model.vision import Fusion, MultiModalVisionEncoder


def _mlp(dim_in: int, hidden: int, dim_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim_out)
    )


class MFCLIP(Detector):
    """Multi-modal fine-grained CLIP.

    ``forward`` (inference) uses the vision side and the 3-way head only; ``loss`` adds the
    language side for training. Faces are aligned crops [B, 3, crop, crop] with values in [0, 1].
    Built from towers without a text tower (``towers.inference_towers``), or once its adapters are
    merged, it is an inference-only model: it refuses ``loss`` and cannot be saved.
    """

    def __init__(self, config: ModelConfig, towers: ClipTowers):
        super().__init__()
        self.config = config
        dim = towers.embed_dim
        self.vision = MultiModalVisionEncoder(
            image_tower=towers.visual,
            noise_branch=NoiseBranch(
                dim,
                config.noise.patch_size,
                config.noise.width,
                config.noise.clip,
                config.noise.pixel_range,
            )
            if config.noise.enabled
            else None,
            fusion=Fusion(dim, config.fusion) if config.noise.enabled else None,
            image_size=towers.image_size,
            mean=config.preprocess.mean,
            std=config.preprocess.std,
        )
        self.language = (
            FineGrainedLanguageEncoder(towers.text, towers.tokenizer, config.prompts)
            if towers.text is not None
            else None
        )
        self.inference_only = towers.text is None
        self.head = _mlp(dim, config.head.hidden, len(config.classes), config.head.dropout)
        self.text_predictor = _mlp(dim, dim, dim)
        self.criterion = MFCLIPLoss(config.loss)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """The vision encoder's face embeddings [B, D]: CLIP's image branch fused with the noise
        branch."""
        return self.vision(faces)

    def merge_adapters(self) -> MFCLIP:
        """For inference only: fold the LoRA adapters into the base weights (faster forward, same
        outputs).

        A merged model can no longer be trained or saved: its adapters would count twice. A model
        built for inference has its adapters folded in already.
        """
        if not self.inference_only:
            from mfclip_cli.model.backbone import merge_lora

            merge_lora(self)
            self.inference_only = True
        return self

    def loss(self, faces: torch.Tensor, label_sets: Sequence[LabelSet]) -> LossBreakdown:
        if self.inference_only:
            raise RuntimeError(
                "this model's LoRA adapters are merged for inference (it may have no language "
                "encoder); train a model loaded afresh"
            )
        if len(label_sets) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(label_sets)} label sets")
        visual = self.vision(faces)
        targets = torch.tensor(
            [self.classes.index(labels.label) for labels in label_sets], device=faces.device
        )
        text_levels = self.language.level_embeddings(label_sets)
        return self.criterion(
            class_logits=self.head(visual),
            targets=targets,
            visual=visual,
            text=self.language.combine(text_levels),
            text_levels=text_levels,
            text_ids=self.language.prompt_ids(label_sets),
            predicted_text=self.text_predictor(visual),
        )


def _resolve_config(config: ModelConfig, towers: ClipTowers) -> ModelConfig:
    """Record what was decided at build time, so a checkpoint rebuilds the same network."""
    import open_clip

    changes: dict = {"clip": {"quick_gelu": towers.quick_gelu}}
    tag = config.clip.pretrained
    tag_config = open_clip.get_pretrained_cfg(config.clip.architecture, tag) if tag else {}
    if tag_config.get("mean") and tag_config.get("std"):
        changes["preprocess"] = {"mean": list(tag_config["mean"]), "std": list(tag_config["std"])}
    return config.replace(**changes)


def build_model(config: ModelConfig, *, pretrained: bool = True) -> MFCLIP:
    """Build MFCLIP from a config: CLIP towers with the weights of ``config.clip.pretrained`` (or
    random ones with ``pretrained=False``, when a checkpoint will fill them), LoRA on the vision
    tower (and on the text tower if configured), and the rest of the backbone frozen."""
    from mfclip_cli.model.backbone import apply_lora, create_clip_towers

    towers = create_clip_towers(config.clip, load_weights=pretrained)
    apply_lora(towers.visual, config.lora)
    if config.lora.text:
        apply_lora(towers.text, config.lora)
    else:
        towers.text.requires_grad_(False)
    return MFCLIP(_resolve_config(config, towers), towers)


def scoring_model(
    config: ModelConfig, state: dict[str, torch.Tensor]
) -> tuple[MFCLIP, dict[str, torch.Tensor]] | None:
    """A scoring-only MFCLIP and the tensors it loads, from a trainable checkpoint's: the LoRA
    adapters folded into the base weights, no language encoder, and for the plain ViTs neither
    open_clip nor peft imported (``towers.inference_towers``; None for the architectures it
    cannot build, which are built as trained and merged)."""
    towers = inference_towers(config.clip)
    if towers is None:
        return None
    return MFCLIP(config, towers), fold_lora(state, config.lora)


LORA_A, LORA_B = ".lora_A.default.weight", ".lora_B.default.weight"


def _product_fits(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> bool:
    """Whether ``up @ down`` (LoRA's B A, two matrices) has the shape of ``weight``."""
    if not weight.ndim == up.ndim == down.ndim == 2:
        return False
    return up.shape[1] == down.shape[0] and weight.shape == (up.shape[0], down.shape[1])


def fold_lora(state: dict[str, torch.Tensor], lora: LoraSettings) -> dict[str, torch.Tensor]:
    """A trainable model's tensors as an inference model's: every LoRA pair folded into the
    weight it adapts (W + alpha / rank * B A, as peft merges), peft's ``base_layer`` names
    dropped, and the language encoder left out. Folded tensors fold to themselves.

    peft's layer wrapping a module ``m`` keeps ``m``'s tensors as ``m.base_layer.*`` and its
    adapter as ``m.lora_A`` / ``m.lora_B``; the update goes to ``m``'s weight, or, for
    ``nn.MultiheadAttention``, to its ``in_proj_weight`` (its out-projection has its own pair).
    """
    scaling = lora.alpha / lora.rank
    pairs = {}  # the weight adapted -> its (B, A)
    for key in state:
        if key.endswith(LORA_A):  # every pair checked, the language encoder's as well
            module = key[: -len(LORA_A)]
            if module + LORA_B not in state:
                raise CheckpointError(f"LoRA adapter {module} has no {LORA_B.lstrip('.')}")
            target = f"{module}.base_layer.in_proj_weight"
            target = target if target in state else f"{module}.base_layer.weight"
            down, up = state[key], state[module + LORA_B]
            if target not in state:
                raise CheckpointError(f"LoRA adapter {module} adapts no weight of the checkpoint")
            if not _product_fits(state[target], up, down):  # before B A is formed: a hostile
                raise CheckpointError(  # pair would make it far larger than the file
                    f"LoRA adapter {module} does not fit the weight it adapts: the checkpoint "
                    "does not match its config"
                )
            if down.shape[0] != lora.rank:  # the scaling would be another's, silently
                raise CheckpointError(
                    f"LoRA adapter {module} has rank {down.shape[0]}, its config says "
                    f"{lora.rank}: the checkpoint does not match its config"
                )
            pairs[target] = up, down
    folded = {}
    for key, tensor in state.items():
        if key.startswith("language.") or key.endswith((LORA_A, LORA_B)):
            continue  # the language encoder's pairs are left out with it, not multiplied out
        if key in pairs and not tensor.is_meta:  # W + scaling * B A as peft merges it, in
            up, down = pairs[key]  # place on the product (on the meta device, W's shape is all)
            merged = (up.float() @ down.float()).mul_(scaling).add_(tensor.float())
            tensor = merged.to(tensor.dtype)
        folded[key.replace(".base_layer.", ".")] = tensor
    return folded
