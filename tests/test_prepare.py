"""``mfclip prepare`` as a subprocess: real faces in, aligned crops and a labelled manifest out."""

import json
import os
from pathlib import Path

import numpy as np
from cli import mfclip
from media import astronaut, face_free, mosaic, save_video
from PIL import Image
from report_schemas import check_prepared

from mfclip_cli.data import read_dataset
from mfclip_cli.data.samples import NOT_A_FILE


def prepare(*args):
    return mfclip("prepare", *args)


def test_prepare_writes_crops_manifest_and_skips_with_reasons(tmp_path):
    source = tmp_path / "source"
    (source / "real" / "nasa").mkdir(parents=True)
    (source / "gan" / "efs" / "stylegan2").mkdir(parents=True)
    (source / "real" / "clips").mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real" / "nasa" / "astronaut.png")
    Image.fromarray(mosaic()).save(source / "gan" / "efs" / "stylegan2" / "mosaic.png")
    Image.fromarray(face_free()).save(source / "gan" / "efs" / "stylegan2" / "empty.png")
    (source / "gan" / "efs" / "stylegan2" / "broken.png").write_text("not an image")
    os.mkfifo(source / "gan" / "efs" / "stylegan2" / "pipe.png")  # reading it would hang
    save_video(source / "real" / "clips" / "clip.mp4", frames=6, fps=3.0)
    out = tmp_path / "prepared"

    result = prepare(
        str(source), "--out", str(out), "--config", "tiny", "--frames", "3", "--device", "cpu"
    )
    assert result.returncode == 3, result.stderr  # one file could not be read
    check_prepared(out)  # prepare.json and every prepare.jsonl line
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["files"] == 5 and summary["error"] == 1 and summary["no_face"] == 1
    assert summary["skipped_by_layout"] == {NOT_A_FILE: 1}  # the FIFO, never opened
    reasons = {Path(item["source"]).name: item for item in summary["skipped"]}
    assert (
        reasons["broken.png"]["status"] == "error"
        and "not a recognised image" in reasons["broken.png"]["error"]
    )
    assert reasons["empty.png"]["status"] == "no_face"

    index = read_dataset(out)  # the manifest is a dataset in its own right
    assert index.layout == "manifest"
    by_source = {}
    for sample in index.samples:
        with Image.open(out / sample.path) as crop:
            assert crop.size == (128, 128) and crop.format == "PNG"
        by_source.setdefault(sample.video or sample.path.split("_")[0], []).append(sample)
    frames = [s for s in index.samples if s.video]
    assert len(frames) == 3 and {s.video for s in frames} == {"real/clips/clip.mp4"}
    assert all(s.label == "real" for s in frames)
    mosaic_faces = [s for s in index.samples if "mosaic" in s.path]
    assert len(mosaic_faces) == 1  # the largest face only, by default
    assert mosaic_faces[0].label == "gan" and mosaic_faces[0].generator == "stylegan2"
    assert mosaic_faces[0].forgery_type == "efs"

    # Resume: only the new file is prepared; nothing is logged twice.
    Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(
        source / "real" / "nasa" / "mirrored.png"
    )
    again = prepare(
        str(source),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--frames",
        "3",
        "--device",
        "cpu",
        "--resume",
    )
    assert again.returncode == 3
    check_prepared(out)
    settings, *log = [json.loads(line) for line in (out / "prepare.jsonl").read_text().splitlines()]
    assert settings["type"] == "settings" and settings["frames"] == 3  # written once, first
    assert len(log) == 6 and len({entry["source"] for entry in log}) == 6
    assert len(read_dataset(out).samples) == len(index.samples) + 1

    refused = prepare(str(source), "--out", str(out), "--config", "tiny")
    assert refused.returncode == 2 and "not empty" in refused.stderr
    inside = prepare(str(source), "--out", str(source / "crops"), "--config", "tiny")
    assert inside.returncode == 2 and "inside the source" in inside.stderr


