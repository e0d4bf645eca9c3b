"""MC-LCR: a second detector beside MFCLIP, with the same public surface (issue 17).

Wang, Jiang, Jin, Li & Cui, "MC-LCR: Multi-modal contrastive classification by locally correlated
representations for effective face forgery detection", arXiv 2110.03290, Knowledge-Based Systems
2022. No code was published; this is built from what the paper states:

* a spatial stream, an Xception whose entry-flow blocks feed a *shallow style representation
  block* (the pairwise correlation of shallow feature maps, i.e. Gram matrices of channel
  features, turned into style vectors), beside the global feature of the last block;
* a frequency stream that cuts the greyscale face into patches, takes each patch's DFT, embeds
  the amplitude and the phase spectra separately (with position embeddings), lets each attend to
  the other in a *patch-wise amplitude and phase dual attention* module, and pools each with an
  MLP-Mixer;
* the three features (global, style, frequency) fused for a classifier, trained with
  cross-entropy plus the supervised contrastive loss (SupCon, Khosla et al. 2020).

The head is 3-way (real, diffusion, gan) as the rest of the tool, where the paper's is binary.

Assumptions (every choice the paper's abstract does not fix; each is a setting unless noted):

* Backbone: timm's ``legacy_xception`` (the original Keras/Cadene Xception), built with
  ``pretrained=False``; ImageNet weights only from a local ``.safetensors`` file holding timm's
  keys (``settings.pretrained``; the ImageNet classifier ``fc.*`` is ignored), random init
  otherwise. The tiny config's ``tiny-xception`` is a stem and four of timm's Xception ``Block`` s
  with small widths, for tests and demos. Input: the aligned face resized to ``crop_size`` (299,
  Xception's size) and normalised with mean = std = 0.5 (timm's Xception preprocessing).
* Style block taps ``style_stages`` (entry-flow ``block1``-``block3``: the paper's "shallow"
  maps), the raw block outputs (before the next block's ReLU). Each tap is reduced to
  ``style_channels`` by a 1x1 convolution first (the Gram matrix of block3's 728 channels alone
  would have 265,356 distinct entries), its Gram matrix divided by H * W (Gatys et al.'s
  normalisation, so that it does not grow with the map), the upper triangle kept (the matrix is
  symmetric; ``style_upper_triangle``), layer-normalised and projected linearly to ``style_dim``;
  the taps' style vectors are concatenated.
* Global feature: the average-pooled last feature map (2048-d for Xception).
* Frequency stream: greyscale by ITU-R BT.601 weights (0.299, 0.587, 0.114) on the [0, 1] face,
  centre-cropped to the largest multiple of ``patch_size`` (299 -> 288 with 16-pixel patches, a
  5-pixel border dropped), non-overlapping square patches in row-major order, each patch's full 2-D
  DFT (``torch.fft.fft2``, unnormalised, DC not shifted). Amplitude enters as ``log1p(|F|)``
  (its range spans orders of magnitude), phase as its angle in radians; each flattened patch
  spectrum is embedded by its own linear layer to ``spectrum_dim``, plus a learned position
  embedding per patch and per modality.
* Dual attention: ``attention_depth`` pre-norm layers; in each, the amplitude tokens query the
  phase tokens and the phase tokens query the amplitude tokens (multi-head cross-attention with
  ``attention_heads`` heads, residual), then a GELU MLP (``mlp_ratio``) per modality.
* MLP-Mixer pooling: per modality, ``mixer_depth`` Mixer blocks (token-mixing MLP whose hidden
  width is ``token_mlp_ratio`` times the number of patches, channel-mixing MLP of ``mlp_ratio``
  times ``spectrum_dim``), a final layer norm and the mean over the patches; the frequency
  feature is the amplitude and phase vectors concatenated.
* Fusion (not a setting): the global, style and frequency features concatenated, then Linear ->
  GELU -> Dropout -> Linear to ``fused_dim``: that is the embedding ``embed_and_classify``
  returns. Head (not a setting): Dropout -> Linear to the 3 classes.
* SupCon: the "L_out" form of Khosla et al.'s eq. 2 on the unit-normalised embedding itself (no
  separate projection head), temperature 0.07, averaged over the anchors that have a positive
  (anchors without one are left out; a batch with none gives 0); positives are the samples of
  the same 3-way class (``contrastive_positives = "class"``) or of the same full label set
  (``"label_set"``: class, forgery type and generator). Total loss: CE + ``supcon_weight`` x
  SupCon with ``supcon_weight`` 0.5.
* The aligner's crop margin, 1.3, is MFCLIP's (``margin``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.errors import BackboneError, ConfigError
from mfclip_cli.labels import CLASS_NAMES, LabelSet
from mfclip_cli.model.config import PreprocessSettings, SettingsDocument
from mfclip_cli.model.detectors import Detector, LossTerms

DETECTOR = "mc-lcr"
BACKBONES = ("legacy_xception", "tiny-xception")
POSITIVE_RULES = ("class", "label_set")
GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class MCLCRSettings(SettingsDocument):
    """Every hyper-parameter of MC-LCR as data (see the module's Assumptions)."""

    document = f"{DETECTOR} config"

    name: str = DETECTOR
    detector: str = DETECTOR
    backbone: str = "legacy_xception"  # one of BACKBONES
    # stem and four block widths of "tiny-xception"; null for legacy_xception
    backbone_widths: tuple[int, ...] | None = None
    pretrained: str | None = None  # local .safetensors of the backbone (timm keys); None: random
    crop_size: int = 299
    margin: float = 1.3
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    style_stages: tuple[str, ...] = ("block1", "block2", "block3")
    style_channels: int = 32
    style_upper_triangle: bool = True
    style_dim: int = 256
    patch_size: int = 16
    spectrum_dim: int = 256
    attention_heads: int = 8
    attention_depth: int = 1
    mixer_depth: int = 2
    mlp_ratio: float = 4.0
    token_mlp_ratio: float = 1.0
    fused_dim: int = 512
    dropout: float = 0.1
    supcon_temperature: float = 0.07
    supcon_weight: float = 0.5
    contrastive_positives: str = "class"  # one of POSITIVE_RULES
    classes: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}"
            )
        if (self.backbone == "tiny-xception") != (self.backbone_widths is not None):
            raise ConfigError("backbone_widths is required by tiny-xception and only by it")
        if self.backbone_widths is not None and len(self.backbone_widths) != 5:
            raise ConfigError("backbone_widths must list 5 widths: the stem and four blocks")
        if self.detector != DETECTOR:
            raise ConfigError(f"not an {DETECTOR} config: its detector is {self.detector!r}")
        if tuple(self.classes) != CLASS_NAMES:
            raise ConfigError(f"classes must be {list(CLASS_NAMES)}, not {list(self.classes)}")
        if self.contrastive_positives not in POSITIVE_RULES:
            raise ConfigError(
                f"contrastive_positives must be one of {', '.join(POSITIVE_RULES)}, "
                f"not {self.contrastive_positives!r}"
            )
        if not self.style_stages:
            raise ConfigError("style_stages must name at least one backbone stage")
        if not 2 <= self.patch_size <= self.crop_size:
            raise ConfigError(f"patch_size must be 2 to crop_size ({self.crop_size})")
        if self.spectrum_dim % self.attention_heads:
            raise ConfigError(
                f"spectrum_dim ({self.spectrum_dim}) must be a multiple of attention_heads "
                f"({self.attention_heads})"
            )
        if self.supcon_temperature <= 0:
            raise ConfigError("supcon_temperature must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")

    @property
    def preprocess(self) -> PreprocessSettings:
        """The aligner's crop as every detector config gives it (``prepare --config`` reads it;
        it failed on MC-LCR's, which keeps crop_size and margin at its top)."""
        return PreprocessSettings(self.crop_size, self.margin, self.mean, self.std)

    @property
    def patch_grid(self) -> int:
        """Patches along each side of the frequency stream's centre crop."""
        return self.crop_size // self.patch_size


