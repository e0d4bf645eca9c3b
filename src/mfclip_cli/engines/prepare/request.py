"""What ``mfclip prepare`` is asked to do, and the checks it passes before torch loads: a
mistyped option, an --out that cannot take the crops, or a --resume with other settings than the
folder was begun with, refused in a moment.

``OUT/faces/`` receives lossless PNG crops (the model's crop size and margin), ``OUT/prepare.jsonl``
a first line of the settings that decide which faces are taken and how they are cropped, then one
line per source file as it is done (its faces, or why it was skipped: that is what ``--resume``
continues from, with those same settings only), and at the end ``OUT/manifest.jsonl``, a
``manifest``-layout dataset carrying every crop's labels, with the full relative path of its video
as the video key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mfclip_cli.data.combine import check_data
from mfclip_cli.data.samples import PREPARED_LOG, PREPARED_SUMMARY
from mfclip_cli.errors import UsageError
from mfclip_cli.files import keep_jsonl_prefix
from mfclip_cli.model import load_model_config

LOG_FILE, MANIFEST_FILE, SUMMARY_FILE, FACES_DIR = (
    PREPARED_LOG,  # eval knows a crop by its source's bytes from it (data/contents.py)
    "manifest.jsonl",
    PREPARED_SUMMARY,  # train and eval read the crops' geometry from it
    "faces",
)
SETTINGS_LINE = "settings"  # the type of the log's first line
# settings newer than the settings line (2.3.0), with what a folder begun before them took
ADDED_SETTINGS = {"folder_frames": None}


@dataclass
class PrepareRequest:
    source: str
    out: str
    layout: str | None = None
    label_map: str | None = None  # a TOML file extending the generator -> class table
    config: str = "vit-b-16"  # crop size and margin come from this model config
    frames: int = 8  # per video, evenly spread
    folder_frames: int | None = None  # per folder of a video's extracted frames; None: all
    all_faces: bool = False  # default: the largest face of each image / frame
    min_face: int = 20
    device: str = "auto"
    resume: bool = False
    quiet: bool = False
    dry_run: bool = False  # check the request, print what would be read, prepare nothing

    def check(self) -> Checked:
        """Refuse what cannot be done, before anything is read or written; return the crop
        settings and, on --resume, the sources already prepared."""
        if self.frames < 1:
            raise UsageError("--frames must be at least 1")
        if self.folder_frames is not None and self.folder_frames < 1:
            raise UsageError("--folder-frames must be at least 1")
        check_data(self.source, self.label_map)
        out, source_root = Path(self.out), Path(self.source).resolve()
        source_name = self.source
        if source_root.is_file():  # a manifest file: its samples lie in and below its folder
            source_root = source_root.parent
            source_name = f"{source_root} (the folder of the manifest {self.source})"
        if out.resolve() == source_root or source_root in out.resolve().parents:
            raise UsageError(f"--out {out} lies inside the source dataset {source_name}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a folder")
        if out.exists() and any(out.iterdir()) and not self.resume:
            raise UsageError(f"{out} is not empty (pass --resume to continue preparing into it)")
        settings = _settings(self)
        logged, done = _read_log(out / LOG_FILE) if self.resume else (None, {})
        _refuse_other_settings(out, logged, done, settings)
        return Checked(settings, done)


@dataclass(frozen=True)
class Checked:
    """What a request's checks found: the settings its crops are made with, and the records of
    the sources an interrupted run already prepared, keyed by (path, sha256)."""

    settings: dict[str, Any]
    done: dict[tuple[str, str], dict[str, Any]]


def _read_log(log: Path) -> tuple[dict[str, Any] | None, dict[tuple[str, str], dict[str, Any]]]:
    """The settings line of a log (None in a folder from before 2.3.0, or an empty log) and the
    records of sources already prepared, keyed by (path, sha256); a cut-off last line is
    dropped."""
    if not log.is_file():
        return None, {}
    records = keep_jsonl_prefix(log)
    settings = records[0] if records and records[0].get("type") == SETTINGS_LINE else None
    done = {(r["source"], r["sha256"]): r for r in records if r.get("type") != SETTINGS_LINE}
    return settings, done


def _refuse_other_settings(
    out: Path,
    logged: dict[str, Any] | None,
    done: dict[Any, dict[str, Any]],
    now: dict[str, Any],
) -> None:
    """A folder is continued only with the settings it was begun with. Crops of another size or
    margin would be resized by the training loader without a word, their noise residuals
    resampled; another --min-face, --all-faces or --frames would take other faces from the rest
    of the dataset than from its start. What the folder holds comes from its log's settings
    line; in a folder from before 2.3.0, from its summary (a finished run), else from a crop it
    wrote (an interrupted one: its size)."""
    held = logged
    if held is None:
        summary = out / SUMMARY_FILE
        try:
            held = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
        except (OSError, ValueError):
            held = {}
    if not held:
        crop = next((f["path"] for r in done.values() for f in r.get("faces", [])), None)
        if crop is not None and (out / crop).is_file():
            with Image.open(out / crop) as image:
                held = {"crop_size": image.width}
    if held:  # a folder begun before a setting existed took that setting's default
        held = {**ADDED_SETTINGS, **held}
    differences = [
        f"{name} {held[name]} there, {value} now"
        for name, value in now.items()
        if name in held and held[name] != value
    ]
    if differences:
        raise UsageError(
            f"{out} holds faces prepared with other settings ({'; '.join(differences)}): "
            "prepare into a new folder, or resume with the --config, --min-face, --all-faces, "
            "--frames and --folder-frames that made them"
        )


def _settings(request: PrepareRequest) -> dict[str, Any]:
    """What decides which faces are taken and how they are cropped (a wrong --config is
    refused here)."""
    preprocess = load_model_config(request.config).preprocess
    return {
        "crop_size": preprocess.crop_size,
        "margin": preprocess.margin,
        "min_face": request.min_face,
        "all_faces": request.all_faces,
        "frames": request.frames,
        "folder_frames": request.folder_frames,
    }
