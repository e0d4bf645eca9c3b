"""Near-duplicate evidence (``scan --duplicates``): the same picture re-encoded twice must not
quietly get two answers.

Each image gets a 64-bit perceptual hash of its decoded, upright pixels (the DCT pHash: luma,
area-resized to 32 x 32, 2-D DCT, the 8 x 8 lowest frequencies, one bit per coefficient above
their median without the DC term). It is computed here, on the pixels the scan has decoded
already, rather than by ``imagehash``: no second decode, no further dependency (it would bring
PyWavelets), and the same bits on every platform OpenCV runs on. Files whose hashes differ in at
most ``MAX_DISTANCE`` of the 64 bits are near-duplicates; groups are the connected components of
that relation (no near pair is ever split or left out), and a group whose files' verdicts differ
is flagged. Candidate pairs are found by splitting the hash into
``MAX_DISTANCE + 1`` bands (pigeonhole: a pair within the distance agrees on a whole band), equal
hashes compared once, each hash with a whole bucket at once. Videos and animations are not
hashed, nor flat pictures (one colour: nothing to compare), nor a still image of several views
(its first page may be a cover other documents share); one whose only view is its first picture
(a photo beside its gain map) is hashed by it."""

from __future__ import annotations

import os
from typing import Any, Sequence

import cv2
import numpy as np

from mfclip_cli.engines.scan.records import INCONCLUSIVE, STATUS_OK, FileRecord
from mfclip_cli.files import readable

MAX_DISTANCE = 8  # bits of 64; JPEG re-saves and resizes of one picture measured 0-4 here
# a picture whose low frequencies all stay under this (grey levels x 32, cv2.dct's scale) is flat:
# a black frame with a grey level of noise measured 0.5, skimage's photos 130-1300
FLAT_AC = 1.0
# 9 bands of 7 bits over bits 0-62: a pair within 8 bits agrees on one (where bit 63 differs,
# 7 differences are left for 9 bands). A tenth, of bit 63 alone, put half the files in one
# bucket, each compared with every other (audit X M5)
_BANDS = [(start, start + 7) for start in range(0, 63, 7)]


def perceptual_hash(pixels: np.ndarray) -> str | None:
    """The DCT pHash of an RGB uint8 image, 16 hex digits; None for a flat picture (no
    coefficient but the mean above ``FLAT_AC``): one colour hashes as every other does, and
    blank screenshots or black frames were grouped as copies of each other (audit X L4)."""
    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    if np.abs(low[1:]).max() < FLAT_AC:
        return None
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def file_verdict(record: FileRecord) -> str:
    """One word per file for comparing near-duplicates: ``fake`` (a face labelled diffusion or
    gan), else ``inconclusive`` (a face inconclusive), else ``real``, or the file's status."""
    if record.status != STATUS_OK:
        return record.status
    labels = {face.label for face in record.faces}
    if any(face.conclusive_fake for face in record.faces):
        return "fake"
    return INCONCLUSIVE if INCONCLUSIVE in labels else "real"


