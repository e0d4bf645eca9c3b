"""What a dataset holds, before hours go into preparing or training on it (``mfclip data inspect``,
``mfclip prepare --dry-run``): the layout found, counts per split x label x forgery type x
generator, the videos, and what is skipped and why. One walk of the tree, no image decoded; with
``verify``, every image read and decoded too, to find those that cannot be before a run meets
them, and files holding the same bytes under other names (a test image copied into train).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console

from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.copies import COPY_KINDS, identical_files
from mfclip_cli.data.protocols import one_class_problem
from mfclip_cli.data.samples import DataIndex, Sample
from mfclip_cli.engines.runtime import EXIT_OK, EXIT_UNREADABLE, available_cores, counting_bar
from mfclip_cli.faces.decode import DecodeError, decode_image, is_video, read_image_bytes
from mfclip_cli.files import readable, refuse_existing, shown, write_json_atomic
from mfclip_cli.schemas import SCHEMA_VERSION

SHOWN_UNREADABLE = 20  # the text report's list; the JSON has every one
SHOWN_EXAMPLES = 3  # groups of identical files named in the text report, of each kind


@dataclass(frozen=True)
class InspectRequest:
    """``data inspect`` (and ``prepare --dry-run``, with videos): what to read (several
    datasets read as one, as train's ``--data A --data B``), how, and where the JSON goes."""

    sources: tuple[str, ...]
    layout: str | None = None
    label_map: str | None = None
    include_videos: bool = False
    verify: bool = False
    workers: int | None = None  # decoding threads of ``verify``; None: one per core
    json_path: str | None = None
    force: bool = False


def run_inspect(request: InspectRequest, console: Console, error_console: Console) -> int:
    """Inspect, print the report on ``console``, write its JSON; the exit code (3 where
    ``verify`` found images that cannot be decoded)."""
    if request.json_path:
        refuse_existing(request.json_path, request.force)
    with _decoding_bar(error_console, show=request.verify) as progress:
        report = inspect_dataset(
            request.sources,
            request.layout,
            request.label_map,
            include_videos=request.include_videos,
            verify=request.verify,
            workers=request.workers or available_cores(),
            progress=progress,
        )
    if request.json_path:
        write_json_atomic(Path(request.json_path), report, overwrite=request.force)
    console.print("\n".join(render(report)), markup=False, highlight=False, soft_wrap=True)
    return EXIT_UNREADABLE if report.get("verified", {}).get("unreadable") else EXIT_OK


@contextlib.contextmanager
def _decoding_bar(
    console: Console, show: bool
) -> Iterator[Callable[[int], Callable[[], None]] | None]:
    """--verify's progress on stderr (on a terminal only): given the number of images, the step
    to take after each."""
    if not show:
        yield None
        return
    bar = counting_bar("decoding", console, show=console.is_terminal)

    def start(total: int) -> Callable[[], None]:
        task = bar.add_task("decode", total=total)
        return lambda: bar.advance(task)

    with bar:
        yield start


def inspect_dataset(
    data: str | Path | Sequence[str | Path],
    layout: str | None = None,
    label_map: str | Path | None = None,
    *,
    include_videos: bool = False,
    verify: bool = False,
    workers: int = 1,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """A JSON-able report of the dataset at ``data`` (or of several read as one: files copied
    from one into another are then found too), see the module docstring; ``verify`` decodes
    every image in ``workers`` threads, calling ``progress(total)`` for the callback to call
    after each image."""
    started = time.perf_counter()
    index = read_datasets(
        data, layout, label_map=label_map, include_videos=include_videos, option=None
    )
    verified = verify_images(index, workers, progress) if verify else None
    groups = Counter(
        (s.split or "-", s.label, s.forgery_type or "-", s.generator or "-") for s in index.samples
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "root": str(index.root),
        "layout": index.layout,
        "samples": len(index.samples),
        # videos whose frames are samples, and video files (prepare --dry-run) to take them from
        "videos": len({s.video for s in index.samples if s.video is not None})
        + sum(is_video(Path(s.path)) for s in index.samples),
        "datasets": dict(sorted(Counter(s.dataset for s in index.samples).items())),
        "rows": [
            {"split": k[0], "label": k[1], "forgery_type": k[2], "generator": k[3], "count": n}
            for k, n in sorted(groups.items())
        ],
        "skipped": dict(sorted(index.skipped.items())),
        "notes": dict(sorted({**index.notes, **_inspection_notes(index)}.items())),
        **({"verified": verified} if verified is not None else {}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _inspection_notes(index: DataIndex) -> dict[str, int]:
    """What inspect notes beside the reader's notes: a manifest's listed files not on disk (a
    stat each; a tree's walk lists none: audit AI F5), and a published val or test split
    without real or fake faces, which training and calibration refuse under a protocol that
    keeps the published splits (the default: audit AI F6)."""
    notes: dict[str, int] = {}
    # each manifest read, alone or beside other datasets (audit AN F2: a manifest inspected
    # beside a tree, "manifest+genimage", was not checked)
    manifests = [
        f"{source.prefix}/" if source.prefix else ""
        for source in index.sources
        if source.layout == "manifest"
    ] or ([""] if index.layout == "manifest" else [])
    listed = [s for s in index.samples if any(s.path.startswith(p) for p in manifests)]
    missing = [s.path for s in listed if not index.absolute(s).exists()]
    if missing:
        notes[f"listed in the manifest but not on disk (e.g. {missing[0]})"] = len(missing)
    # where every sample has its publisher's split (a reader notes those that have none), the
    # check the protocols refuse a split by
    published = all(sample.split for sample in index.samples)
    refused_by = {
        "val": "train and calibrate refuse it under a protocol that keeps the published splits",
        "test": "train refuses it, and eval scores it only with --allow-one-class, without AUC",
    }
    for split, consequence in refused_by.items() if published else ():
        members = [sample for sample in index.samples if sample.split == split]
        if members and (problem := one_class_problem(members)):
            notes[f"the published {split} split has {problem}: {consequence}"] = len(members)
    return notes


def verify_images(
    index: DataIndex,
    workers: int = 1,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Read every image sample of ``index`` once, decode its bytes as training and eval will
    (threads: decoding releases the GIL), and list those that cannot be, with why, in sample
    order, and the groups of samples whose files hold the same bytes (``identical_files``)."""
    images = [sample for sample in index.samples if not is_video(Path(sample.path))]
    advance = progress(len(images)) if progress else None

    def check(sample: Sample) -> tuple[str | None, dict[str, str] | None]:
        """The SHA-256 of the sample's bytes (None where they cannot be read), and its failure."""
        digest = None
        try:
            data = read_image_bytes(index.absolute(sample))
            digest = hashlib.sha256(data).hexdigest()
            decode_image(data)
            return digest, None
        except DecodeError as error:
            return digest, {"path": readable(sample.path), "error": readable(str(error))}
        finally:
            if advance:
                advance()

    with ThreadPoolExecutor(workers) as pool:
        checked = list(pool.map(check, images))
    return {
        "images": len(images),
        "workers": workers,
        "unreadable": [failure for _, failure in checked if failure],
        # files that decode (empty or corrupt ones holding equal bytes are no copies of a
        # picture, and are listed as unreadable: audit AM F6)
        "identical": identical_files(
            images, [None if failure else digest for digest, failure in checked]
        ),
    }


def render(report: dict[str, Any]) -> list[str]:
    """The report as text lines: a header, one line per group, then what was read with a caveat
    (notes) and what was skipped."""
    lines = [
        f"{report['root']}: layout {report['layout']}, {report['samples']} samples, "
        f"{report['videos']} videos, datasets "
        + ", ".join(f"{name} ({count})" for name, count in report["datasets"].items()),
        f"{'split':<6} {'label':<10} {'forgery':<8} {'generator':<28} {'count':>8}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['split']:<6} {row['label']:<10} {row['forgery_type']:<8} "
            f"{row['generator']:<28} {row['count']:>8}"
        )
    for note, count in report.get("notes", {}).items():
        lines.append(f"note: {note}" + (f" ({count} files)" if count > 1 else ""))
    for reason, count in report["skipped"].items():
        lines.append(f"skipped: {reason}" + (f" ({count} files)" if count > 1 else ""))
    verified = report.get("verified")
    if verified is None:
        lines.append(f"read in {report['seconds']:.2f} s, no image decoded")
        return lines
    failures = verified["unreadable"]
    lines += [
        f"cannot be decoded: {shown(item['path'])} ({shown(item['error'])})"
        for item in failures[:SHOWN_UNREADABLE]
    ]
    if len(failures) > SHOWN_UNREADABLE:
        lines.append(f"... {len(failures)} in all (--json lists every one)")
    lines += _identical_lines(verified["identical"])
    lines.append(
        f"read and decoded in {report['seconds']:.2f} s: {verified['images']} images, "
        f"{len(failures)} cannot be decoded"
    )
    return lines


def _identical_lines(groups: list[dict[str, Any]]) -> list[str]:
    """The text report's lines on files holding the same bytes, each kind (``COPY_KINDS``) with
    a few groups named, then the rest (one dataset, split and label)."""
    lines = []
    for words, chosen in COPY_KINDS:
        if found := [group for group in groups if chosen(group)]:
            lines.append(f"identical files {words}: {_groups_named(found)}")
    plain = [group for group in groups if not any(chosen(group) for _, chosen in COPY_KINDS)]
    if plain:
        lines.append(f"identical files (one dataset, split and label): {_groups_named(plain)}")
    return lines


def _groups_named(groups: list[dict[str, Any]]) -> str:
    """How many ``groups`` and files, with the first few named (--json lists every one)."""
    files = sum(len(group["files"]) for group in groups)
    several = any(group["across_datasets"] for group in groups)
    named = "; ".join(
        " = ".join(
            shown(item["path"]) + f" ({_where(item, several)})"
            for item in _each_kind_first(group["files"])[:SHOWN_EXAMPLES]
        )
        + (f" = ... ({len(group['files'])} files)" if len(group["files"]) > SHOWN_EXAMPLES else "")
        for group in groups[:SHOWN_EXAMPLES]
    )
    more = "; ... (--json lists every one)" if len(groups) > SHOWN_EXAMPLES else ""
    return f"{len(groups)} group(s), {files} files: {named}{more}"


def _where(item: dict[str, Any], with_dataset: bool) -> str:
    """A file's published split and label, its dataset first where the groups span several."""
    return ", ".join(
        filter(None, (item["dataset"] if with_dataset else "", item["split"], item["label"]))
    )


def _each_kind_first(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A group's files, the first of each dataset, split and label first: the ones named then
    show what the group spans, however many copies of one kind come before."""
    firsts = {_kind(item): item for item in reversed(files)}
    first = [item for item in files if firsts[_kind(item)] is item]
    return first + [item for item in files if item not in first]


def _kind(item: dict[str, Any]) -> tuple[str, str | None, str]:
    return item["dataset"], item["split"], item["label"]


__all__ = [
    "InspectRequest",
    "inspect_dataset",
    "render",
    "run_inspect",
    "verify_images",
]
