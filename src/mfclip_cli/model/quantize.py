"""The int8 inference model for CPUs: dynamic int8 quantization of every Linear layer.

On a CPU the ViT bounds the scan of the ``vit-b-16`` config, and nearly all of its work is the
matrix products of its Linear layers. Dynamic quantization stores each Linear layer's weights as
int8 (one scale per tensor) and quantizes the activations as they come, so those products run in
int8 (PyTorch's x86 / fbgemm kernels); convolutions, norms, attention scores and softmax stay in
fp32. The activations' scale is taken from the whole input of a layer, so each face goes through
each layer on its own (``OneFaceAtATime``): a face's probabilities depended on the faces scored in
its batch (``--stability`` and ``--batch-size`` moved them). Whether a checkpoint keeps its
verdicts so is measured on its validation split and recorded (``scoring/precision.py``); this
module only builds the model.

``nn.MultiheadAttention`` keeps its query/key/value projection as a bare parameter
(``in_proj_weight``, no Linear) and its output projection as a ``NonDynamicallyQuantizableLinear``,
which dynamic quantization skips: a third of a ViT block's Linear work would stay fp32. So in the
blocks ``vit.py`` builds, the attention is first replaced by ``SelfAttention``, the same weights
as two plain Linear layers around ``scaled_dot_product_attention`` (the same function, to float
rounding), and then every Linear layer is quantized. Towers that open_clip builds keep their
attention projections in fp32, and ``QuantizationSummary`` says how many layers that leaves.

PyTorch 2.14 marks ``torch.ao.quantization`` deprecated in favour of torchao, whose eager int8
path measured far slower on this CPU (docs/performance.md); its warnings are silenced here, around
the one call, and a test pins that the path still works.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.model.detectors import Detector
from mfclip_cli.model.vit import ResidualAttentionBlock

QUANTIZATION_METHOD = (
    "dynamic int8 quantization of every Linear layer (int8 weights, one scale per tensor; "
    "activations quantized per face), PyTorch's x86 kernels"
)


class OneFaceAtATime(nn.Module):
    """A dynamically quantized layer that quantizes each face's activations (the inputs' first
    axis: every tower here is batch-first) with its own scale, as if it were scored alone."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() < 2 or len(inputs) == 1:
            return self.layer(inputs)
        return torch.cat([self.layer(face) for face in inputs.split(1)])


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as ``vit.py``'s blocks call it (self-attention, no mask, no
    weights returned), with its projections as plain Linear layers that can be quantized."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    @classmethod
    def from_multihead(cls, attention: nn.MultiheadAttention) -> SelfAttention:
        if not attention._qkv_same_embed_dim or attention.in_proj_bias is None:
            raise ValueError("only a multi-head attention with one packed projection and biases")
        module = cls(attention.embed_dim, attention.num_heads)
        with torch.no_grad():
            module.in_proj.weight.copy_(attention.in_proj_weight)
            module.in_proj.bias.copy_(attention.in_proj_bias)
            module.out_proj.weight.copy_(attention.out_proj.weight)
            module.out_proj.bias.copy_(attention.out_proj.bias)
        return module

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, None]:
        if need_weights or key is not query or value is not query:
            raise ValueError("SelfAttention computes self-attention without weights only")
        batch, tokens, width = query.shape
        qkv = self.in_proj(query).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, tokens, head width]
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(mixed.reshape(batch, tokens, width)), None


@dataclass(frozen=True)
class QuantizationSummary:
    """What was quantized: Linear layers (an attention's packed projection counts as one) and
    their weights, of all the model has."""

    quantized_layers: int
    layers: int
    quantized_weights: int
    weights: int

    def record(self) -> dict[str, object]:
        return {
            "method": QUANTIZATION_METHOD,
            "linear_layers": self.layers,
            "quantized_linear_layers": self.quantized_layers,
            "linear_weights": self.weights,
            "quantized_linear_weights": self.quantized_weights,
        }


def _linear_weights(model: nn.Module) -> tuple[int, int]:
    """(layers, weights) of the model's float Linear layers and attention projections."""
    layers = weights = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            layers, weights = layers + 1, weights + module.weight.numel()
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            layers, weights = layers + 1, weights + module.in_proj_weight.numel()
    return layers, weights


def quantize_int8(model: Detector) -> tuple[Detector, QuantizationSummary]:
    """An int8 copy of an inference model, for CPU; ``model`` itself is left as it is."""
    layers, weights = _linear_weights(model)
    quantized = copy.deepcopy(model).cpu().eval()
    for block in quantized.modules():
        if isinstance(block, ResidualAttentionBlock) and isinstance(
            block.attn, nn.MultiheadAttention
        ):
            block.attn = SelfAttention.from_multihead(block.attn)
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation (see the module's docstring) and that of the
        # quantized tensors it packs the weights into
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(
            quantized, {nn.Linear}, dtype=torch.qint8, inplace=True
        )
    for parent in list(quantized.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.ao.nn.quantized.dynamic.Linear):
                setattr(parent, name, OneFaceAtATime(child))
    kept_layers, kept_weights = _linear_weights(quantized)
    summary = QuantizationSummary(
        quantized_layers=layers - kept_layers,
        layers=layers,
        quantized_weights=weights - kept_weights,
        weights=weights,
    )
    return quantized.requires_grad_(False), summary
