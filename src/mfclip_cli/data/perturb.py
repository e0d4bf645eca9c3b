"""Image perturbations of eval's robustness protocol: JPEG, down-and-up resizing, blur, noise.

Each is a pure function of (image, severity) and, for noise, of (seed, sample key), so a rerun,
another batch size or another number of loader workers gives the same pixels. Text form:
``KIND:S1,S2,...`` (``jpeg:90,75``), one perturbation per severity. Exact definitions:
docs/robustness.md. numpy, Pillow and OpenCV are imported when an image is perturbed, not when a
protocol is read.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from mfclip_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

JPEG_SUBSAMPLING = "4:2:0"


@dataclass(frozen=True)
class _Kind:
    """What a kind's severity means and which values it takes."""

    axis: str  # the severity's name on a plot
    valid: Callable[[float], bool]
    expected: str  # said when a severity is not valid
    example: str
    milder_when_higher: bool = False  # JPEG quality, resize factor: higher degrades less
    integer: bool = False


KINDS = {
    "jpeg": _Kind(
        "JPEG quality",
        lambda q: 1 <= q <= 95,
        "an integer quality in 1-95",
        "90,75,50",
        milder_when_higher=True,
        integer=True,
    ),
    "resize": _Kind(
        "downscale factor",
        lambda f: 0 < f < 1,
        "a factor in (0, 1)",
        "0.5,0.25",
        milder_when_higher=True,
    ),
    "blur": _Kind("Gaussian sigma (px)", lambda s: s > 0, "a sigma > 0 (pixels)", "1,2"),
    "noise": _Kind("noise std (0-255)", lambda s: s > 0, "a std > 0 (0-255 scale)", "5,10"),
}


def _shown(value: float) -> str:
    """The shortest text that reads back as ``value``: 90, 0.25, 1.5."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one severity; ``apply`` gives the degraded image."""

    kind: str
    severity: float

    def __post_init__(self) -> None:
        spec = KINDS.get(self.kind)
        if spec is None:
            raise UsageError(f"unknown perturbation {self.kind!r} (known: {', '.join(KINDS)})")
        value = self.severity
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (
            number
            and math.isfinite(value)
            and spec.valid(value)
            and (float(value).is_integer() or not spec.integer)
        ):
            raise UsageError(f"{self.kind} takes {spec.expected}, not {value!r}")
        object.__setattr__(self, "severity", int(value) if spec.integer else float(value))

    @property
    def name(self) -> str:
        """``kind:severity``, as ``parse_perturbations`` reads it."""
        return f"{self.kind}:{_shown(self.severity)}"

    def apply(self, image: Image.Image, key: str, seed: int) -> Image.Image:
        """The perturbed RGB image, same size; ``key`` (the sample's path) and ``seed`` draw the
        noise and are ignored by the other kinds."""
        import numpy as np
        from PIL import Image

        image = image.convert("RGB")
        if self.kind == "jpeg":
            with Image.open(io.BytesIO(encode_jpeg(image, int(self.severity)))) as decoded:
                return decoded.convert("RGB")
        if self.kind == "resize":
            width, height = image.size
            small = (max(1, round(width * self.severity)), max(1, round(height * self.severity)))
            bicubic = Image.Resampling.BICUBIC
            return image.resize(small, bicubic).resize((width, height), bicubic)
        pixels = np.asarray(image, dtype=np.float32)
        if self.kind == "blur":
            import cv2

            size = 2 * math.ceil(3 * self.severity) + 1
            sigma = self.severity
            degraded = cv2.GaussianBlur(
                pixels, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
            )
        else:
            degraded = pixels + self.severity * noise_draw(key, seed, pixels.shape)
        return Image.fromarray(np.clip(np.rint(degraded), 0, 255).astype(np.uint8))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """The image as a baseline JPEG at ``quality`` with 4:2:0 chroma subsampling (Pillow)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
    return buffer.getvalue()


def noise_draw(key: str, seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal values for one sample: numpy's PCG64 seeded with the whole SHA-256 of
    ``f"{seed}:{key}"``, so they depend on the sample, not on the batch or worker it is in."""
    import numpy as np

    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest, "big")).standard_normal(shape)


def _severity(kind: str, text: str) -> float:
    text = text.strip()
    if not text:
        raise UsageError(f"an empty severity (write {kind}:S1,S2,..., e.g. {_example(kind)})")
    try:
        return int(text) if KINDS[kind].integer else float(text)
    except ValueError:
        raise UsageError(f"{kind} takes {KINDS[kind].expected}, not {text!r}") from None


def _example(kind: str) -> str:
    return f"{kind}:{KINDS[kind].example}"


def parse_perturbations(texts: Iterable[str]) -> list[Perturbation]:
    """``["jpeg:90,75", "blur:1"]`` -> one Perturbation per severity, in the order given.

    A text without a kind or severities, an unknown kind, a severity that is not a number or out
    of its range, or one (kind, severity) named twice is a ``UsageError``.
    """
    perturbations: list[Perturbation] = []
    for text in texts:
        kind, colon, severities = str(text).partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise UsageError(
                f"perturbation {text!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})"
            )
        if not colon or not severities.strip():
            raise UsageError(
                f"perturbation {text!r} names no severity (write {kind}:S1,S2,..., "
                f"e.g. {_example(kind)})"
            )
        for part in severities.split(","):
            try:
                perturbation = Perturbation(kind, _severity(kind, part))
            except UsageError as error:
                raise UsageError(f"perturbation {text!r}: {error}") from None
            if perturbation in perturbations:
                raise UsageError(f"perturbation {perturbation.name} is named twice")
            perturbations.append(perturbation)
    return perturbations


def combine(
    protocol: Sequence[Perturbation], command_line: Sequence[Perturbation]
) -> list[Perturbation]:
    """The perturbations to run: a kind the command line names takes its severities from there
    alone, the protocol's other kinds stay; ordered by kind (jpeg, resize, blur, noise), then
    from the mildest to the strongest."""
    named = {perturbation.kind for perturbation in command_line}
    chosen = [p for p in protocol if p.kind not in named] + list(command_line)
    kinds = list(KINDS)

    def order(perturbation: Perturbation) -> tuple[int, float]:
        milder_first = -1 if KINDS[perturbation.kind].milder_when_higher else 1
        return kinds.index(perturbation.kind), milder_first * perturbation.severity

    return sorted(chosen, key=order)


__all__ = [
    "JPEG_SUBSAMPLING",
    "KINDS",
    "Perturbation",
    "combine",
    "encode_jpeg",
    "noise_draw",
    "parse_perturbations",
]
