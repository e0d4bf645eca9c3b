"""Face crops as tensors for training and evaluation, and the deterministic, resumable batch order.

Crops written by ``mfclip prepare`` already have the model's crop size; other face images are
resized to it (antialiased). Augmentation is a horizontal flip only, because every other common
augmentation (blur, resize, JPEG) would erase the very traces the noise branch looks for. Every
random choice derives from (seed, epoch, sample), never from a global RNG, so a resumed run sees
the same data in the same order as an uninterrupted one, with any number of loader workers.
Eval's robustness protocol degrades each crop as stored, before that resize (``data/perturb.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.data.protocols import group_fraction
from mfclip_cli.data.samples import DataError
from mfclip_cli.faces.decode import DecodeError, decode_image


class FaceImages(torch.utils.data.Dataset):
    """Item i: (face [3, S, S] float in [0, 1], i); with a ``perturbation``, the face degraded
    at its stored resolution, its noise drawn from (``perturbation_seed``, its path)."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        crop_size: int,
        *,
        flip_seed: int | None = None,
        perturbation: Perturbation | None = None,
        perturbation_seed: int = 0,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.crop_size = crop_size
        self.flip_seed = flip_seed  # None: no augmentation
        self.perturbation = perturbation
        self.perturbation_seed = perturbation_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.root / self.paths[index]
        try:
            pixels = decode_image(path).pixels
        except DecodeError as error:
            raise DataError(f"{path}: {error}") from None
        if self.perturbation is not None:
            degraded = self.perturbation.apply(
                Image.fromarray(pixels), self.paths[index], self.perturbation_seed
            )
            pixels = np.array(degraded)
        if pixels.shape[0] != self.crop_size or pixels.shape[1] != self.crop_size:
            resized = Image.fromarray(pixels).resize(
                (self.crop_size, self.crop_size), Image.Resampling.LANCZOS
            )
            pixels = np.array(resized)  # writable, as torch.from_numpy wants
        if (
            self.flip_seed is not None
            and group_fraction(f"{self.epoch}:{index}", self.flip_seed) < 0.5
        ):
            pixels = pixels[:, ::-1]
        face = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)
        return face, index


def collate_faces(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, list[int]]:
    return torch.stack([face for face, _ in items]), [index for _, index in items]


@dataclass
class EpochOrder:
    """Global batches of one epoch, as a pure function of (seed, epoch).

    Every epoch has ``len(data) // batch_size`` full global batches (the remainder is dropped, so
    one process and N processes see exactly the same samples); rank r of N takes items r, r+N, ...
    of each global batch. ``balanced`` draws samples with probability inverse to their class
    frequency (with replacement) instead of a permutation.
    """

    classes: Sequence[int]  # class index per sample
    batch_size: int
    seed: int
    balanced: bool = False

    @property
    def batches_per_epoch(self) -> int:
        return len(self.classes) // self.batch_size

    def indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        count = len(self.classes)
        if not self.balanced:
            return torch.randperm(count, generator=generator).tolist()
        labels = torch.as_tensor(self.classes)
        weights = 1.0 / torch.bincount(labels).float()[labels]
        return torch.multinomial(weights, count, replacement=True, generator=generator).tolist()

    def batches(
        self, epoch: int, *, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[list[int]]:
        order = self.indices(epoch)
        for batch in range(start, self.batches_per_epoch):
            yield order[batch * self.batch_size : (batch + 1) * self.batch_size][rank::world]


class BatchList(torch.utils.data.Sampler):
    """A fixed list of index batches, as a DataLoader ``batch_sampler``."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
