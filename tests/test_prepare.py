"""``mfclip prepare`` as a subprocess: real faces in, aligned crops and a labelled manifest out."""

import json
import os
from pathlib import Path

import numpy as np
import torch
from cli import mfclip
from media import astronaut, face_free, mosaic, save_video
from PIL import Image
from report_schemas import check_prepared

from mfclip_cli.data import Sample, load_protocol, read_dataset, select
from mfclip_cli.data.contents import content_digests, digest_value
from mfclip_cli.data.faceset import FaceImages
from mfclip_cli.data.samples import NOT_A_FILE
from mfclip_cli.faces import FaceCropper, FaceSearch
from mfclip_cli.files import sha256_file


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
    assert summary["faces_left_out"] == 3  # the mosaic's other three, counted
    lines = [json.loads(line) for line in (out / "prepare.jsonl").read_text().splitlines()[1:]]
    assert {line["source"].rsplit("/", 1)[1]: line.get("faces_found") for line in lines} == {
        "astronaut.png": 1,
        "mosaic.png": 4,
        "empty.png": 0,
        "broken.png": None,
        "clip.mp4": 3,
    }

    # eval knows each crop by the bytes of the picture it was cropped from (a video's frames
    # by the video's), as prepare.jsonl records them (data/contents.py)
    source_of = {face["path"]: line["source"] for line in lines for face in line["faces"]}
    contents = content_digests(index, index.samples)
    assert contents.from_sources == len(index.samples) and contents.readable.all()
    assert contents.sources.tolist() == [
        digest_value(sha256_file(source / source_of[sample.path])) for sample in index
    ]

    # What the model reads of the astronaut: the very pixels scan gives it (audit G H1: scan's
    # unrounded crops differed by up to 0.5 / 255, and moved probabilities by up to 0.93)
    (crop,) = [s.path for s in index.samples if "astronaut" in s.path]
    trained_on = FaceImages(out, [crop], 128)[0].face
    search = FaceSearch(crop_size=summary["crop_size"], margin=summary["margin"])
    (found,) = FaceCropper(search)([astronaut()])
    assert torch.equal(found.crops[0], trained_on)
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
    assert "(5 of them prepared before)" in again.stdout  # not "written" again


def test_prepare_says_the_sources_holding_the_same_bytes(tmp_path):
    """A picture filed twice, under two labels, was prepared as two faces without a word:
    prepare.json lists the sources holding the same bytes (the hash prepare.jsonl records for
    each, of the bytes it decoded), and stderr says how many."""
    source, out = tmp_path / "source", tmp_path / "out"
    for folder in ("real/nasa", "gan/efs/stylegan2"):
        (source / folder).mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real/nasa/astronaut.png")
    Image.fromarray(mosaic()).save(source / "real/nasa/mosaic.png")
    for copy in ("real/nasa/again.png", "gan/efs/stylegan2/taken.png"):
        (source / copy).write_bytes((source / "real/nasa/astronaut.png").read_bytes())
    for empty in ("real/nasa/e1.png", "gan/efs/stylegan2/e2.png"):  # failed downloads: no copies
        (source / empty).write_bytes(b"")
    result = prepare(str(source), "--out", str(out), "--config", "tiny", "--device", "cpu")
    assert result.returncode == 3, result.stderr  # the two empty files
    check_prepared(out)
    (group,) = json.loads((out / "prepare.json").read_text())["identical"]
    assert group["sha256"] == sha256_file(source / "real/nasa/astronaut.png")
    assert [item["path"] for item in group["files"]] == [
        "gan/efs/stylegan2/taken.png",
        "real/nasa/again.png",
        "real/nasa/astronaut.png",
    ]
    assert group["across_labels"] and not group["across_splits"]
    assert "note: 3 source files that gave faces hold the same bytes" in result.stderr
    assert (
        "(1 group(s): 1 without a published split (a protocol's hash may put them in two "
        "splits), 1 under more than one label)" in result.stderr
    )
    logged = [json.loads(line) for line in (out / "prepare.jsonl").read_text().splitlines()[1:]]
    faced = {line["sha256"] for line in logged if line["faces"] and "mosaic" not in line["source"]}
    assert faced == {group["sha256"]}


