"""Synthetic demo data: public-domain faces with documented, *synthetic* GAN / diffusion traces.

Nothing here is a real GAN or diffusion image. Offline there are none, so the demo data set
is built from two public-domain photographs (shipped in ``assets/``, see ``assets/SOURCES.md``)
and the fakes carry hand-made artifacts that imitate the two families' best-known frequency
traces. A model trained on it learns *these* artifacts, nothing more: it is a demonstration of
the pipeline (prepare, train, eval, scan), never evidence about any real image.

Views (every class, same distribution)
    A ``size`` x ``size`` view of one base image with its face 85-135 px tall (cameraman: at most
    1.6x its native 73 px): one affine warp (Lanczos-4, reflected border) with uniform scale,
    rotation U(-10, 10) degrees about the face, face centre uniform in [m, size - m] with
    m = 0.68 x the face height (room for the scan's 1.3x face crop), taking the first of 16 draws
    whose view lies inside the base image (else the least outside), and a
    horizontal flip with p = 0.5; then colour jitter (contrast U(0.85, 1.15) about the mean,
    brightness U(-15, 15) levels, saturation U(0.8, 1.2), gamma U(0.9, 1.1)); then, with
    p = 0.5, a JPEG round-trip at quality 80-95 (so JPEG traces are no class cue). A real image is
    that view. A fake is that view with the artifact below applied to the whole view; every
    image is saved as lossless PNG.

GAN artifacts (periodic up-sampling traces; peaks in the spectrum at multiples of 1/period)
    All add ``A * T[(y + py) % p, (x + px) % p] * (0.5 * v + 64)`` to every channel value ``v``
    (an intensity-dependent modulation, present in dark areas too), where ``T`` is a p x p tile
    scaled to zero mean and max |T| = 1, the phase (py, px) is uniform per image and the
    amplitude ``A`` is the given value times U(0.8, 1.2). A checkerboard's ``T`` is the outer
    product of a 1-D profile (taps per output position) with itself:

    * ``synth-gan-checker2`` p = 2, A = 0.08: stride-2 transposed convolution with a 3-tap kernel;
      output pixels receive 2, 1, 2, 1, ... taps, so the profile is (2, 1): a 2-px checkerboard.
    * ``synth-gan-checker3`` p = 3, A = 0.06: stride 3, 4-tap kernel; profile (2, 1, 1).
    * ``synth-gan-checker4`` p = 4, A = 0.06: stride 4, 6-tap kernel; profile (2, 2, 1, 1).
    * ``synth-gan-grid6`` p = 6, A = 0.06: tile seams every 6 px, a 1-px line in each direction;
      ``T`` is -1 on row 0 and column 0 of the tile, 0 elsewhere, before the zero-mean scaling
      (dark lines; periods avoid JPEG's 8-px grid).

Diffusion artifacts (denoising-smoothed high frequencies; no spectral peaks, a steep fall-off)
    ``G_s`` is a Gaussian blur of standard deviation s px (reflected border), applied per channel.

    * ``synth-diff-lowpass``: band split at ``L = G_2(v)``, ``H = v - L``; the output is
      ``L + b * G_s(H)`` with s ~ U(1.1, 1.4), b ~ U(0.45, 0.6): the finest detail is smoothed
      away and the rest of the high band damped (gain at 0.25 cycles/px about 0.1).
    * ``synth-diff-bilateral``: edge-preserving denoising, three passes of
      ``cv2.bilateralFilter(d=7, sigmaColor=U(25, 35), sigmaSpace=3)`` (flat, "plastic" skin,
      edges kept) then ``G_1.3``.
    * ``synth-diff-residual``: ``G_s(v)`` with s ~ U(1.4, 1.7), plus a faint smoothed-noise
      residual: white Gaussian noise (one field, added to all channels) blurred by ``G_1.5`` and
      rescaled to a standard deviation of U(1.5, 2.5) levels, i.e. the correlated, band-limited
      noise that an unfinished denoising leaves.

Separation (luminance spectra, Hann window), measured on 200 written views per class and on
the scan's 128 px aligned face crops of them (MTCNN + similarity warp):

* energy above 0.25 cycles/px over energy above 0.02: real views 0.007-0.06 (crops 0.022-0.041),
  every diffusion artifact at most 0.0003 (crops at most 0.004). Reals rescaled by 0.9 or 1.1 and
  JPEG'd at quality 80 keep 0.003-0.02 (crops 0.006-0.026): mild re-compression or resizing does
  not look like the diffusion smoothing.
* log power at a lattice frequency (a/p, b/p) over the median of a 7x7 ring around it: at a GAN
  view's own period at least 4.8 (e^4.8 = 120x), reals and diffusion at most 3.2 at any period.
  On the crops, where rotation and scale move the peaks, the strongest local spectral peak
  (excess over a 9x9 median) averages 4.8-5.4 per GAN artifact (minimum 3.2) and stays within
  2.1-3.0 for reals and diffusion.

The tests check these separations on the written images.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parent / "assets"
SYNTH_FORMAT = "mfclip-synth-1"
_LABELS = ("real", "gan", "diffusion")


@dataclass(frozen=True)
class GeneratorSpec:
    """One synthetic artifact: what it pretends to be and exactly what it does to the pixels."""

    name: str
    label: str  # "gan" | "diffusion"
    forgery_type: str  # "efs": entire-face synthesis
    description: str
    period: int | None = None  # GAN artifacts: the spatial period in px


SYNTH_GENERATORS: dict[str, GeneratorSpec] = {
    spec.name: spec
    for spec in (
        GeneratorSpec(
            "synth-gan-checker2",
            "gan",
            "efs",
            "adds a 2-px transposed-convolution checkerboard (stride 2, 3-tap kernel; "
            "amplitude 8%, random phase)",
            period=2,
        ),
        GeneratorSpec(
            "synth-gan-checker3",
            "gan",
            "efs",
            "adds a 3-px transposed-convolution checkerboard (stride 3, 4-tap kernel; "
            "amplitude 6%, random phase)",
            period=3,
        ),
        GeneratorSpec(
            "synth-gan-checker4",
            "gan",
            "efs",
            "adds a 4-px transposed-convolution checkerboard (stride 4, 6-tap kernel; "
            "amplitude 6%, random phase)",
            period=4,
        ),
        GeneratorSpec(
            "synth-gan-grid6",
            "gan",
            "efs",
            "adds dark 1-px tile-seam lines every 6 px in both directions "
            "(amplitude 6%, random phase)",
            period=6,
        ),
        GeneratorSpec(
            "synth-diff-lowpass",
            "diffusion",
            "efs",
            "replaces the high band v - G_2(v) by 0.45-0.6 x its Gaussian-smoothed "
            "(sigma 1.1-1.4 px) copy",
        ),
        GeneratorSpec(
            "synth-diff-bilateral",
            "diffusion",
            "efs",
            "edge-preserving smoothing: 3 bilateral passes (d 7, sigma colour 25-35, space 3) "
            "then Gaussian sigma 1.3 px",
        ),
        GeneratorSpec(
            "synth-diff-residual",
            "diffusion",
            "efs",
            "Gaussian low-pass (sigma 1.4-1.7 px) plus a faint smoothed-noise residual "
            "(noise blurred sigma 1.5 px, std 1.5-2.5 levels)",
        ),
    )
}

# GAN tiles: (1-D profile, amplitude) -> T = outer(profile, profile); the grid is special-cased.
_GAN_TILES: dict[str, tuple[tuple[float, ...], float]] = {
    "synth-gan-checker2": ((2, 1), 0.08),
    "synth-gan-checker3": ((2, 1, 1), 0.06),
    "synth-gan-checker4": ((2, 2, 1, 1), 0.06),
    "synth-gan-grid6": ((), 0.06),
}


@dataclass(frozen=True)
class _Source:
    name: str
    file: str
    face_box: tuple[
        float, float, float, float
    ]  # x1, y1, x2, y2 of the face (MTCNN) in the base image
    max_upscale: float
    licence: str


# Face boxes as facenet-pytorch's MTCNN finds them in the full base images.
_SOURCES = (
    _Source(
        "astronaut",
        "astronaut.png",
        (181.1, 62.2, 267.7, 172.1),
        1.6,
        "Eileen Collins, NASA; public domain (via scikit-image, skimage.data.astronaut)",
    ),
    _Source(
        "cameraman",
        "cameraman.png",
        (199.2, 118.9, 254.3, 192.3),
        1.6,
        "Lav Varshney; CC0 (via scikit-image, skimage.data.camera)",
    ),
)


def real_sources() -> list[tuple[str, np.ndarray]]:
    """The public-domain base images, (name, RGB uint8 [H, W, 3]); greyscale ones as 3 equal
    channels."""
    return [(source.name, _load_source(source)) for source in _SOURCES]


def _load_source(source: _Source) -> np.ndarray:
    with Image.open(ASSETS / source.file) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _gan_tile(name: str) -> np.ndarray:
    profile, _ = _GAN_TILES[name]
    if name == "synth-gan-grid6":
        tile = np.zeros((6, 6))
        tile[0, :] = -1.0
        tile[:, 0] = -1.0
    else:
        p = np.asarray(profile, dtype=np.float64)
        tile = np.outer(p, p)
    tile = tile - tile.mean()
    return tile / np.abs(tile).max()


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
    )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def apply_artifact(rgb_uint8: np.ndarray, generator: str, rng: np.random.Generator) -> np.ndarray:
    """The image with ``generator``'s artifact over the whole of it; [H, W, 3] uint8 in and out."""
    if generator not in SYNTH_GENERATORS:
        raise KeyError(
            f"unknown synthetic generator {generator!r}; known: {', '.join(SYNTH_GENERATORS)}"
        )
    image = np.asarray(rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    v = image.astype(np.float32)
    height, width = image.shape[:2]

    if SYNTH_GENERATORS[generator].label == "gan":
        tile = _gan_tile(generator)
        period = tile.shape[0]
        amplitude = _GAN_TILES[generator][1] * rng.uniform(0.8, 1.2)
        py, px = (int(k) for k in rng.integers(0, period, size=2))
        rows = (np.arange(height) + py) % period
        cols = (np.arange(width) + px) % period
        pattern = tile[rows[:, None], cols[None, :]].astype(np.float32)[..., None]
        out = v + amplitude * pattern * (0.5 * v + 64.0)
    elif generator == "synth-diff-lowpass":
        sigma, gain = rng.uniform(1.1, 1.4), rng.uniform(0.45, 0.6)
        low = _blur(v, 2.0)
        out = low + gain * _blur(v - low, sigma)
    elif generator == "synth-diff-bilateral":
        sigma_colour = float(rng.uniform(25.0, 35.0))
        out = v
        for _ in range(3):
            out = cv2.bilateralFilter(out, d=7, sigmaColor=sigma_colour, sigmaSpace=3.0)
        out = _blur(out, 1.3)
    elif generator == "synth-diff-residual":
        sigma, noise_std = rng.uniform(1.4, 1.7), rng.uniform(1.5, 2.5)
        noise = _blur(rng.standard_normal((height, width)).astype(np.float32), 1.5)
        noise *= noise_std / max(float(noise.std()), 1e-6)
        out = _blur(v, sigma) + noise[..., None]
    else:  # pragma: no cover - every registered generator is handled above
        raise AssertionError(generator)
    return _to_uint8(out)


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def _source(name: str) -> _Source:
    for source in _SOURCES:
        if source.name == name:
            return source
    raise KeyError(f"unknown base image {name!r}; known: {', '.join(s.name for s in _SOURCES)}")


def _view_matrix(
    source: _Source, scale: float, angle: float, centre: tuple[float, float]
) -> np.ndarray:
    """2x3 affine base -> view: scale and rotate (degrees, counter-clockwise) about the face, face
    to ``centre``."""
    x1, y1, x2, y2 = source.face_box
    face = ((x1 + x2) / 2, (y1 + y2) / 2)
    matrix = cv2.getRotationMatrix2D(face, angle, scale)
    matrix[:, 2] += (centre[0] - face[0], centre[1] - face[1])
    return matrix


def warp_view(
    base: np.ndarray,
    source: str,
    *,
    scale: float,
    angle: float,
    centre: tuple[float, float],
    flip: bool = False,
    size: int = 256,
) -> np.ndarray:
    """A ``size`` x ``size`` uint8 view of base image ``source`` (a name from ``real_sources()``).

    The face is scaled by ``scale``, rotated by ``angle`` degrees about its centre, and its centre
    put at ``centre`` (view pixels); ``flip`` mirrors the view. Lanczos-4, reflected border.
    """
    matrix = _view_matrix(_source(source), scale, angle, centre)
    if flip:
        matrix = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack(
            [matrix, [0.0, 0.0, 1.0]]
        )
    return cv2.warpAffine(
        base, matrix, (size, size), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101
    )


def _outside(base_shape: tuple[int, ...], matrix: np.ndarray, size: int) -> float:
    """How far (base pixels) the view's corners fall outside the base image; 0 when inside."""
    corners = np.array(
        [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], dtype=np.float64
    )
    points = (corners - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T
    height, width = base_shape[:2]
    excess = np.concatenate(
        [-points[:, 0], points[:, 0] - (width - 1), -points[:, 1], points[:, 1] - (height - 1)]
    )
    return float(max(excess.max(), 0.0))


def random_view(
    base: np.ndarray, source: str, rng: np.random.Generator, size: int = 256
) -> np.ndarray:
    """One augmented ``size`` x ``size`` view of a base image from ``real_sources()`` (module
    docstring)."""
    spec = _source(source)
    face_height = spec.face_box[3] - spec.face_box[1]
    lo, hi = 85.0 * size / 256, 135.0 * size / 256
    hi = max(lo, min(hi, face_height * spec.max_upscale * size / 256))
    scale = rng.uniform(lo, hi) / face_height
    angle = rng.uniform(-10.0, 10.0)
    flip = bool(rng.random() < 0.5)
    # Face centre: the first of 16 candidates whose view lies inside the base image, else the
    # candidate that leaves it least (the rest is filled by reflection). The margin leaves room
    # for the scan's 1.3x face crop.
    margin = min(0.45 * size, max(0.25 * size, 0.68 * scale * face_height))
    candidates = rng.uniform(margin, size - margin, size=(16, 2))
    outside = [
        _outside(base.shape, _view_matrix(spec, scale, angle, tuple(c)), size) for c in candidates
    ]
    centre = tuple(candidates[int(np.argmin(outside))])
    view = warp_view(
        base, source, scale=scale, angle=angle, centre=centre, flip=flip, size=size
    ).astype(np.float32)

    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-15.0, 15.0)
    saturation, gamma = rng.uniform(0.8, 1.2), rng.uniform(0.9, 1.1)
    mean = float(view.mean())
    view = (view - mean) * contrast + mean + brightness
    grey = view @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    view = grey[..., None] + (view - grey[..., None]) * saturation
    view = 255.0 * (np.clip(view, 0.0, 255.0) / 255.0) ** gamma
    out = _to_uint8(view)
    if rng.random() < 0.5:
        out = _jpeg_round_trip(out, int(rng.integers(80, 96)))
    return out


def _save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def _synth_md(n: int, seed: int, size: int) -> str:
    gan = [s for s in SYNTH_GENERATORS.values() if s.label == "gan"]
    diffusion = [s for s in SYNTH_GENERATORS.values() if s.label == "diffusion"]
    lines = [
        "# Synthetic demo data (not evidence)",
        "",
        "Written by `mfclip_cli.data.synth.write_synth_dataset` "
        f"(n = {n} per class, seed = {seed}, size = {size} px).",
        "",
        "**This is synthetic demonstration data.** No image here comes from a GAN or a diffusion",
        'model. The "fakes" are views of public-domain photographs with hand-made artifacts that',
        "imitate the two families' best-known frequency traces. A model trained on it learns these",
        "artifacts only: use it to try the pipeline, never as evidence about a real image, and",
        "never report its scores as detection accuracy.",
        "",
        "Layout: `real/<source>/NNNNN.png`, `gan/efs/<generator>/NNNNN.png`,",
        "`diffusion/efs/<generator>/NNNNN.png` (NNNNN: index within the class; generators and",
        (
            "sources round-robin). Every class uses the same views: random scale "
            "(face 85-135 px tall),"
        ),
        (
            "rotation within 10 degrees, flip, colour jitter, and a JPEG round-trip "
            "(quality 80-95) for"
        ),
        "half of them *before* any artifact; then the artifact over the whole view; saved as PNG.",
        "MTCNN finds the one face in every view (80-140 px tall); in a few per cent of the",
        "cameraman views it also reports a small false face (his ear).",
        "",
        "## Sources (real)",
        "",
    ]
    lines += [f"- `{s.name}`: {s.licence}" for s in _SOURCES]
    lines += ["", "## GAN artifacts (`gan/efs/...`)", ""]
    lines += [f"- `{s.name}`: {s.description}" for s in gan]
    lines += ["", "## Diffusion artifacts (`diffusion/efs/...`)", ""]
    lines += [f"- `{s.name}`: {s.description}" for s in diffusion]
    lines += ["", "The exact definitions are in the docstring of `mfclip_cli/data/synth.py`.", ""]
    return "\n".join(lines)


def _image_rng(seed: int, label: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _LABELS.index(label), index])


