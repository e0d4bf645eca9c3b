"""Face crops as tensors for training and evaluation, and the deterministic, resumable batch order.

Crops written by ``mfclip prepare`` already have the model's crop size; other face images are
resized to it (antialiased). Augmentation is a horizontal flip only, because every other common
augmentation (blur, resize, JPEG) would erase the very traces the noise branch looks for. Every
random choice derives from (seed, epoch, sample), never from a global RNG, so a resumed run sees
the same data in the same order as an uninterrupted one, with any number of loader workers.
Eval's robustness protocol degrades each crop as stored, before that resize (``data/perturb.py``).

A sample whose image cannot be decoded never ends a pass: scoring leaves it out and says so
(``engines/inference.py``), training stands the next readable sample of its class in for it, which
keeps every batch the same size, as gathered negatives need, and records it (``stand_ins``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.data.protocols import group_fraction
from mfclip_cli.data.samples import DataError, Unreadable
from mfclip_cli.faces.decode import DecodeError, decode_image


class FaceItem(NamedTuple):
    face: torch.Tensor | None  # [3, S, S] in [0, 1]; None where unreadable and none stands in
    index: int  # the sample the face is of: a stand-in's own index
    unreadable: Unreadable | None  # the sample asked for, where it could not be read


class FaceBatch(NamedTuple):
    faces: torch.Tensor  # [B, 3, S, S] of the readable (or stood-in) samples
    indices: list[int]  # the sample of each face
    unreadable: list[Unreadable]  # the samples asked for that could not be read


class FaceImages(torch.utils.data.Dataset):
    """Item i: a ``FaceItem`` of sample i's face [3, S, S] float in [0, 1]; with a
    ``perturbation``, the face degraded at its stored resolution, its noise drawn from
    (``perturbation_seed``, its path). With ``stand_ins`` (a class per sample), an unreadable
    sample's item holds the face of the next readable sample of its class, in sample order."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        crop_size: int,
        *,
        flip_seed: int | None = None,
        perturbation: Perturbation | None = None,
        perturbation_seed: int = 0,
        stand_ins: Sequence[int] | None = None,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.crop_size = crop_size
        self.flip_seed = flip_seed  # None: no augmentation
        self.perturbation = perturbation
        self.perturbation_seed = perturbation_seed
        self.classes = None if stand_ins is None else list(stand_ins)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> FaceItem:
        try:
            return FaceItem(self._face(index), index, None)
        except DecodeError as error:
            missing = Unreadable(self.paths[index], str(error))
        if self.classes is None:
            return FaceItem(None, index, missing)
        for other in self._same_class_after(index):
            try:
                return FaceItem(self._face(other), other, missing)
            except DecodeError:
                continue
        raise DataError(
            f"{self.root / missing.path}: {missing.error}, and no other sample of its class "
            "can be read to stand in for it"
        )

    def _same_class_after(self, index: int) -> Iterator[int]:
        """The other samples of ``index``'s class, from the next one on, wrapping round."""
        assert self.classes is not None
        count = len(self.paths)
        for step in range(1, count):
            other = (index + step) % count
            if self.classes[other] == self.classes[index]:
                yield other

    def _face(self, index: int) -> torch.Tensor:
        pixels = decode_image(self.root / self.paths[index]).pixels
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
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


def collate_faces(items: list[FaceItem]) -> FaceBatch:
    present = [item for item in items if item.face is not None]
    faces = torch.stack([item.face for item in present]) if present else torch.empty(0, 3, 0, 0)
    return FaceBatch(
        faces,
        [item.index for item in present],
        [item.unreadable for item in items if item.unreadable is not None],
    )


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
