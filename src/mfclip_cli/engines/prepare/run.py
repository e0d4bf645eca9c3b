"""The prepare engine: detect and align the faces of a labelled dataset once, with scan's
pipeline, into the files ``request.py`` describes."""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from PIL import Image
from rich.console import Console

from mfclip_cli.data import DataError, Sample, read_manifest, write_manifest
from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.copies import COPY_KINDS, identical_files
from mfclip_cli.engines.inspect import InspectRequest, run_inspect
from mfclip_cli.engines.prepare.request import (
    FACES_DIR,
    LOG_FILE,
    MANIFEST_FILE,
    SETTINGS_LINE,
    SUMMARY_FILE,
    Checked,
    PrepareRequest,
)
from mfclip_cli.engines.runtime import EXIT_OK, EXIT_UNREADABLE, counting_bar, resolve_device
from mfclip_cli.faces import (
    DecodeError,
    FaceCropper,
    FaceSearch,
    FoundFaces,
    decode_image,
    holds_video,
    is_video,
    read_image_bytes,
    sample_video,
    spread_indices,
)
from mfclip_cli.files import sha256_file, write_json_atomic
from mfclip_cli.schemas import SCHEMA_VERSION, report_header
from mfclip_cli.timestamps import utc_now

if TYPE_CHECKING:
    import torch


# an error of ours or of the machine (a full disk, memory), not of the file: a --resume tries the
# file again rather than take the record from the log
ANALYSIS_FAILED = "face analysis failed"


def crop_stem(source: str) -> str:
    """Where below ``OUT/faces`` a source's crops go: its path in the dataset, normalised, with a
    manifest's paths that leave its folder (``../x.png``, ``/data/x.png``) kept inside (as
    ``_parent_/x.png``, ``_absolute_/data/x.png``): written as given, they landed outside
    ``OUT/faces``, outside ``--out`` even (audit G M3)."""
    path = PurePosixPath(posixpath.normpath(source.replace("\\", "/")))
    parts = [("_parent_" if part == ".." else part) for part in path.parts if part != "/"]
    return "/".join(["_absolute_", *parts] if path.is_absolute() else parts)


def _largest(found: FoundFaces) -> list[int]:
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in found.detections]
    return [int(np.argmax(areas))] if areas else []


