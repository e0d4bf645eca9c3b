"""``mfclip scan`` end to end, run as a subprocess the way an analyst runs it."""

import csv
import hashlib
import json
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import MFCLIP, mfclip
from media import (
    ASTRONAUT_BOX,
    HEIC_HEAD,
    MP_DISPARITY,
    MP_UNDEFINED,
    astronaut,
    face_free,
    iou,
    mosaic,
    save_apng_of_broken_frames,
    save_apng_of_no_frames,
    save_decompression_bomb,
    save_exif_rotated,
    save_fli,
    save_mpo,
    save_pages,
    save_psd,
    save_tiff_of_many_samples,
    save_tiff_without_size,
    save_truncated_jpeg,
    save_variants,
    save_video,
)
from PIL import Image
from report_schemas import check_scan_lines, check_scan_outputs
from rich.console import Console

from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.writers.images import AnnotateSink
from mfclip_cli.engines.scan.writers.table import TableSink
from mfclip_cli.faces.decode import UNINDEXED_JPEG

GOOD = {"astronaut.png", "rotated6.jpg", "rotated8.jpg", "mosaic.png", "face_free.png", "clip.mp4"}
BAD = {"zero.jpg", "truncated.jpg", "text.png", "bomb.png", "phone.heic"}
PARTIAL = {"pages.tif"}  # read in part: a page whose size is lost


def run(*args, **options):
    return mfclip("scan", *args, **options)


def table_of(*documents: dict) -> str:
    """The terminal table of these file records (as a report's JSON holds them)."""
    console = Console(width=400, record=True, force_terminal=False)
    sink = TableSink(console)
    sink.begin({"weights": {"name": "w", "sha256": "0" * 64}})
    for document in documents:
        sink.write(FileRecord.from_dict(document))
    sink.close({"complete": True})
    return console.export_text()


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    Image.fromarray(astronaut()).save(root / "astronaut.png")
    save_exif_rotated(root / "rotated6.jpg", 6)
    save_exif_rotated(root / "rotated8.jpg", 8)
    Image.fromarray(mosaic()).save(root / "mosaic.png")
    Image.fromarray(face_free()).save(root / "face_free.png")
    save_video(root / "clip.mp4", frames=10, fps=5.0)
    (root / "zero.jpg").write_bytes(b"")
    save_truncated_jpeg(root / "truncated.jpg")
    (root / "text.png").write_text("not an image")
    save_decompression_bomb(root / "bomb.png")
    save_tiff_without_size(root / "pages.tif")  # its first page read, the second said
    (root / "phone.heic").write_bytes(HEIC_HEAD + bytes(64))  # a HEIC head and no picture
    save_variants(root / "variants")
    (root / "notes.txt").write_text("not media: skipped when walking folders")
    return root


