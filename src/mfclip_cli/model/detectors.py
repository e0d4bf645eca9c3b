"""The detectors the engines train, evaluate and scan with, behind one small interface.

A model config names its ``detector`` (MFCLIP's may leave it out: the configs and checkpoints
written before there was a choice). Each detector lives in a module of its own with a settings
dataclass (its config: ``from_dict``, ``to_dict``, a ``name`` and a ``detector`` field), a factory
``build(config, *, pretrained)`` and a model with the surface of ``Detector``, which is all that
the engines use: aligned crops in, 3-class logits and an embedding out, and its training loss.
Modules are imported only when their detector is asked for (MC-LCR needs timm, the others
open_clip or none).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from mfclip_cli.errors import ConfigError
from mfclip_cli.model.prompts import LabelSet


@dataclass
class LossTerms:
    """A detector's training loss: ``total`` (what is minimised) first, then its terms; a
    detector with more terms subclasses it. The train engine logs every field by its name."""

    total: torch.Tensor
    classification: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


class Detector(Protocol):
    """What the engines see of a detector: a torch module with these members."""

    config: Any  # its settings dataclass; travels inside every checkpoint
    inference_only: bool  # True once it can no longer be trained or saved (MFCLIP's merge)

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def crop_size(self) -> int: ...

    @property
    def crop_margin(self) -> float: ...

    def __call__(self, faces: torch.Tensor) -> torch.Tensor: ...

    def embed_and_classify(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, faces: torch.Tensor, label_sets: Sequence[LabelSet]) -> LossTerms: ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def parameter_counts(self) -> tuple[int, int]: ...

    def merge_adapters(self) -> Any: ...


def _resolve(qualified: str) -> Any:
    """``"package.module:name"`` -> that attribute, importing the module on first use."""
    module, _, name = qualified.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DetectorKind:
    """A detector's name, and where its settings class and factory are (``module:name``)."""

    name: str
    settings: str
    factory: str
    summary: str

    def settings_class(self) -> Any:
        return _resolve(self.settings)

    def build(self, config: Any, *, pretrained: bool = True) -> nn.Module:
        return _resolve(self.factory)(config, pretrained=pretrained)


DETECTORS: dict[str, DetectorKind] = {
    kind.name: kind
    for kind in (
        DetectorKind(
            "mfclip",
            "mfclip_cli.model.config:ModelConfig",
            "mfclip_cli.model.mfclip:build_model",
            "MFCLIP: multi-modal fine-grained CLIP (the tool's own model)",
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
    return str(getattr(config, "detector", "mfclip"))


def build_detector(config: Any, *, pretrained: bool = True) -> nn.Module:
    """The detector that ``config`` describes, built by its own factory."""
    return detector_kind(detector_of(config)).build(config, pretrained=pretrained)
