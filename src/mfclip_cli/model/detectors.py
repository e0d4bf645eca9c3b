"""The detectors the engines train, evaluate and scan with, behind one small interface.

A model config names its ``detector`` (MFCLIP's may leave it out: the configs and checkpoints
written before there was a choice). Each detector lives in a module of its own with a settings
dataclass (its config, a ``config.SettingsDocument``: ``from_dict``, ``to_dict``, a ``name`` and a
``detector`` field, and
optionally ``highlights()``, what a checkpoint's sidecar repeats of it for people), a factory
(``build_model``, ``build_mclcr``, ``build_clip_probe``, named by ``DetectorKind.factory``; an
optional ``DetectorKind.scoring`` builds a lighter model for the scan) and a model with the
surface of ``Detector``, which is all that
the engines use: aligned crops in, 3-class logits and an embedding out, and its training loss.
Modules are imported only when their detector is asked for (MC-LCR needs timm, the others
open_clip or none).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from mfclip_cli.errors import ConfigError

if TYPE_CHECKING:  # an annotation only: prompts imports config, which asks this registry
    from mfclip_cli.labels import LabelSet


@dataclass
class LossTerms:
    """A detector's training loss: ``total`` (what is minimised) first, then its terms; a
    detector with more terms subclasses it. The train engine logs every field by its name."""

    total: torch.Tensor
    classification: torch.Tensor


class Detector(nn.Module):
    """The base of every detector, and all that the engines use of one.

    A detector reads aligned face crops [B, 3, S, S] in [0, 1] (``crop_size``, aligned with
    ``crop_margin``), embeds them (``embed``: the vector its head reads, which the t-SNE and the
    OOD statistics use) and classifies the embedding with ``head`` into 3-way logits (real,
    diffusion, gan); ``loss`` is its training objective. Its settings are ``config``, which
    travels inside every checkpoint. The crop defaults read ``config.preprocess``.
    """

    config: Any
    head: nn.Module
    # True once it can no longer be trained or saved (MFCLIP with its adapters merged)
    inference_only: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config.classes)

    @property
    def crop_size(self) -> int:
        return self.config.preprocess.crop_size

    @property
    def crop_margin(self) -> float:
        return self.config.preprocess.margin

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """The face embeddings [B, D] the head reads."""
        raise NotImplementedError

    def loss(self, faces: torch.Tensor, label_sets: Sequence[LabelSet]) -> LossTerms:
        raise NotImplementedError

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 3] (real, diffusion, gan)."""
        return self.head(self.embed(faces))

    def embed_and_classify(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings [B, D] and the logits [B, 3] read from them: one forward pass for the
        metrics, the embedding plot and the OOD distances."""
        embeddings = self.embed(faces)
        return embeddings, self.head(embeddings)

    @torch.no_grad()
    def predict_proba(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(faces).float(), dim=-1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return total, sum(p.numel() for p in self.trainable_parameters())

    def merge_adapters(self) -> Detector:
        """For inference: fold any adapters into the base weights (MFCLIP's LoRA); the scan calls
        it on every detector, and one without adapters is returned as it is."""
        return self


def _resolve(qualified: str) -> Any:
    """``"package.module:name"`` -> that attribute, importing the module on first use."""
    module, _, name = qualified.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DetectorKind:
    """A detector's name, where its settings class and factory are (``module:name``), and
    whether the scan's ``--explain`` can draw its heatmaps (they read MFCLIP's noise branch)."""

    name: str
    settings: str
    factory: str
    summary: str
    explains: bool = False
    # "module:function" (config, a trainable checkpoint's tensors) -> (a scoring-only model,
    # the tensors it loads), or None: a lighter build for the scan than the trainable model
    # merged (MFCLIP's folds its LoRA adapters and leaves the language side out). A load calls
    # it twice: on the meta device with tensors of the header's shapes (the check), then with
    # the file's tensors, less those named ``scoring_skips*``, which the scoring model is built
    # without (they are not read: MFCLIP's language encoder, 260 MB of a ViT-B-16 checkpoint)
    scoring: str | None = None
    scoring_skips: tuple[str, ...] = ()

    def settings_class(self) -> Any:
        return _resolve(self.settings)

    def build(self, config: Any, *, pretrained: bool = True) -> nn.Module:
        return _resolve(self.factory)(config, pretrained=pretrained)

    def scoring_model(
        self, config: Any, state: dict[str, torch.Tensor]
    ) -> tuple[Detector, dict[str, torch.Tensor]] | None:
        return None if self.scoring is None else _resolve(self.scoring)(config, state)


DETECTORS: dict[str, DetectorKind] = {
    kind.name: kind
    for kind in (
        DetectorKind(
            "mfclip",
            "mfclip_cli.model.config:ModelConfig",
            "mfclip_cli.model.mfclip:build_model",
            "MFCLIP: multi-modal fine-grained CLIP (the tool's own model)",
            explains=True,
            scoring="mfclip_cli.model.mfclip:scoring_model",
            scoring_skips=("language.",),
        ),
        DetectorKind(
            "mc-lcr",
            "mfclip_cli.model.mclcr:MCLCRSettings",
            "mfclip_cli.model.mclcr:build_mclcr",
            "MC-LCR: Xception with style and DFT amplitude/phase streams, CE + SupCon",
        ),
        DetectorKind(
            "clip-probe",
            "mfclip_cli.model.clip_probe:ClipProbeSettings",
            "mfclip_cli.model.clip_probe:build_clip_probe",
            "UniFD: frozen CLIP image features and a linear head",
        ),
    )
}


def detector_kind(name: str) -> DetectorKind:
    """A detector by name; a ConfigError listing the known ones otherwise."""
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}"
        ) from None


def detector_of(config: Any) -> str:
    """The detector a config describes (MFCLIP's configs written before there was a choice
    name none)."""
    return str(getattr(config, "detector", "mfclip"))


def build_detector(config: Any, *, pretrained: bool = True) -> nn.Module:
    """The detector that ``config`` describes, built by its own factory."""
    return detector_kind(detector_of(config)).build(config, pretrained=pretrained)
