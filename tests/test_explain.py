"""Evidence heatmaps: the map moves to where the artifact is, and the noise patch is reported."""

import pytest
import torch
import torch.nn.functional as F

from mfclip_cli.model import build_model
from mfclip_cli.model.config import apply_overrides
from mfclip_cli.model.explain import explain, richest_patch_boxes


def _faces(count: int, size: int, generator: torch.Generator):
    """Smooth random faces; the fakes (label 2, 'gan') carry a checkerboard in the top-left
    quadrant."""
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    faces = F.interpolate(coarse, size=(size, size), mode="bilinear") * 0.6 + 0.2
    labels = torch.randint(0, 2, (count,), generator=generator) * 2
    y, x = torch.meshgrid(torch.arange(size // 2), torch.arange(size // 2), indexing="ij")
    faces[labels == 2, :, : size // 2, : size // 2] += ((y // 4 + x // 4) % 2) * 0.5 - 0.25
    return faces.clamp(0, 1), labels


def _quadrant_share(maps: torch.Tensor) -> torch.Tensor:
    half = maps.shape[-1] // 2
    return maps[:, :half, :half].sum((1, 2)) / maps.sum((1, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_heatmap_mass_lies_on_the_artifact(tiny_config, seed):
    """A tiny model trained (60 steps) to see a pasted checkerboard with its image branch alone
    (no noise branch to take the shortcut): most of each fake's map lies on that quadrant."""
    config = apply_overrides(tiny_config, ["noise.enabled=false"])
    torch.manual_seed(seed)
    model = build_model(config).train()
    size = config.preprocess.crop_size
    generator = torch.Generator().manual_seed(seed + 10)
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    for _ in range(60):
        faces, labels = _faces(16, size, generator)
        loss = F.cross_entropy(model(faces), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().merge_adapters()
    faces, labels = _faces(24, size, generator)
    with torch.no_grad():
        expected = torch.softmax(model(faces), dim=-1)
    result = explain(model, faces)
    fake = labels == 2
    assert fake.any() and (~fake).any()
    torch.testing.assert_close(result.probs, expected, atol=1e-5, rtol=1e-4)
    assert ((result.probs[:, 0] < 0.5) == fake).all()  # it did learn the artifact
    assert result.heatmaps.shape == (24, size, size)
    # normalised per face; a face nothing argues is fake (no positive contribution) maps to 0
    peaks = result.heatmaps.amax((1, 2))
    assert result.heatmaps.amin() >= 0 and torch.all((peaks == 1) | (peaks == 0))
    assert (peaks[fake] == 1).all()
    # a quarter of the crop by chance; the 4 x 4 token grid's upsampling bleeds past the edge
    share = _quadrant_share(result.heatmaps[fake])
    assert share.mean() > 0.6 and (share > 0.5).float().mean() >= 0.8
    assert result.richest_patch is None  # no noise branch


def test_richest_patch_is_the_box_the_noise_branch_reads(tiny_model, tiny_config):
    """Flat faces with grain in one patch each: that patch is the least homogeneous, and its box
    is what the explanation reports."""
    size, patch = tiny_config.preprocess.crop_size, tiny_config.noise.patch_size
    generator = torch.Generator().manual_seed(3)
    faces = torch.full((6, 3, size, size), 0.5)
    cells = torch.randint(0, (size // patch) ** 2, (6,), generator=generator)
    for face, cell in zip(faces, cells.tolist()):
        top, left = (cell // (size // patch)) * patch, (cell % (size // patch)) * patch
        grain = torch.rand(3, patch, patch, generator=generator)
        face[:, top : top + patch, left : left + patch] = grain
    boxes = richest_patch_boxes(faces, patch)
    columns = size // patch
    expected = torch.stack(
        [cells % columns * patch, cells // columns * patch, (cells % columns + 1) * patch,
         (cells // columns + 1) * patch], 1
    )  # fmt: skip
    assert torch.equal(boxes, expected)
    result = explain(tiny_model.eval(), faces)
    assert torch.equal(result.richest_patch, boxes)
