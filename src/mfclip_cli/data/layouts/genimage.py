"""GenImage, as its Readme lays it out::

    <Generator>/{train,val}/{ai,nature}/*        (Midjourney, Stable Diffusion V1.4, BigGAN, ...)
    <Generator>/<archive>/{train,val}/{ai,nature}/*   (the same, unzipped into its archive's
                                                       folder: imagenet_ai_0419_sdv4, ...)

``ai`` holds the fakes, ``nature`` the ImageNet reals paired with them. The generator is the top
folder's name, else the archive folder's (any folder named imagenet*, as every GenImage archive
is), looked up in the label table. One generator's folder read alone (the Readme trains on
"only ... Stable Diffusion V1.4/") is named by itself. GenImage has no test
split: the paper tests on each generator's ``val``, so ``val`` is recorded as ``test`` and a
protocol carves its validation split out of ``train``. A real's generator field names the
generator folder it came with, so a per-generator test report pairs each generator's fakes with
its own reals. The Readme tutorial's ``imagenet_ai/`` (every generator's files merged into one
``{train,val}/{ai,nature}``) is refused: its fakes mix BigGAN, a GAN, with diffusion models, so
no class fits them, and a label map naming it would mislabel one or the other.
"""

from __future__ import annotations

from pathlib import Path

from mfclip_cli.data.layouts.labels import Resolver, normalise, skip_reason
from mfclip_cli.data.layouts.tree import ReadOptions, folders, shown
from mfclip_cli.data.samples import DataError, Sample, read_tree

NAME = "genimage"
SPLITS = {"train": "train", "val": "test"}
KINDS = ("ai", "nature")
EXPECTED = "[<Generator>/][<archive>/]{train,val}/{ai,nature}/..."
MERGED = "imagenet_ai"  # the Readme tutorial's merge of every generator's folders


def _holds_splits(path: Path) -> bool:
    inside = folders(path)
    return any(
        split in inside and set(folders(path / inside[split])) & set(KINDS) for split in SPLITS
    )


def _is_archive(name: str) -> bool:
    """An archive folder (``imagenet_ai_0419_sdv4``): GenImage names every archive imagenet_*."""
    return name.lower().startswith("imagenet")


def fits(root: Path) -> str | None:
    if _holds_splits(root):  # one generator's folder
        return None
    top = folders(root)
    for name in top.values():
        if _holds_splits(root / name) or any(
            _is_archive(inner) and _holds_splits(root / name / inner)
            for inner in folders(root / name).values()
        ):
            return None
    return f"no [<Generator>/][<archive>/]train|val/ai|nature/ folders (found: {shown(top)})"


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    dataset = options.dataset if options.dataset is not None else "GenImage"
    resolve = Resolver(options.labels, ("GenImage",))
    alone = root.resolve().name  # the generator of a folder read alone

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        if len(parts) >= 2 and parts[0].lower() in SPLITS and parts[1].lower() in KINDS:
            names, split, kind = [alone], parts[0].lower(), parts[1].lower()
        elif len(parts) >= 3 and parts[1].lower() in SPLITS and parts[2].lower() in KINDS:
            names, split, kind = [parts[0]], parts[1].lower(), parts[2].lower()
        elif (
            len(parts) >= 4
            and _is_archive(parts[1])
            and parts[2].lower() in SPLITS
            and parts[3].lower() in KINDS
        ):
            names, split, kind = [parts[0], parts[1]], parts[2].lower(), parts[3].lower()
        else:
            return None
        method = next(
            (found for name in names if (found := options.labels.find("GenImage", name))), None
        )
        if method is None and normalise(names[0]) == normalise(MERGED):
            raise DataError(
                f"{root}: {relative}: {names[0]}/ is the GenImage Readme tutorial's merge of "
                "every generator's train/val folders: its fakes mix BigGAN (a GAN) with the "
                "diffusion models, so no class fits them; give the per-generator folders "
                "(<Generator>/{train,val}/{ai,nature}/ or the unzipped imagenet_*_<generator> "
                "archives) instead"
            )
        method = method or resolve(names[0], relative)
        if (reason := skip_reason(method)) is not None:
            return reason
        if kind == "nature":
            return Sample(relative, "real", "none", method.name, dataset, video, SPLITS[split])
        return Sample(relative, method.label, "", method.name, dataset, video, SPLITS[split])

    return read_tree(
        root, NAME, EXPECTED, classify, include_videos=options.include_videos, names=resolve
    )
