"""What a dataset holds, before hours go into preparing or training on it (``mfclip data inspect``,
``mfclip prepare --dry-run``): the layout found, counts per split x label x forgery type x
generator, the videos, and what is skipped and why. One walk of the tree, no image decoded.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from mfclip_cli.data.layouts import read_dataset
from mfclip_cli.schemas import SCHEMA_VERSION


def inspect_dataset(
    root: str | Path,
    layout: str | None = None,
    label_map: str | Path | None = None,
    *,
    include_videos: bool = False,
) -> dict[str, Any]:
    """A JSON-able report of the dataset at ``root`` (see the module docstring)."""
    started = time.perf_counter()
    index = read_dataset(root, layout, include_videos=include_videos, label_map=label_map)
    groups = Counter(
        (s.split or "-", s.label, s.forgery_type or "-", s.generator or "-") for s in index.samples
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "root": str(index.root),
        "layout": index.layout,
        "samples": len(index.samples),
        "videos": len({s.video for s in index.samples if s.video is not None}),
        "datasets": dict(sorted(Counter(s.dataset for s in index.samples).items())),
        "rows": [
            {"split": k[0], "label": k[1], "forgery_type": k[2], "generator": k[3], "count": n}
            for k, n in sorted(groups.items())
        ],
        "skipped": dict(sorted(index.skipped.items())),
        "seconds": round(time.perf_counter() - started, 3),
    }


def render(report: dict[str, Any]) -> list[str]:
    """The report as text lines: a header, one line per group, then what was skipped."""
    lines = [
        f"{report['root']}: layout {report['layout']}, {report['samples']} samples, "
        f"{report['videos']} videos, datasets "
        + ", ".join(f"{name} ({count})" for name, count in report["datasets"].items()),
        f"{'split':<6} {'label':<10} {'forgery':<8} {'generator':<28} {'count':>8}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['split']:<6} {row['label']:<10} {row['forgery_type']:<8} "
            f"{row['generator']:<28} {row['count']:>8}"
        )
    for reason, count in report["skipped"].items():
        lines.append(f"skipped: {reason}" + (f" ({count} files)" if count > 1 else ""))
    lines.append(f"read in {report['seconds']:.2f} s, no image decoded")
    return lines


__all__ = ["inspect_dataset", "render"]
