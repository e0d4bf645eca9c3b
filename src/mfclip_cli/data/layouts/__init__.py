"""The dataset layouts mfclip reads, one module each, and the detection that picks one.

Each layout module has ``NAME``, ``EXPECTED`` (its tree in one line), ``fits(root)`` (None when
``root`` has the layout's signature, else why not: a cheap look at a few folder names, no walk)
and ``read(root, options)`` (the samples and ``{reason: count}`` of what it skipped, and
optionally a third ``{note: count}`` about samples it read but the user should know of, such as
DF40's FF++ reals without FF++'s split lists). Detection
tries each layout in ``LAYOUTS`` order at the given folder, then at each folder one level below;
a tree that fits none is a usage error listing every layout and why it did not fit.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from mfclip_cli.data.layouts import df40, diff, diffusionforensics, folder, genface, genimage
from mfclip_cli.data.layouts.labels import LabelTable
from mfclip_cli.data.layouts.tree import ReadOptions, folders
from mfclip_cli.data.samples import (
    MANIFEST_NAMES,
    DataError,
    DataIndex,
    check_not_empty,
    find_manifest,
    read_manifest,
)
from mfclip_cli.errors import LayoutMismatch, UsageError

READERS: dict[str, ModuleType] = {
    module.NAME: module for module in (diff, genface, df40, genimage, diffusionforensics, folder)
}
LAYOUTS = ("manifest", *READERS)


def _manifest_fits(root: Path) -> str | None:
    if root.is_file() or any((root / name).is_file() for name in MANIFEST_NAMES):
        return None
    return f"no {' or '.join(MANIFEST_NAMES)}"


def _why_not(root: Path) -> dict[str, str | None]:
    """``{layout: None if root fits it, else why not}`` for every layout, in detection order."""
    reasons: dict[str, str | None] = {"manifest": _manifest_fits(root)}
    if root.is_dir():
        reasons.update({name: module.fits(root) for name, module in READERS.items()})
    return reasons


def require_dataset(root: str | Path) -> Path:
    """``root`` as a path, or the error for a ``--data`` that names nothing on disk (also asked
    by the command line before the engines load: ``data.combine.check_data``)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    return root


def locate(root: str | Path) -> tuple[str, Path]:
    """The layout of ``root`` and the folder (``root`` or one just below it) that has it."""
    root = require_dataset(root)
    reasons = _why_not(root)
    for name, reason in reasons.items():
        if reason is None:
            return name, root
    below: list[tuple[str, Path]] = []
    for child in sorted(folders(root).values()):
        fitting = [name for name, reason in _why_not(root / child).items() if reason is None]
        if fitting:
            below.append((fitting[0], root / child))
    if len(below) == 1:
        return below[0]
    if below:
        listed = ", ".join(f"{path.name} ({name})" for name, path in below)
        raise UsageError(
            f"{root} holds several datasets: {listed}; name one as --data, or pass each "
            "with its own --data"
        )
    listed = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
    parent = root.resolve().parent
    above = next((name for name, reason in _why_not(parent).items() if reason is None), None)
    hint = (
        f"{parent} is a {above} dataset: give that folder (its splits and labels are read from "
        "the whole tree)"
        if above
        else "Name one with --layout, or see docs/datasets.md"
    )
    raise UsageError(
        f"cannot tell the layout of {root} (nor of a folder just below it). Tried {listed}. " + hint
    )


def detect_layout(root: str | Path) -> str:
    """The name of the layout ``root`` (or the one folder below it that fits) is in."""
    return locate(root)[0]


def read_dataset(
    root: str | Path,
    layout: str | None = None,
    dataset: str | None = None,
    *,
    include_videos: bool = False,
    label_map: str | Path | None = None,
) -> DataIndex:
    """Read the dataset at ``root`` (a folder, or a manifest file) into a ``DataIndex``.

    ``layout`` None detects it (at ``root`` or one folder below; the index's root is the folder
    that fits). ``dataset`` overrides the dataset name of every sample in the directory layouts,
    and fills it in where a manifest leaves it empty (default: the folder name). ``include_videos``
    (for ``mfclip prepare``) makes video files samples too in the directory layouts, labelled by
    their place like images (their ``video`` is None: the file is the video, unless the layout
    ties it to extracted frames, as DF40's FF++ ``videos/<id>.mp4`` to ``frames/<id>/``); a
    manifest lists whatever files it lists either way. ``label_map`` extends or overrides the
    generator table. Samples are sorted by path.
    """
    root = Path(root)
    if layout is None:
        name, root = locate(root)
    else:
        name = layout.strip().lower()
        if name not in LAYOUTS:
            raise UsageError(f"unknown layout {layout!r} (choose from: {', '.join(LAYOUTS)})")
    if name == "manifest":
        manifest = find_manifest(root)
        base = manifest.parent.absolute()
        samples = read_manifest(manifest, dataset=dataset if dataset is not None else base.name)
        check_not_empty(manifest, name, samples)
        samples.sort(key=lambda sample: sample.path)
        return DataIndex(base, name, samples)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    options = ReadOptions(dataset, include_videos, LabelTable.load(label_map))
    try:
        samples, skipped, *notes = READERS[name].read(root, options)
    except LayoutMismatch as error:
        if layout is None:  # detected: the tree has that shape, and files that do not fit it
            raise
        raise UsageError(f"--layout {name} does not fit this folder: {error}") from None
    return DataIndex(root.absolute(), name, samples, skipped, notes=notes[0] if notes else {})


__all__ = [
    "LAYOUTS",
    "READERS",
    "DataError",
    "detect_layout",
    "locate",
    "read_dataset",
    "require_dataset",
]
