"""How a checkpoint names the data it was trained, calibrated or fitted on, without a build path.

A checkpoint travels (the bundled demo ships in every install), so what it says about its data
must mean the same on every machine: the dataset folder's name and a digest of its sample list,
never the absolute folder of the machine that built it (which every user's report would then
repeat).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mfclip_cli.data.samples import DataIndex


def index_digest(index: DataIndex) -> str:
    """SHA-256 of the dataset's sample list: each sample's fields (path relative to the dataset,
    label, forgery type, generator, dataset, video, split) as one JSON line, the lines sorted.
    The same files with the same labels give the same digest wherever the folder lies; it covers
    names and labels, not pixels (hashing every image of a large dataset would take minutes)."""
    held = index.digest_of
    if held is not None and held[0] is index.samples and held[1] == len(index.samples):
        return held[2]
    lines = sorted(
        json.dumps(sample.to_dict(), ensure_ascii=False, sort_keys=True) for sample in index
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    index.digest_of = (index.samples, len(index.samples), digest.hexdigest())
    return index.digest_of[2]


def dataset_identity(index: DataIndex) -> dict[str, Any]:
    """``{"name", "samples", "index_sha256"}``: the folder's name (never its absolute path), the
    number of samples and ``index_digest``; with several ``--data`` read as one
    (``data/combine.py``), ``sources`` names each by its folder's name, with how it was read."""
    identity: dict[str, Any] = {
        "name": Path(index.root).name,
        "samples": len(index.samples),
        "index_sha256": index_digest(index),
    }
    if index.sources:
        identity["sources"] = [
            {
                "name": Path(source.root).name,
                "layout": source.layout,
                "prefix": source.prefix,
                "datasets": list(source.datasets),
                "samples": source.samples,
            }
            for source in index.sources
        ]
    return identity
