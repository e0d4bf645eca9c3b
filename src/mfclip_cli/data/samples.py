"""Labelled face samples and the dataset layouts they are read from.

Every sample carries ``path`` (POSIX, relative to the dataset root), ``label`` (real | diffusion |
gan), ``forgery_type`` (lower case; ``none`` for real faces, ``""`` when unknown), ``generator``
(free text, ``""`` when unknown; for real faces the source, e.g. ``ffhq``, where the layout names
one), ``dataset``, an optional ``video`` (the key that groups the frames of one video: the full
relative path of that video, never a bare folder name) and an optional ``split`` (train / val /
test, only where the layout itself says so, as DiFF's does).

Layouts (``read_dataset`` detects them, or name one):

``folder``
    ``ROOT/<label>/[<forgery_type>/][<generator>/]**/*.png``. Label folders are ``real``,
    ``diffusion`` and ``gan`` (any case). Below a fake label folder, the first folder is the forgery
    type and the second the generator; deeper folders are just folders. Files directly in the label
    folder have neither. Below ``real/`` the first folder is the source (stored in ``generator``);
    the forgery type is ``none``. ``dataset`` is the root folder's name unless given.
``genface``
    the GenFace authors' layout: ``real/<source>/...`` and
    ``fake/<EFS|FS|AM>/<Diffusion|GAN>/<gen>_*.png`` (generator = the file-name prefix before the
    first ``_``) or ``fake/<type>/<Diffusion|GAN>/<gen>/...`` (generator = that folder).
    ``dataset`` is ``GenFace`` unless given.
``diff``
    DiFF: ``DiFF_real/{train,val,test}/...`` (real) and
    ``{train,val,test}/{T2I,I2I,FS,FE}/<gen>/...`` (all diffusion; forgery type t2i / i2i / fs /
    fe). ``split`` comes from the top folder.
    ``dataset`` is ``DiFF`` unless given.
``manifest``
    ``manifest.jsonl`` (one JSON object per line) or ``manifest.csv`` (a header row) in ROOT, or
    the path of such a file, with the fields above; ``path`` is relative to the manifest's folder
    (absolute paths are accepted too). Blank lines are ignored. A missing or empty ``dataset`` is
    the ``dataset`` argument, else (through ``read_dataset``) the manifest folder's name.

Frames of videos: video files are not samples (except with ``include_videos=True``, which
``mfclip prepare`` uses to find them); their frames are, and each frame's ``video`` is the full
relative path of its video file (``prepare`` writes it into its manifest). In the directory
layouts, a folder whose name ends in a video extension (``.../A/000_003.mp4/0001.png``) holds the
frames of that video: every image below it gets ``video`` = the folder's path relative to the root
(``real/A/000_003.mp4``), and that folder and the ones below it never count as label /
forgery-type / generator folders.

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from mfclip_cli.errors import DataError
from mfclip_cli.files import atomic_writer
from mfclip_cli.model.config import CLASS_NAMES

if TYPE_CHECKING:  # the model package pulls in torch; the data layer must stay light
    from mfclip_cli.model.prompts import LabelSet

LABELS = CLASS_NAMES  # the model's classes, in its order
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
LAYOUTS = ("folder", "genface", "diff", "manifest")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
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

    @property
    def label_set(self) -> "LabelSet":
        from mfclip_cli.model.prompts import (
            LabelSet,  # imported here: the model package imports torch
        )

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


@dataclass
class DataIndex:
    """The samples of one dataset, with the root their paths are relative to."""

    root: Path
    layout: str
    samples: list[Sample] = field(default_factory=list)

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


# ----------------------------------------------------------------------------- directory layouts

_Classifier = Callable[[list[str], str, "str | None", str], "Sample | None"]


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of the images and of the video files below ``root``, each sorted."""
    images: list[str] = []
    videos: list[str] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        relative = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        for name in filenames:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_EXTENSIONS:
                images.append(prefix + name)
            elif suffix in VIDEO_EXTENSIONS:
                videos.append(prefix + name)
    images.sort()
    videos.sort()
    return images, videos


def _split_path(relative: str) -> tuple[list[str], str | None]:
    """The folders that carry labels (those above a video folder) and the video key, if any."""
    folders = relative.split("/")[:-1]
    for index, name in enumerate(folders):
        if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
            return folders[:index], "/".join(folders[: index + 1])
    return folders, None