def test_every_face_of_an_image_stays_in_one_split(tmp_path):
    """Audit G M1: with --all-faces each crop of an image was split on its own, so the faces of
    one photo (one background, one generator's traces) fell into train and test."""
    source = tmp_path / "source"
    (source / "gan" / "efs" / "stylegan2").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.ascontiguousarray(np.roll(mosaic(), 7 * i, axis=1))).save(
            source / "gan" / "efs" / "stylegan2" / f"group{i:02d}.png"
        )
    out = tmp_path / "prepared"
    result = prepare(str(source), "--out", str(out), "--config", "tiny", "--all-faces")
    assert result.returncode == 0, result.stderr
    check_prepared(out)
    index = read_dataset(out)
    assert len(index.samples) >= 36
    for sample in index.samples:
        assert sample.video == "gan/efs/stylegan2/" + Path(sample.path).name.rsplit("_", 1)[0]
    splits = select(index, load_protocol("in-domain"), ())
    split_of = {
        sample.video: name for name in ("train", "val", "test") for sample in getattr(splits, name)
    }
    for name in ("train", "val", "test"):
        for sample in getattr(splits, name):
            assert split_of[sample.video] == name
    # audit Q2-7: a folder begun before 2.13.0 kept an image's faces apart (no video key); a
    # --resume groups them, which changes the dataset's digest: said, not done silently
    manifest = out / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**line, "video": None}) + "\n" for line in lines))
    resumed = prepare(str(source), "--out", str(out), "--config", "tiny", "--all-faces", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"note: {len(lines)} faces of" in resumed.stderr, resumed.stderr
    assert [json.loads(line) for line in manifest.read_text().splitlines()] == lines
    again = prepare(str(source), "--out", str(out), "--config", "tiny", "--all-faces", "--resume")
    assert again.returncode == 0 and "note:" not in again.stderr


def test_a_video_cut_short_is_said_and_its_faces_kept(tmp_path):
    """Audit G M2: a truncated video was prepared as "ok" with half its sampled frames missing,
    exit 0; scan says the same file is incomplete. Its faces are kept, the shortfall recorded,
    and prepare exits 3, as for a file it could not read."""
    clips = tmp_path / "source" / "real" / "clips"
    clips.mkdir(parents=True)
    whole = tmp_path / "whole.avi"
    save_video(whole, frames=40, fps=10.0, codec="MJPG")
    data = whole.read_bytes()
    (clips / "cut.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "prepared"
    result = prepare(str(tmp_path / "source"), "--out", str(out), "--config", "tiny")
    assert result.returncode == 3, result.stderr
    check_prepared(out)
    (line,) = [json.loads(line) for line in (out / "prepare.jsonl").read_text().splitlines()[1:]]
    assert line["status"] == "ok" and 0 < len(line["faces"]) < 8
    assert "of the 8 frames sampled could not be read" in line["incomplete"]
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["incomplete"] == [{"source": line["source"], "incomplete": line["incomplete"]}]
    assert "1 videos with frames missing" in result.stdout


def test_manifest_paths_outside_its_folder_stay_inside_out(tmp_path):
    """Audit G M3: a manifest's ``../x.png`` or absolute path wrote its crop outside OUT/faces,
    outside --out even; L3: a manifest file given as the source still keeps --out out of its
    folder."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(astronaut()).save(images / "near.png")
    Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(images / "far.png")
    listed = tmp_path / "lists" / "sub"
    listed.mkdir(parents=True)
    rows = [
        {"path": "../../images/near.png", "label": "real"},
        {"path": str(images / "far.png"), "label": "real"},
    ]
    (listed / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "prepared"
    result = prepare(str(listed), "--out", str(out), "--config", "tiny")
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == [
        "faces/_absolute_" + str(images / "far.png") + "_0.png",
        "faces/_parent_/_parent_/images/near.png_0.png",
    ]
    assert sorted(s.path for s in read_dataset(out).samples) == written
    inside = prepare(
        str(listed / "manifest.jsonl"), "--out", str(listed / "crops"), "--config", "tiny"
    )
    assert inside.returncode == 2 and "inside the source" in inside.stderr


def test_prepare_takes_each_detectors_crop(tmp_path):
    """Audit Q2: ``prepare --config mc-lcr-tiny``, which the crop-size warning advises, failed
    with a traceback (MC-LCR's config keeps its crop at its top, not under preprocess)."""
    source = tmp_path / "source"
    (source / "real").mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real" / "one.png")
    out = tmp_path / "prepared"
    result = prepare(str(source), "--out", str(out), "--config", "mc-lcr-tiny", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    (crop,) = read_dataset(out).samples
    with Image.open(out / crop.path) as image:
        assert image.size == (64, 64)


def test_one_files_unexpected_failure_is_its_record_not_the_end(tmp_path, monkeypatch):
    """Audit G S1: only decode errors were caught per file; anything else in detection or
    alignment ended the whole run, and a --resume stopped on the same file again."""
    from mfclip_cli.engines.prepare.request import PrepareRequest
    from mfclip_cli.engines.prepare.run import Preparer

    source, out = tmp_path / "source", tmp_path / "out"
    (source / "real").mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real" / "a.png")
    request = PrepareRequest(source=str(source), out=str(out), config="tiny")
    preparer = Preparer(request, {"crop_size": 128, "margin": 1.3}, torch.device("cpu"))

    def broken(images):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(preparer, "cropper", broken)
    sample = Sample(path="real/a.png", label="real")
    photo = source / "real" / "a.png"
    record = preparer.prepare(sample, photo, "0" * 64, photo.read_bytes())
    assert record["status"] == "error" and record["faces"] == []
    assert record["error"] == "face analysis failed: RuntimeError: out of memory"
    # the cause may be gone by the next run (audit Q2: a full disk made every file a lasting
    # error): a --resume prepares such a file again
    settings = {"type": "settings", "crop_size": 128, "margin": 1.3, "min_face": 20}
    settings |= {"all_faces": False, "frames": 8}
    record["sha256"] = sha256_file(source / "real" / "a.png")
    out.mkdir()
    (out / "prepare.jsonl").write_text(json.dumps(settings) + "\n" + json.dumps(record) + "\n")
    again = prepare(str(source), "--out", str(out), "--config", "tiny", "--resume")
    assert again.returncode == 0, again.stderr
    assert len(read_dataset(out).samples) == 1


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


def test_faces_prepared_for_another_crop_are_said_where_a_model_reads_them(tmp_path, tiny_model):
    """Audit G H2: crops prepared at another size or margin than the model's were resized by the
    loader without a word (vit-b-16's 256 px default read by a 128 px model: other pixels than
    scan gives it). Train, eval and calibrate say so, naming the folder; a folder prepare did not
    write, and one of the model's own geometry, are not said."""
    from mfclip_cli.data.samples import DataIndex, DataSource
    from mfclip_cli.engines.inference import crop_mismatch_warning

    folders = {}
    for name, size, margin in (("own", 128, 1.3), ("big", 256, 1.3), ("wide", 128, 1.5)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        summary = {"crop_size": size, "margin": margin}
        (folders[name] / "prepare.json").write_text(json.dumps(summary))
    (tmp_path / "raw").mkdir()

    def warning(*names):
        if len(names) == 1:
            index = DataIndex(root=tmp_path / names[0], layout="manifest")
        else:
            sources = tuple(
                DataSource(name, tmp_path / name, "manifest", name, (name,), 1) for name in names
            )
            index = DataIndex(root=tmp_path, layout="manifest", sources=sources)
        return crop_mismatch_warning(index, tiny_model, "demo")

    assert warning("own") is None and warning("raw") is None and warning("own", "raw") is None
    said = warning("big")
    assert f"{folders['big']} (256 px, margin 1.3)" in said
    assert "which reads 128 px crops aligned at margin 1.3" in said
    said = warning("own", "wide", "big")
    assert f"{folders['own']} (" not in said
    assert "wide (128 px, margin 1.5), " in said and "big (256 px, margin 1.3)" in said


def test_a_resume_prepares_again_a_source_whose_crops_were_lost(tmp_path):
    """Audit G L2: --resume trusted its log, and the manifest listed crops deleted or emptied
    since (a crash that lost them, a user's clean-up)."""
    source = tmp_path / "source"
    (source / "real").mkdir(parents=True)
    Image.fromarray(astronaut()).save(source / "real" / "one.png")
    Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(source / "real" / "two.png")
    out = tmp_path / "prepared"
    tiny = ("--out", str(out), "--config", "tiny", "--device", "cpu")
    assert prepare(str(source), *tiny).returncode == 0
    crops = {Path(s.path).name: out / s.path for s in read_dataset(out).samples}
    kept = crops["two.png_0.png"].read_bytes()
    crops["one.png_0.png"].unlink()
    crops["two.png_0.png"].write_bytes(b"")
    again = prepare(str(source), *tiny, "--resume")
    assert again.returncode == 0, again.stderr
    assert "prepared before" not in again.stdout  # neither record was taken from the log
    assert crops["one.png_0.png"].is_file() and crops["two.png_0.png"].read_bytes() == kept
    lines = (out / "prepare.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2 + 2  # settings, the first run's two, the two prepared again


def test_folder_frames_spreads_a_frame_folders_frames_as_a_videos(tmp_path):
    """Audit H M3: a video given as a folder of its extracted frames (DF40's, FF++'s) was
    prepared whole, hundreds of frames weighing each video by its length in frame-level figures;
    DeepfakeBench takes 8 a video. --folder-frames N takes N evenly spread, as from a video."""
    source = tmp_path / "source"
    rows = []
    for video, count in (("clips/a", 7), ("clips/b", 2)):
        (source / video).mkdir(parents=True)
        for n in range(count):
            Image.fromarray(np.ascontiguousarray(np.roll(astronaut(), 3 * n, axis=1))).save(
                source / video / f"{n:03d}.png"
            )
            rows.append({"path": f"{video}/{n:03d}.png", "label": "real", "video": video})
    (source / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "prepared"
    spread = ("--out", str(out), "--config", "tiny", "--folder-frames", "3")
    result = prepare(str(source), *spread)
    assert result.returncode == 0, result.stderr
    check_prepared(out)
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["folder_frames"] == 3 and summary["frames_not_taken"] == 4
    lines = (out / "prepare.jsonl").read_text().splitlines()[1:]
    taken = sorted(json.loads(line)["source"] for line in lines)
    assert taken == ["clips/a/001.png", "clips/a/003.png", "clips/a/005.png"] + [
        "clips/b/000.png",
        "clips/b/001.png",
    ]
    other = prepare(str(source), "--out", str(out), "--config", "tiny", "--resume")
    assert other.returncode == 2 and "folder_frames 3 there, None now" in other.stderr
    # a folder begun before the setting existed took every frame
    log = out / "prepare.jsonl"
    settings, *lines = log.read_text().splitlines(keepends=True)
    log.write_text(
        json.dumps({k: v for k, v in json.loads(settings).items() if k != "folder_frames"})
        + "\n"
        + "".join(lines)
    )
    again = prepare(str(source), *spread, "--resume")
    assert again.returncode == 2 and "folder_frames None there, 3 now" in again.stderr
