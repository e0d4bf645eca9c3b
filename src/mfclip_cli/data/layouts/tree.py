"""What the directory-layout readers share: the read options and cheap folder listings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mfclip_cli.data.layouts.labels import LabelTable

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class ReadOptions:
    """How to read one dataset: its name override, video files as samples, the label table."""

    dataset: str | None = None
    include_videos: bool = False
    labels: LabelTable = field(default_factory=LabelTable.load)


ARCHIVE_RESIDUE = "__macosx"  # what macOS's zip adds beside the files: AppleDouble "._" files


def folders(path: Path) -> dict[str, str]:
    """``{lower-case name: name}`` of the visible sub-folders of ``path`` (none if unreadable),
    without a zip's ``__MACOSX/`` (DiFF's archives carry one)."""
    try:
        with os.scandir(path) as entries:
            return {
                entry.name.lower(): entry.name
                for entry in entries
                if not entry.name.startswith(".")
                and entry.name.lower() != ARCHIVE_RESIDUE
                and entry.is_dir()
            }
    except OSError:
        return {}


def shown(names: dict[str, str] | list[str], limit: int = 6) -> str:
    """A short listing of folder names for a message."""
    values = sorted(names.values() if isinstance(names, dict) else names)
    if not values:
        return "no folders"
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def stem(relative: str) -> str:
    return os.path.splitext(relative.rsplit("/", 1)[-1])[0]
