"""Labelled face samples and the dataset layouts they are read from.

Every sample carries ``path`` (POSIX, relative to the dataset root), ``label`` (real | diffusion |
gan), ``forgery_type`` (lower case; ``none`` for real faces, ``""`` when unknown), ``generator``
(free text, ``""`` when unknown; for real faces the source, e.g. ``ffhq``, where the layout names
one), ``dataset``, an optional ``video`` (the key that groups the frames of one video: the full
relative path of that video, never a bare folder name) and an optional ``split`` (train / val /
test, only where the layout itself says so, as DiFF's does).

The layouts that read published datasets into samples live in ``data/layouts/`` (one module
each; ``read_dataset`` there detects them). This module holds what they share: the sample, the
walk of a directory tree, and the ``manifest`` layout: ``manifest.jsonl`` (one JSON object per
line) or ``manifest.csv`` (a header row) in ROOT, or the path of such a file, with the fields
above; ``path`` is relative to the manifest's folder (absolute paths are accepted too). Blank lines
are ignored. A missing or empty ``dataset`` is the ``dataset`` argument, else (through
``read_dataset``) the manifest folder's name.

Frames of videos: video files are not samples (except with ``include_videos=True``, which
``mfclip prepare`` uses to find them); their frames are, and each frame's ``video`` is the full
relative path of its video file (``prepare`` writes it into its manifest). In the directory
layouts, a folder whose name ends in a video extension (``.../A/000_003.mp4/0001.png``), and a
folder ``frames/<video>/`` (``.../frames/000_003/000.png``, as DeepfakeBench extracts frames) or
``frames_all/<video>/`` (the folder DF40's own ``rearrange.py`` reads), hold the frames of one
video: every image below it gets ``video`` = the folder's path relative to the root, and that
folder and the ones below it never count as label / forgery-type / generator folders.

Hidden files and folders (names starting with ``.``) are skipped; files that are not images
(``IMAGE_EXTENSIONS``) are ignored. An image in a place the layout does not define is an error
rather than silently dropped. Every reader returns samples sorted by path.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol

from mfclip_cli.errors import DataError, LayoutMismatch
from mfclip_cli.files import atomic_writer, readable
from mfclip_cli.labels import CLASS_NAMES, LabelSet

LABELS = CLASS_NAMES  # the model's classes, in its order
SPLITS = ("train", "val", "test")
# a phone's HEIC among them: a dataset of one's own photos, decoded as scan decodes them
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".hif"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
PREPARED_SUMMARY = "prepare.json"  # what ``mfclip prepare`` writes beside its manifest, last
PREPARED_LOG = "prepare.jsonl"  # its record of each source: bytes hashed, faces written
# folders whose sub-folders are one video's frames each: DeepfakeBench's frames/, and
# frames_all/, which DF40's own preprocessing writes and its rearrange.py reads
FRAME_FOLDERS = ("frames", "frames_all")
SAMPLE_FIELDS = ("path", "label", "forgery_type", "generator", "dataset", "video", "split")
_REQUIRED_FIELDS = ("path", "label")
_SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_UNKNOWN = ("", "none", "unknown")


@dataclass(frozen=True)
class Sample:
    """One labelled face image. Values are normalised on construction (see the module docstring)."""

    path: str
    label: str
    forgery_type: str = ""
    generator: str = ""
    dataset: str = ""
    video: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        for name in ("path", "label", "forgery_type", "generator", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise DataError(
                    f"field {name!r} must be a string, not {type(value).__name__} ({value!r})"
                )
        for name in ("video", "split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"field {name!r} must be a string or null, "
                    f"not {type(value).__name__} ({value!r})"
                )
        if not self.path or "\x00" in self.path:
            raise DataError(f"field 'path' must be a non-empty path, not {self.path!r}")
        if readable(self.path) != self.path:  # a lone surrogate: a name no UTF-8 text holds
            raise DataError(
                f"field 'path' must be UTF-8 text, not {readable(self.path)!r} ({NOT_TEXT})"
            )
        label = self.label.strip().lower()
        if label not in LABELS:
            raise DataError(f"field 'label' must be one of {', '.join(LABELS)}, not {self.label!r}")
        forgery_type = self.forgery_type.strip().lower()
        if label == "real":
            if forgery_type not in _UNKNOWN:
                raise DataError(
                    "field 'forgery_type' of a real sample must be 'none', "
                    f"not {self.forgery_type!r}"
                )
            forgery_type = "none"
        elif forgery_type in _UNKNOWN:
            forgery_type = ""
        split = self.split.strip().lower() if self.split is not None else None
        if split == "":
            split = None
        if split is not None:
            if split not in _SPLIT_ALIASES:
                raise DataError(
                    f"field 'split' must be one of {', '.join(SPLITS)} (or empty), "
                    f"not {self.split!r}"
                )
            split = _SPLIT_ALIASES[split]
        video = self.video.strip() if self.video is not None else None
        normalised = {
            "label": label,
            "forgery_type": forgery_type,
            "generator": self.generator.strip(),
            "dataset": self.dataset.strip(),
            "video": video or None,
            "split": split,
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @property
    def is_real(self) -> bool:
        return self.label == "real"

    @property
    def group(self) -> str:
        """The key that keeps related samples in one split: the video if any, else the path."""
        return self.video if self.video is not None else self.path

    def value_of(self, name: str) -> str:
        """Field ``name``'s value as protocols match it: "" where it is unset (a video, a
        split)."""
        value = getattr(self, name)
        return "" if value is None else value

    @property
    def label_set(self) -> LabelSet:
        return LabelSet(self.label, self.forgery_type, self.generator)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SAMPLE_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Sample":
        """Build a sample from a mapping of its fields; errors name the field at fault."""
        if not isinstance(data, Mapping):
            raise DataError(
                f"a sample must be an object with the fields {', '.join(SAMPLE_FIELDS)}, "
                f"not {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(SAMPLE_FIELDS))
        if unknown:
            raise DataError(
                f"unknown field(s) {', '.join(map(repr, unknown))} "
                f"(a sample has: {', '.join(SAMPLE_FIELDS)})"
            )
        for name in _REQUIRED_FIELDS:
            if data.get(name) in (None, ""):
                raise DataError(f"missing required field {name!r}")
        values = dict(data)
        for name in ("forgery_type", "generator", "dataset"):
            if values.get(name) is None:
                values[name] = ""
        return cls(**values)


class Unreadable(NamedTuple):
    """A sample whose image could not be decoded when it was read, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` of several read together: where it is, how it was read, and the dataset
    names its samples carry (a cross-dataset protocol names its train and test data by them)."""

    given: str  # as the user gave it
    root: Path  # the folder its sample paths were relative to
    layout: str
    prefix: str  # what its sample paths start with below the combined root ("" for none)
    datasets: tuple[str, ...]
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.given,
            "root": str(self.root),
            "layout": self.layout,
            "prefix": self.prefix,
            "datasets": list(self.datasets),
            "samples": self.samples,
        }


@dataclass
class DataIndex:
    """The samples of one dataset, with the root their paths are relative to (for several
    ``--data`` read together, the folder that holds them all; ``sources`` says which is which)."""

    root: Path
    layout: str
    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # {why: files or folders} not read
    sources: tuple[DataSource, ...] = ()  # several --data only
    # {what the user should know about samples that were read: files}, e.g. DF40's FF++ reals
    # without FF++'s split lists; inspect prints them, a protocol that needs them quotes them
    notes: dict[str, int] = field(default_factory=dict)
    # identity.index_digest's last answer and the list it was of: eval and calibrate ask it of
    # one index several times (held-out checks, the report's data), 6 s a million samples each
    digest_of: tuple[list[Sample], int, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def absolute(self, sample: Sample) -> Path:
        return Path(self.root) / sample.path

    def counts(self) -> dict[str, Any]:
        """A summary for printing: totals by label, by generator within each label, and more."""
        return summarize(self.samples)


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    """``{"total", "label", "generator" (per label), "forgery_type", "dataset", "split",
    "videos"}``."""
    samples = list(samples)
    by_generator: dict[str, Counter] = {}
    for sample in samples:
        by_generator.setdefault(sample.label, Counter())[sample.generator or "unknown"] += 1

    def ordered(counter: Counter) -> dict[str, int]:
        return {key: counter[key] for key in sorted(counter)}

    labels = Counter(sample.label for sample in samples)
    return {
        "total": len(samples),
        "label": {label: labels[label] for label in LABELS if labels[label]},
        "generator": {
            label: ordered(by_generator[label]) for label in LABELS if label in by_generator
        },
        "forgery_type": ordered(Counter(sample.forgery_type or "unknown" for sample in samples)),
        "dataset": ordered(Counter(sample.dataset or "unknown" for sample in samples)),
        "split": ordered(Counter(sample.split for sample in samples if sample.split)),
        "videos": len({sample.video for sample in samples if sample.video is not None}),
    }


# ----------------------------------------------------------------------------- directory trees

SkipFolder = Callable[[str], "str | None"]
"""Given a folder's relative path, the reason not to read it (derived images, masks), or None."""
Classifier = Callable[[list[str], str, "str | None"], "Sample | str | None"]
"""Given the label-carrying folders, the relative path and the video key: the sample, a reason to
skip the file (an excluded method), or None when the file sits where the layout puts nothing."""


NOT_A_FILE = "not a regular file (a FIFO, socket, device or broken link)"
LINK_IN_TREE = "a link to a file in the tree (read where it lies, as its own place labels it)"
NOT_TEXT = "name not UTF-8 (rename it to use it: manifests and reports name samples as text)"
# files out of the tree reached by a second route named each with its first; past these, counted
NAMED_ROUTES = 20
LINKED_AGAIN = "more files out of the tree reached by a second route (read once, at the first)"


def walk(root: Path, skip_folder: SkipFolder | None = None) -> tuple[list[str], list[str], dict]:
    """Relative POSIX paths of the images and of the video files below ``root`` (each sorted), and
    ``{reason: count}`` of what was kept out: the folders ``skip_folder`` names (never entered),
    folders that cannot be read, and entries named like media that are not regular files (a FIFO
    would block whoever reads it). Hidden entries are left out. The type of each entry comes from
    its directory listing, so a large tree is read without a stat per file.

    A link to a file or folder inside the tree is not followed, and said: what it leads to is
    read where it lies, under the split and label its own place gives it. Followed, a test
    folder linked into train was read as train, wherever the walk met it first, and a test
    file linked from train was a sample twice, in both splits (audit AI F1, F2). A link out of
    the tree (a dataset kept on another disk) is followed; one leading where another link or
    route led already is read once, at the first route met, and the second is named with the
    first in ``skipped`` (where the two lie in two splits, the second split never sees it: audit
    AL A4), the first ``NAMED_ROUTES`` of them, the rest counted.
    """
    images: list[str] = []
    videos: list[str] = []
    skipped: dict[str, int] = {}
    tree = os.path.realpath(root)
    first_route: dict[str, str] = {}  # a folder's real path: the route it was read under
    linked_files: dict[str, str] = {}  # the real path of a file read through links: its route
    routes_named = 0  # second routes named in ``skipped``, up to ``NAMED_ROUTES``
    pending = [(str(root), "")]
    while pending:
        folder, prefix = pending.pop()
        real = os.path.realpath(folder)
        if real in first_route:
            key = f"{prefix}: the same folder as {first_route[real] or './'} (read there)"
            skipped[key] = 1
            continue
        first_route[real] = prefix
        outside = os.path.commonpath([real, tree]) != tree  # reached through a link
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            skipped[f"{prefix or './'}: cannot read folder ({error.strerror or error})"] = 1
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative, is_dir = prefix + entry.name, _is(entry.is_dir)
            if readable(entry.name) != entry.name:
                key = f"{readable(relative)}/: {NOT_TEXT}" if is_dir else NOT_TEXT
                skipped[key] = skipped.get(key, 0) + 1
                continue
            target = os.path.realpath(entry.path) if _is(entry.is_symlink) else None
            within = target is not None and os.path.commonpath([target, tree]) == tree
            if is_dir:
                reason = skip_folder(relative) if skip_folder is not None else None
                if within:
                    reason = f"a link to {_in_tree(target, tree)}, read where it lies"
                if reason is None:
                    pending.append((entry.path, relative + "/"))
                else:
                    skipped[f"{relative}/: {reason}"] = 1
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in IMAGE_EXTENSIONS:
                found = images
            elif suffix in VIDEO_EXTENSIONS:
                found = videos
            else:
                continue
            if not _is(entry.is_file):
                skipped[NOT_A_FILE] = skipped.get(NOT_A_FILE, 0) + 1
            elif within:
                skipped[LINK_IN_TREE] = skipped.get(LINK_IN_TREE, 0) + 1
            else:  # a file; one out of the tree, reached through links, is read once
                real_file = target or (os.path.join(real, entry.name) if outside else None)
                if real_file in linked_files:  # by two routes
                    key = LINKED_AGAIN
                    if routes_named < NAMED_ROUTES:
                        again = f"the same file out of the tree as {linked_files[real_file]}"
                        key, routes_named = f"{relative}: {again} (read there)", routes_named + 1
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                if real_file is not None:
                    linked_files[real_file] = relative
                found.append(relative)
    images.sort()
    videos.sort()
    return images, videos, skipped


def _in_tree(target: str, tree: str) -> str:
    """A path inside the tree, as the reports name its samples: relative to its root."""
    return Path(os.path.relpath(target, tree)).as_posix() + "/"


def _is(test: Callable[[], bool]) -> bool:
    """A directory entry's type test, following links; False where the link cannot be followed
    (a loop, a target gone since the listing)."""
    try:
        return test()
    except OSError:
        return False


def split_path(relative: str) -> tuple[list[str], str | None]:
    """The folders that carry labels and the video key, if any.

    A folder named like a video file (``clip.mp4/``) holds that video's frames; so does
    ``frames/<video>/`` or ``frames_all/<video>/`` (DeepfakeBench's and DF40's extracted frames;
    without the second, DF40's FF++ reals would be one group per frame and a video's frames could
    fall in two splits): the key is the path of that folder, and it and the folders below it
    carry no labels.
    """
    folders = relative.split("/")[:-1]
    for index, name in enumerate(folders):
        if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
            return folders[:index], "/".join(folders[: index + 1])
    if len(folders) >= 2 and folders[-2].lower() in FRAME_FOLDERS:
        return folders[:-2], "/".join(folders)
    return folders, None


class NameCheck(Protocol):
    """What a reader looked its folder names up in (``layouts.labels.Resolver``)."""

    def check(self, root: Path, layout: str) -> None:
        """Fail naming every name it could not place."""


def read_tree(
    root: Path,
    layout: str,
    expected: str,
    classify: Classifier,
    *,
    include_videos: bool = False,
    skip_folder: SkipFolder | None = None,
    names: NameCheck | None = None,
) -> tuple[list[Sample], dict[str, int]]:
    """Walk ``root`` once and classify every image (and video file with ``include_videos``).

    Returns the samples and ``{reason: count}`` of what was skipped. An image the layout puts
    nowhere is an error naming it, never silently dropped; so is a name ``classify`` looked up in
    ``names`` and could not place, said before "no samples" (which it would explain).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    images, videos, skipped = walk(root, skip_folder)
    if include_videos:
        images = sorted(images + videos)
    elif videos:  # said, never dropped in silence
        skipped[VIDEO_FILES_SKIPPED] = len(videos)
    samples: list[Sample] = []
    misplaced: list[str] = []
    for relative in images:
        folders, video = split_path(relative)
        sample = classify(folders, relative, video)
        if isinstance(sample, Sample):
            samples.append(sample)
        elif sample is None:
            misplaced.append(relative)
        else:
            skipped[sample] = skipped.get(sample, 0) + 1
    if misplaced:
        shown = ", ".join(misplaced[:3]) + (
            f" and {len(misplaced) - 3} more" if len(misplaced) > 3 else ""
        )
        raise LayoutMismatch(
            f"{root}: {len(misplaced)} image(s) do not fit the {layout} layout "
            f"({expected}): {shown}"
        )
    if names is not None:
        names.check(root, layout)
    check_not_empty(root, layout, samples, 0 if include_videos else len(videos))
    return samples, skipped


VIDEO_FILES_SKIPPED = "video file: its frames are the samples (mfclip prepare extracts them)"


def check_not_empty(root: Path, layout: str, samples: list[Sample], videos: int = 0) -> None:
    if samples:
        return
    hint = (
        f"; it holds {videos} video file(s): extract their frames first (mfclip prepare)"
        if videos
        else f" (image files: {', '.join(sorted(IMAGE_EXTENSIONS))})"
    )
    raise DataError(f"{root}: no samples found in the {layout} layout{hint}")


# ----------------------------------------------------------------------------- manifests


def find_manifest(root: str | Path) -> Path:
    """The manifest file itself, or ``manifest.jsonl`` / ``manifest.csv`` in the folder ``root``."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"manifest or dataset folder not found: {root}")
    found = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
    if len(found) > 1:
        raise DataError(
            f"{root} holds both {' and '.join(p.name for p in found)}; name the one to read"
        )
    if not found:
        raise DataError(f"{root} holds no manifest ({' or '.join(MANIFEST_NAMES)})")
    return found[0]


def _manifest_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"{path}: a manifest must be a .jsonl or .csv file")


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra")
    header = reader.fieldnames
    if not header:
        return
    header = [name.strip() for name in header]
    reader.fieldnames = header
    unknown = [name for name in header if name not in SAMPLE_FIELDS]
    missing = [name for name in _REQUIRED_FIELDS if name not in header]
    if unknown or missing:
        problem = f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else ""
        if missing:
            problem += (
                "; " if problem else ""
            ) + f"missing column(s) {', '.join(map(repr, missing))}"
        raise DataError(
            f"{path}, line 1: {problem} (the header names the fields: {', '.join(SAMPLE_FIELDS)})"
        )
    for row in reader:
        number = reader.line_num
        if "\x00extra" in row:
            raise DataError(f"{path}, line {number}: more cells than header columns")
        if all(value in (None, "") or not value.strip() for value in row.values()):
            continue
        yield number, {key: (None if value in (None, "") else value) for key, value in row.items()}


def read_manifest(path: str | Path, *, dataset: str | None = None) -> list[Sample]:
    """Samples of a JSONL or CSV manifest (or of the manifest in the folder ``path``), in file
    order.

    A missing or empty ``dataset`` becomes ``dataset`` when given. Paths stay as written (relative
    to the manifest's folder). Errors name the file and the line.
    """
    path = find_manifest(path)
    kind = _manifest_format(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    records = _jsonl_records(path, text) if kind == "jsonl" else _csv_records(path, text)
    samples: list[Sample] = []
    seen: dict[str, tuple[int, str]] = {}  # by the file named: ./x.png, x.png and /abs/x.png
    folder = os.path.abspath(path.parent)
    for number, record in records:
        try:
            sample = Sample.from_dict(record)
        except (ValueError, TypeError) as error:
            raise DataError(f"{path}, line {number}: {error}") from None
        named = os.path.normpath(os.path.join(folder, sample.path))
        if named in seen:
            line, spelled = seen[named]
            also = "" if spelled == sample.path else f" (as {spelled!r})"
            raise DataError(
                f"{path}, line {number}: path {sample.path!r} already listed on line {line}{also}"
            )
        seen[named] = (number, sample.path)
        if dataset is not None and not sample.dataset:
            sample = Sample(**{**sample.to_dict(), "dataset": dataset})
        samples.append(sample)
    return samples


def prepared_geometry(folder: str | Path) -> tuple[int, float] | None:
    """(crop size, margin) of the crops ``mfclip prepare`` wrote into ``folder``, from its
    summary; None for a folder it did not write (or whose summary cannot be read)."""
    try:
        summary = json.loads((Path(folder) / PREPARED_SUMMARY).read_text(encoding="utf-8"))
        return int(summary["crop_size"]), float(summary["margin"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(path: str | Path, samples: Iterable[Sample], *, overwrite: bool = False) -> Path:
    """Write ``samples`` as a manifest (JSON Lines; CSV when the name ends in ``.csv``), atomically.

    ``read_manifest`` gives back exactly the same samples in the same order.
    """
    path = Path(path)
    rows = [sample.to_dict() for sample in samples]
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(SAMPLE_FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
        data = buffer.getvalue()
    else:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(data.encode("utf-8"))
    return path


__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS",
    "SAMPLE_FIELDS",
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "DataError",
    "DataIndex",
    "DataSource",
    "FRAME_FOLDERS",
    "Sample",
    "check_not_empty",
    "find_manifest",
    "read_manifest",
    "read_tree",
    "split_path",
    "summarize",
    "walk",
    "write_manifest",
]
