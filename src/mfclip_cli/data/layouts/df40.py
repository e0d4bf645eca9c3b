"""DF40 (Yan et al., NeurIPS 2024), as the YZY-stack/DF40 README's "Folder Structure" lays it out
and as its archives unpack, and the DeepfakeBench dataset JSON files it also ships::

    DF40/<method>/{ff,cdf}/frames/<video>/NNN.png    test fakes of the FF++ / Celeb-DF domain
    DF40/<method>/{fake,real}/*                      the 9 "unknown" methods, their own reals
    DF40_train/<method>/{ff,cdf}/...                 train fakes (README)
    DF40_train/<method>/frames/<video>/, DF40_train/<method>/<video id>/   train fakes as
                                                     downloaded: FF++ domain only, no ff/ level
    FaceForensics++/original_sequences/youtube/<c23>/frames[_all]/<video>/NNN.png   FF++ reals
    FaceForensics++/{train,val,test}.json            FF++'s split lists (or dataset/splits/)
    Celeb-DF-v2/{Celeb-real,YouTube-real}/frames/<video>/NNN.png   Celeb-DF reals (cdf domain)

A method folder doubled by its archive (``styleclip/styleclip/``) counts once. Read at the folder
holding DF40/ (and DF40_train/, FaceForensics++/), or at DF40/ or DF40_train/ itself. Split:
DF40_train/ is train, DF40/ is test; FF++ reals take their video's split from FF++'s lists (none
without them: a note says so, and the ``df40`` protocol refuses them rather than hash a test
video into train), ``<c23>/videos/<id>.mp4`` and ``frames_all/<id>/`` (what DF40's own
rearrange.py reads) too, grouped with ``frames/<id>/``. Celeb-DF reals are test where its
``List_of_testing_videos.txt`` names their video, else train (all test, noted, without it),
generator ``Celeb-DF-v2``. Dataset: ``DF40-ff`` / ``DF40-cdf`` by domain folder
(the FF++ reals are ``DF40-ff``, Celeb-DF's ``DF40-cdf``), ``DF40`` for the methods with their own
reals, whose generator field names that method so each method's report pairs its fakes with its
reals. ``landmarks/``, ``masks/`` and ``frames_wocropface/`` (preprocessing outputs) are not
samples; other folders at the top, FF++'s own fakes and Celeb-DF's are not read, and inspect
lists them.

DeepfakeBench's JSON (``dataset_json/*.json`` or ``preprocessing/dataset_json/*.json`` below
ROOT): ``{dataset: {label: {split: [{compression:}] {video: {"label", "frames": [paths]}}}}}``
(DFDC's val: one ``{"label", "frames"}``). A label ending in ``real`` is real, with the generator
a folder read would give it (FF++'s, or the method of ``DF40/<method>/real``); another names a
method (``simswap_Fake`` -> simswap; FF-DF -> Deepfakes) looked up in the DF40 and FaceForensics
tables, else (``FSAll_Fake``) the frame's method folder below DF40[_train]/ is. Dataset: the one
a folder read gives a frame below DF40[_train]/ (so both modes name a download alike), else by
the key's domain suffix (``simswap_ff`` -> DF40-ff, ``_cdf`` -> DF40-cdf), else the key; FF++'s
and Celeb-DF's reals are DF40-ff / DF40-cdf as in a folder read wherever DF40's fakes are listed
(only DeepfakeBench's FaceForensics++ and Celeb-DF files: their keys). Frame
paths were written on the authors' machine: each is matched to a file below ROOT (or one of its
folders) by its longest existing tail, found once per distinct prefix. The publishers list frames
under several splits and files: each is read once, in the split that keeps it out of training
(test over val over train, for all frames of its video). Counted under skipped: the extra
listings, listed frames not on disk (the DF40 authors: leave them out), files on disk no JSON
lists. Of several compression levels, c23 is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from mfclip_cli.data.layouts.labels import LabelTable, Method, Resolver, skip_reason
from mfclip_cli.data.layouts.tree import SPLIT_NAMES, ReadOptions, folders, shown, stem
from mfclip_cli.data.samples import (
    FRAME_FOLDERS,
    VIDEO_EXTENSIONS,
    DataError,
    Sample,
    read_tree,
    split_path,
    walk,
)

NAME = "df40"
SPLIT_ROOTS = {"df40": "test", "df40_train": "train"}
DOMAINS = {"ff": "DF40-ff", "cdf": "DF40-cdf"}
OWN_REALS = ("fake", "real")
FFPP = "faceforensics++"
FFPP_REALS = "FaceForensics++"  # the generator field of FF++'s reals
CDF = ("celeb-df-v2", "celeb-df")  # Celeb-DF's folder beside DF40/, as the README ships its reals
CDF_REALS = "Celeb-DF-v2"  # the generator field of Celeb-DF's reals
CDF_REAL_FOLDERS = ("celeb-real", "youtube-real")
# the domain whose fakes FF++'s and Celeb-DF's reals stand against: their dataset
REALS_DOMAIN = {FFPP_REALS: DOMAINS["ff"], CDF_REALS: DOMAINS["cdf"]}
FFPP_LISTS = "FaceForensics repository, dataset/splits/{train,val,test}.json"
TABLES = ("DF40", "FaceForensics")
DERIVED = {
    "landmarks": "facial landmarks, not samples",
    "masks": "forgery masks, not samples",
    "frames_wocropface": "uncropped copies of frames/ (DF40's preprocessing), not samples",
}
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
    if root.absolute().name.lower() in SPLIT_ROOTS:  # DF40/ or DF40_train/ itself
        return None
    if _method_folders(root):
        return None
    return (
        "no DF40/ or DF40_train/, no <method>/{ff,cdf,fake,real}/ and no dataset_json/*.json "
        f"(found: {shown(top)})"
    )


def _ffpp_splits(ffpp: Path) -> tuple[dict[str, str], Path | None]:
    """``{video id: split}`` from FF++'s train/val/test.json lists of pairs, and the folder they
    were found in (empty and None if absent: the caller notes it, since its reals then have no
    split)."""
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
            return splits, folder
    return splits, None


CDF_TEST_LIST = "List_of_testing_videos.txt"  # Celeb-DF-v2's own: "<label> <folder>/<id>.mp4"


def _celeb_df_tests(celeb_df: Path) -> set[tuple[str, str]] | None:
    """``{(folder, video id)}`` of the test videos Celeb-DF-v2's list names (lower case), or
    None where the list is absent: DF40 and DeepfakeBench test its 178 listed real videos only,
    not every real on disk (audit H M1)."""
    path = celeb_df / CDF_TEST_LIST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the test list ({error})") from None
    listed = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or "/" not in fields[1]:
            raise DataError(f"{path}, line {number}: not '<label> <folder>/<video>.mp4': {line!r}")
        folder, _, name = fields[1].replace("\\", "/").rpartition("/")
        listed.add((folder.rsplit("/", 1)[-1].lower(), stem(name).lower()))
    return listed


def _unsplit_note(ffpp: str, found: Path | None) -> str:
    """Why FF++'s reals have no split: where the lists were looked for and where they come from,
    and what follows (the df40 protocol refuses them; a hash could train on a test video)."""
    if found is None:
        why = (
            f"FF++'s split lists are not at {ffpp}/{{train,val,test}}.json nor "
            f"{ffpp}/dataset/splits/ (add them from the {FFPP_LISTS})"
        )
    else:
        why = f"FF++'s lists in {found} do not name their video (or they lie in no frames/<id>/)"
    return (
        f"{ffpp}/original_sequences/: FF++ reals read with no split: {why}; the df40 protocol "
        "refuses them, other protocols split them by a hash that ignores FF++'s test list"
    )


def _domain_dataset(parts: list[str]) -> str | None:
    """The dataset a folder read names a file below DF40[_train]/ (``parts``: its label folders):
    ``DF40-ff`` / ``DF40-cdf`` by domain folder, ``DF40`` below ``fake/`` or ``real/``, ``DF40-ff``
    for DF40_train/ without a domain level; None elsewhere. JSON mode names frames by it too."""
    index = _method_index([*parts, ""])
    if index is None or index >= len(parts):
        return None
    rest = parts[index + 1 :]
    if rest and rest[0].lower() == parts[index].lower():  # styleclip/styleclip/
        rest = rest[1:]
    where = rest[0].lower() if rest else None
    if where in DOMAINS:
        return DOMAINS[where]
    if where in OWN_REALS:
        return "DF40"
    return "DF40-ff" if parts[index - 1].lower() == "df40_train" else None


Notes = dict[str, int]  # {what the user should know of samples read: count}


def read(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int], Notes]:
    """The samples, what was skipped, and notes (FF++ reals read with no split)."""
    json_folder = _json_folder(root)
    if json_folder is not None:  # the JSON gives every listed frame its split
        return (*_JsonReader(root, json_folder, options).read(), {})
    return _read_folders(root, options)


def _is_video(relative: str) -> bool:
    return os.path.splitext(relative)[1].lower() in VIDEO_EXTENSIONS


def _skip_derived(relative: str) -> str | None:
    return DERIVED.get(relative.rsplit("/", 1)[-1].lower())


def _method_index(parts: list[str]) -> int | None:
    """Where the method folder is in a path's folders: just below DF40/ or DF40_train/."""
    for index, part in enumerate(parts[:-1]):
        if part.lower() in SPLIT_ROOTS:
            return index + 1
    return None


