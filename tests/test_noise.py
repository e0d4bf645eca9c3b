"""The noise branch against independent references: scipy for SRM, scikit-image for GLCM."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage import data, transform
from skimage.feature import graycomatrix, graycoprops

from mfclip_cli.model.noise import (
    GREY_WEIGHTS,
    SRM_KERNELS,
    SRM_NORMALISERS,
    NoiseBranch,
    grey_levels,
    patch_homogeneity,
    richest_patch_index,
    srm_residuals,
)


def _to_faces(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def _real_images(size: int) -> list[np.ndarray]:
    astronaut = data.astronaut()
    face = astronaut[30:230, 150:350]
    coffee = data.coffee()[:400, 100:500]
    chelsea = data.chelsea()[:300, :300]
    return [
        (transform.resize(image, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
        for image in (face, coffee, chelsea)
    ]


def _random_images(count: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        # smooth some of them so patches differ in texture, not just in noise realisation
        image = (
            ndimage.uniform_filter(image, size=(1 + 2 * (i % 3), 1 + 2 * (i % 3), 1))
            if i % 2
            else image
        )
        images.append(image)
    return images


def _skimage_homogeneity(grey: np.ndarray, patch: int) -> np.ndarray:
    rows, cols = grey.shape[0] // patch, grey.shape[1] // patch
    result = np.empty((rows, cols))
    for r in range(rows):
        for c in range(cols):
            block = grey[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
            glcm = graycomatrix(
                block, distances=[1], angles=[0], levels=256, symmetric=False, normed=True
            )
            result[r, c] = graycoprops(glcm, "homogeneity")[0, 0]
    return result


def test_grey_levels_match_bt601_reference():
    images = _random_images(3, 40, seed=3)
    ours = grey_levels(_to_faces(images)).numpy()
    reference = np.stack(
        [np.round(img.astype(np.float64) @ np.array(GREY_WEIGHTS)) for img in images]
    )
    assert np.abs(ours - reference).max() <= 1  # float32 vs float64 may round a .5 differently
    assert (ours == reference).mean() > 0.999


@pytest.mark.parametrize("source", ["real", "random"])
@pytest.mark.parametrize("patch", [16, 32])
def test_richest_patch_matches_skimage_glcm(source, patch):
    size = 128
    images = _real_images(size) if source == "real" else _random_images(6, size, seed=patch)
    faces = _to_faces(images)
    grey = grey_levels(faces)
    ours = patch_homogeneity(grey, patch).numpy()
    chosen = richest_patch_index(faces, patch).numpy()
    for i in range(len(images)):
        reference = _skimage_homogeneity(grey[i].numpy().astype(np.uint8), patch)
        np.testing.assert_allclose(ours[i], reference, atol=1e-6)
        assert chosen[i] == int(np.argmin(reference))


def test_patch_grid_ignores_partial_patches():
    faces = torch.zeros(1, 3, 70, 100)
    faces[..., 64:, :] = torch.rand(1, 3, 6, 100)  # texture only in the partial last row
    homogeneity = patch_homogeneity(grey_levels(faces), 32)
    assert homogeneity.shape == (1, 2, 3)
    assert torch.all(homogeneity == 1.0)


def _scipy_srm(image: np.ndarray) -> np.ndarray:
    """9 residual maps (3 kernels x RGB) of an RGB uint8 image, 0..255 scale, mirror-padded."""
    pixels = image.astype(np.float64)
    maps = []
    for channel in range(3):
        for kernel, normaliser in zip(SRM_KERNELS.numpy().astype(np.float64), SRM_NORMALISERS):
            maps.append(ndimage.correlate(pixels[..., channel], kernel / normaliser, mode="mirror"))
    return np.stack(maps)


def test_srm_residuals_equal_scipy_correlation_clipped():
    size, patch, clip = 96, 32, 3.0
    images = _random_images(4, size, seed=7)
    faces = _to_faces(images)
    indices = torch.tensor([0, 4, 8, 5])  # corners, centre: every kind of border
    ours = srm_residuals(faces, indices, patch, clip).numpy()
    assert ours.shape == (4, 9, patch, patch)
    cols = size // patch
    for i, image in enumerate(images):
        top, left = (int(indices[i]) // cols) * patch, (int(indices[i]) % cols) * patch
        reference = np.clip(
            _scipy_srm(image)[:, top : top + patch, left : left + patch], -clip, clip
        )
        np.testing.assert_allclose(ours[i], reference, atol=1e-5)
    assert ours.min() == -clip and ours.max() == clip  # random noise saturates the truncation


def test_srm_residuals_are_float32_arithmetic_under_bf16_autocast():
    """Training and scanning on a GPU run under bf16 autocast, which would compute the SRM
    convolution in bf16: pixels on the 0..255 scale rounded to 8 significant bits, errors of up
    to a grey level in residuals truncated at 3 (on the demo model's crops: up to 2.1, mean 0.14).
    Aligned crops are bilinear samples, so their grey levels are not integers; so here."""
    faces = F.interpolate(
        _to_faces(_real_images(96)), size=(128, 128), mode="bilinear", align_corners=False
    )
    indices = richest_patch_index(faces, 32)
    exact = srm_residuals(faces, indices, 32, 3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = srm_residuals(faces, indices, 32, 3.0)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)


def test_srm_kernels_are_high_pass():
    # Every SRM kernel sums to zero: a flat image has no residual.
    assert torch.equal(SRM_KERNELS.sum(dim=(1, 2)), torch.zeros(3))
    flat = torch.full((2, 3, 64, 64), 0.5)
    assert torch.count_nonzero(srm_residuals(flat, torch.tensor([0, 3]), 32, 3.0)) == 0


def test_noise_branch_is_batch_independent():
    torch.manual_seed(0)
    branch = NoiseBranch(embed_dim=16, patch_size=32, width=8, clip=3.0)
    torch.nn.init.normal_(branch.encoder.project.weight)  # the projection starts at zero
    faces = _to_faces(_random_images(5, 96, seed=11))
    batched = branch(faces)
    single = torch.cat([branch(faces[i : i + 1]) for i in range(len(faces))])
    assert batched.shape == (5, 16)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert batched.std(dim=0).min() > 0  # different faces, different embeddings


def test_srm_on_the_unit_range_is_the_255_scale_divided_and_never_truncated():
    """``noise.pixel_range=1`` (the authors' [0, 1] input): the same residuals / 255, so the
    truncation at 3 that saturates on the 0..255 scale never triggers."""
    size, patch, clip = 96, 32, 3.0
    faces = _to_faces(_random_images(3, size, seed=5))
    indices = torch.tensor([0, 4, 8])
    unit = srm_residuals(faces, indices, patch, clip, pixel_range=1.0)
    full = srm_residuals(faces, indices, patch, clip=1e9)  # 0..255, not truncated
    torch.testing.assert_close(unit, full / 255.0, atol=1e-6, rtol=1e-5)
    assert unit.abs().max() < clip < srm_residuals(faces, indices, patch, clip).abs().max() + 1e-6
