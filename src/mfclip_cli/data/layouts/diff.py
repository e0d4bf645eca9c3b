"""DiFF (Cheng et al., arXiv 2401.15859) as the FSFM-CVPR25 README's "DiFF Folder Structure" and
its dataset_preprocess.py lay it out (the DiFF README itself has no tree)::

    DiFF_real/{train,val,test}/...           pristine faces (sent on request; may be absent)
    {train,val,test}/{T2I,I2I,FS,FE}/<generator>/...   the fakes, all diffusion

The split comes from the top folder, the forgery type from the subset folder, the class and the
canonical generator name from the label table (a generator folder it lacks is an error). A split
folder holding anything but the four subsets (``test/real/``) is not DiFF.
"""

from __future__ import annotations

from pathlib import Path

from mfclip_cli.data.layouts.labels import Resolver, skip_reason
from mfclip_cli.data.layouts.tree import SPLIT_NAMES, ReadOptions, folders, shown
from mfclip_cli.data.samples import Sample, read_tree

NAME = "diff"
SUBSETS = ("t2i", "i2i", "fs", "fe")
EXPECTED = "DiFF_real/{train,val,test}/... and {train,val,test}/{T2I,I2I,FS,FE}/<generator>/..."


def fits(root: Path) -> str | None:
    """None when ``root`` is a DiFF download (with or without DiFF_real/), else why not."""
    top = folders(root)
    if "diff_real" in top:
        return None
    splits = [name for key, name in top.items() if key in SPLIT_NAMES]
    for split in splits:
        subsets = folders(root / split)
        if subsets and set(subsets) <= set(SUBSETS):
            return None
    if splits:
        inside = {split: shown(folders(root / split)) for split in splits}
        found = "; ".join(f"{split}/ holds {names}" for split, names in sorted(inside.items()))
        return f"no DiFF_real/, and no split folder holds only T2I, I2I, FS, FE ({found})"
    return f"no DiFF_real/ and no train/, val/ or test/ folder (found: {shown(top)})"


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    dataset = options.dataset if options.dataset is not None else "DiFF"
    resolve = Resolver(options.labels, ("DiFF",))

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        if len(parts) < 2 or parts[1].lower() not in (*SPLIT_NAMES, *SUBSETS):
            return None
        if parts[0].lower() == "diff_real":
            split = SPLIT_NAMES.get(parts[1].lower())
            return Sample(relative, "real", "none", "", dataset, video, split) if split else None
        if len(parts) < 3 or parts[0].lower() not in SPLIT_NAMES or parts[1].lower() not in SUBSETS:
            return None
        method = resolve(parts[2], relative)
        if (reason := skip_reason(method)) is not None:
            return reason
        split = SPLIT_NAMES[parts[0].lower()]
        return Sample(relative, method.label, parts[1], method.name, dataset, video, split)

    return read_tree(
        root, NAME, EXPECTED, classify, include_videos=options.include_videos, names=resolve
    )
