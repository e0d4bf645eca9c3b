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
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mfclip_cli.data.samples import PREPARED_LOG, DataIndex, Sample
from mfclip_cli.faces.decode import DecodeError, decode_image
from mfclip_cli.files import sha256_file, shown

DIGEST_BYTES = 8
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
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
    names: list[str]  # each sample's path as reports name it (relative to the data)
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


# what a checkpoint (or run) did with the files of each split it keeps the digests of
DIGESTED_AS = {"train": "trained on", "val": "was selected with"}
NAMED_COPIES = 3  # the copies a message names; a report names them all


@dataclass(frozen=True)
class Copies:
    """The samples of a split holding the bytes of files of other splits (a checkpoint's train
    and val files, by their kept digests), per split copied, each also once (``samples``), with
    their names; how many samples were compared (their files read and hashed) or could not be."""

    counts: dict[str, int]
    compared: int
    unreadable: int
    files: tuple[str, ...] = ()  # the copies' sample paths, in sample order
    examples: tuple[Path, ...] = ()  # the first copies' files, to be named in a message
    prepared: bool = False  # faces mfclip prepare cropped were compared by their source too

    @property
    def samples(self) -> int:
        return len(self.files)

    def record(self, named: bool = True) -> dict[str, Any]:
        """As reports keep it; ``named`` False leaves the files' names out (a checkpoint's
        calibration travels, and every scan report would repeat its data's file names)."""
        return {
            **self.counts,
            "samples": self.samples,
            "compared": self.compared,
            "unreadable": self.unreadable,
            **({"files": list(self.files)} if named else {}),
        }

    def said(self, split: str, name: str, did: str | None = None) -> str:
        """ "3 of the 40 test samples hold the very bytes of files best trained on (3 in its
        train split), whatever their names or data; such as a.png, ...", for messages (the
        caller escapes it for rich where it prints with markup): ``name`` the checkpoint or
        run, ``did`` what it did with those files (by default "trained on", "was selected
        with")."""
        shares = " and ".join(
            f"{count} in its {role} split" for role, count in self.counts.items() if count
        )
        did = did or " or ".join(DIGESTED_AS[role] for role, n in self.counts.items() if n)
        holds = "holds the very bytes of a file" if self.samples == 1 else "hold the very bytes"
        holds += "" if self.samples == 1 else " of files"
        cropped = (
            " (or of the pictures that faces mfclip prepare cropped were cropped from)"
            if self.prepared
            else ""
        )
        more = ", ..." if len(self.examples) < self.samples else ""
        named = ", ".join(shown(str(path)) for path in self.examples)
        return (
            f"{self.samples} of the {self.compared + self.unreadable} {split} samples {holds} "
            f"{name} {did}{cropped} ({shares}), whatever their names or data; such as "
            f"{named}{more}"
        )


def copies_among(
    scored: ContentDigests, digests: dict[str, np.ndarray], prepared: bool = False
) -> Copies:
    """The ``scored`` samples whose bytes (or whose source's) are among the sorted ``digests``
    of each split named; a file that does not decode is no copy, being never scored.
    ``prepared``: the digests hold prepared faces' sources (said in messages)."""
    counts, copies = {}, set()
    for role, kept in digests.items():
        copied = scored.decoding(np.flatnonzero(scored.matching(kept)).tolist())
        counts[role] = len(copied)
        copies.update(copied)
    compared = int(scored.readable.sum())
    ordered = sorted(copies)
    return Copies(
        counts,
        compared,
        len(scored.values) - compared,
        tuple(scored.names[position] for position in ordered),
        tuple(scored.paths[position] for position in ordered[:NAMED_COPIES]),
        prepared or bool(scored.has_source.any()),
    )


def prepared_sources(folder: Path) -> dict[str, str]:
    """{crop path relative to ``folder``: its source's SHA-256} from the ``prepare.jsonl`` that
    ``mfclip prepare`` wrote into ``folder`` (a later record of a source, written by a
    ``--resume`` that prepared it again, wins); empty where there is none or it cannot be read.
    A line that is not a source's record (the settings line, a line cut short) is passed over."""
    sources: dict[str, str] = {}
    try:
        handle = open(folder / PREPARED_LOG, "rb")
    except OSError:
        return sources
    with handle:
        for line in handle:
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError too: a line cut inside a character
                continue
            digest = record.get("sha256") if isinstance(record, dict) else None
            if not (isinstance(digest, str) and SHA256_HEX.fullmatch(digest)):
                continue
            faces = record.get("faces")
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
    names = [sample.path for sample in samples]
    return ContentDigests(values, readable, sources, has_source, paths, names)