def _read_tree(
    root: Path,
    layout: str,
    expected: str,
    classify: _Classifier,
    dataset: str,
    include_videos: bool,
) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    images, videos = _walk(root)
    if include_videos:
        images = sorted(images + videos)
    samples: list[Sample] = []
    misplaced: list[str] = []
    for relative in images:
        folders, video = _split_path(relative)
        sample = classify(folders, relative, video, dataset)
        if sample is None:
            misplaced.append(relative)
        else:
            samples.append(sample)
    if misplaced:
        shown = ", ".join(misplaced[:3]) + (
            f" and {len(misplaced) - 3} more" if len(misplaced) > 3 else ""
        )
        raise DataError(
            f"{root}: {len(misplaced)} image(s) do not fit the {layout} layout "
            f"({expected}): {shown}"
        )
    _check_not_empty(root, layout, samples, 0 if include_videos else len(videos))
    return samples


def _check_not_empty(root: Path, layout: str, samples: list[Sample], videos: int = 0) -> None:
    if samples:
        return
    hint = (
        f"; it holds {videos} video file(s): extract their frames first (mfclip prepare)"
        if videos
        else f" (image files: {', '.join(sorted(IMAGE_EXTENSIONS))})"
    )
    raise DataError(f"{root}: no samples found in the {layout} layout{hint}")


def _prefix(name: str) -> str:
    """``sd21_0001.png`` -> ``sd21``; ``""`` when the name has no ``_``."""
    stem = os.path.splitext(name)[0]
    return stem.split("_", 1)[0] if "_" in stem else ""


def _classify_folder(
    folders: list[str], relative: str, video: str | None, dataset: str
) -> Sample | None:
    if not folders or folders[0].lower() not in LABELS:
        return None
    label, rest = folders[0].lower(), folders[1:]
    if label == "real":
        return Sample(
            relative, label, "none", rest[0] if rest else "", dataset=dataset, video=video
        )
    forgery_type = rest[0] if rest else ""
    generator = rest[1] if len(rest) > 1 else ""
    return Sample(relative, label, forgery_type, generator, dataset=dataset, video=video)


def _classify_genface(
    folders: list[str], relative: str, video: str | None, dataset: str
) -> Sample | None:
    if not folders:
        return None
    top = folders[0].lower()
    if top == "real":
        return Sample(
            relative,
            "real",
            "none",
            folders[1] if len(folders) > 1 else "",
            dataset=dataset,
            video=video,
        )
    if top != "fake" or len(folders) < 3 or folders[2].lower() not in ("diffusion", "gan"):
        return None
    if len(folders) > 3:
        generator = folders[3]
    else:  # the file (or the video folder of its frames) sits in the family folder: <gen>_*.png
        parts = relative.split("/")
        generator = _prefix(parts[3])
    return Sample(relative, folders[2].lower(), folders[1], generator, dataset=dataset, video=video)


def _classify_diff(
    folders: list[str], relative: str, video: str | None, dataset: str
) -> Sample | None:
    if len(folders) < 2:
        return None
    top = folders[0].lower()
    if top == "diff_real":
        split = _SPLIT_ALIASES.get(folders[1].lower())
        if split is None:
            return None
        return Sample(relative, "real", "none", "", dataset=dataset, video=video, split=split)
    split = _SPLIT_ALIASES.get(top)
    if split is None:
        return None
    generator = folders[2] if len(folders) > 2 else ""
    return Sample(
        relative, "diffusion", folders[1], generator, dataset=dataset, video=video, split=split
    )


def read_folder(
    root: str | Path, *, dataset: str | None = None, include_videos: bool = False
) -> list[Sample]:
    """``ROOT/<real|diffusion|gan>/[<forgery_type>/][<generator>/]**``; dataset = the root's
    name."""
    root = Path(root)
    name = dataset if dataset is not None else root.absolute().name
    expected = "ROOT/<real|diffusion|gan>/[<forgery_type>/][<generator>/]..."
    return _read_tree(root, "folder", expected, _classify_folder, name, include_videos)


