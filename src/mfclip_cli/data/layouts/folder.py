"""mfclip's own layout: ``ROOT/<real|diffusion|gan>/[<forgery_type>/][<generator>/]**``.

Label folders are ``real``, ``diffusion`` and ``gan`` (any case). Below a fake label folder, the
first folder is the forgery type and the second the generator; deeper folders are just folders.
Files directly in the label folder have neither. Below ``real/`` the first folder is the source
(stored in ``generator``); the forgery type is ``none``. ``dataset`` is the root folder's name
unless given. No split: protocols assign one.
"""

from __future__ import annotations

from pathlib import Path

from mfclip_cli.data.layouts.tree import ReadOptions, folders, shown
from mfclip_cli.data.samples import LABELS, Sample, read_tree
from mfclip_cli.labels import FORGERY_TYPES

NAME = "folder"
EXPECTED = "ROOT/<real|diffusion|gan>/[<forgery_type>/][<generator>/]..."


def fits(root: Path) -> str | None:
    top = folders(root)
    if top and set(top) <= set(LABELS):
        return None
    if set(top) & set(LABELS):
        others = shown([name for key, name in top.items() if key not in LABELS])
        return f"folders other than real/, diffusion/, gan/ beside them ({others})"
    return f"no real/, diffusion/ or gan/ folder (found: {shown(top)})"


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int], dict[str, int]]:
    """The samples, what was skipped, and notes: a forgery-type folder that names no known
    forgery type (``gan/StyleGAN2/``, a generator's folder one level too high: its files had
    no generator, and a cross-forgery test was a cross-generator one, without a word: audit
    AI F4)."""
    dataset = options.dataset if options.dataset is not None else root.absolute().name
    unknown_types: dict[tuple[str, str], int] = {}

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | None:
        if not parts or parts[0].lower() not in LABELS:
            return None
        label, rest = parts[0].lower(), parts[1:]
        if label == "real":
            return Sample(relative, label, "none", rest[0] if rest else "", dataset, video)
        forgery_type = rest[0] if rest else ""
        generator = rest[1] if len(rest) > 1 else ""
        if forgery_type and forgery_type.lower() not in FORGERY_TYPES:
            key = (parts[0], forgery_type)
            unknown_types[key] = unknown_types.get(key, 0) + 1
        return Sample(relative, label, forgery_type, generator, dataset, video)

    samples, skipped = read_tree(
        root, NAME, EXPECTED, classify, include_videos=options.include_videos
    )
    known = ", ".join(FORGERY_TYPES[1:])
    notes = {
        f"{label}/{kind}/: read as the forgery type {kind!r}, which is none of the known ones "
        f"({known}); a generator's folder goes below one ({label}/efs/{kind}/) or in a "
        "manifest": count
        for (label, kind), count in sorted(unknown_types.items())
    }
    return samples, skipped, notes