def _read_folders(root: Path, options: ReadOptions) -> tuple[list[Sample], dict[str, int], Notes]:
    resolve = Resolver(options.labels, TABLES)
    top = folders(root)
    nested = bool(set(top) & set(SPLIT_ROOTS))
    own_split = SPLIT_ROOTS.get(root.absolute().name.lower())
    ffpp_splits, lists_at = _ffpp_splits(root / top[FFPP]) if FFPP in top else ({}, None)
    celeb_df = next((top[name] for name in CDF if name in top), None)
    cdf_tests = _celeb_df_tests(root / celeb_df) if celeb_df else None

    def skip_folder(relative: str) -> str | None:
        parts = relative.lower().split("/")
        if (reason := _skip_derived(relative)) is not None:
            return reason
        if nested and len(parts) == 1 and parts[0] not in (*SPLIT_ROOTS, FFPP, *CDF):
            return "not part of DF40 (not read)"
        if parts[0] == FFPP and len(parts) >= 2 and parts[1] != "original_sequences":
            return "not DF40's reals (not read)"
        if nested and parts[0] in CDF and len(parts) == 2 and parts[1] not in CDF_REAL_FOLDERS:
            if parts[1] == "celeb-synthesis":
                return "Celeb-DF's own fakes, not DF40's (not read)"
            return "not Celeb-DF's reals (not read)"
        return None

    extracted: dict[str, bool] = {}  # {a video's frames/<id>/: whether it is there}

    def ffpp_real(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        if len(parts) < 3 or [p.lower() for p in parts[1:3]] != ["original_sequences", "youtube"]:
            return None
        if video is None and parts[-1].lower() == "videos" and _is_video(relative):
            # <c>/videos/<id>.mp4 is the video whose frames are <c>/frames/<id>/: one group
            video = "/".join([*parts[:-1], "frames", stem(relative)])
        elif video is not None and video.split("/")[len(parts)].lower() in FRAME_FOLDERS:
            # frames_all/<id>/ (DF40's rearrange.py) and frames/<id>/ are one video's frames
            folder = video.split("/")[len(parts)]
            video = "/".join([*parts, "frames", video.rsplit("/", 1)[-1]])
            if folder.lower() != "frames":
                if video not in extracted:
                    extracted[video] = (root / video).is_dir()
                if extracted[video]:  # counted once: every frame of it twice weighed it double
                    return f"{folder}/: the same video's frames/ are read (not read)"
        name = (video or "").rsplit("/", 1)[-1]
        split = ffpp_splits.get(name) or ffpp_splits.get(name[:3])
        dataset = options.dataset or REALS_DOMAIN[FFPP_REALS]
        return Sample(relative, "real", "none", FFPP_REALS, dataset, video, split)

    def celeb_df_real(parts: list[str], relative: str, video: str | None) -> Sample | None:
        """A Celeb-DF real the README ships for the cdf domain, named as the JSON mode names it
        (generator Celeb-DF-v2, dataset DF40-cdf): test where Celeb-DF's test list names its
        video, else train (as DeepfakeBench's rearrange.py splits them; DF40 trains on the ff
        domain only, so the df40 protocol leaves them out); without the list, every one is
        test, and noted."""
        if len(parts) < 2 or parts[1].lower() not in CDF_REAL_FOLDERS:
            return None
        dataset = options.dataset or REALS_DOMAIN[CDF_REALS]
        split = "test"
        if cdf_tests is not None:
            name = stem((video or relative).rsplit("/", 1)[-1]).lower()
            split = "test" if (parts[1].lower(), name) in cdf_tests else "train"
        return Sample(relative, "real", "none", CDF_REALS, dataset, video, split)

    def classify(parts: list[str], relative: str, video: str | None) -> Sample | str | None:
        split, below = own_split, parts
        if nested:
            if parts and parts[0].lower() == FFPP:
                return ffpp_real(parts, relative, video)
            if parts and parts[0].lower() in CDF:
                return celeb_df_real(parts, relative, video)
            if not parts or parts[0].lower() not in SPLIT_ROOTS:
                return None
            split, below = SPLIT_ROOTS[parts[0].lower()], parts[1:]
        frames = video.rsplit("/", 2)[-2] if video is not None and "/" in video else ""
        if not below and frames.lower() in FRAME_FOLDERS and split is not None:
            top = parts[0] if parts else root.absolute().name
            where, known = (
                (f"{top}/uniface/", " (DF40's uniface.zip has none)")
                if split == "train"
                else (f"{top}/<method>/{{ff,cdf}}/", "")
            )
            raise DataError(
                f"{root}: {relative}: {frames}/ directly under {top}/, with no method folder "
                f"above: an archive unpacked without its top folder{known}; move it under "
                f"{where} (or the method it came from)"
            )
        if not below:
            return None
        rest = below[1:]
        if rest and rest[0].lower() == below[0].lower():  # styleclip/styleclip/ in some archives
            rest = rest[1:]
        where = rest[0].lower() if rest else None
        if where not in (*DOMAINS, *OWN_REALS):
            if split != "train":
                return None
            # DF40_train as downloaded: <method>/frames/<video>/ or <method>/<video id>/, and
            # only the FF++ domain (the DF40 README)
            where = "ff"
            if video is None and rest:
                video = "/".join(parts[: len(parts) - len(rest) + 1])
        method = resolve(below[0], relative)
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
        names=resolve,
    )
    notes: dict[str, int] = {}
    unsplit = [sample for sample in samples if sample.split is None]
    ffpp = [sample for sample in unsplit if sample.generator == FFPP_REALS]
    if ffpp:
        notes[_unsplit_note(top.get(FFPP, "FaceForensics++"), lists_at)] = len(ffpp)
    celeb = sum(sample.generator == CDF_REALS for sample in samples)
    if celeb and cdf_tests is None:
        notes[
            f"Celeb-DF's reals read without its {CDF_TEST_LIST}: every one is test, where DF40 "
            f"tests the videos it lists (put it in {celeb_df}/ as Celeb-DF-v2 ships it)"
        ] = celeb
    if len(unsplit) > len(ffpp):
        notes[
            "read below neither DF40/ nor DF40_train/: no split (give the folder that holds "
            "DF40/ and DF40_train/, or one of them)"
        ] = len(unsplit) - len(ffpp)
    return samples, skipped, notes