def read_genface(
    root: str | Path, *, dataset: str | None = None, include_videos: bool = False
) -> list[Sample]:
    """``real/<source>/...`` and ``fake/<type>/<Diffusion|GAN>/<gen>_*`` (or ``.../<gen>/...``)."""
    expected = "real/<source>/... or fake/<EFS|FS|AM>/<Diffusion|GAN>/<gen>_*"
    name = dataset if dataset is not None else "GenFace"
    return _read_tree(Path(root), "genface", expected, _classify_genface, name, include_videos)


def read_diff(
    root: str | Path, *, dataset: str | None = None, include_videos: bool = False
) -> list[Sample]:
    """DiFF: ``DiFF_real/<split>/...`` and ``<split>/<T2I|I2I|FS|FE>/<gen>/...``, all fakes
    diffusion."""
    expected = "DiFF_real/{train,val,test}/... or {train,val,test}/{T2I,I2I,FS,FE}/<gen>/..."
    name = dataset if dataset is not None else "DiFF"
    return _read_tree(Path(root), "diff", expected, _classify_diff, name, include_videos)


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
    seen: dict[str, int] = {}
    for number, record in records:
        try:
            sample = Sample.from_dict(record)
        except (ValueError, TypeError) as error:
            raise DataError(f"{path}, line {number}: {error}") from None
        if sample.path in seen:
            raise DataError(
                f"{path}, line {number}: path {sample.path!r} already listed "
                f"on line {seen[sample.path]}"
            )
        seen[sample.path] = number
        if dataset is not None and not sample.dataset:
            sample = Sample(**{**sample.to_dict(), "dataset": dataset})
        samples.append(sample)
    return samples


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


# ------------------------------------------------------------------------- detection & entry point


def detect_layout(root: str | Path) -> str:
    """Which layout ``root`` is in: manifest, diff, genface or folder (checked in that order)."""
    root = Path(root)
    if root.is_file():
        _manifest_format(root)
        return "manifest"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if any((root / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    folders = {
        entry.name.lower()
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    }
    if "diff_real" in folders:
        return "diff"
    if {"real", "fake"} <= folders:
        return "genface"
    if folders & set(LABELS):
        return "folder"
    raise DataError(
        f"cannot tell the layout of {root}; expected one of: "
        "manifest (manifest.jsonl or manifest.csv), "
        "diff (DiFF_real/ and train|val|test/<T2I|I2I|FS|FE>/<gen>/), "
        "genface (real/<source>/ and fake/<EFS|FS|AM>/<Diffusion|GAN>/), "
        "folder (real/, diffusion/ and/or gan/ folders)"
    )


_READERS: dict[str, Callable[..., list[Sample]]] = {
    "folder": read_folder,
    "genface": read_genface,
    "diff": read_diff,
}


def read_dataset(
    root: str | Path,
    layout: str | None = None,
    dataset: str | None = None,
    *,
    include_videos: bool = False,
) -> DataIndex:
    """Read the dataset at ``root`` (a folder, or a manifest file) into a ``DataIndex``.

    ``layout`` None detects it. ``dataset`` overrides the dataset name of every sample in the
    directory layouts, and fills it in where a manifest leaves it empty (default: the folder name).
    ``include_videos`` (for ``mfclip prepare``) makes video files samples too in the directory
    layouts, labelled by their place like images (their ``video`` stays None: the file is the
    video); a manifest lists whatever files it lists either way. Samples are sorted by path.
    """
    root = Path(root)
    if layout is None:
        layout = detect_layout(root)
    name = layout.strip().lower()
    if name not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r} (choose from: {', '.join(LAYOUTS)})")
    if name == "manifest":
        manifest = find_manifest(root)
        base = manifest.parent.absolute()
        samples = read_manifest(manifest, dataset=dataset if dataset is not None else base.name)
        _check_not_empty(manifest, name, samples)
        samples.sort(key=lambda sample: sample.path)
        return DataIndex(base, name, samples)
    samples = _READERS[name](root, dataset=dataset, include_videos=include_videos)
    return DataIndex(root.absolute(), name, samples)


__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS",
    "LAYOUTS",
    "SAMPLE_FIELDS",
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "DataError",
    "DataIndex",
    "Sample",
    "detect_layout",
    "find_manifest",
    "read_dataset",
    "read_diff",
    "read_folder",
    "read_genface",
    "read_manifest",
    "summarize",
    "write_manifest",
]
