"""Each sample's bytes as a short digest, so that a file a checkpoint trained on is found again
under another name, in another folder or in another dataset (eval's ``trained_copies``,
``engines/evaluate/held_out.py``): a check by path sees none of these.

Every file is known by its own bytes; a face ``mfclip prepare`` cropped is known as well by the
bytes of the picture it was cropped from, which ``prepare.jsonl`` records beside it: one picture
prepared twice (once for each dataset holding it) is then one picture, though its crops' own
bytes need not be equal, and the crops themselves copied elsewhere (or listed by another
manifest) are still the files trained on. A digest is the first 8 bytes of the SHA-256 read
as a little-endian int64, the values a checkpoint's ``trained.*`` tensors hold: two files of
other bytes share one with odds of about n²/2⁶⁵ among n files, under 1e-7 for a million.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mfclip_cli.data.samples import PREPARED_LOG, DataIndex, Sample
from mfclip_cli.faces.decode import DecodeError, decode_image
from mfclip_cli.files import sha256_file

DIGEST_BYTES = 8
CONTENT_DIGEST = "sha256[:8]"  # what a digest is, as a checkpoint's record says
# the splits a checkpoint keeps the digests of: those its run trained and selected on
DIGESTED_SPLITS = ("train", "val")
# files hashed at once: hashlib leaves the GIL while it hashes, so threads overlap reads and hashes
HASHING_THREADS = 4


def digest_value(sha256_hex: str) -> int:
    """The int64 a SHA-256 (hex) is kept as: its first ``DIGEST_BYTES`` bytes, little-endian."""
    return int.from_bytes(bytes.fromhex(sha256_hex[: 2 * DIGEST_BYTES]), "little", signed=True)


@dataclass(frozen=True)
class ContentDigests:
    """Per sample: the digest of its file's bytes (``values``, int64 [N]; 0 and not
    ``readable`` where the file could not be read) and, for a face ``mfclip prepare`` cropped,
    the digest of the picture it was cropped from (``sources``; where ``has_source``)."""

    values: np.ndarray
    readable: np.ndarray  # bool [N]
    sources: np.ndarray  # int64 [N]
    has_source: np.ndarray  # bool [N]
    paths: list[Path]  # each sample's file
    # whether a sample's file decodes, asked once (``decoding``)
    decoded: dict[int, bool] = field(default_factory=dict, repr=False, compare=False)

    @property
    def from_sources(self) -> int:
        """The samples known by the picture they were cropped from too."""
        return int(self.has_source.sum())

    def known(self) -> np.ndarray:
        """The digests of the readable samples (their files' and their sources'), sorted, each
        once."""
        sources = self.sources[self.readable & self.has_source]
        return np.unique(np.concatenate([self.values[self.readable], sources]))

    def matching(self, digests: np.ndarray) -> np.ndarray:
        """Whether each readable sample's file, or the picture it was cropped from, has one of
        the sorted ``digests``."""
        by_source = self.has_source & np.isin(self.sources, digests)
        return self.readable & (np.isin(self.values, digests) | by_source)

    def decoding(self, positions: Sequence[int], threads: int = HASHING_THREADS) -> list[int]:
        """The ``positions`` whose files decode, each file decoded once (in threads) however
        often it is asked: equal bytes of two failed downloads are no copy of a picture, since
        neither is trained on nor scored (audit AM F6)."""
        asked = [position for position in positions if position not in self.decoded]

        def decodes(position: int) -> bool:
            try:
                decode_image(self.paths[position])
            except DecodeError:
                return False
            return True

        with ThreadPoolExecutor(max(1, threads)) as pool:
            self.decoded.update(zip(asked, pool.map(decodes, asked)))
        return [position for position in positions if self.decoded[position]]


def prepared_sources(folder: Path) -> dict[str, str]:
    """{crop path relative to ``folder``: its source's SHA-256} from the ``prepare.jsonl`` that
    ``mfclip prepare`` wrote into ``folder`` (a later record of a source, written by a
    ``--resume`` that prepared it again, wins); empty where there is none or it cannot be read.
    A line that is not a source's record (the settings line, a line cut short) is passed over."""
    sources: dict[str, str] = {}
    try:
        handle = open(folder / PREPARED_LOG, encoding="utf-8")
    except OSError:
        return sources
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            digest = record.get("sha256") if isinstance(record, dict) else None
            faces = record.get("faces") if isinstance(digest, str) else None
            for face in faces if isinstance(faces, list) else ():
                if isinstance(face, dict) and isinstance(face.get("path"), str):
                    sources[face["path"]] = digest
    return sources


def _prepared_faces(index: DataIndex) -> dict[str, str]:
    """{sample path: its source's SHA-256} for the faces of each prepared folder ``index`` reads
    (several ``--data``: each, its paths under its prefix, as ``data/combine.py`` gives them)."""
    if not index.sources:
        return prepared_sources(Path(index.root))
    faces = {}
    for source in index.sources:
        for path, digest in prepared_sources(Path(source.root)).items():
            faces[posixpath.join(source.prefix, path) if source.prefix else path] = digest
    return faces


def content_digests(
    index: DataIndex, samples: Sequence[Sample], threads: int = HASHING_THREADS
) -> ContentDigests:
    """The digest of each of ``samples``' bytes, hashed by ``threads`` threads, and of a
    prepared face's source; a file that cannot be read is marked so, never an error (the pass
    that reads it says why)."""
    by_face = _prepared_faces(index)
    paths = [index.absolute(sample) for sample in samples]
    values, readable = np.zeros(len(paths), np.int64), np.zeros(len(paths), bool)
    sources, has_source = np.zeros(len(paths), np.int64), np.zeros(len(paths), bool)
    for position, sample in enumerate(samples):
        if (digest := by_face.get(sample.path)) is not None:
            sources[position], has_source[position] = digest_value(digest), True

    def hashed(path: Path) -> str | None:
        try:
            return sha256_file(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for position, digest in enumerate(pool.map(hashed, paths)):
            if digest is not None:
                values[position], readable[position] = digest_value(digest), True
    return ContentDigests(values, readable, sources, has_source, paths)