# --- building blocks ------------------------------------------------------------------------


def gram_style(features: torch.Tensor, upper_triangle: bool = True) -> torch.Tensor:
    """Channel Gram matrices of feature maps [B, C, H, W], divided by H * W, flattened: the upper
    triangle with the diagonal, row by row ([B, C (C + 1) / 2]), or the full matrix ([B, C * C]).

    Entry (c, d) is the mean over positions of channel c times channel d: how the two channels
    co-occur locally, whatever the image shows where (a style, not a content, statistic).
    """
    batch, channels, height, width = features.shape
    flat = features.float().reshape(batch, channels, height * width)
    gram = flat @ flat.transpose(1, 2) / (height * width)
    if not upper_triangle:
        return gram.reshape(batch, channels * channels)
    rows, cols = torch.triu_indices(channels, channels, device=features.device)
    return gram[:, rows, cols]


def greyscale(faces: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB -> [B, H, W] luma (ITU-R BT.601)."""
    weights = faces.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    return (faces * weights).sum(dim=1)


def patch_spectra(grey: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude and phase ([B, N, patch, patch] each) of the 2-D DFT of each non-overlapping
    ``patch`` x ``patch`` patch of greyscale images [B, H, W], patches in row-major order.

    ``amplitude * exp(1j * phase)`` is each patch's ``torch.fft.fft2``, so its inverse DFT gives
    the patch back.
    """
    batch, height, width = grey.shape
    if height % patch or width % patch:
        raise ValueError(f"a {height}x{width} image does not split into {patch}-pixel patches")
    patches = grey.float().unfold(1, patch, patch).unfold(2, patch, patch)
    spectrum = torch.fft.fft2(patches.reshape(batch, -1, patch, patch))
    return spectrum.abs(), spectrum.angle()


def supcon_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss, Khosla et al. (2020) eq. 2 ("L_out"), over a batch [N, D].

    For anchor i with positives P(i) (the other samples of its label) and A(i) all other samples:
    ``-1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t))`` with
    unit-normalised z, averaged over the anchors that have a positive. Anchors with none have no
    term; a batch where no anchor has one gives 0 (with a graph, so that backward still works).
    """
    z = F.normalize(embeddings.float(), dim=-1)
    count = z.shape[0]
    itself = torch.eye(count, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    positives = positive.sum(dim=1)
    anchors = positives > 0
    if not anchors.any():
        return z.sum() * 0.0
    summed = log_prob.masked_fill(~positive, 0.0).sum(dim=1)
    return -(summed[anchors] / positives[anchors]).mean()


class _Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float, out: int | None = None):
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out or dim)
        )


class AmplitudePhaseDualAttention(nn.Module):
    """Patch-wise amplitude and phase dual attention: amplitude tokens [B, N, D] attend to the
    phase tokens and phase tokens to the amplitude tokens, each with learned position
    embeddings, so that each modality's patch features are read in the light of the other's."""

    def __init__(
        self, tokens: int, dim: int, heads: int, depth: int, mlp_ratio: float, dropout: float
    ):
        super().__init__()
        self.amplitude_position = nn.Parameter(torch.zeros(1, tokens, dim))
        self.phase_position = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.amplitude_position, std=0.02)
        nn.init.trunc_normal_(self.phase_position, std=0.02)
        hidden = int(dim * mlp_ratio)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_amplitude": nn.LayerNorm(dim),
                    "norm_phase": nn.LayerNorm(dim),
                    "amplitude_from_phase": nn.MultiheadAttention(
                        dim, heads, dropout=dropout, batch_first=True
                    ),
                    "phase_from_amplitude": nn.MultiheadAttention(
                        dim, heads, dropout=dropout, batch_first=True
                    ),
                    "mlp_norm_amplitude": nn.LayerNorm(dim),
                    "mlp_norm_phase": nn.LayerNorm(dim),
                    "mlp_amplitude": _Mlp(dim, hidden, dropout),
                    "mlp_phase": _Mlp(dim, hidden, dropout),
                }
            )
            for _ in range(depth)
        )

    def forward(
        self, amplitude: torch.Tensor, phase: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        amplitude = amplitude + self.amplitude_position
        phase = phase + self.phase_position
        for layer in self.layers:
            a, p = layer["norm_amplitude"](amplitude), layer["norm_phase"](phase)
            amplitude = amplitude + layer["amplitude_from_phase"](a, p, p, need_weights=False)[0]
            phase = phase + layer["phase_from_amplitude"](p, a, a, need_weights=False)[0]
            amplitude = amplitude + layer["mlp_amplitude"](layer["mlp_norm_amplitude"](amplitude))
            phase = phase + layer["mlp_phase"](layer["mlp_norm_phase"](phase))
        return amplitude, phase


class MixerBlock(nn.Module):
    """One MLP-Mixer block (Tolstikhin et al. 2021): an MLP across the tokens, then one across
    the channels, each pre-norm and residual."""

    def __init__(
        self, tokens: int, dim: int, token_hidden: int, channel_hidden: int, dropout: float
    ):
        super().__init__()
        self.token_norm = nn.LayerNorm(dim)
        self.token_mlp = _Mlp(tokens, token_hidden, dropout)
        self.channel_norm = nn.LayerNorm(dim)
        self.channel_mlp = _Mlp(dim, channel_hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.channel_norm(x))


class MixerPool(nn.Module):
    """MLP-Mixer blocks over tokens [B, N, D], a layer norm, then the mean over tokens: [B, D]."""

    def __init__(
        self,
        tokens: int,
        dim: int,
        depth: int,
        token_ratio: float,
        mlp_ratio: float,
        dropout: float,
    ):
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                MixerBlock(tokens, dim, int(tokens * token_ratio), int(dim * mlp_ratio), dropout)
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(tokens)).mean(dim=1)


class FrequencyStream(nn.Module):
    """Greyscale faces [B, 3, S, S] in [0, 1] -> frequency feature [B, 2 D]: per-patch amplitude
    and phase spectra, embedded, dual attention, one Mixer pool each, concatenated."""

    def __init__(self, settings: MCLCRSettings):
        super().__init__()
        self.patch = settings.patch_size
        self.side = settings.patch_grid * settings.patch_size
        tokens, dim = settings.patch_grid**2, settings.spectrum_dim
        self.amplitude_embed = nn.Linear(self.patch**2, dim)
        self.phase_embed = nn.Linear(self.patch**2, dim)
        self.attention = AmplitudePhaseDualAttention(
            tokens,
            dim,
            settings.attention_heads,
            settings.attention_depth,
            settings.mlp_ratio,
            settings.dropout,
        )
        self.pools = nn.ModuleList(
            MixerPool(
                tokens,
                dim,
                settings.mixer_depth,
                settings.token_mlp_ratio,
                settings.mlp_ratio,
                settings.dropout,
            )
            for _ in range(2)
        )

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        size = faces.shape[-1]
        start = (size - self.side) // 2
        grey = greyscale(faces[..., start : start + self.side, start : start + self.side])
        amplitude, phase = patch_spectra(grey, self.patch)
        amplitude = self.amplitude_embed(torch.log1p(amplitude).flatten(2))
        phase = self.phase_embed(phase.flatten(2))
        amplitude, phase = self.attention(amplitude, phase)
        return torch.cat([self.pools[0](amplitude), self.pools[1](phase)], dim=-1)


class ShallowStyleBlock(nn.Module):
    """Shallow feature maps (one per tapped stage) -> concatenated style vectors: a 1x1
    channel reduction, the normalised Gram matrix (``gram_style``), a layer norm and a linear
    projection per stage."""

    def __init__(self, channels: Sequence[int], settings: MCLCRSettings):
        super().__init__()
        reduced = settings.style_channels
        entries = reduced * (reduced + 1) // 2 if settings.style_upper_triangle else reduced**2
        self.upper_triangle = settings.style_upper_triangle
        self.reduce = nn.ModuleList(nn.Conv2d(c, reduced, 1, bias=False) for c in channels)
        self.project = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(entries), nn.Linear(entries, settings.style_dim))
            for _ in channels
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [
                project(gram_style(reduce(m), self.upper_triangle))
                for m, reduce, project in zip(maps, self.reduce, self.project)
            ],
            dim=-1,
        )


def _tiny_xception(widths: Sequence[int]) -> nn.Module:
    """A stem and four of timm's Xception entry-flow blocks with small widths, named as in
    legacy_xception (``block1`` ...), ending in a ReLU as Xception's exit flow does."""
    from timm.models.xception import Block

    stem, *blocks = widths
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, stem, 3, 2, 0, bias=False),
        bn1=nn.BatchNorm2d(stem),
        act1=nn.ReLU(inplace=True),
    )
    previous = stem
    for index, width in enumerate(blocks, start=1):
        layers[f"block{index}"] = Block(previous, width, 2, 2, start_with_relu=index > 1)
        previous = width
    layers["act_exit"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


def _output_channels(module: nn.Module, default: int) -> int:
    """Channels out of an Xception part: those of its last convolution or batch norm (in
    registration order, which is the order the blocks run them), ``default`` if it has none."""
    for layer in reversed(list(module.modules())):
        if isinstance(layer, nn.Conv2d):
            return layer.out_channels
        if isinstance(layer, nn.BatchNorm2d):
            return layer.num_features
    return default


class XceptionTaps(nn.Module):
    """Runs an Xception's parts in order and returns the outputs of the ``taps`` parts and the
    last feature map. legacy_xception's ``forward_features`` is exactly its children in order
    (the pooling and classifier excluded)."""

    SKIP = ("global_pool", "fc")

    def __init__(self, network: nn.Module, taps: Sequence[str]):
        super().__init__()
        self.network = network
        parts = [name for name, _ in self._parts()]
        missing = [tap for tap in taps if tap not in parts]
        if missing:
            raise ConfigError(
                f"style_stages {', '.join(missing)} are not parts of the backbone; it has "
                f"{', '.join(parts)}"
            )
        self.taps = tuple(taps)
        channels, self.channels = 3, {}
        for name, part in self._parts():
            channels = _output_channels(part, channels)
            self.channels[name] = channels
        self.out_channels = channels

    def _parts(self):
        return [(n, m) for n, m in self.network.named_children() if n not in self.SKIP]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        tapped = {}
        for name, part in self._parts():
            x = part(x)
            if name in self.taps:
                tapped[name] = x.clone()  # the next part may be an in-place ReLU
        return [tapped[name] for name in self.taps], x


def _backbone(settings: MCLCRSettings, load_weights: bool) -> nn.Module:
    if settings.backbone == "tiny-xception":
        network = _tiny_xception(settings.backbone_widths)
    else:
        import timm

        network = timm.create_model(settings.backbone, pretrained=False, num_classes=0)
    if load_weights and settings.pretrained is not None:
        load_backbone_weights(network, settings.pretrained)
    return network


def load_backbone_weights(network: nn.Module, path: str | Path) -> None:
    """Fill the backbone from a ``.safetensors`` file of its own keys (timm's, for
    legacy_xception; an ImageNet classifier ``fc.*`` is ignored), or raise ``BackboneError``
    naming what does not fit. Never unpickles: a pickled file is refused."""
    from safetensors.torch import load_file

    from mfclip_cli.files import check_safetensors

    check_safetensors(path)
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("fc.")}
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = [
        f"{label} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)} in all)"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
        if keys
    ]
    if problems:
        raise BackboneError(f"{path} does not hold this backbone's weights: {'; '.join(problems)}")
    network.load_state_dict(state)


