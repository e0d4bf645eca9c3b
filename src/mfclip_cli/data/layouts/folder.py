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


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    dataset = options.dataset if options.dataset is not None else root.absolute().name

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | None:
        if not parts or parts[0].lower() not in LABELS:
            return None
        label, rest = parts[0].lower(), parts[1:]
        if label == "real":
            return Sample(relative, label, "none", rest[0] if rest else "", dataset, video)
        forgery_type = rest[0] if rest else ""
        generator = rest[1] if len(rest) > 1 else ""
        return Sample(relative, label, forgery_type, generator, dataset, video)

    return read_tree(root, NAME, EXPECTED, classify, include_videos=options.include_videos)
