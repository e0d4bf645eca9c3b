"""A small synthetic protocol for attribution: four trained generators (two per family, the
documented artifacts of ``mfclip synth``) and two held out of train and val, on face-sized
128 px views (the tiny config's crop, so no detection is needed)."""

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from mfclip_cli.data.synth import SYNTH_GENERATORS, apply_artifact

SIZE = 128
TRAINED = (
    "synth-gan-checker2",
    "synth-gan-checker4",
    "synth-diff-lowpass",
    "synth-diff-bilateral",
)
HELD_OUT = ("synth-gan-grid6", "synth-diff-residual")


def _real(rng: np.random.Generator) -> np.ndarray:
    base = gaussian_filter(rng.random((SIZE, SIZE, 3)), sigma=(12, 12, 0))
    base = (base - base.min()) / (np.ptp(base) + 1e-9) * 0.6 + 0.2
    image = base + rng.normal(0, 0.06, (SIZE, SIZE, 1))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def make_attribution_dataset(root: Path, per_generator: int, seed: int = 0) -> Path:
    """``folder`` layout: ``real/camera/*`` and ``<family>/efs/<generator>/*``."""
    rng = np.random.default_rng(seed)
    for i in range(2 * per_generator):
        folder = root / "real" / "camera"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_real(rng)).save(folder / f"{i:04d}.png")
    for name in (*TRAINED, *HELD_OUT):
        folder = root / SYNTH_GENERATORS[name].label / "efs" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_generator):
            Image.fromarray(apply_artifact(_real(rng), name, rng)).save(folder / f"{i:04d}.png")
    return root


def write_protocol(path: Path) -> Path:
    """In-domain splits, with the held-out generators kept out of train and val: the test split
    holds fakes of trained and of unseen generators."""
    held_out = ", ".join(f'"{name}"' for name in HELD_OUT)
    path.write_text(
        'name = "attribution-holdout"\n'
        'val_fraction = 0.2\ntest_fraction = 0.3\nreport_by = "generator"\nseed = 0\n'
        f"[train]\nexclude = {{ generator = [{held_out}] }}\n"
        f"[val]\nexclude = {{ generator = [{held_out}] }}\n",
        encoding="utf-8",
    )
    return path