@pytest.fixture(scope="module")
def full_scan(evidence, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    result = run(
        str(evidence),
        "--weights",
        str(weights),
        "--json",
        str(out / "r.json"),
        "--jsonl",
        str(out / "r.jsonl"),
        "--csv",
        str(out / "r.csv"),
        "--annotate",
        str(out / "annotated"),
    )
    return result, out


def test_exit_code_three_and_every_file_reported(full_scan, evidence):
    result, out = full_scan
    assert result.returncode == 3, result.stderr
    assert f"{len(BAD)} of " in result.stderr and "input(s) could not be read" in result.stderr
    assert f"{len(PARTIAL)} of " in result.stderr and "were read only in part" in result.stderr
    document = json.loads((out / "r.json").read_text())
    names = [Path(f["path"]).name for f in document["files"]]
    variants = {p.name for p in (evidence / "variants").iterdir()}
    assert set(names) == GOOD | BAD | PARTIAL | variants
    assert "notes.txt" not in names  # passed over, and said to be
    assert document["meta"]["files_passed_over"] == 1
    assert "note: 1 file(s) in the folders named were passed over" in result.stderr
    paths = [f["path"] for f in document["files"]]
    assert paths == sorted(
        paths, key=lambda p: [part for part in Path(p).relative_to(evidence).parts]
    )


def test_bad_files_get_error_records_with_readable_messages(full_scan):
    _, out = full_scan
    files = {Path(f["path"]).name: f for f in json.loads((out / "r.json").read_text())["files"]}
    expected = {
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated",
        "text.png": "not a recognised image",
        "bomb.png": "decompression-bomb",
        "phone.heic": "corrupt HEIC/HEIF image: no decodable picture in it",
    }
    for name, message in expected.items():
        assert files[name]["status"] == "error" and message in files[name]["error"], files[name]
        assert files[name]["faces"] == []
    # a TIFF's second page without its size failed the whole file (Pillow's count of its pages
    # fails there): its first page is scanned now, the second said
    pages = files["pages.tif"]
    assert (pages["status"], pages["pictures_in_file"]) == ("no_face", 2)
    ((unread),) = pages["pictures_unread"]
    assert unread["picture"] == 1 and "TypeError" in unread["error"]


def test_faces_boxes_and_statuses(full_scan, evidence):
    _, out = full_scan
    files = {Path(f["path"]).name: f for f in json.loads((out / "r.json").read_text())["files"]}
    for name in ("astronaut.png", "rotated6.jpg", "rotated8.jpg"):
        record = files[name]
        assert record["status"] == "ok" and (record["width"], record["height"]) == (512, 512)
        (face,) = record["faces"]
        assert iou(face["box"], ASTRONAUT_BOX) >= 0.9, (name, face["box"])
    assert len(files["mosaic.png"]["faces"]) == 4
    assert [f["index"] for f in files["mosaic.png"]["faces"]] == [0, 1, 2, 3]
    assert files["face_free.png"]["status"] == "no_face" and files["face_free.png"]["faces"] == []
    for path in (evidence / "variants").iterdir():
        assert files[path.name]["status"] == "ok" and len(files[path.name]["faces"]) == 1, path.name


def test_video_frames_and_summary(full_scan):
    _, out = full_scan
    files = {Path(f["path"]).name: f for f in json.loads((out / "r.json").read_text())["files"]}
    video = files["clip.mp4"]
    assert video["status"] == "ok"
    assert [(f["frame"], f["timestamp"]) for f in video["faces"]] == [(0, 0.0), (5, 1.0)]
    summary = video["video"]
    assert summary["frames_sampled"] == 2 and summary["faces"] == 2 and summary["fps"] == 5.0
    probs = np.array(
        [[f["probs"][c] for c in ("real", "diffusion", "gan")] for f in video["faces"]]
    )
    for i, name in enumerate(("real", "diffusion", "gan")):
        assert summary["mean"][name] == pytest.approx(probs[:, i].mean(), abs=1e-5)
        assert summary["max"][name] == pytest.approx(probs[:, i].max(), abs=1e-5)


def test_json_and_jsonl_reports_follow_the_published_schema(full_scan):
    _, out = full_scan
    check_scan_outputs(out / "r.json", out / "r.jsonl")  # faces, no-face, errors, a video


def test_json_jsonl_and_csv_carry_the_same_complete_records(full_scan, weights):
    _, out = full_scan
    document = json.loads((out / "r.json").read_text())
    lines = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    meta = lines[0]
    assert (
        meta["type"] == "meta"
        and meta["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert meta["demo"] is False and meta["device"] == "cpu" and meta["thresholds"]["fake"] == 0.5
    assert meta["started_utc"].endswith("+00:00") and meta["version"]
    end = lines[-1]
    assert (
        end["type"] == "end"
        and end["complete"] is True
        and end["files_written"] == len(document["files"])
    )
    statuses = Counter(record["status"] for record in document["files"])
    assert end["files_by_status"] == {"ok": 0, "no_face": 0, "error": 0, **statuses}
    assert statuses["error"] > 0
    assert document["meta"] == {
        **{k: v for k, v in meta.items() if k != "type"},
        **{k: v for k, v in end.items() if k != "type"},
    }
    assert [{k: v for k, v in line.items() if k != "type"} for line in lines[1:-1]] == document[
        "files"
    ]
    for record in document["files"]:
        assert set(record) >= {
            "path",
            "sha256",
            "size",
            "format",
            "width",
            "height",
            "status",
            "error",
            "faces",
        }
        if record["size"]:
            assert record["sha256"] == hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest()
            assert record["size"] == Path(record["path"]).stat().st_size
        for face in record["faces"]:
            assert set(face) >= {"index", "box", "landmarks", "det_score", "probs", "label"}
            assert len(face["box"]) == 4 and np.asarray(face["landmarks"]).shape == (5, 2)
            assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-5)
            assert face["label"] in ("real", "diffusion", "gan")
    rows = list(csv.DictReader((out / "r.csv").open(encoding="utf-8")))
    faces = sum(len(r["faces"]) for r in document["files"])
    faceless = sum(1 for r in document["files"] if not r["faces"])
    assert len(rows) == faces + faceless
    assert all(
        row["weights_sha256"] == meta["weights"]["sha256"] and row["demo"] == "false"
        for row in rows
    )
    first = next(r for r in rows if r["face_index"] == "0" and r["path"].endswith("astronaut.png"))
    astro = next(r for r in document["files"] if r["path"].endswith("astronaut.png"))["faces"][0]
    assert (
        float(first["real"]) == pytest.approx(astro["probs"]["real"])
        and first["label"] == astro["label"]
    )


def test_annotated_copies_are_written_beside_not_over_the_inputs(full_scan, evidence):
    _, out = full_scan
    annotated = sorted(p.name for p in (out / "annotated").iterdir())
    assert any(name.startswith("mosaic.") for name in annotated)
    assert len(annotated) == len([n for n in annotated if n.endswith(".png")])
    # a video: one copy per sampled frame with faces (audit W M2: none, and no word of it)
    files = json.loads((out / "r.json").read_text())["files"]
    clip = next(f for f in files if Path(f["path"]).name == "clip.mp4")
    frames = sorted({face["frame"] for face in clip["faces"]})
    assert frames and [Path(p).name for p in clip["annotation"]["paths"]] == [
        f"clip.{clip['sha256'][:8]}.frame{frame:06d}.png" for frame in frames
    ]
    assert all(Path(p).is_file() for p in clip["annotation"]["paths"])
    result = run(str(evidence), "--weights", "x.safetensors", "--annotate", str(evidence / "out"))
    assert result.returncode == 2 and "inside the input folder" in result.stderr


def test_resume_skips_files_already_recorded(evidence, weights, tmp_path):
    report = tmp_path / "r.jsonl"
    first = run(
        str(evidence / "astronaut.png"),
        str(evidence / "zero.jpg"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
    )
    assert first.returncode == 3
    with report.open("a") as handle:
        handle.write('{"type": "file", "path": "cut off by a cra')  # a crash mid-line
    again = run(
        str(evidence / "astronaut.png"),
        str(evidence / "zero.jpg"),
        str(evidence / "mosaic.png"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
        "--resume",
    )
    # zero.jpg is unreadable: the report as a whole says so
    assert again.returncode == 3, again.stderr
    lines = check_scan_lines(report.read_text().splitlines())  # the cut-off line is gone
    files = [line for line in lines if line["type"] == "file"]
    assert [Path(line["path"]).name for line in files] == [
        "astronaut.png",
        "zero.jpg",
        "mosaic.png",
    ]
    assert [line["type"] for line in lines] == ["meta", "file", "file", "end", "file", "end"]
    assert "2 input(s) already recorded there were skipped" in again.stderr
    refused = run(
        str(evidence / "astronaut.png"), "--weights", str(weights), "--jsonl", str(report)
    )
    assert refused.returncode == 2 and "already exists" in refused.stderr
    # an uncalibrated checkpoint has no int8 parity: auto ran fp32, and int8 would mix verdicts
    assert lines[0]["precision"]["used"] == "fp32"
    mixed = run(
        str(evidence / "astronaut.png"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
        "--resume",
        "--precision",
        "int8",
    )
    assert mixed.returncode == 2 and "precision 'fp32' there, 'int8' now" in mixed.stderr


def test_paths_from_stdin_and_streaming_jsonl_to_stdout(evidence, weights):
    names = ["mosaic.png", "astronaut.png", "missing.png"]
    stdin = "".join(f"{evidence / name}\n" for name in names)
    result = run("-", "--weights", str(weights), "--jsonl", "-", "--workers", "1", stdin=stdin)
    assert result.returncode == 3, result.stderr
    lines = check_scan_lines(result.stdout.splitlines())
    assert lines[0]["type"] == "meta" and lines[-1]["type"] == "end"
    assert [Path(line["path"]).name for line in lines[1:-1]] == names
    assert lines[3]["status"] == "error" and "no such file" in lines[3]["error"]


def test_a_reader_that_leaves_the_pipe_ends_the_scan_quietly(evidence, weights):
    """``mfclip scan ... | head -1``: exit 1 and a message about "room on a full disk" (audit
    F10); now the code a shell gives a writer ended by SIGPIPE, and no message."""
    environment = {key: value for key, value in os.environ.items() if key != "MFCLIP_WEIGHTS"}
    scan = subprocess.Popen(
        [MFCLIP, "scan", str(evidence), "--weights", str(weights), "--jsonl", "-", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**environment, "HF_HUB_OFFLINE": "1"},
    )
    assert scan.stdout.readline().startswith(b'{"type": "meta"')
    scan.stdout.close()  # as head does after its line
    assert scan.wait(timeout=600) == 141
    stderr = scan.stderr.read().decode()
    assert "error" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_report_fifo_whose_reader_left_is_named(evidence, weights, tmp_path):
    """Only stdout's reader leaving is quiet: a report written into a FIFO whose reader left is
    an error naming it, as a full disk is (the quiet 141 had swallowed it)."""
    fifo = tmp_path / "r.jsonl"
    os.mkfifo(fifo)

    def read_one_byte() -> None:
        with open(fifo, "rb") as reader:
            reader.read(1)

    reader = threading.Thread(target=read_one_byte)
    reader.start()
    result = run(str(evidence), "--weights", str(weights), "--jsonl", str(fifo), "-q")
    reader.join(timeout=60)
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert f"cannot write {fifo}: Broken pipe" in message and "partial" in message


def test_fail_on_fake_and_clean_exit(evidence, weights):
    faked = run(
        str(evidence / "astronaut.png"),
        "--weights",
        str(weights),
        "--fake-threshold",
        "0",
        "--fail-on-fake",
        "--jsonl",
        "-",
    )
    assert faked.returncode == 4, faked.stderr
    clean = run(
        str(evidence / "astronaut.png"),
        "--weights",
        str(weights),
        "--fake-threshold",
        "1",
        "--fail-on-fake",
        "--jsonl",
        "-",
    )
    assert clean.returncode == 0, clean.stderr
    assert check_scan_lines(clean.stdout.splitlines())[1]["faces"][0]["label"] == "real"


def test_usage_and_fatal_errors(evidence, weights, tmp_path):
    demo = run(
        str(evidence / "astronaut.png"), "--jsonl", "-", cwd=tmp_path, env={"MFCLIP_WEIGHTS": ""}
    )
    # no weights named: the bundled demo, loudly
    assert demo.returncode == 0 and "DEMO" in demo.stderr
    meta = check_scan_lines(demo.stdout.splitlines())[0]
    assert meta["demo"] is True and meta["weights"]["demo"] is True
    missing = run(str(evidence / "astronaut.png"), "--weights", str(tmp_path / "nope.safetensors"))
    assert missing.returncode == 1 and "weights not found" in missing.stderr
    unset = run(str(evidence / "astronaut.png"), env={"MFCLIP_WEIGHTS": str(tmp_path / "nope")})
    assert unset.returncode == 1 and "nope (from $MFCLIP_WEIGHTS;" in unset.stderr
    pickled = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(1)}, pickled)
    refused = run(str(evidence / "astronaut.png"), "--weights", str(pickled))
    assert refused.returncode == 1 and "pickled" in refused.stderr
    bad_device = run(str(evidence / "astronaut.png"), "--weights", str(weights), "--device", "tpu")
    assert bad_device.returncode == 2
    assert run("--weights", str(weights)).returncode == 2  # no paths
    resume_without_file = run(str(evidence), "--weights", str(weights), "--resume")
    assert (
        resume_without_file.returncode == 2
        and "--resume needs --jsonl" in resume_without_file.stderr
    )
    for fps in ("nan", "inf", "0"):  # NaN failed every video and wrote NaN into the JSON
        bad_fps = run(str(evidence), "--weights", str(weights), "--fps", fps, "--jsonl", "-")
        assert bad_fps.returncode == 2 and "--fps must be a positive number" in bad_fps.stderr


def test_an_animation_is_scanned_frame_by_frame_and_pages_picture_by_picture(weights, tmp_path):
    """A face on an animation's later frame, or a TIFF's later page, was not looked at: the
    record said ``no_face`` (audit W M1), then only that the other pictures were not scanned.
    An animation (GIF, APNG, animated WebP) is now sampled as a video is, from the bytes hashed:
    each face with its frame and the time it is shown; a TIFF's pages are each scanned, a face
    with its page's index and no time. Both are drawn again for --annotate, the HTML report and
    ``mfclip report``."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    blank = Image.fromarray(face_free())
    face = Image.fromarray(astronaut()).resize(blank.size)
    frames = [blank, blank.transpose(Image.Transpose.FLIP_LEFT_RIGHT), face]
    for name in ("a.gif", "a.webp", "a.apng"):  # face shown from 1.3 s; 0 ms is shown 100 ms
        frames[0].save(
            evidence / name, format="PNG" if name.endswith("apng") else None,
            save_all=True, append_images=frames[1:], duration=[1200, 0, 3000],
        )  # fmt: skip
    blank.save(evidence / "b.tif", save_all=True, append_images=[blank, face])
    face.save(evidence / "c.png")
    html, annotated = tmp_path / "r.html", tmp_path / "annotated"
    result = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"),
        "--html", str(html), "--csv", str(tmp_path / "r.csv"), "--annotate", str(annotated),
        "--duplicates",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = {
        Path(line["path"]).name: line
        for line in check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())
        if line["type"] == "file"
    }
    assert {name: (r["status"], r.get("pictures_in_file")) for name, r in records.items()} == {
        "a.apng": ("ok", None),
        "a.gif": ("ok", None),
        "a.webp": ("ok", None),
        "b.tif": ("ok", 3),
        "c.png": ("ok", None),
    }
    for name in ("a.apng", "a.gif", "a.webp"):
        record = records[name]
        # sampled at 1 fps, the frame shown at each second: frame 0 at 0 and 1 s, frame 2 (from
        # 1.3 s, held 3 s) at 2, 3 and 4 s; frame 1, shown from 1.2 to 1.3 s, at none
        assert record["video"]["frame_count"] == 3 and record["video"]["duration"] == 4.3
        assert record["video"]["frames_sampled"] == 2 and record["video"]["incomplete"] is None
        assert [(f["frame"], f["timestamp"]) for f in record["faces"]] == [(2, 1.3)], name
        assert record["format"] == {"a.apng": "PNG"}.get(name, name[2:].upper())
        (copy,) = record["annotation"]["paths"]
        assert copy.endswith(".frame000002.png") and Path(copy).is_file()
        # no pHash, as a video has none: its first frame is often a title another file shares
        assert "phash" not in record and "phash" in records["c.png"]
    pages = records["b.tif"]
    assert [(f["frame"], "timestamp" in f) for f in pages["faces"]] == [(2, False)]
    (copy,) = pages["annotation"]["paths"]
    assert copy.endswith(".frame000002.png") and Path(copy).is_file()
    assert "phash" not in pages and "pictures_unread" not in pages  # several views: no hash
    rows = {Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "r.csv").open())}
    assert rows["b.tif"]["pictures_in_file"] == "3" and rows["a.gif"]["pictures_in_file"] == ""
    assert (rows["b.tif"]["frame"], rows["b.tif"]["timestamp"]) == ("2", "")
    page = html.read_text()
    assert page.count("picture 3 of 3 · frame 2") == 1 and "was scanned" not in page
    assert page.count("frame 2 · 1.30 s") == 3 and "pictures not shown" not in page
    # frame 1, shown for 0.1 s between two instants, was not sampled: said
    assert page.count("2 of its 3 frames sampled (--fps or --frames N takes more)") == 3
    again = mfclip("report", str(tmp_path / "r.jsonl"), "--html", str(tmp_path / "again.html"))
    assert again.returncode == 0, again.stderr
    shown_again = (tmp_path / "again.html").read_text()
    assert shown_again.count("frame 2 · 1.30 s") == 3 and shown_again.count("picture 3 of 3") == 1
    assert "pictures not shown" not in shown_again


def test_a_damaged_page_is_said_and_the_other_pages_are_scanned(weights, tmp_path):
    """A TIFF whose third page cannot be decoded: its other pages are scanned, a face on the
    fourth found; the damage is in the record (``pictures_unread``), the CSV, the table and the
    HTML report, and the run exits 3, as for a video read in part. A reduced-resolution copy of
    a page (a scanner's preview) is passed over, said, and not counted as damage; so is an HDR
    phone photo's gain map (an MPO image of undefined type: its faces again)."""
    face, blank = astronaut(), face_free()[:512, :512]
    small = np.asarray(Image.fromarray(face).resize((128, 128)))
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    save_pages(evidence / "id.tif", [blank, small, blank, face], reduced=(1,), damaged=(2,))
    grey = np.repeat(face.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    save_mpo(evidence / "hdr.jpg", [blank, grey], {1: MP_UNDEFINED})
    # a stereo pair whose MP index is damaged (audit AH F2): its second view, with the face,
    # was passed over unsaid, the run exiting 0 for it
    save_mpo(evidence / "pair.jpg", [blank, face], {1: MP_DISPARITY})
    pair = bytearray((evidence / "pair.jpg").read_bytes())
    pair[pair.index(b"MPF\x00") + 4] = ord(" ")
    (evidence / "pair.jpg").write_bytes(bytes(pair))
    # an APNG whose frames all fail but whose default image decodes was an error, "animation
    # has no readable frames" (audit AH F3): the default image, what a viewer shows, is scanned
    save_apng_of_broken_frames(evidence / "moving.png", face, [blank, blank])
    result = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"),
        "--csv", str(tmp_path / "r.csv"), "--html", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    records = {
        Path(line["path"]).name: line
        for line in check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())
        if line["type"] == "file"
    }
    tiff = records["id.tif"]
    assert (tiff["status"], tiff["pictures_in_file"]) == ("ok", 4)
    assert tiff["pictures_passed_over"] == [1]
    assert [face["frame"] for face in tiff["faces"]] == [3]
    ((unread),) = tiff["pictures_unread"]
    assert unread == {"picture": 2, "error": "cannot decode image: decoder error -2"}
    mpo = records["hdr.jpg"]
    assert (mpo["status"], mpo["pictures_passed_over"], mpo["faces"]) == ("no_face", [1], [])
    assert "pictures_unread" not in mpo
    moving = records["moving.png"]
    assert (moving["status"], moving["pictures_in_file"], "video" in moving) == ("ok", 2, False)
    assert [face["frame"] for face in moving["faces"]] == [0]
    assert moving["pictures_unread"] == [
        {"picture": 1, "error": "corrupt image: no more images in APNG file"}
    ]
    pair = records["pair.jpg"]
    assert (pair["format"], pair["status"], pair["pictures_in_file"]) == ("JPEG", "no_face", 2)
    assert pair["pictures_unread"] == [{"picture": 1, "error": UNINDEXED_JPEG}]
    assert pair["decoder_warnings"] == [
        "Image appears to be a malformed MPO file, it will be interpreted as a base JPEG file"
    ]
    rows = {Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "r.csv").open())}
    assert rows["id.tif"]["pictures_passed_over"] == "1"
    assert json.loads(rows["id.tif"]["pictures_unread"]) == tiff["pictures_unread"]
    assert "pictures_unread" in result.stderr
    table = table_of(tiff)
    said = "1 of its 4 pictures could not be decoded (picture 3: "  # counted as pages are
    # in the file's section and in the report's list of errors (audit AE L1)
    assert said in table and (tmp_path / "r.html").read_text().count(said) == 2
    assert "passed over" not in table  # a thumbnail or gain map is no news: most photos hold one
    passed_over = "4 pictures, 1 passed over as no view of their own"
    assert passed_over in (tmp_path / "r.html").read_text()
    assert "#0 picture 4/4" in table


def test_a_photoshop_file_and_an_autodesk_animation_are_scanned_as_they_show(weights, tmp_path):
    """A layered PSD exited 3 ("1 of its 3 pictures could not be decoded"), its composite never
    scanned; an FLC's frames were scanned as still pictures, each, untimed. Now the composite
    is (its layers passed over), the FLC is sampled as an animation, and the run exits 0;
    ``--html`` draws the PSD's picture again from its bytes, and a folder's walk takes both."""
    face, grey = astronaut(), np.full((512, 512, 3), 128, np.uint8)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    save_psd(evidence / "edit.psd", face, [grey, face])
    save_fli(evidence / "clip.flc", [grey, face, face], milliseconds=1000)
    result = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"),
        "--html", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "passed over" not in result.stderr  # a folder's walk takes both (it passed them over)
    records = {
        Path(line["path"]).name: line
        for line in check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())
        if line["type"] == "file"
    }
    psd, flc = records["edit.psd"], records["clip.flc"]
    assert (psd["status"], psd["format"], psd["pictures_in_file"]) == ("ok", "PSD", 3)
    assert psd["pictures_passed_over"] == [1, 2] and "pictures_unread" not in psd
    assert [face.get("frame", 0) for face in psd["faces"]] == [0]
    assert (flc["status"], flc["video"]["frame_count"]) == ("ok", 3)
    assert [(face["frame"], face["timestamp"]) for face in flc["faces"]] == [(1, 1.0), (2, 2.0)]
    assert "pictures_in_file" not in flc
    page = (tmp_path / "r.html").read_text()
    assert "not shown" not in page and "could not be decoded again" not in page
    assert page.count("data:image/") >= 3 + 2 * 2  # three faces' crops, two files' pictures


def test_what_the_decoder_warns_of_is_said_in_each_files_record(weights, tmp_path):
    """Pillow reads on past damage it can pass over, and warns: an APNG whose acTL says 0
    frames is read as its default image, its other frames never scanned. That warning went to
    stderr once per run, naming no file (a second such file's was never shown); it is now in
    each file's record (``decoder_warnings``), the table, the CSV and the HTML report, and
    nowhere else. The file was read: the exit code stays 0. So is why Pillow refused a file
    where it logs it ("More samples per pixel than can be decoded"), beside the error."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for name in ("a.png", "b.png"):
        save_apng_of_no_frames(evidence / name, [astronaut(), face_free()[:512, :512]])
    Image.fromarray(astronaut()).save(evidence / "whole.png")
    save_tiff_of_many_samples(tmp_path / "samples.tif")
    result = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"),
        "--csv", str(tmp_path / "r.csv"), "--html", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Invalid APNG" not in result.stderr and "Warning" not in result.stderr
    refused = run(tmp_path / "samples.tif", "--weights", str(weights), "--jsonl", "-")
    assert refused.returncode == 3 and "samples per pixel" not in refused.stderr
    lines = check_scan_lines(refused.stdout.splitlines())
    (tiff,) = [line for line in lines if line["type"] == "file"]
    assert tiff["decoder_warnings"] == ["More samples per pixel than can be decoded: 65535"]
    records = {
        Path(line["path"]).name: line
        for line in check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())
        if line["type"] == "file"
    }
    said = ["Invalid APNG, will use default PNG image if possible"]
    assert [records[name].get("decoder_warnings") for name in sorted(records)] == [
        said, said, None
    ]  # fmt: skip
    assert records["a.png"]["status"] == "ok" and "video" not in records["a.png"]
    rows = {Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "r.csv").open())}
    assert json.loads(rows["b.png"]["decoder_warnings"]) == said
    assert rows["whole.png"]["decoder_warnings"] == ""
    note = "the decoder read past damage: Invalid APNG, will use default PNG image if possible"
    assert note in table_of(records["a.png"]) and note not in table_of(records["whole.png"])
    assert (tmp_path / "r.html").read_text().count(note) == 2


def test_files_of_several_pictures_whatever_their_first(weights, tmp_path):
    """A TIFF whose first page is damaged, or over the limit, failed whole (audit AE M2): its
    other pages are scanned. A file of several views gets no pHash (two documents sharing a
    cover page were grouped as copies, their verdicts "disagreeing": audit AE M5); a photo
    beside its gain map keeps its own. ``smallest_face`` is the largest of the pictures' (audit
    AE L2). ``mfclip report`` shows a HEIC's pictures in a fresh process (its plugin was not
    registered: audit AE M1), and of a report before 2.19.0 says only the first picture of such
    a file was scanned (audit AE M6)."""
    from pillow_heif import from_pillow

    face, blank = astronaut(), np.ascontiguousarray(face_free()[:512, :512])
    big = np.asarray(Image.fromarray(face).resize((2048, 2048)))
    grey = np.repeat(face.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    heic = from_pillow(Image.fromarray(blank))
    heic.add_from_pillow(Image.fromarray(face))
    heic.save(evidence / "a.heic", quality=90)  # first: nothing decoded a HEIC before it
    save_pages(evidence / "b_first_damaged.tif", [face, face[:, ::-1]], damaged=(0,))
    save_pages(evidence / "c_cover.tif", [blank, face])
    save_pages(evidence / "d_cover.tif", [blank, face[::-1]])
    save_pages(evidence / "e_small_then_big.tif", [blank, big])
    save_mpo(evidence / "f_hdr.jpg", [face, grey], {1: MP_UNDEFINED})
    Image.fromarray(face).save(evidence / "g_copy.png")
    # a phone photo whose photo is damaged: its gain map is no photo to judge (audit AF F1)
    damaged = bytearray((evidence / "f_hdr.jpg").read_bytes())
    scan = damaged.index(b"\xff\xda")
    damaged[scan + 400 : scan + 2400] = bytes((i * 37) & 0xFF for i in range(2000))
    (evidence / "h_hdr_damaged.jpg").write_bytes(bytes(damaged))
    # no face, its first page damaged: the page scanned is shown (audit AF F7)
    save_pages(evidence / "i_blank_first_damaged.tif", [blank, blank], damaged=(0,))
    # a face on the page after a preview: named, as the record's size is the preview's (F9)
    small = np.asarray(Image.fromarray(face).resize((128, 128)))
    save_pages(evidence / "j_preview_first.tif", [small, face], reduced=(0,))
    jsonl = tmp_path / "r.jsonl"
    result = run(
        str(evidence), "--weights", str(weights), "--jsonl", str(jsonl), "--duplicates",
        "--detect-max-side", "1024",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # the damaged first page
    lines = check_scan_lines(jsonl.read_text().splitlines())
    records = {Path(line["path"]).name: line for line in lines if line["type"] == "file"}
    first = records["b_first_damaged.tif"]
    assert (first["status"], first["width"]) == ("ok", 512)
    assert [face["frame"] for face in first["faces"]] == [1]
    assert [entry["picture"] for entry in first["pictures_unread"]] == [0]
    assert [face["frame"] for face in records["a.heic"]["faces"]] == [1]
    assert "phash" not in records["c_cover.tif"] and "phash" not in records["d_cover.tif"]
    broken = records["h_hdr_damaged.jpg"]
    assert broken["status"] == "error" and broken["error"].startswith(
        "none of its 1 view(s) could be decoded: "
    )
    assert broken["error"].endswith("a map or a layer of a view, not scanned in its place")
    preview = records["j_preview_first.tif"]
    assert [face["frame"] for face in preview["faces"]] == [1] and preview["width"] == 128
    hdr = records["f_hdr.jpg"]
    assert [face["frame"] for face in hdr["faces"]] == [0] and hdr["pictures_passed_over"] == [1]
    table = table_of(hdr, first, preview)  # hdr's only view: no picture named, as for any photo
    assert "#0 picture" not in table.split("b_first_damaged")[0]
    assert table.count("#0 picture 2/2") == 2
    (group,) = lines[-1]["duplicates"]  # the photo and its HDR copy, not the two covers
    assert sorted(Path(name).name for name in group["files"]) == ["f_hdr.jpg", "g_copy.png"]
    assert records["e_small_then_big.tif"]["smallest_face"] == 24  # P-Net's 12 px at half
    assert "smallest_face" not in records["c_cover.tif"]

    again = mfclip("report", str(jsonl), "--html", str(tmp_path / "again.html"))
    assert again.returncode == 0, again.stderr
    page = (tmp_path / "again.html").read_text()
    assert "picture 2 of 2 · frame 1" in page and "pictures not shown" not in page
    assert "could not be read again" not in again.stderr
    older = [
        {**line, "schema_version": "2.18.0"} if line["type"] == "meta" else line for line in lines
    ]
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(line) + "\n" for line in older))
    rendered = mfclip("report", str(tmp_path / "old.jsonl"), "--html", str(tmp_path / "o.html"))
    assert rendered.returncode == 0, rendered.stderr
    old = (tmp_path / "o.html").read_text()
    assert "only the primary of its 2 pictures was scanned (by mfclip before 2.19.0" in old
    assert "only the first of its 2 pictures was scanned" in old


def test_the_table_of_a_large_scan_shows_the_files_with_findings():
    """A terminal's table of 20,000 files printed every row at the end, the summary scrolled
    away, every record kept (audit AA L1). Past ``ALL_ROWS`` files, where a report keeps every
    file, only those adding to the exit code are shown, and a line says how many of how many."""
    from mfclip_cli.engines.scan.records import FaceRecord
    from mfclip_cli.engines.scan.writers.table import ALL_ROWS

    def face(label: str, beside: str | None = None) -> FaceRecord:
        """A face ``label``led, and ``beside`` by a second checkpoint where one is compared."""
        probs = {"real": 0.1, "diffusion": 0.1, "gan": 0.8}
        verdicts = [
            {"weights": name, "sha256": "0" * 64, "probs": probs, "label": said}
            for name, said in (("w", label), ("v", beside))
        ]
        return FaceRecord.create(
            0, [0, 0, 9, 9], [[0, 0]] * 5, 0.9, probs, label, detectors=verdicts if beside else None
        )

    def table(count: int, kept_in=("--jsonl [r].jsonl",), compared: bool = False) -> str:
        console = Console(width=200, record=True, force_terminal=False)
        sink = TableSink(console, kept_in=list(kept_in))
        weights = [{"name": name, "sha256": "0" * 64} for name in ("w", "v")]
        sink.begin({"weights": weights[0], "compared_weights": weights if compared else None})
        for i in range(count):
            sink.write(FileRecord(path=f"plain{i:05d}.jpg", status="no_face"))
            if i == 3:
                beside = (lambda label: label) if compared else (lambda label: None)
                sink.write(FileRecord(path="broken.jpg").fail("truncated"))
                sink.write(FileRecord(path="gan.jpg", faces=[face("gan", beside("gan"))]))
                unsure = face("inconclusive", beside("inconclusive"))
                sink.write(FileRecord(path="unsure.jpg", faces=[unsure]))
                sink.write(FileRecord(path="real.jpg", faces=[face("real", beside("real"))]))
                if compared:  # real by the primary, a GAN's by the checkpoint beside it
                    sink.write(FileRecord(path="split.jpg", faces=[face("real", "gan")]))
        sink.close({"complete": True})
        return console.export_text()

    small = table(ALL_ROWS - 4)
    assert small.count("plain") == ALL_ROWS - 4 and "real.jpg" in small and "shown" not in small
    large = table(ALL_ROWS)
    assert "plain" not in large and "real.jpg" not in large
    assert all(name in large for name in ("broken.jpg", "gan.jpg", "unsure.jpg"))
    assert f"3 of {ALL_ROWS + 4} files shown: those with an error" in large
    assert "every file is in --jsonl [r].jsonl" in large  # a name, not markup
    # with two checkpoints, a face the second labels fake keeps its row (audit AC L4)
    both = table(ALL_ROWS, compared=True)
    assert "split.jpg" in both and "real.jpg" not in both
    assert (
        "4 of 205 files shown: those with an error, a face labelled fake or inconclusive, or "
        "fake by a checkpoint beside it" in both
    )
    # without a report the table is the run's only record: every row (audit AC M3)
    alone = table(ALL_ROWS, kept_in=())
    assert alone.count("plain") == ALL_ROWS and "real.jpg" in alone and "shown" not in alone


def test_the_megapixel_limit_is_the_analysts_to_set(weights, tmp_path):
    """A 108 MP phone photo was refused with no way round but re-encoding the evidence (audit W
    M2): ``--max-megapixels`` sets the limit, and the meta records the one in use."""
    photo = tmp_path / "wide.png"
    Image.fromarray(astronaut()).resize((1200, 1000)).save(photo)
    refused = run(str(photo), "--weights", str(weights), "--jsonl", "-", "--max-megapixels", "1")
    assert refused.returncode == 3, refused.stderr
    meta, record, _ = check_scan_lines(refused.stdout.splitlines())
    assert meta["thresholds"]["max_pixels"] == 1_000_000
    assert record["status"] == "error" and record["error"] == (
        "image is 1200x1000 = 1.2 megapixels, over the 1.0-megapixel decompression-bomb limit "
        "(scan's --max-megapixels raises it)"
    )
    scanned = run(str(photo), "--weights", str(weights), "--jsonl", "-", "--max-megapixels", "1.2")
    assert scanned.returncode == 0, scanned.stderr
    meta, record, _ = check_scan_lines(scanned.stdout.splitlines())
    assert meta["thresholds"]["max_pixels"] == 1_200_000 and record["status"] == "ok"
    # mfclip report reads the picture again within the limit the scan had (audit Y M2: at the
    # default one, a 108 MP photo scanned with --max-megapixels 110 had no picture, exit 3)
    lines = [json.loads(line) for line in scanned.stdout.splitlines()]
    for limit, code in ((1_200_000, 0), (1_000_000, 3)):
        lines[0]["thresholds"]["max_pixels"] = limit
        report = tmp_path / f"{limit}.jsonl"
        report.write_text("".join(json.dumps(line) + "\n" for line in lines))
        shown = mfclip("report", str(report), "--html", str(tmp_path / f"{limit}.html"))
        assert shown.returncode == code, shown.stderr
    # so does an annotated copy drawn from a record read back (a torchrun scan's rank 0: audit
    # Z M2)
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    for limit, drawn in ((1_000_000, False), (1_200_000, True)):
        record = FileRecord(path=str(photo), sha256=digest)
        AnnotateSink(str(tmp_path / f"copies{limit}"), max_pixels=limit).write(record)
        assert ("path" in record.annotation) is drawn, record.annotation
