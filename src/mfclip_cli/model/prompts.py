"""Hierarchical text prompts built from a sample's labels (the four levels of the FLE)."""

from __future__ import annotations

from mfclip_cli.labels import LabelSet
from mfclip_cli.model.config import PromptSettings


def _name(value: str, names: dict[str, str] | object, unknown: str) -> str:
    value = value.strip()
    if not value or value.lower() in ("none", "unknown"):
        return unknown
    return dict(names).get(value.lower(), value)  # type: ignore[call-overload]


def build_prompts(labels: LabelSet, settings: PromptSettings) -> tuple[str, ...]:
    """One prompt for each of the ``settings.levels`` coarsest levels; a real face has nothing
    finer to say, so it repeats level 1."""
    if labels.is_real:
        return (settings.real,) * settings.levels
    family = _name(labels.label, settings.family_names, settings.unknown)
    forgery = _name(labels.forgery_type, settings.forgery_type_names, settings.unknown)
    generator = labels.generator.strip() or f"an unknown {labels.label} model"
    return (
        settings.fake,
        settings.forgery_type.format(forgery_type=forgery),
        settings.family.format(family=family),
        settings.generator.format(generator=generator),
    )[: settings.levels]
