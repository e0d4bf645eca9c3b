"""GenFace, as the MFCLIP authors' loader reads it (train_mfclip.py / test_mfclip.py in the history
of Jenine-321/MFCLIP; the GenFace README has no tree)::

    <protocol>/{train,val,test}/real/<source>/*            (CelebA_HQ, FFHQ)
    <protocol>/{train,val,test}/fake/{EFS,FS,AM}/{Diffusion,GAN}/*

Read at the protocol folder (the split is kept), or at one split folder (its name's split kept:
read without it, GenFace's test folder was hashed into train: audit AJ J1). The class is
the Diffusion/GAN folder; the generator, as the loader finds it:

- ``EFS/*/``: the file name's prefix before the first ``_`` (``latentdiffusion_00000.png``);
- ``FS/GAN/``: the suffix after the last ``_`` (``00000_FSLSD.png``); ``AM/GAN/`` alike (assumed:
  the loader reads no AM/GAN folder);
- ``FS/Diffusion/``: every file is DiffFace; ``AM/Diffusion/``: every file is DiffAE;
- a folder below the family folder (``fake/FS/GAN/<generator>/...``) names the generator instead.

The label table gives the canonical name (the loader's level-4 prompt spelling) and must agree
with the family folder. A file whose name carries no generator (no ``_``) is skipped and counted
per folder, as the authors' loader passes it over, rather than taken for a method named after
the file.
"""

from __future__ import annotations

from pathlib import Path

from mfclip_cli.data.layouts.labels import Resolver, skip_reason
from mfclip_cli.data.layouts.tree import SPLIT_NAMES, ReadOptions, folders, shown, stem
from mfclip_cli.data.samples import DataError, Sample, read_tree

NAME = "genface"
TYPES = ("efs", "fs", "am")
FAMILIES = ("diffusion", "gan")
WHOLE_FOLDER = {("fs", "diffusion"): "DiffFace", ("am", "diffusion"): "DiffAE"}
EXPECTED = "[{train,val,test}/]real/<source>/... and fake/{EFS,FS,AM}/{Diffusion,GAN}/..."


def _is_split_tree(path: Path) -> bool:
    """``path`` holds real/ and fake/ with at least one of EFS/FS/AM inside fake/."""
    top = folders(path)
    return "real" in top and "fake" in top and bool(set(folders(path / top["fake"])) & set(TYPES))


def fits(root: Path) -> str | None:
    top = folders(root)
    if _is_split_tree(root):
        return None
    splits = [name for key, name in top.items() if key in SPLIT_NAMES]
    if any(_is_split_tree(root / split) for split in splits):
        return None
    if "fake" in top:
        inside = shown(folders(root / top["fake"]))
        return f"fake/ holds {inside}, not EFS, FS or AM"
    found = shown(top)
    return f"no real/ + fake/{{EFS,FS,AM}}/ here or in a train/val/test folder (found: {found})"


def _token(kind: str, family: str, relative: str, depth: int) -> str | None:
    """The generator the authors' loader reads from a file (or video folder) in a family folder;
    None where the name has no ``_`` and so names none."""
    whole = WHOLE_FOLDER.get((kind, family))
    if whole is not None:
        return whole
    name = stem("/".join(relative.split("/")[: depth + 1]))
    if "_" not in name:
        return None
    return name.split("_", 1)[0] if kind == "efs" else name.rsplit("_", 1)[1]


def _nameless(folder: str, kind: str) -> str:
    """Why a file whose name carries no generator is skipped, for its family folder."""
    form = "<generator>_NNNNN" if kind == "efs" else "NNNNN_<generator>"
    return (
        f"{folder}/: file name carries no generator (the authors' loader reads it from {form} "
        "and passes such files over): not read"
    )


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    dataset = options.dataset if options.dataset is not None else "GenFace"
    resolve = Resolver(options.labels, ("GenFace",))
    with_splits = not _is_split_tree(root)
    own_split = None if with_splits else SPLIT_NAMES.get(root.name.lower())

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        split = own_split
        offset = 0
        if with_splits:
            if not parts or parts[0].lower() not in SPLIT_NAMES:
                return None
            split, offset = SPLIT_NAMES[parts[0].lower()], 1
        rest = parts[offset:]
        if rest and rest[0].lower() == "real":
            source = rest[1] if len(rest) > 1 else ""
            return Sample(relative, "real", "none", source, dataset, video, split)
        if len(rest) < 3 or rest[0].lower() != "fake":
            return None
        kind, family = rest[1].lower(), rest[2].lower()
        if kind not in TYPES or family not in FAMILIES:
            return None
        token = rest[3] if len(rest) > 3 else _token(kind, family, relative, offset + 3)
        if token is None:
            return _nameless("/".join(parts[: offset + 3]), kind)
        method = resolve(token, relative)
        if (reason := skip_reason(method)) is not None:
            return reason
        if method.label != family:
            raise DataError(
                f"{root}: {relative} lies in a {rest[2]} folder but the label table files "
                f"{method.name} as {method.label}"
            )
        return Sample(relative, family, kind, method.name, dataset, video, split)

    return read_tree(
        root, NAME, EXPECTED, classify, include_videos=options.include_videos, names=resolve
    )