# --- the detector ---------------------------------------------------------------------------


@dataclass
class MCLCRLossBreakdown(LossTerms):
    """MC-LCR's loss: CE and SupCon."""

    contrastive: torch.Tensor


class MCLCR(Detector):
    """MC-LCR with MFCLIP's public surface: aligned faces [B, 3, S, S] in [0, 1] in, 3-way
    logits out; ``loss`` for training. Faces of another size are resized to ``crop_size``."""

    def __init__(self, settings: MCLCRSettings, backbone: nn.Module):
        super().__init__()
        self.config = settings
        self.spatial = XceptionTaps(backbone, settings.style_stages)
        self.style = ShallowStyleBlock(
            [self.spatial.channels[name] for name in settings.style_stages], settings
        )
        self.frequency = FrequencyStream(settings)
        features = (
            self.spatial.out_channels
            + len(settings.style_stages) * settings.style_dim
            + 2 * settings.spectrum_dim
        )
        self.fusion = _Mlp(features, settings.fused_dim, settings.dropout, settings.fused_dim)
        self.head = nn.Sequential(
            nn.Dropout(settings.dropout), nn.Linear(settings.fused_dim, len(settings.classes))
        )
        self.register_buffer("mean", torch.tensor(settings.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(settings.std).view(1, 3, 1, 1), persistent=False)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """The fused embedding [B, fused_dim] that the head reads and SupCon shapes."""
        size = self.crop_size
        if faces.shape[-2:] != (size, size):
            faces = F.interpolate(
                faces, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        shallow, last = self.spatial((faces - self.mean) / self.std)
        features = [last.mean(dim=(2, 3)), self.style(shallow), self.frequency(faces)]
        return self.fusion(torch.cat([f.float() for f in features], dim=-1))

    def contrastive_keys(self, label_sets: Sequence[LabelSet]) -> list[Any]:
        """What makes two samples SupCon positives: their class, or their whole label set."""
        if self.config.contrastive_positives == "class":
            return [labels.label for labels in label_sets]
        return list(label_sets)

    def loss(self, faces: torch.Tensor, label_sets: Sequence[LabelSet]) -> MCLCRLossBreakdown:
        """Cross-entropy on the 3-way head + ``supcon_weight`` x SupCon on the embedding."""
        if len(label_sets) != faces.shape[0]:
            raise ValueError(f"{faces.shape[0]} faces but {len(label_sets)} label sets")
        embeddings, logits = self.embed_and_classify(faces)
        targets = torch.tensor(
            [self.classes.index(labels.label) for labels in label_sets], device=faces.device
        )
        keys = self.contrastive_keys(label_sets)
        groups = torch.tensor([keys.index(key) for key in keys], device=faces.device)
        classification = F.cross_entropy(logits.float(), targets)
        contrastive = supcon_loss(embeddings, groups, self.config.supcon_temperature)
        total = classification + self.config.supcon_weight * contrastive
        return MCLCRLossBreakdown(total, classification, contrastive)


def build_mclcr(settings: MCLCRSettings, *, pretrained: bool = True) -> MCLCR:
    """Build MC-LCR from its settings: the backbone with the weights of ``settings.pretrained``
    (unless ``pretrained`` is false, when a checkpoint will fill them), the rest random."""
    return MCLCR(settings, _backbone(settings, pretrained))