def write_synth_dataset(
    out: Path, n: int, seed: int = 0, size: int = 256, overwrite: bool = False
) -> dict:
    """Write ``n`` images per class (real, gan, diffusion) under ``out`` in the folder layout.

    Deterministic: the same (n, seed, size) writes the same bytes; image i of a class depends on
    (seed, class, i) only. A non-empty ``out`` is refused (FileExistsError) unless ``overwrite``;
    overwriting replaces only an earlier synthetic data set (one with ``synth.json``): its
    ``real/``, ``gan/``, ``diffusion/`` folders and metadata files are removed first.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if size < 64:
        raise ValueError(f"size must be at least 64 px, not {size}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (use --force to write into it)")
        if not (out / "synth.json").is_file():
            raise FileExistsError(
                f"{out} is not empty and holds no synthetic data set (no synth.json); "
                "not overwriting it"
            )
        for name in _LABELS:
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("SYNTH.md", "synth.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    generators = {
        label: [s.name for s in SYNTH_GENERATORS.values() if s.label == label]
        for label in ("gan", "diffusion")
    }
    sources = real_sources()
    parameters = {
        "format": SYNTH_FORMAT,
        "synthetic": True,
        "n": n,
        "seed": seed,
        "size": size,
        "sources": [s.name for s in _SOURCES],
        "generators": {
            name: {"label": s.label, "forgery_type": s.forgery_type, "description": s.description}
            for name, s in SYNTH_GENERATORS.items()
        },
    }
    # Written first, so an interrupted run can still be overwritten.
    (out / "synth.json").write_text(json.dumps(parameters, indent=2) + "\n", encoding="utf-8")

    counts: dict[str, dict[str, int]] = {label: {} for label in _LABELS}
    for label in _LABELS:
        for i in range(n):
            rng = _image_rng(seed, label, i)
            # fakes: every generator sees every source (generator i % G, source (i // G) % S)
            step = 1 if label == "real" else len(generators[label])
            source, base = sources[(i // step) % len(sources)]
            view = random_view(base, source, rng, size)
            if label == "real":
                path, key = out / "real" / source / f"{i:05d}.png", source
            else:
                generator = generators[label][i % len(generators[label])]
                view = apply_artifact(view, generator, rng)
                path, key = out / label / "efs" / generator / f"{i:05d}.png", generator
            _save_png(path, view)
            counts[label][key] = counts[label].get(key, 0) + 1

    (out / "SYNTH.md").write_text(_synth_md(n, seed, size), encoding="utf-8")
    return {
        "out": str(out),
        "n": n,
        "seed": seed,
        "size": size,
        "total": n * len(_LABELS),
        "counts": {label: sum(c.values()) for label, c in counts.items()},
        "per_generator": counts,
    }
