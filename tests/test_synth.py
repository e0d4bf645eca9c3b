"""Synthetic demo data: registry, artifacts, layout, determinism, and that the artifacts are
there."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfclip_cli.data import synth
from mfclip_cli.data.synth import (
    SYNTH_GENERATORS,
    apply_artifact,
    real_sources,
    write_synth_dataset,
)

N = 8  # images per class
GAN = [name for name, spec in SYNTH_GENERATORS.items() if spec.label == "gan"]
DIFFUSION = [name for name, spec in SYNTH_GENERATORS.items() if spec.label == "diffusion"]
PEAK_THRESHOLD = 4.0  # natural-log excess power of a lattice peak over its neighbourhood


def luminance(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def power_spectrum(grey: np.ndarray, n: int = 240) -> np.ndarray:
    """|FFT|^2 of the central n x n (240: a multiple of every period used), Hann-windowed."""
    h, w = grey.shape
    y0, x0 = (h - n) // 2, (w - n) // 2
    patch = grey[y0 : y0 + n, x0 : x0 + n]
    window = np.hanning(n)
    return np.abs(np.fft.fft2((patch - patch.mean()) * window[:, None] * window[None, :])) ** 2


def high_frequency_ratio(grey: np.ndarray) -> float:
    """Energy above 0.25 cycles/px over energy above 0.02 cycles/px."""
    power = power_spectrum(grey)
    f = np.fft.fftfreq(power.shape[0])
    radius = np.hypot(f[:, None], f[None, :])
    return float(power[radius > 0.25].sum() / power[radius > 0.02].sum())


def periodic_peak(grey: np.ndarray, period: int) -> float:
    """Strongest log-power excess at the frequencies (a/period, b/period) over a 7x7 ring around
    each."""
    log_power = np.log(power_spectrum(grey) + 1e-9)
    n = log_power.shape[0]
    step = n // period
    ring = np.ones((7, 7), dtype=bool)
    ring[2:5, 2:5] = False
    best = -np.inf
    for a in range(period):
        for b in range(period):
            if a == b == 0:
                continue
            rows = (np.arange(a * step - 3, a * step + 4) % n)[:, None]
            cols = (np.arange(b * step - 3, b * step + 4) % n)[None, :]
            block = log_power[rows, cols]
            best = max(best, float(block[3, 3] - np.median(block[ring])))
    return best


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, write_synth_dataset(out, N, seed=0)


def by_label(root: Path) -> dict[str, list[Path]]:
    return {label: sorted((root / label).rglob("*.png")) for label in ("real", "gan", "diffusion")}


# --- registry and artifacts -------------------------------------------------------------------


def test_registry_has_documented_gan_and_diffusion_artifacts():
    assert len(GAN) >= 3 and len(DIFFUSION) >= 3
    for name, spec in SYNTH_GENERATORS.items():
        assert spec.name == name
        assert spec.label in ("gan", "diffusion")
        assert spec.forgery_type == "efs"
        assert spec.description and "\n" not in spec.description
        assert name in synth.__doc__  # every artifact is defined in the module docstring
        assert (spec.period is not None) == (spec.label == "gan")


@pytest.mark.parametrize("generator", list(SYNTH_GENERATORS))
def test_apply_artifact_keeps_shape_and_dtype(generator):
    rng = np.random.default_rng(0)
    image = np.ascontiguousarray(real_sources()[0][1][100:197, 150:271])  # odd sizes on purpose
    out = apply_artifact(image, generator, rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 0.5  # it did something
    again = apply_artifact(image, generator, np.random.default_rng(0))
    assert np.array_equal(out, again)


def test_apply_artifact_rejects_bad_input():
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(KeyError, match="unknown synthetic generator"):
        apply_artifact(image, "stylegan9", np.random.default_rng(0))
    with pytest.raises(ValueError):
        apply_artifact(image.astype(np.float32), GAN[0], np.random.default_rng(0))
    with pytest.raises(ValueError):
        apply_artifact(image[..., 0], GAN[0], np.random.default_rng(0))


def test_real_sources_ship_with_the_package_and_need_no_scikit_image(monkeypatch):
    from skimage import data

    astronaut, camera = data.astronaut(), data.camera()
    monkeypatch.setitem(sys.modules, "skimage", None)  # any import of it would now fail
    sources = dict(real_sources())
    assert np.array_equal(sources["astronaut"], astronaut)
    assert np.array_equal(sources["cameraman"], np.stack([camera] * 3, axis=-1))
    assert (Path(synth.__file__).parent / "assets" / "astronaut.png").is_file()


def test_package_data_ships_the_assets():
    pyproject = tomllib.loads(
        (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    )
    globs = pyproject["tool"]["setuptools"]["package-data"]["mfclip_cli.data"]
    assert "assets/*" in globs and "protocols/*.toml" in globs


# --- the written data set ---------------------------------------------------------------------


def test_layout_counts_and_metadata(dataset):
    out, summary = dataset
    files = by_label(out)
    assert {label: len(paths) for label, paths in files.items()} == {
        "real": N,
        "gan": N,
        "diffusion": N,
    }
    assert summary["counts"] == {"real": N, "gan": N, "diffusion": N}
    assert summary["out"] == str(out)
    assert {p.parent.name for p in files["real"]} == {"astronaut", "cameraman"}
    for label, generators in (("gan", GAN), ("diffusion", DIFFUSION)):
        assert {p.parent.name for p in files[label]} == set(generators)
        assert all(p.parent.parent.name == "efs" for p in files[label])
        per_generator = summary["per_generator"][label]
        assert (
            sum(per_generator.values()) == N
            and max(per_generator.values()) - min(per_generator.values()) <= 1
        )
    for paths in files.values():
        for path in paths:
            with Image.open(path) as image:
                assert image.format == "PNG" and image.mode == "RGB" and image.size == (256, 256)
    assert "not evidence" in (out / "SYNTH.md").read_text(encoding="utf-8")
    for name in SYNTH_GENERATORS:
        assert name in (out / "SYNTH.md").read_text(encoding="utf-8")
    params = json.loads((out / "synth.json").read_text(encoding="utf-8"))
    assert (params["n"], params["seed"], params["size"]) == (N, 0, 256)
    assert set(params["generators"]) == set(SYNTH_GENERATORS)


def test_fakes_use_every_source_for_every_generator(dataset):
    out, _ = dataset
    for label in ("gan", "diffusion"):
        for generator_dir in (out / label / "efs").iterdir():
            greys = []
            for path in sorted(generator_dir.glob("*.png")):
                rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
                # cameraman is grey
                greys.append(bool(np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2))
            assert set(greys) == {True, False}, generator_dir


def test_deterministic_per_seed(dataset, tmp_path):
    out, _ = dataset
    write_synth_dataset(tmp_path / "same", N, seed=0)
    assert tree_bytes(tmp_path / "same") == tree_bytes(out)
    write_synth_dataset(tmp_path / "other", N, seed=1)
    first, other = tree_bytes(out), tree_bytes(tmp_path / "other")
    images = [name for name in first if name.endswith(".png")]
    assert set(images) <= set(other)
    assert all(first[name] != other[name] for name in images)
    # image i depends on (seed, class, i) only: a smaller data set is a prefix of a larger one
    write_synth_dataset(tmp_path / "small", 3, seed=0)
    small = tree_bytes(tmp_path / "small")
    assert all(small[name] == first[name] for name in small if name.endswith(".png"))


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "data"
    write_synth_dataset(out, 3, seed=0, size=96)
    with pytest.raises(FileExistsError, match="not empty"):
        write_synth_dataset(out, 2, seed=0, size=96)
    (out / "notes.txt").write_text("mine")
    summary = write_synth_dataset(out, 2, seed=5, size=96, overwrite=True)
    assert summary["counts"] == {"real": 2, "gan": 2, "diffusion": 2}
    assert sum(1 for _ in out.rglob("*.png")) == 6  # the earlier, larger set is gone
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    assert json.loads((out / "synth.json").read_text())["seed"] == 5

    foreign = tmp_path / "photos"
    (foreign / "real").mkdir(parents=True)
    (foreign / "real" / "me.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="no synth.json"):
        write_synth_dataset(foreign, 2, overwrite=True)
    assert (foreign / "real" / "me.jpg").read_bytes() == b"x"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        write_synth_dataset(tmp_path / "file", 2)
    with pytest.raises(ValueError):
        write_synth_dataset(tmp_path / "empty", 0)


def test_diffusion_removes_high_frequencies_that_reals_keep(dataset):
    out, _ = dataset
    files = by_label(out)
    ratio = {
        label: [high_frequency_ratio(luminance(p)) for p in paths] for label, paths in files.items()
    }
    # reals (some JPEG'd, some upscaled) stay sharp; every diffusion artifact is far below them
    assert max(ratio["diffusion"]) < 0.5 * min(ratio["real"])
    assert max(ratio["diffusion"]) < 0.5 * min(ratio["gan"])


def test_gan_images_peak_at_their_period_and_others_do_not(dataset):
    out, _ = dataset
    files = by_label(out)
    for path in files["gan"]:
        period = SYNTH_GENERATORS[path.parent.name].period
        assert periodic_peak(luminance(path), period) > PEAK_THRESHOLD, path
    periods = sorted({SYNTH_GENERATORS[name].period for name in GAN})
    for path in files["real"] + files["diffusion"]:
        grey = luminance(path)
        assert max(periodic_peak(grey, p) for p in periods) < PEAK_THRESHOLD, path


def test_every_view_holds_one_large_enough_face(dataset):
    from mfclip_cli.faces.detect import FaceDetector

    out, _ = dataset
    paths = [p for paths in by_label(out).values() for p in paths]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for path, faces in zip(paths, FaceDetector().detect(images)):
        assert faces, path
        height = faces[0].box[3] - faces[0].box[1]
        assert 70 <= height <= 150, (path, height)
