"""DF40 (Yan et al., NeurIPS 2024), as the YZY-stack/DF40 README's "Folder Structure" lays it out,
and the DeepfakeBench dataset JSON files it also ships::

    DF40/<method>/{ff,cdf}/frames/<video>/NNN.png    test fakes of the FF++ / Celeb-DF domain
    DF40/<method>/{fake,real}/*                      the 9 "unknown" methods, their own reals
    DF40_train/<method>/{ff,cdf}/...                 train fakes
    FaceForensics++/original_sequences/youtube/<c23>/frames/<video>/NNN.png   FF++ reals
    FaceForensics++/{train,val,test}.json            FF++'s split lists (or dataset/splits/)

Read at the folder holding DF40/ (and DF40_train/, FaceForensics++/), or at DF40/ or DF40_train/
itself. Split: DF40_train/ is train, DF40/ is test; FF++ reals take their video's split from
FF++'s lists (none without them). Dataset: ``DF40-ff`` / ``DF40-cdf`` by domain folder (the FF++
reals are ``DF40-ff``), ``DF40`` for the methods with their own reals, whose generator field names
that method so each method's report pairs its fakes with its reals. ``landmarks/`` and
``masks/`` (DeepfakeBench's preprocessing outputs) are not samples; other folders at the top
(Celeb-DF-v2, FF++'s own fakes) are not read, and inspect lists them.

DeepfakeBench's JSON (``dataset_json/*.json`` or ``preprocessing/dataset_json/*.json`` below
ROOT): ``{dataset: {label: {split: [{compression:}] {video: {"label", "frames": [paths]}}}}}``.
A label ending in ``real`` is real; another is a method (``simswap_Fake`` -> simswap; FF-DF ->
Deepfakes) looked up in the DF40 and FaceForensics tables. Frame paths were written on the
authors' machine: each is matched to a file below ROOT (or one of its folders) by its longest
existing tail, found once per distinct prefix; a frame found nowhere is an error. Of several
compression levels, c23 is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from mfclip_cli.data.layouts.labels import LabelTable, Resolver, skip_reason
from mfclip_cli.data.layouts.tree import SPLIT_NAMES, ReadOptions, folders, shown
from mfclip_cli.data.samples import DataError, Sample, read_tree, split_path

NAME = "df40"
SPLIT_ROOTS = {"df40": "test", "df40_train": "train"}
DOMAINS = {"ff": "DF40-ff", "cdf": "DF40-cdf"}
OWN_REALS = ("fake", "real")
FFPP = "faceforensics++"
DERIVED = {"landmarks": "facial landmarks, not samples", "masks": "forgery masks, not samples"}
JSON_FOLDERS = ("dataset_json", "preprocessing/dataset_json")
EXPECTED = (
    "[DF40/|DF40_train/]<method>/{ff,cdf,fake,real}/... and "
    "FaceForensics++/original_sequences/youtube/<c>/frames/<video>/..."
)


def _json_folder(root: Path) -> Path | None:
    for name in JSON_FOLDERS:
        folder = root / name
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def _method_folders(path: Path) -> list[str]:
    """The sub-folders of ``path`` that look like DF40 methods: a domain folder (ff/, cdf/)
    inside, or a method the shipped table knows with fake/ or real/ inside."""
    table = LabelTable.load()
    found = []
    for name in folders(path).values():
        inside = set(folders(path / name))
        if inside & set(DOMAINS) or (
            inside & set(OWN_REALS) and table.find("DF40", name) is not None
        ):
            found.append(name)
    return found


def fits(root: Path) -> str | None:
    top = folders(root)
    if set(top) & set(SPLIT_ROOTS) or _json_folder(root) is not None:
        return None
    if _method_folders(root):
        return None
    return (
        "no DF40/ or DF40_train/, no <method>/{ff,cdf,fake,real}/ and no dataset_json/*.json "
        f"(found: {shown(top)})"
    )


def _ffpp_splits(ffpp: Path) -> dict[str, str]:
    """``{video id: split}`` from FF++'s train/val/test.json lists of pairs (empty if absent)."""
    splits: dict[str, str] = {}
    for folder in (ffpp, ffpp / "dataset" / "splits"):
        for split in ("train", "val", "test"):
            path = folder / f"{split}.json"
            if not path.is_file():
                continue
            try:
                pairs = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"{path}: not a JSON list of video pairs ({error})") from None
            for pair in pairs:
                for video in pair:
                    splits[str(video)] = split
        if splits:
            return splits
    return splits


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    json_folder = _json_folder(root)
    if json_folder is not None:
        return _read_json(root, json_folder, options)
    return _read_folders(root, options)


