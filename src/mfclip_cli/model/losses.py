"""Losses: sample pair attention (SPA) in the image-text contrastive loss, distillation, total.

SPA reweights the negative (off-diagonal) pairs of the symmetric CLIP loss. For an anchor i and a
negative j the weight is the product of

* relevance, ``1 - exp(-(1 - s_ij) / eps)`` from the cosine similarity ``s_ij`` of the two texts:
  0 for identical texts (a false negative: same labels, so nothing to push apart), close to 1 for
  clearly different texts; and
* hardness, ``(N - 1) * softmax_j(beta * c_ij)`` over the anchor's negatives, from the image-text
  similarity ``c_ij``: a negative that looks like the anchor's positive weighs more, and the
  hardness weights average to 1, so the loss keeps its scale at any batch size.

A negative's term ``exp(l_ij)`` in the softmax denominator is multiplied by its weight (added
``log w`` to its logit). The weights are computed without gradient: they steer the loss but are not
themselves learned, since a loss left free to learn its own negative weights would learn to drop
them. With SPA off every weight is 1 and the loss is exactly the plain symmetric CLIP loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.model.config import LossSettings, SpaSettings

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def clip_loss(
    logits: torch.Tensor,
    row_weights: torch.Tensor | None = None,
    column_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss of an [N, N] image-text logit matrix.

    Optional [N, N] negative weights scale each off-diagonal ``exp(logit)`` in the softmax
    denominators (``row_weights`` for image->text rows, ``column_weights`` for text->image rows,
    both indexed [anchor, negative]); without them this is the plain CLIP loss.
    """
    targets = torch.arange(logits.shape[0], device=logits.device)
    rows, columns = logits, logits.t()
    if row_weights is not None and column_weights is not None:
        tiny = torch.finfo(logits.dtype).tiny
        rows = rows + row_weights.to(logits.dtype).clamp_min(tiny).log()
        columns = columns + column_weights.to(logits.dtype).clamp_min(tiny).log()
    return 0.5 * (F.cross_entropy(rows, targets) + F.cross_entropy(columns, targets))


def _hardness(similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """Row-wise (N - 1) * softmax over the off-diagonal entries; the diagonal is 1."""
    n = similarity.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=similarity.device)
    if n == 1:
        return torch.ones_like(similarity)
    scores = (beta * similarity).masked_fill(eye, float("-inf"))
    weights = (n - 1) * torch.softmax(scores, dim=1)
    return weights.masked_fill(eye, 1.0)


def sample_pair_weights(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, settings: SpaSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPA weights of the negatives for the image->text rows and the text->image rows ([N, N] each).

    Inputs are unit-norm [N, D] embeddings; entry (i, j) of the first matrix weighs text j as a
    negative of image i, entry (i, j) of the second weighs image j as a negative of text i.
    """
    with torch.no_grad():
        dtype = torch.promote_types(image_embeddings.dtype, torch.float32)
        images, texts = image_embeddings.to(dtype), text_embeddings.to(dtype)
        text_similarity = (texts @ texts.t()).clamp(-1.0, 1.0)
        relevance = 1.0 - torch.exp(-(1.0 - text_similarity) / settings.identity_eps)
        cross = images @ texts.t()
        eye = torch.eye(cross.shape[0], dtype=torch.bool, device=cross.device)
        image_to_text = (relevance * _hardness(cross, settings.hardness)).masked_fill(eye, 1.0)
        text_to_image = (relevance * _hardness(cross.t(), settings.hardness)).masked_fill(eye, 1.0)
    return image_to_text, text_to_image


def contrastive_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: torch.Tensor,
    spa: SpaSettings | None,
) -> torch.Tensor:
    """Symmetric image-text contrastive loss, with SPA when ``spa`` is given and enabled."""
    logits = logit_scale.exp() * image_embeddings @ text_embeddings.t()
    if spa is None or not spa.enabled:
        return clip_loss(logits)
    return clip_loss(logits, *sample_pair_weights(image_embeddings, text_embeddings, spa))


def distillation_loss(
    predicted_text: torch.Tensor,
    text_embeddings: torch.Tensor,
    scale: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) * T^2 over the batch's distinct texts as prototypes.

    The teacher is each sample's own text embedding, the student the text embedding predicted from
    its visual embedding; both are scored against the distinct text embeddings of the batch.
    """
    teacher_texts = text_embeddings.detach()
    prototypes = torch.unique(teacher_texts, dim=0)
    scale = scale.detach().exp()
    teacher = F.log_softmax(scale * teacher_texts @ prototypes.t() / temperature, dim=-1)
    student = F.log_softmax(
        scale * F.normalize(predicted_text, dim=-1) @ prototypes.t() / temperature, dim=-1
    )
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


@dataclass
class LossBreakdown:
    total: torch.Tensor
    classification: torch.Tensor
    contrastive: torch.Tensor
    distillation: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


class MFCLIPLoss(nn.Module):
    """CE on the 3-way head + lambda_c * SPA contrastive + lambda_k * text distillation.

    Holds the learned contrastive temperature (a log logit scale, clamped at 100 as in CLIP).
    """

    def __init__(self, settings: LossSettings):
        super().__init__()
        self.settings = settings
        self.log_logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))

    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self,
        class_logits: torch.Tensor,
        targets: torch.Tensor,
        visual: torch.Tensor,
        text: torch.Tensor,
        predicted_text: torch.Tensor,
    ) -> LossBreakdown:
        settings = self.settings
        scale = self.logit_scale()
        classification = F.cross_entropy(class_logits.float(), targets)
        contrastive = contrastive_loss(
            F.normalize(visual.float(), dim=-1), text, scale, settings.spa
        )
        distillation = distillation_loss(
            predicted_text.float(), text, scale, settings.distill_temperature
        )
        total = (
            classification
            + settings.contrastive_weight * contrastive
            + settings.distill_weight * distillation
        )
        return LossBreakdown(total, classification, contrastive, distillation)
