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
    find. Each group names its files with their dataset, published split and label, and whether
    it spans datasets, splits or labels."""
    groups: dict[str, list[Sample]] = {}
    for sample, digest in zip(samples, digests):
        if digest is not None:
            groups.setdefault(digest, []).append(sample)
    found = []
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        splits = {sample.split for sample in members if sample.split}
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
                "across_datasets": len({sample.dataset for sample in members}) > 1,
                "across_splits": len(splits) > 1,
                "across_labels": len({sample.label for sample in members}) > 1,
            }
        )
    return found


__all__ = ["identical_files"]