def _read_folders(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int]]:
    resolve = Resolver(options.labels, ("DF40", "FaceForensics"))
    top = folders(root)
    nested = bool(set(top) & set(SPLIT_ROOTS))
    own_split = SPLIT_ROOTS.get(root.absolute().name.lower())
    ffpp_splits = _ffpp_splits(root / top[FFPP]) if FFPP in top else {}

    def skip_folder(relative: str) -> str | None:
        parts = relative.lower().split("/")
        if parts[-1] in DERIVED:
            return DERIVED[parts[-1]]
        if nested and len(parts) == 1 and parts[0] not in (*SPLIT_ROOTS, FFPP):
            return "not part of DF40 (not read)"
        if parts[0] == FFPP and len(parts) >= 2 and parts[1] != "original_sequences":
            return "not DF40's reals (not read)"
        return None

    def ffpp_real(parts: list[str], relative: str, video: str | None) -> Sample | None:
        if len(parts) < 3 or [p.lower() for p in parts[1:3]] != ["original_sequences", "youtube"]:
            return None
        name = (video or "").rsplit("/", 1)[-1]
        split = ffpp_splits.get(name) or ffpp_splits.get(name[:3])
        return Sample(relative, "real", "none", "FaceForensics++", "DF40-ff", video, split)

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        split = own_split
        if nested:
            if parts and parts[0].lower() == FFPP:
                return ffpp_real(parts, relative, video)
            if not parts or parts[0].lower() not in SPLIT_ROOTS:
                return None
            split, parts = SPLIT_ROOTS[parts[0].lower()], parts[1:]
        if len(parts) < 2:
            return None
        where = parts[1].lower()
        if where not in (*DOMAINS, *OWN_REALS):
            return None
        method = resolve(parts[0], relative)
        if (reason := skip_reason(method)) is not None:
            return reason
        dataset = options.dataset or DOMAINS.get(where, "DF40")
        if where == "real":
            return Sample(relative, "real", "none", method.name, dataset, video, split)
        forgery_type = method.forgery_type
        return Sample(relative, method.label, forgery_type, method.name, dataset, video, split)

    samples, skipped = read_tree(
        root,
        NAME,
        EXPECTED,
        classify,
        include_videos=options.include_videos,
        skip_folder=skip_folder,
    )
    resolve.check(root, NAME)
    return samples, skipped


# ----------------------------------------------------------------------------- DeepfakeBench JSON


def _videos(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(video, info)`` pairs under one split, through a compression level if there is one."""
    if not isinstance(node, dict):
        raise DataError(f"{where}: expected a table of videos, not {type(node).__name__}")
    if not node or any(isinstance(v, dict) and "frames" in v for v in node.values()):
        yield from node.items()
        return
    level = "c23" if "c23" in node else sorted(node)[0]
    yield from _videos(node[level], f"{where}.{level}")


class _PathFinder:
    """Maps a frame path written on another machine to a file below ROOT, by its longest tail."""

    def __init__(self, root: Path):
        self.root = root
        self.bases = [Path()] + [Path(name) for name in sorted(folders(root).values())]
        self.prefixes: dict[tuple[str, ...], Path] = {}

    def __call__(self, written: str) -> str | None:
        pieces = written.replace("\\", "/").split("/")
        parts = tuple(part for part in pieces if part not in ("", "."))
        for length in range(len(parts)):
            base = self.prefixes.get(parts[:length])
            if base is not None and (self.root / base / Path(*parts[length:])).is_file():
                return (base / Path(*parts[length:])).as_posix()
        for length in range(len(parts)):
            for base in self.bases:
                if (self.root / base / Path(*parts[length:])).is_file():
                    self.prefixes[parts[:length]] = base
                    return (base / Path(*parts[length:])).as_posix()
        return None


def _dataset_name(key: str) -> str:
    for suffix, name in (("_ff", "DF40-ff"), ("_cdf", "DF40-cdf")):
        if key.lower().endswith(suffix):
            return name
    return key


def _read_json(
    root: Path, json_folder: Path, options: ReadOptions
) -> tuple[list[Sample], dict[str, int]]:
    resolve = Resolver(options.labels, ("DF40", "FaceForensics"))
    find = _PathFinder(root)
    by_path: dict[str, Sample] = {}
    missing: list[str] = []
    skipped: dict[str, int] = {}
    for path in sorted(json_folder.glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise DataError(f"{path}: not a DeepfakeBench dataset description")
        for key, labels in document.items():
            if not isinstance(labels, dict):
                raise DataError(f"{path}: {key!r} is not a table of labels")
            for label_name, splits in labels.items():
                real = label_name.lower().endswith("real")
                method = None
                if not real:
                    name = label_name
                    for suffix in ("_fake", "-fake"):
                        if name.lower().endswith(suffix):
                            name = name[: -len(suffix)]
                    method = resolve(name, f"{path.name}: {label_name}")
                    if method is None:  # Resolver.check names it
                        continue
                    if (reason := skip_reason(method)) is not None:
                        skipped[reason] = skipped.get(reason, 0) + 1
                        continue
                if not isinstance(splits, dict):
                    raise DataError(f"{path}: {key}.{label_name} is not a table of splits")
                for split_name, node in splits.items():
                    split = SPLIT_NAMES.get(split_name.lower())
                    where = f"{path.name}: {key}.{label_name}.{split_name}"
                    for video_name, info in _videos(node, where):
                        frames = info.get("frames") if isinstance(info, dict) else None
                        if not isinstance(frames, list):
                            raise DataError(f"{where}.{video_name}: no frames list")
                        for written in frames:
                            relative = find(str(written))
                            if relative is None:
                                missing.append(str(written))
                                continue
                            video = split_path(relative)[1] or f"{key}/{label_name}/{video_name}"
                            sample = Sample(
                                relative,
                                "real" if method is None else method.label,
                                "none" if method is None else method.forgery_type,
                                "" if method is None else method.name,
                                options.dataset or _dataset_name(key),
                                video,
                                split,
                            )
                            old = by_path.setdefault(relative, sample)
                            if old != sample:
                                raise DataError(
                                    f"{where}: {relative} is listed twice with different labels "
                                    f"({old.label}/{old.split} and {sample.label}/{sample.split})"
                                )
    resolve.check(root, NAME)
    if missing:
        raise DataError(
            f"{root}: {len(missing)} frame(s) listed in {json_folder} are not below it, e.g. "
            f"{', '.join(missing[:3])}"
        )
    samples = sorted(by_path.values(), key=lambda sample: sample.path)
    if not samples:
        raise DataError(f"{json_folder}: the JSON files list no frames")
    return samples, skipped
