"""Fine-grained language encoder (FLE): hierarchical prompts -> one text embedding per label set."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mfclip_cli.model.config import PromptSettings
from mfclip_cli.model.prompts import LabelSet, build_prompts


class FineGrainedLanguageEncoder(nn.Module):
    """Encode each prompt level with the CLIP text tower and combine the levels with learned
    weights (the ``prompts.levels`` coarsest levels of the config).

    The combination is a softmax over per-level logits, so every level always carries a positive
    weight and can change the result. Level embeddings depend only on the label set; while the
    text tower is frozen they are computed once per distinct label set and cached (the cache is
    not part of the state dict). With a LoRA-tuned text tower they are recomputed, once per
    distinct label set in the batch.
    """

    def __init__(
        self, text_tower: nn.Module, tokenizer: Callable[..., torch.Tensor], prompts: PromptSettings
    ):
        super().__init__()
        self.text_tower = text_tower
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.level_logits = nn.Parameter(torch.zeros(prompts.levels))
        self._cache: dict[LabelSet, torch.Tensor] = {}
        # New weights make cached embeddings stale.
        self.register_load_state_dict_post_hook(lambda module, _: module.clear_cache())

    @property
    def text_tower_trainable(self) -> bool:
        return any(p.requires_grad for p in self.text_tower.parameters())

    def clear_cache(self) -> None:
        self._cache.clear()

    def _encode_levels(self, label_sets: Sequence[LabelSet]) -> torch.Tensor:
        """[N, levels, D] unit-norm embeddings of each label set's prompts."""
        prompts = [
            prompt for labels in label_sets for prompt in build_prompts(labels, self.prompts)
        ]
        device = self.level_logits.device
        tokens = self.tokenizer(prompts).to(device)
        features = self.text_tower(tokens).float()
        return F.normalize(features, dim=-1).view(len(label_sets), self.prompts.levels, -1)

    def level_embeddings(self, label_sets: Sequence[LabelSet]) -> torch.Tensor:
        """[N, levels, D] level embeddings, each distinct label set encoded at most once."""
        distinct = list(dict.fromkeys(label_sets))
        if self.text_tower_trainable and torch.is_grad_enabled():
            self._cache.clear()
            encoded = dict(zip(distinct, self._encode_levels(distinct)))
        else:
            missing = [labels for labels in distinct if labels not in self._cache]
            if missing:
                with torch.no_grad():
                    self._cache.update(zip(missing, self._encode_levels(missing)))
            encoded = self._cache
        device = self.level_logits.device
        return torch.stack([encoded[labels] for labels in label_sets]).to(device)

    def prompt_ids(self, label_sets: Sequence[LabelSet]) -> torch.Tensor:
        """[N] int64 key of each label set's prompts at the levels in use: equal exactly when
        the prompt texts are, and the same on every process (a digest of the texts, not Python's
        salted ``hash``), so SPA can tell false negatives by the texts themselves."""
        keys = [
            hashlib.blake2b(
                "\n".join(build_prompts(labels, self.prompts)).encode(), digest_size=7
            ).digest()
            for labels in label_sets
        ]
        return torch.tensor(
            [int.from_bytes(key, "big") for key in keys],
            dtype=torch.long,
            device=self.level_logits.device,
        )

    def level_weights(self) -> torch.Tensor:
        return torch.softmax(self.level_logits, dim=0)

    def combine(self, levels: torch.Tensor) -> torch.Tensor:
        """[N, levels, D] level embeddings -> [N, D] unit-norm text embeddings."""
        combined = torch.einsum("l,nld->nd", self.level_weights(), levels)
        return F.normalize(combined, dim=-1)

    def forward(self, label_sets: Sequence[LabelSet]) -> torch.Tensor:
        """[N, D] unit-norm text embedding of each label set."""
        return self.combine(self.level_embeddings(label_sets))