class Preparer:
    def __init__(self, request: PrepareRequest, settings: dict[str, Any], device: torch.device):
        self.request = request
        self.out = Path(request.out)
        self.settings = settings
        self.search = FaceSearch(
            crop_size=settings["crop_size"], margin=settings["margin"], min_face=request.min_face
        )
        self.cropper = FaceCropper(self.search, device)

    def _write_faces(
        self, source: str, found: FoundFaces, frame: int | None
    ) -> list[dict[str, Any]]:
        chosen = range(len(found.detections)) if self.request.all_faces else _largest(found)
        pixels = (found.crops.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        faces = []
        source = crop_stem(source)
        for i in chosen:
            stem = f"{source}.frame{frame:06d}_{i}" if frame is not None else f"{source}_{i}"
            relative = f"{FACES_DIR}/{stem}.png"
            target = self.out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(target, format="PNG")
            detection = found.detections[i]
            faces.append(
                {
                    "path": relative,
                    "frame": frame,
                    "box": np.round(detection.box, 2).tolist(),
                    "det_score": round(float(detection.score), 6),
                }
            )
        return faces

    def _remove(self, faces: list[dict[str, Any]]) -> None:
        for face in faces:
            (self.out / face["path"]).unlink(missing_ok=True)

    def prepare(
        self, sample: Sample, path: Path, sha256: str, data: bytes | None
    ) -> dict[str, Any]:
        """The record of one source: an image's faces from ``data``, the bytes ``sha256`` names
        (``read_source``), a video's from its ``path`` (``data`` None)."""
        video = data is None
        record: dict[str, Any] = {
            "source": sample.path,
            "sha256": sha256,
            "status": "ok",
            "error": None,
            "video": video,
            "faces": [],
        }
        found = 0
        try:
            if video:
                _, frames = sample_video(path, fps=None, frames=self.request.frames)
                for frame in frames:
                    faces = self.cropper([frame.pixels])[0]
                    found += len(faces.detections)
                    record["faces"] += self._write_faces(sample.path, faces, frame.index)
                if incomplete := frames.shortfall():  # a video cut short: frames are missing
                    record["incomplete"] = incomplete
            else:
                faces = self.cropper([decode_image(data).pixels])[0]
                found = len(faces.detections)
                record["faces"] = self._write_faces(sample.path, faces, None)
        except DecodeError as error:
            self._remove(record["faces"])
            record.update(status="error", error=str(error), faces=[])
        except Exception as error:  # noqa: BLE001 - one file's failure never ends the run
            self._remove(record["faces"])  # a video's crops written before it failed
            record.update(status="error", error=f"{ANALYSIS_FAILED}: {_described(error)}", faces=[])
        else:
            record["faces_found"] = found
        if record["status"] == "ok" and not record["faces"]:
            record["status"] = "no_face"
        return record


def read_source(path: Path) -> tuple[str, bytes | None]:
    """The SHA-256 of a source file's bytes, and an image's bytes themselves, read once: it is
    decoded from them, so the hash in ``prepare.jsonl`` names what was prepared (it was the hash
    of one read and the decoding of another). A video (a misnamed file is read as what its first
    bytes say) is hashed as it is streamed, and read by OpenCV from its path. ``DecodeError``
    where it cannot be read (``read_image_bytes``)."""
    if holds_video(path):
        try:
            return sha256_file(path), None
        except OSError as error:
            raise DecodeError(f"cannot read file: {error.strerror or error}") from None
    data = read_image_bytes(path)
    return hashlib.sha256(data).hexdigest(), data


def _reusable(out: Path, record: dict[str, Any]) -> bool:
    """Whether a --resume takes a logged record as it is: not where the analysis failed (the
    cause may be gone: a full disk, memory), nor where a crop it names was deleted or emptied
    since (the manifest listed them, audit G L2)."""
    if (record.get("error") or "").startswith(ANALYSIS_FAILED):
        return False
    try:
        return all((out / face["path"]).stat().st_size > 0 for face in record["faces"])
    except OSError:
        return False


def _described(error: Exception) -> str:
    """An unexpected error in words: its kind and message, never a traceback."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _crop_samples(source: Sample, record: dict[str, Any], all_faces: bool) -> Iterator[Sample]:
    # a video file's faces group under its path, or the frames it was extracted to where the
    # layout ties the two (DF40's FF++ videos/<id>.mp4 and frames/<id>/); with --all-faces, an
    # image's faces under its path too, so no protocol puts them in two splits
    grouped = record["video"] or all_faces
    video = (source.video or source.path) if grouped else source.video
    for face in record["faces"]:
        yield Sample(
            path=face["path"],
            label=source.label,
            forgery_type=source.forgery_type,
            generator=source.generator,
            dataset=source.dataset,
            video=video,
            split=source.split,
        )


def run_prepare(
    request: PrepareRequest,
    *,
    console: Console,
    error_console: Console,
    checked: Checked | None = None,
) -> int:
    """Prepare every source file; return 0, or 3 when some could not be read. A dry run makes
    the same checks, prints what would be read, and returns the inspection's code. ``checked``:
    what ``request.check()`` found already (the command line asks it before torch loads; the
    log of a --resume is not read twice)."""
    checked = checked or request.check()
    device = resolve_device(request.device)
    out, log = Path(request.out), Path(request.out) / LOG_FILE
    source_root = Path(request.source).resolve()
    if request.dry_run:
        inspection = InspectRequest(
            (request.source,), request.layout, request.label_map, include_videos=True
        )
        return run_inspect(inspection, console, error_console)
    # read as --dry-run's inspection reads it
    index = read_datasets(
        (request.source,), request.layout, label_map=request.label_map, include_videos=True
    )
    samples, frames_not_taken = _spread_folder_frames(index.samples, request.folder_frames)
    preparer = Preparer(request, checked.settings, device)
    out.mkdir(parents=True, exist_ok=True)
    records: list[tuple[Sample, dict[str, Any]]] = []
    reused = 0  # records a --resume takes from the log
    show = not request.quiet and error_console.is_terminal
    bar = counting_bar("preparing", error_console, show=show)
    with bar, open(log, "a", encoding="utf-8") as handle:
        task = bar.add_task("prepare", total=len(samples))
        if handle.tell() == 0:  # a new log (a folder from before 2.3.0 keeps its own)
            line = {"type": SETTINGS_LINE, "schema_version": SCHEMA_VERSION, **checked.settings}
            handle.write(json.dumps(line) + "\n")
        for sample in samples:
            path = index.absolute(sample)
            try:
                digest, data = read_source(path)
            except DecodeError as error:
                record = {
                    "source": sample.path,
                    "sha256": None,
                    "status": "error",
                    "error": str(error),
                    "video": is_video(path),
                    "faces": [],
                }
            else:
                key = (sample.path, digest)
                record = checked.done.get(key)
                if record is not None and not _reusable(out, record):
                    record = None  # prepared again
                if record is not None:
                    reused += 1
                else:
                    record = preparer.prepare(sample, path, digest, data)
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    handle.flush()
            records.append((sample, record))
            bar.update(task, advance=1)
    crops = [
        crop
        for sample, record in records
        for crop in _crop_samples(sample, record, request.all_faces)
    ]
    _refuse_one_crop_for_two(records)
    if regrouped := _regrouped(out / MANIFEST_FILE, crops):
        error_console.print(
            f"note: {regrouped} faces of {out / MANIFEST_FILE} are grouped under another video "
            "key than the manifest written before held (this version groups an image's faces "
            "under --all-faces); the dataset's digest changes with it, so checkpoints trained on "
            "the manifest before are not recognised as trained on this folder",
            highlight=False,
            markup=False,
        )
    write_manifest(out / MANIFEST_FILE, crops, overwrite=True)
    # the sources that gave faces (empty or corrupt files holding equal bytes are no copies of
    # a picture: audit AM F6)
    identical = identical_files(
        [sample for sample, _ in records],
        [record["sha256"] if record["faces"] else None for _, record in records],
    )
    if identical:
        error_console.print(_identical_note(identical, out), highlight=False, markup=False)
    statuses = [record["status"] for _, record in records]
    skipped = [
        {"source": record["source"], "status": record["status"], "error": record["error"]}
        for _, record in records
        if record["status"] != "ok"
    ]
    summary = {
        **report_header(),
        "finished_utc": utc_now(),
        "source": str(source_root),
        "layout": index.layout,
        "skipped_by_layout": index.skipped,
        "notes_by_layout": index.notes,
        **preparer.settings,
        "files": len(records),
        "ok": statuses.count("ok"),
        "no_face": statuses.count("no_face"),
        "error": statuses.count("error"),
        "faces": len(crops),
        # faces found but not taken (without --all-faces, all but the largest of each image or
        # frame); null where records logged before 2.13.0 do not count them
        "faces_left_out": _faces_left_out([record for _, record in records]),
        # frames of folders of extracted frames that --folder-frames did not take
        "frames_not_taken": frames_not_taken,
        "skipped": skipped,
        # videos prepared with sampled frames missing (cut short or damaged), and why
        "incomplete": [
            {"source": record["source"], "incomplete": record["incomplete"]}
            for _, record in records
            if record.get("incomplete")
        ],
        # source files holding the same bytes under other names
        "identical": identical,
    }
    write_json_atomic(out / SUMMARY_FILE, summary, overwrite=True)
    console.print(_summary_line(summary, out, reused), highlight=False, markup=False)
    return EXIT_UNREADABLE if summary["error"] or summary["incomplete"] else EXIT_OK


def _spread_folder_frames(samples: list[Sample], per_video: int | None) -> tuple[list[Sample], int]:
    """With ``per_video``, of each video given as a folder of extracted frames (images with one
    ``video`` key), that many frames evenly spread over its frames in name order, as video
    files are sampled (``spread_indices``); every frame otherwise. The samples kept, in
    their order, and how many were not taken: a folder holds every frame of its video, hundreds,
    and scored whole it weighs each video by its length (DeepfakeBench takes 8 a video)."""
    if per_video is None:
        return samples, 0
    folders: dict[str, list[str]] = {}
    for sample in samples:
        if sample.video is not None and not is_video(Path(sample.path)):
            folders.setdefault(sample.video, []).append(sample.path)
    kept: set[str] = set()
    for paths in folders.values():
        paths.sort()
        kept.update(paths[index] for index in spread_indices(len(paths), per_video))
    chosen = [
        sample
        for sample in samples
        if sample.video is None or is_video(Path(sample.path)) or sample.path in kept
    ]
    return chosen, len(samples) - len(chosen)


def _refuse_one_crop_for_two(records: list[tuple[Sample, dict[str, Any]]]) -> None:
    """Two sources whose crops took one name (``../x.png`` and a folder really named
    ``_parent_/x.png``): one overwrote the other, so no manifest is written over them."""
    first: dict[str, str] = {}
    for _, record in records:
        for face in record["faces"]:
            other = first.setdefault(face["path"], record["source"])
            if other != record["source"]:
                raise DataError(
                    f"{other} and {record['source']} both gave the crop {face['path']}: "
                    "rename the folder _parent_ or _absolute_ in the dataset"
                )


def _regrouped(manifest: Path, crops: list[Sample]) -> int:
    """How many crops a manifest written before (a --resume's) keyed to another video: the
    grouping decides the protocol splits and the dataset digest, so a change is said, not done
    silently (a folder begun with --all-faces before 2.13.0 kept an image's faces apart)."""
    if not manifest.is_file():
        return 0
    try:
        before = {sample.path: sample.video for sample in read_manifest(manifest)}
    except (DataError, OSError):  # a damaged manifest is written anew, as before
        return 0
    return sum(1 for crop in crops if crop.path in before and before[crop.path] != crop.video)


def _faces_left_out(records: list[dict[str, Any]]) -> int | None:
    """Faces found but not taken; None where a record read does not count them (a folder begun
    before 2.13.0, resumed), rather than a sum that leaves them out."""
    read = [record for record in records if record["status"] != "error"]
    if any("faces_found" not in record for record in read):
        return None
    return sum(record["faces_found"] - len(record["faces"]) for record in read)


def _identical_note(identical: list[dict[str, Any]], out: Path) -> str:
    """The stderr note of source files holding the same bytes under other names, how many
    groups of each kind (``COPY_KINDS``, as data inspect says them)."""
    across = [
        f"{count} {words}"
        for words, chosen in COPY_KINDS
        if (count := sum(chosen(group) for group in identical))
    ]
    files = sum(len(group["files"]) for group in identical)
    return (
        f"note: {files} source files that gave faces hold the same bytes as another under "
        f"another name ({len(identical)} group(s){': ' + ', '.join(across) if across else ''}); "
        f"{out / SUMMARY_FILE} lists them under identical: remove or relabel the copies before "
        "training on them"
    )


def _summary_line(summary: dict[str, Any], out: Path, reused: int) -> str:
    """What a run did, in one line: a --resume's files taken from the log are said apart."""
    taken = f" ({reused} of them prepared before)" if reused else ""
    left_out = summary["faces_left_out"]
    incomplete = len(summary["incomplete"])
    return (
        f"prepared {summary['files']} files{taken}: {summary['faces']} faces in "
        f"{out / FACES_DIR}"
        + (f" ({left_out} more found, not the largest: --all-faces takes them)" if left_out else "")
        + f", {summary['no_face']} without a face, {summary['error']} unreadable"
        + (f", {incomplete} videos with frames missing" if incomplete else "")
        + f" (see {out / SUMMARY_FILE})"
    )
