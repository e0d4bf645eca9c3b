"""Several datasets read as one: ``--data A --data B`` of train, eval, calibrate and ablate.

Each ``--data`` is read on its own (its layout detected, or ``--layout``), so each prepared
folder's paths stay relative to that folder. The combined index's root is the deepest folder
holding every source, and each sample's path (and video key) gets its source's place below it as
a prefix: ``faces/diff`` and ``faces/genimage`` give ``diff/crops/...`` and
``genimage/crops/...`` below ``faces``. So every file resolves as before, two sources' equal
relative paths stay two samples, and two sources' equal video keys stay two videos. A sample path
that is absolute (a manifest may hold them) is kept as it is.

One ``--data`` is read exactly as before (no prefix), so its splits are unchanged; with several,
the stable hash of a protocol sees the prefixed paths.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mfclip_cli.data.identity import index_digest
from mfclip_cli.data.layouts import read_dataset, require_dataset
from mfclip_cli.data.layouts.labels import LabelTable
from mfclip_cli.data.samples import DataIndex, DataSource, Sample
from mfclip_cli.errors import UsageError


def as_data_list(data: str | Path | Sequence[str | Path]) -> list[str]:
    """The ``--data`` values, one or several, as a list of strings."""
    if isinstance(data, (str, Path)):
        return [str(data)]
    return [str(item) for item in data]


def check_data(
    data: str | Path | Sequence[str | Path], label_map: str | Path | None = None
) -> None:
    """Each ``--data`` names something on disk (``require_dataset``, the readers' own check) and
    the ``--label-map`` reads as one (``LabelTable.load``), asked before torch loads (by the train
    command line, and by the request checks of eval, calibrate and prepare): a mistyped folder or
    map was answered after seconds of imports."""
    for item in as_data_list(data):
        require_dataset(item)
    if label_map is not None:
        LabelTable.load(label_map)


def _prefixed(prefix: str, relative: str | None) -> str | None:
    if relative is None or not prefix or posixpath.isabs(relative):
        return relative
    return posixpath.join(prefix, relative)


def refuse_unused_label_map(
    label_map: str | Path | None, indexes: Sequence[DataIndex], given: Sequence[str]
) -> None:
    """A label map that no dataset read can use (every one a manifest, whose labels are written
    in it) is a usage error, never silently ignored."""
    if label_map is not None and all(index.layout == "manifest" for index in indexes):
        raise UsageError(
            f"--label-map {label_map} labels the generators of a published layout, and "
            f"{', '.join(given)} {'is a manifest' if len(given) == 1 else 'are manifests'} "
            "(a prepared folder) whose labels are written in it: prepare the dataset again "
            "with --label-map"
        )


def read_datasets(
    data: str | Path | Sequence[str | Path],
    layout: str | None = None,
    *,
    label_map: str | Path | None = None,
    include_videos: bool = False,
    option: str | None = "--data",
) -> DataIndex:
    """One index over every ``--data`` (see the module docstring); ``layout``, ``label_map``
    and ``include_videos`` (``read_dataset``'s) apply to each. ``option``: what errors name
    each one by, None where they are arguments (``data inspect A B``)."""
    named = f"{option} " if option else ""
    given = as_data_list(data)
    if not given:
        raise UsageError("--data is required")
    indexes = [
        read_dataset(Path(item), layout, include_videos=include_videos, label_map=label_map)
        for item in given
    ]
    refuse_unused_label_map(label_map, indexes, [str(item) for item in given])
    if len(indexes) == 1:
        return indexes[0]
    places = [os.path.realpath(index.root) for index in indexes]
    for position, place in enumerate(places):
        if place in places[:position]:
            first = given[places.index(place)]
            raise UsageError(
                f"{named}{given[position]} reads the same dataset folder as {named}{first} "
                f"({place}); give each dataset once"
            )
    common = Path(os.path.commonpath([str(index.root) for index in indexes]))
    samples: list[Sample] = []
    owner: dict[str, str] = {}
    sources: list[DataSource] = []
    skipped: Counter = Counter()
    notes: Counter = Counter()
    for item, index in zip(given, indexes):
        prefix = index.root.relative_to(common).as_posix()
        prefix = "" if prefix == "." else prefix
        for sample in index.samples:
            moved = replace(
                sample,
                path=_prefixed(prefix, sample.path),
                video=_prefixed(prefix, sample.video),
            )
            if moved.path in owner:
                raise UsageError(
                    f"{moved.path} is a sample of {named}{owner[moved.path]} and of "
                    f"{named}{item}: the folders overlap; give each dataset once"
                )
            owner[moved.path] = item
            samples.append(moved)
        for reason, count in index.skipped.items():
            skipped[f"{item}: {reason}"] += count
        for note, count in index.notes.items():
            notes[f"{item}: {note}"] += count
        names = sorted({sample.dataset for sample in index.samples if sample.dataset})
        sources.append(
            DataSource(item, index.root, index.layout, prefix, tuple(names), len(index.samples))
        )
    samples.sort(key=lambda sample: sample.path)
    layouts = "+".join(dict.fromkeys(index.layout for index in indexes))
    return DataIndex(common, layouts, samples, dict(skipped), tuple(sources), dict(notes))


def data_record(index: DataIndex) -> dict:
    """What a report says about the data it read: the root, layout and size, the digest of its
    sample list (names, labels and splits as read, a label map's relabelling included: two
    reports of one folder name and size scored other samples where it differs), and with
    several ``--data`` each one's."""
    record: dict = {
        "root": str(index.root),
        "layout": index.layout,
        "samples": len(index),
        "index_sha256": index_digest(index),
    }
    if index.sources:
        record["sources"] = [source.to_dict() for source in index.sources]
    return record


__all__ = [
    "as_data_list",
    "check_data",
    "data_record",
    "read_datasets",
    "refuse_unused_label_map",
]
