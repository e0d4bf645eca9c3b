"""Files holding the same bytes under other names: a test image copied into a train folder, a
picture filed under two labels, one dataset's picture in another's. A walk of names cannot find
them (copies and hard links are files of their own); the bytes' hashes, taken as each file is
read (``data inspect --verify``, ``prepare``), can.
"""

from __future__ import annotations

from typing import Any, Callable

from mfclip_cli.data.samples import Sample
from mfclip_cli.files import readable


def identical_files(samples: list[Sample], digests: list[str | None]) -> list[dict[str, Any]]:
    """The groups of samples whose files hold the same bytes (``digests``: each one's SHA-256,
    None where unread), in the order of their first sample: a name or folder tells copies
    apart, so a test image copied into train (or a real one into a fake folder, or one dataset's
    picture into another's) is trained on or given two labels unseen, which no walk of names can
    find. Each group names its files with their dataset, published split and label, the
    published splits it spans, and whether it spans datasets, splits or labels, or may be parted
    by a protocol: some of its files have no published split, and they lie in two or more of
    the groups a protocol splits by (files, videos). Copies within one video (a still shot's
    frames) are left out: no protocol parts a video."""
    groups: dict[str, list[Sample]] = {}
    for sample, digest in zip(samples, digests):
        if digest is not None:
            groups.setdefault(digest, []).append(sample)
    found = []
    for digest, members in groups.items():
        if len({sample.group for sample in members}) < 2:
            continue
        splits = sorted({sample.split for sample in members if sample.split})
        unsplit = any(sample.split is None for sample in members)
        found.append(
            {
                "sha256": digest,
                "files": [
                    {
                        "path": readable(s.path),
                        "dataset": s.dataset,
                        "split": s.split,
                        "label": s.label,
                    }
                    for s in members
                ],
                "splits": splits,
                "across_datasets": len({sample.dataset for sample in members}) > 1,
                "across_splits": len(splits) > 1,
                "may_cross_splits": unsplit,
                "across_labels": len({sample.label for sample in members}) > 1,
            }
        )
    return found


def _across_splits(group: dict[str, Any]) -> bool:
    return group["across_splits"] and "train" in group["splits"]


def _across_held_out(group: dict[str, Any]) -> bool:
    return group["across_splits"] and "train" not in group["splits"]


# The kinds of groups ``identical_files`` finds, each with what it means, as data inspect's
# lines and prepare's note both say them; a group may be of several kinds, or of none (one
# dataset, split and label: a sample counted twice).
COPY_KINDS: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
    (
        "in more than one dataset (under a cross-dataset protocol, a held-out dataset's image "
        "trained on)",
        lambda group: group["across_datasets"],
    ),
    ("in train and a held-out split (a held-out image trained on)", _across_splits),
    ("in val and test (a test image a model is selected or calibrated on)", _across_held_out),
    (
        "without a published split (a protocol's hash may put them in two splits)",
        lambda group: group["may_cross_splits"],
    ),
    ("under more than one label", lambda group: group["across_labels"]),
)


__all__ = ["COPY_KINDS", "identical_files"]