def test_resume_refuses_to_mix_crops_of_another_size(tmp_path):
    """Crops of another size in one folder would be resized by the training loader without a
    word (their noise residuals resampled): a resume with another config's crop is refused,
    after a finished run and after an interrupted one; in a folder from before 2.3.0, whose log
    has no settings line, from its prepare.json, else from a crop it wrote."""
    source = tmp_path / "source"
    (source / "real" / "nasa").mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real" / "nasa" / "astronaut.png")
    out = tmp_path / "prepared"
    tiny = ("--out", str(out), "--config", "tiny", "--device", "cpu")
    first = prepare(str(source), *tiny)
    assert first.returncode == 0, first.stderr
    log = out / "prepare.jsonl"
    summary = (out / "prepare.json").read_text()
    for before_2_3, interrupted in ((False, False), (False, True), (True, False), (True, True)):
        if before_2_3:  # its log without the settings line
            settings, *sources = log.read_text().splitlines(keepends=True)
            log.write_text("".join(sources if '"settings"' in settings else [settings, *sources]))
        (out / "prepare.json").unlink(missing_ok=True)
        if not interrupted:
            (out / "prepare.json").write_text(summary)
        other = prepare(
            str(source), "--out", str(out), "--config", "vit-b-16", "--device", "cpu", "--resume"
        )
        assert other.returncode == 2, other.stderr
        assert "other settings (crop_size 128 there, 256 now)" in other.stderr
    same = prepare(str(source), *tiny, "--resume")
    assert same.returncode == 0, same.stderr


def test_resume_refuses_to_take_other_faces_than_the_folder_began_with(tmp_path):
    """--min-face, --all-faces and --frames decide which faces a folder holds: a resume with
    others would take the rest of the dataset's faces another way than its start's."""
    source = tmp_path / "source"
    (source / "real" / "nasa").mkdir(parents=True)
    Image.fromarray(mosaic()).save(source / "real" / "nasa" / "mosaic.png")
    out = tmp_path / "prepared"
    tiny = ("--out", str(out), "--config", "tiny", "--device", "cpu")
    first = prepare(str(source), *tiny, "--frames", "4")
    assert first.returncode == 0, first.stderr
    check_prepared(out)
    summary = json.loads((out / "prepare.json").read_text())
    assert (summary["min_face"], summary["all_faces"], summary["frames"]) == (20, False, 4)
    (out / "prepare.json").unlink()  # as after an interruption: the log's line decides
    changed = prepare(
        str(source), *tiny, "--resume", "--all-faces", "--min-face", "30", "--frames", "4"
    )
    assert changed.returncode == 2, changed.stderr
    assert "(min_face 20 there, 30 now; all_faces False there, True now)" in changed.stderr
    same = prepare(str(source), *tiny, "--resume", "--frames", "4")
    assert same.returncode == 0, same.stderr
    assert len(read_dataset(out).samples) == 1  # the largest face, as at the start


def test_prepare_reads_a_misnamed_file_as_what_its_bytes_are(tmp_path):
    """As scan does: an MP4 named .jpg in a dataset was an error ("not a recognised image
    format") and its frames were lost; a JPEG named .mp4 failed as a video."""
    clips = tmp_path / "source" / "real" / "clips"
    clips.mkdir(parents=True)
    save_video(clips / "clip.mp4", frames=6, fps=3.0)
    (clips / "clip.mp4").rename(clips / "clip.jpg")
    Image.fromarray(astronaut()).save(clips / "photo.mp4", format="JPEG")
    out = tmp_path / "prepared"
    result = prepare(
        str(tmp_path / "source"), "--out", str(out), "--config", "tiny", "--frames", "3"
    )
    assert result.returncode == 0, result.stderr
    samples = read_dataset(out).samples
    assert {s.video for s in samples} == {"real/clips/clip.jpg", None}
    assert len([s for s in samples if s.video]) == 3
    assert len([s for s in samples if s.video is None]) == 1