# ----------------------------------------------------------------------------- DeepfakeBench JSON


def _videos(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(video, info)`` pairs under one split, through a compression level if there is one.
    DeepfakeBench's DFDC branch writes one ``{label, frames}`` there, not a table: its video is
    ``""``."""
    if not isinstance(node, dict):
        raise DataError(f"{where}: expected a table of videos, not {type(node).__name__}")
    if isinstance(node.get("frames"), list):
        yield "", node
        return
    if not node or any(isinstance(v, dict) and "frames" in v for v in node.values()):
        yield from node.items()
        return
    level = "c23" if "c23" in node else sorted(node)[0]
    yield from _videos(node[level], f"{where}.{level}")


class _Listing(NamedTuple):
    """One video entry of a JSON file: where it is (for messages), its top key, label and split."""

    where: str
    key: str
    label: str
    split: str | None
    video: str
    frames: list[Any]


def _listings(json_folder: Path) -> Iterator[_Listing]:
    """Every video entry of the JSON files in ``json_folder``, in file order."""
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
            for label, splits in labels.items():
                if not isinstance(splits, dict):
                    raise DataError(f"{path}: {key}.{label} is not a table of splits")
                for split_name, node in splits.items():
                    where = f"{path.name}: {key}.{label}.{split_name}"
                    split = SPLIT_NAMES.get(split_name.lower())
                    for video, info in _videos(node, where):
                        frames = info.get("frames") if isinstance(info, dict) else None
                        if not isinstance(frames, list):
                            raise DataError(f"{where}.{video}: no frames list")
                        yield _Listing(where, key, label, split, video, frames)


class _PathFinder:
    """Maps a frame path written on another machine to a file below ROOT, by its longest tail,
    looked up in the one walk of ROOT (``files``), not with a stat per frame."""

    def __init__(self, files: set[str], bases: Iterable[str]):
        self.files = files
        self.bases = ["", *(f"{name}/" for name in sorted(bases))]
        self.prefixes: dict[tuple[str, ...], str] = {}

    def __call__(self, written: str) -> str | None:
        pieces = written.replace("\\", "/").split("/")
        parts = tuple(part for part in pieces if part not in ("", "."))
        for length in range(len(parts)):
            base = self.prefixes.get(parts[:length])
            if base is not None and base + "/".join(parts[length:]) in self.files:
                return base + "/".join(parts[length:])
        for length in range(len(parts)):
            tail = "/".join(parts[length:])
            for base in self.bases:
                if base + tail in self.files:
                    self.prefixes[parts[:length]] = base
                    return base + tail
        return None


def _dataset_name(key: str, parts: list[str]) -> str:
    """A listed frame's dataset: what a folder read names it below DF40[_train]/ (the same
    download must not give other dataset names, hence other reports and protocol splits, with
    the JSON folder beside it), else by the key's domain suffix, else the key
    (DeepfakeBench's ``FaceForensics++``, ``Celeb-DF-v2``)."""
    if (name := _domain_dataset(parts)) is not None:
        return name
    for suffix, name in (("_ff", "DF40-ff"), ("_cdf", "DF40-cdf")):
        if key.lower().endswith(suffix):
            return name
    return key


# a frame or video listed under several splits keeps the first of these: out of training
SPLIT_RANK = {"test": 0, "val": 1, "train": 2}
LISTED_AGAIN = (
    "listed again in dataset_json (another split, key or file): read once, in its split "
    "test over val over train"
)
NOT_ON_DISK = "listed in dataset_json, not on disk (left out, as the DF40 authors advise)"


def _rank(split: str | None) -> int:
    return SPLIT_RANK.get(split or "", len(SPLIT_RANK))


class _JsonReader:
    """Turns the frames the JSON files list into samples; what is left out goes to ``skipped``."""

    def __init__(self, root: Path, json_folder: Path, options: ReadOptions):
        self.root, self.json_folder, self.options = root, json_folder, options
        self.resolve = Resolver(options.labels, TABLES)
        images, videos, self.skipped = walk(root, _skip_derived)
        self.on_disk = set(images) | set(videos)
        self.find = _PathFinder(self.on_disk, folders(root).values())
        self.kept: dict[str, tuple[Sample, str]] = {}  # path -> (sample, where it was listed)
        self.listed: set[str] = set()
        self.missing: list[str] = []  # a few, for the message when nothing is found

    def count(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def known(self, name: str) -> Method | None:
        """The method the table has under ``name``, without noting it as unmapped."""
        for table in TABLES:
            if (method := self.options.labels.find(table, name)) is not None:
                return method
        return None

    def fake(self, label: str, parts: list[str], where: str) -> Method | None:
        """A fake's method: the one its label names, else (aggregate labels such as FSAll_Fake)
        the method folder of its path."""
        name = label
        for suffix in ("_fake", "-fake"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        index = _method_index(parts)
        return self.known(name) or self.resolve(name if index is None else parts[index], where)

    def real_source(self, parts: list[str]) -> str:
        """A real's generator, as in folder mode: FF++'s or Celeb-DF's reals, or the method whose
        own reals they are (DF40/<method>/real/), so its report pairs them with its fakes."""
        lower = [part.lower() for part in parts]
        if "original_sequences" in lower:
            return FFPP_REALS
        if set(lower) & set(CDF) and set(lower) & set(CDF_REAL_FOLDERS):
            return CDF_REALS
        index = _method_index(parts)
        if index is None:
            return ""
        method = self.known(parts[index])
        return parts[index] if method is None else method.name

    def sample(self, listing: _Listing, relative: str) -> Sample | str:
        parts, video = split_path(relative)
        if video is None and listing.video:
            video = f"{listing.key}/{listing.label}/{listing.video}"
        dataset = self.options.dataset or _dataset_name(listing.key, parts)
        if listing.label.lower().endswith("real"):
            source = self.real_source(parts)
            return Sample(relative, "real", "none", source, dataset, video, listing.split)
        method = self.fake(listing.label, parts, f"{listing.where}: {relative}")
        if (reason := skip_reason(method)) is not None:
            return reason
        return Sample(
            relative, method.label, method.forgery_type, method.name, dataset, video, listing.split
        )

    def keep(self, sample: Sample, where: str) -> None:
        """Keep a frame once: of several listings, the one whose split keeps it out of training,
        named by a DF40 file's dataset (``DF40-ff``, which the df40 protocol trains on) where one
        lists it beside DeepfakeBench's ``FaceForensics++.json``; listings that disagree on what
        the frame is are an error saying how."""
        old = self.kept.get(sample.path)
        if old is None:
            self.kept[sample.path] = (sample, where)
            return
        differ = [
            f"{name} {getattr(old[0], name)!r} in {old[1]} but {getattr(sample, name)!r} in {where}"
            for name in ("label", "forgery_type", "generator")
            if getattr(old[0], name) != getattr(sample, name)
        ]
        if differ:
            raise DataError(
                f"{sample.path} is listed twice as different samples: {'; '.join(differ)}"
            )
        self.count(LISTED_AGAIN)
        dataset = next(
            (name for name in (old[0].dataset, sample.dataset) if name.startswith("DF40")),
            old[0].dataset,
        )
        if _rank(sample.split) < _rank(old[0].split):
            old = (sample, where)
        self.kept[sample.path] = (replace(old[0], dataset=dataset), old[1])

    def read(self) -> tuple[list[Sample], dict[str, int]]:
        for listing in _listings(self.json_folder):
            for written in listing.frames:
                relative = self.find(str(written))
                if relative is None:
                    self.missing = self.missing[:2] + [str(written)]
                    self.count(NOT_ON_DISK)
                    continue
                self.listed.add(relative)
                sample = self.sample(listing, relative)
                if isinstance(sample, Sample):
                    self.keep(sample, listing.where)
                else:
                    self.count(sample)
        self.resolve.check(self.root, NAME)
        for relative in sorted(self.on_disk - self.listed):
            self.count(f"{_group(relative)}: not listed in any {self.json_folder.name}/*.json")
        samples = _one_split_per_video([sample for sample, _ in self.kept.values()])
        if self.options.dataset is None:
            samples = _reals_named_by_domain(samples)
        if not samples:
            raise DataError(
                f"{self.root}: no frame the JSON files in {self.json_folder} list is below it "
                f"(e.g. {', '.join(self.missing) or 'none listed'})"
            )
        return sorted(samples, key=lambda sample: sample.path), self.skipped


def _reals_named_by_domain(samples: list[Sample]) -> list[Sample]:
    """FF++'s and Celeb-DF's reals that only DeepfakeBench's own files list (dataset
    ``FaceForensics++`` / ``Celeb-DF-v2``, their key) take the names a folder read gives them
    (``DF40-ff`` / ``DF40-cdf``) where the listings hold DF40's fakes: the df40 protocol trains on
    ``DF40-ff`` and scores each domain's fakes against its own reals. Without DF40's fakes (a
    DeepfakeBench download of FF++ and Celeb-DF alone) the keys stay the names."""
    if not any(sample.dataset.startswith("DF40") for sample in samples if not sample.is_real):
        return samples
    return [
        replace(sample, dataset=REALS_DOMAIN[sample.generator])
        if sample.is_real and sample.generator in REALS_DOMAIN
        else sample
        for sample in samples
    ]


def _group(relative: str) -> str:
    """The folder an unlisted file is reported under: its DF40 method folder, else its top two."""
    parts = relative.split("/")[:-1]
    index = _method_index(parts)
    shown = parts[: index + 1] if index is not None else parts[:2]
    return "/".join(shown) + "/" if shown else "./"


def _one_split_per_video(samples: list[Sample]) -> list[Sample]:
    """Frames of one video listed under different splits all take the one that keeps them out of
    training, so no video falls in two splits."""
    best: dict[str, str | None] = {}
    for sample in samples:
        if sample.video is not None:
            best[sample.video] = min(best.get(sample.video, sample.split), sample.split, key=_rank)
    return [
        sample if sample.video is None else replace(sample, split=best[sample.video])
        for sample in samples
    ]