def near_duplicate_groups(files: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Groups of two or more files (path, phash, verdict) joined by near pairs, each with its
    files, the largest distance inside it and whether their verdicts differ (then some near
    pair's do: its files are joined by them).

    A group is a connected component: every pair within ``MAX_DISTANCE`` bits is in one. A
    grouping around seed files, tried against chains (audit AA M2), left a fake copy 4 bits
    from a real file in no group, by input order (audit AC H1); so a group can chain pictures
    farther apart than that, and its ``max_distance`` says so. Equal hashes are compared once:
    20,000 copies of one picture took minutes, each compared with every other."""
    by_value: dict[int, list[int]] = {}
    for i, (_, digest, _) in enumerate(files):
        by_value.setdefault(int(digest, 16), []).append(i)
    values = list(by_value)
    parent = list(range(len(values)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    # Per band's bucket, its hashes and the component each joined (``_Bucket``): a hash is
    # compared with the whole bucket at once, and unites each component found near it once (a
    # burst of 20,000 distinct hashes within 4 bits of each other took 33 s, each compared with
    # every other in Python: audit AD M1). A newcomer joins the older component, whose name
    # then stays the bucket's label for a burst.
    buckets: dict[tuple[int, int], _Bucket] = {}
    for k, value in enumerate(values):
        mine = k  # k's component
        for band, (start, end) in enumerate(_BANDS):
            key = (band, (value >> (64 - end)) & ((1 << (end - start)) - 1))  # bits start..end-1
            bucket = buckets.get(key) or buckets.setdefault(key, _Bucket())
            for label in bucket.near_labels(value):
                top = root(label)
                if top != label:  # a component since joined to another: relabelled here
                    bucket.relabel(label, top)
                if top != mine:
                    parent[mine] = top
                    mine = top
            bucket.add(value, mine)
    members: dict[int, list[int]] = {}
    for k in range(len(values)):
        members.setdefault(root(k), []).append(k)
    groups = []
    for ks in members.values():
        indices = sorted(i for k in ks for i in by_value[values[k]])
        if len(indices) < 2:
            continue
        written = [readable(files[i][0]) for i in indices]
        group = {
            "files": written,
            "phash": [files[i][1] for i in indices],
            "max_distance": _largest_distance({values[k] for k in ks}),
            "verdicts": {name: files[i][2] for name, i in zip(written, indices)},
            # from every member: two written names can coincide (audit Z4), a dict's keys cannot
            "disagree": len({files[i][2] for i in indices}) > 1,
        }
        if any(name != files[i][0] for name, i in zip(written, indices)):
            group["files_bytes"] = [
                None if name == files[i][0] else os.fsencode(files[i][0]).hex()
                for name, i in zip(written, indices)
            ]
        groups.append(group)
    return groups


class _Bucket:
    """The hashes that agree on one band, with the component each joined, as growing arrays."""

    __slots__ = ("hashes", "labels", "size")

    def __init__(self) -> None:
        self.hashes = np.empty(16, dtype=np.uint64)
        self.labels = np.empty(16, dtype=np.int64)
        self.size = 0

    def add(self, value: int, label: int) -> None:
        if self.size == len(self.hashes):
            self.hashes = np.concatenate([self.hashes, np.empty_like(self.hashes)])
            self.labels = np.concatenate([self.labels, np.empty_like(self.labels)])
        self.hashes[self.size], self.labels[self.size] = value, label
        self.size += 1

    def near_labels(self, value: int) -> list[int]:
        """The components (as labelled here) of the hashes within ``MAX_DISTANCE`` bits of
        ``value``, each once."""
        if not self.size:
            return []
        close = np.bitwise_count(self.hashes[: self.size] ^ np.uint64(value)) <= MAX_DISTANCE
        found = self.labels[: self.size][close]
        if not found.size or (found == found[0]).all():  # none, or a burst's one component
            return found[:1].tolist()
        return np.unique(found).tolist()

    def relabel(self, old: int, new: int) -> None:
        labels = self.labels[: self.size]
        labels[labels == old] = new


def _largest_distance(values: set[int]) -> int:
    """The most bits any two of ``values`` differ in, every pair compared as 64-bit integers
    (a thousand rows at a time: a group of thousands of distinct hashes is no matrix in
    memory)."""
    hashes = np.array(sorted(values), dtype=np.uint64)
    return max(
        int(np.bitwise_count(hashes[start : start + 1024, None] ^ hashes[None, :]).max())
        for start in range(0, len(hashes), 1024)
    )


class DuplicateTracker:
    """The hashed files of a run as their records pass, grouped at the end (``group``) into
    ``found``: None until then, and for a run stopped before."""

    def __init__(self) -> None:
        self.files: list[tuple[str, str, str]] = []
        self.found: list[dict[str, Any]] | None = None

    def add(self, record: FileRecord) -> None:
        if record.phash:  # by its exact name: the group writes it as records do (path_bytes)
            self.files.append((record.path, record.phash, file_verdict(record)))

    def group(self) -> None:
        self.found = near_duplicate_groups(self.files)
