"""Files holding the same bytes under other names: a test image copied into a train folder, a
picture filed under two labels, one dataset's picture in another's. A walk of names cannot find
them (copies and hard links are files of their own); the bytes' hashes, taken as each file is
read (``data inspect --verify``, ``prepare``), can.
"""

from __future__ import annotations

from typing import Any

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


__all__ = ["identical_files"]
