"""The three classes every detector, dataset and report speaks of, and a sample's label set: one
place below the model, the data layer and the numerics, which all read them (and none of which
needs the others, or torch, for that)."""

from __future__ import annotations

from dataclasses import dataclass

CLASS_NAMES = ("real", "diffusion", "gan")  # the 3-way head's classes, in its order
REAL_INDEX = CLASS_NAMES.index("real")  # p(real)'s column: a fake score is 1 minus it
# the forgery types the published datasets and the prompts name: entire face synthesis, face
# swap, face editing, face reenactment, attribute manipulation, text-to-image, image-to-image
FORGERY_TYPES = ("none", "efs", "fs", "fe", "fr", "am", "t2i", "i2i")


@dataclass(frozen=True)
class LabelSet:
    """The labels a sample's text prompts depend on; equal label sets share one text embedding."""

    label: str  # real | diffusion | gan
    forgery_type: str = ""  # none, efs, fs, fe, t2i, i2i, ... ("" when unknown)
    generator: str = ""  # free text ("" when unknown)

    def __post_init__(self) -> None:
        if self.label not in CLASS_NAMES:
            raise ValueError(f"label must be one of {', '.join(CLASS_NAMES)}, not {self.label!r}")

    @property
    def is_real(self) -> bool:
        return self.label == "real"
