"""CLIP probe: the UniFD baseline, a linear head on frozen CLIP image features (issue 17).

Ojha, Li & Lee, "Towards Universal Fake Image Detectors that Generalize Across Generative
Models", CVPR 2023: a frozen CLIP ViT-L/14 (OpenAI weights) and one linear layer on its image
embedding; only the layer is trained. It is the cheapest strong baseline of the field, so every
other detector here has to beat it. Same public surface as ``MFCLIP`` and ``MCLCR``; the head is
3-way (real, diffusion, gan) as the rest of the tool, where the paper's is binary.

Assumptions (each is a setting unless noted):

* Features: the image tower's output, i.e. CLIP's *projected* image embedding (768-d for
  ViT-L/14: what the authors' code reads from ``encode_image`` and feeds to
  ``nn.Linear(768, 1)``), in float32. The authors' code does not L2-normalise them before the
  head, so neither does the default (``normalize_features = false``); their nearest-neighbour
  variant uses cosine distance, which ``true`` would mimic.
* Input: the aligned face resized to the tower's input size (bilinear, antialiased) and
  normalised with CLIP's mean and std: MFCLIP's image branch (``vision.py``), here without its
  noise branch. The shipped config crops at 224, ViT-L/14's size, so nothing is resized; UniFD
  centre-crops whole images to 224 instead, which an aligned face crop replaces.
* Head (not a setting): ``nn.Linear(D, 3)``, weights drawn from N(0, 0.02) as the authors'
  trainer does (``init_gain``), bias 0 (their bias keeps PyTorch's default). Loss: cross-entropy
  alone, for the 3 classes, where theirs is binary cross-entropy.
* The tower is frozen and stays in eval mode in ``train()``: a feature extractor that is not
  trained should not change with the mode (dropout, patch dropout). The text tower is dropped.
* The shipped ``clip-probe`` config names the ``openai`` tag of ``ViT-L-14``, with QuickGELU from
  the tag. open_clip would fetch a tag from the model hub, which runs here never reach
  (``HF_HUB_OFFLINE``): the weights must already be in its cache, or ``clip.pretrained`` must
  name a local ``.safetensors`` file (with ``clip.quick_gelu`` set, as the file does not say).
  ``clip-probe-tiny`` (``mfclip-tiny``, random weights) is for tests and demos.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.errors import ConfigError
from mfclip_cli.labels import LabelSet
from mfclip_cli.model.config import (
    CLASS_NAMES,
    ClipSettings,
    PreprocessSettings,
    SettingsDocument,
)
from mfclip_cli.model.detectors import Detector, LossTerms
from mfclip_cli.model.towers import ClipTowers, inference_towers
from mfclip_cli.model.vision import MultiModalVisionEncoder

DETECTOR = "clip-probe"
HEAD_INIT_STD = 0.02


@dataclass(frozen=True)
class ClipProbeSettings(SettingsDocument):
    """Every setting of the CLIP probe as data (see the module's Assumptions)."""

    document = f"{DETECTOR} config"

    name: str = DETECTOR
    detector: str = DETECTOR
    clip: ClipSettings = field(default_factory=lambda: ClipSettings(architecture="ViT-L-14"))
    preprocess: PreprocessSettings = field(
        default_factory=lambda: PreprocessSettings(crop_size=224)
    )
    normalize_features: bool = False  # L2-normalise the image features before the head
    classes: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        if self.detector != DETECTOR:
            raise ConfigError(f"not a {DETECTOR} config: its detector is {self.detector!r}")
        if tuple(self.classes) != CLASS_NAMES:
            raise ConfigError(f"classes must be {list(CLASS_NAMES)}, not {list(self.classes)}")


class ClipProbe(Detector):
    """A frozen CLIP image tower and a linear 3-way head: aligned faces [B, 3, S, S] in [0, 1]
    in, logits out. Faces of another size than ``crop_size`` are resized all the same.

    Nothing is adapted, so nothing needs merging: ``merge_adapters`` is the identity and the
    model can always be trained and saved (``inference_only`` stays false).
    """

    def __init__(self, settings: ClipProbeSettings, towers: ClipTowers):
        super().__init__()
        self.config = settings
        towers.visual.requires_grad_(False)
        self.vision = MultiModalVisionEncoder(
            image_tower=towers.visual,
            noise_branch=None,
            fusion=None,
            image_size=towers.image_size,
            mean=settings.preprocess.mean,
            std=settings.preprocess.std,
        )
        self.head = nn.Linear(towers.embed_dim, len(settings.classes))
        nn.init.normal_(self.head.weight, 0.0, HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)
        self.train()  # puts the tower in eval mode from the start

    def train(self, mode: bool = True) -> ClipProbe:
        """Set the head's mode; the frozen tower stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        self.vision.image_tower.eval()
        return self

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """The image features [B, D] the head reads (L2-normalised if configured)."""
        features = self.vision(faces)
        return F.normalize(features, dim=-1) if self.config.normalize_features else features

    def loss(self, faces: torch.Tensor, label_sets: Sequence[LabelSet]) -> LossTerms:
        """Cross-entropy on the 3-way head, the whole loss."""
        if len(label_sets) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(label_sets)} label sets")
        targets = torch.tensor(
            [self.classes.index(labels.label) for labels in label_sets], device=faces.device
        )
        classification = F.cross_entropy(self.forward(faces).float(), targets)
        return LossTerms(classification, classification)


def _resolved(settings: ClipProbeSettings, towers: ClipTowers) -> ClipProbeSettings:
    """Record what was decided at build time (the activation, the tag's mean and std), so that
    a checkpoint rebuilds the same network."""
    import open_clip

    clip = dataclasses.replace(settings.clip, quick_gelu=towers.quick_gelu)
    tag = settings.clip.pretrained
    tag_config = open_clip.get_pretrained_cfg(clip.architecture, tag) if tag else {}
    preprocess = settings.preprocess
    if tag_config.get("mean") and tag_config.get("std"):
        preprocess = dataclasses.replace(
            preprocess, mean=tuple(tag_config["mean"]), std=tuple(tag_config["std"])
        )
    return dataclasses.replace(settings, clip=clip, preprocess=preprocess)


def build_clip_probe(settings: ClipProbeSettings, *, pretrained: bool = True) -> ClipProbe:
    """Build the probe: the CLIP image tower with the weights of ``settings.clip.pretrained``,
    frozen, and a fresh head; the text tower open_clip builds beside it is not kept. With
    ``pretrained=False`` a checkpoint will fill the weights and its settings are already
    resolved: the plain ViTs are then built by ``vit.py`` without importing open_clip (a scan's
    start-up), the others by open_clip with random weights."""
    if not pretrained:
        towers = inference_towers(settings.clip)
        if towers is not None:
            return ClipProbe(settings, towers)
    from mfclip_cli.model.backbone import create_clip_towers

    towers = create_clip_towers(settings.clip, load_weights=pretrained)
    return ClipProbe(_resolved(settings, towers), towers)
