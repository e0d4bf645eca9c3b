"""DiffusionForensics, the benchmark of DIRE (Wang et al., ICCV 2023), as its README lays it out::

    images/{train,val,test}/<source>/real/*           (source: lsun_bedroom, imagenet, celebahq)
    images/{train,val,test}/<source>/<generator>/*    (adm, sdv1, ...; all diffusion)
    recons/..., dire/...                              (same tree: derived images)
    recons_test/<generator>/, dire_test/<generator>/  (DIRE's compute_dire.sh writes these)

Only ``images/`` holds samples: ``recons*/`` (each image's reconstruction by a diffusion model) and
``dire*/`` (the reconstruction error DIRE trains on) are computed from it and are not read. A real's
generator field is its source; the generator folder's class and name come from the label table.
The dataset is named by source (``DiffusionForensics-lsun_bedroom``): DIRE reports each source on
its own, and ADM's bedrooms and ImageNet pictures are one generator but two test sets.
"""

from __future__ import annotations

from pathlib import Path

from mfclip_cli.data.layouts.labels import Resolver, skip_reason
from mfclip_cli.data.layouts.tree import SPLIT_NAMES, ReadOptions, folders, shown
from mfclip_cli.data.samples import Sample, read_tree

NAME = "diffusionforensics"
NAME_SHOWN = "DiffusionForensics"  # its label table's name, and its datasets' stem
DERIVED = {
    "recons": "reconstructions computed from images/, not samples",
    "dire": "DIRE reconstruction errors computed from images/, not samples",
}
EXPECTED = "images/{train,val,test}/<source>/{real,<generator>}/..."


def fits(root: Path) -> str | None:
    top = folders(root)
    if "images" in top and set(folders(root / top["images"])) & set(SPLIT_NAMES):
        return None
    if "images" in top:
        return f"images/ holds {shown(folders(root / top['images']))}, not train/val/test"
    return f"no images/{{train,val,test}}/ folder (found: {shown(top)})"


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    resolve = Resolver(options.labels, (NAME_SHOWN,))

    def skip_folder(relative: str) -> str | None:
        """A top folder of derived images: ``recons/``, ``dire/``, ``recons_test/``, ..."""
        top = relative.lower()
        return None if "/" in top else DERIVED.get(top.split("_", 1)[0])

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        if len(parts) < 4 or parts[0].lower() != "images" or parts[1].lower() not in SPLIT_NAMES:
            return None
        split, source, kind = SPLIT_NAMES[parts[1].lower()], parts[2], parts[3]
        dataset = options.dataset if options.dataset is not None else f"{NAME_SHOWN}-{source}"
        if kind.lower() == "real":
            return Sample(relative, "real", "none", source, dataset, video, split)
        method = resolve(kind, relative)
        if (reason := skip_reason(method)) is not None:
            return reason
        return Sample(relative, method.label, "", method.name, dataset, video, split)

    return read_tree(
        root,
        NAME,
        EXPECTED,
        classify,
        include_videos=options.include_videos,
        skip_folder=skip_folder,
        names=resolve,
    )
