"""The SHA-256 in a record names exactly the bytes analysed (issue 30): inputs rewritten while a
scan runs, a video written to mid-scan, and what the reports say when they cannot be written."""

import builtins
import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from media import (
    astronaut,
    face_free,
    mosaic,
    save_decompression_bomb,
    save_exif_rotated,
    save_truncated_jpeg,
    save_variants,
    save_video,
)
from PIL import Image
from report_schemas import check_scan_lines
from rich.console import Console
from test_html_report import Page, decoded
from test_scan_cli import MFCLIP

from mfclip_cli.engines.scan import reports as scan_reports
from mfclip_cli.engines.scan import scanner as scan_scanner
from mfclip_cli.engines.scan.evidence import HeldVideo, InputChanged, read_image
from mfclip_cli.engines.scan.inputs import collect_inputs
from mfclip_cli.engines.scan.request import ScanRequest
from mfclip_cli.engines.scan.run import run_scan
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.writers import json_reports
from mfclip_cli.engines.scan.writers.common import ReportError
from mfclip_cli.engines.scan.writers.csv_report import CsvSink
from mfclip_cli.engines.scan.writers.html import HtmlSink, report_from_jsonl
from mfclip_cli.engines.scan.writers.images import AnnotateSink
from mfclip_cli.engines.scan.writers.json_reports import JsonlSink, JsonSink
from mfclip_cli.errors import UsageError
from mfclip_cli.faces.decode import DecodeError, decode_image
from mfclip_cli.files import NotARegularFile, readable, sha256_file, shown


def test_the_bytes_read_once_decode_as_the_file_does(tmp_path):
    """EXIF orientation, every awkward encoding and the refusals are the same from the one read
    as from the path; the hash is of the bytes on disk."""
    paths = list(save_variants(tmp_path / "variants").values())
    for orientation in (6, 8):
        paths.append(tmp_path / f"rotated{orientation}.jpg")
        save_exif_rotated(paths[-1], orientation)
    for path in paths:
        read = read_image(path)
        assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        from_bytes, from_path = decode_image(read.data), decode_image(path)
        assert from_bytes.format == from_path.format, path
        assert np.array_equal(from_bytes.pixels, from_path.pixels), path
    save_decompression_bomb(tmp_path / "bomb.png")
    save_truncated_jpeg(tmp_path / "truncated.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("bomb.png", "truncated.jpg", "empty.jpg"):
        messages = []
        for source in (read_image(tmp_path / name).data, tmp_path / name):
            with pytest.raises(DecodeError) as refusal:
                decode_image(source)
            messages.append(str(refusal.value))
        assert messages[0] == messages[1], messages


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _mp4(path: Path, picture) -> bytes:
    save_video(path, frames=6, fps=3.0, picture=picture)
    return path.read_bytes()


def _gif(*pictures) -> bytes:
    """An animation of ``pictures``, 1.5 s each: sampled at 1 fps, both are read."""
    buffer = io.BytesIO()
    first, *rest = (Image.fromarray(picture) for picture in pictures)
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=1500)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions of an image, a video and an animation, told apart by what a scan finds in
    them: {kind: [(bytes, width, faces), ...]} (a video's or an animation's faces: whether any
    frame has one)."""
    scratch = tmp_path_factory.mktemp("versions")
    blank = np.asarray(Image.fromarray(face_free()).resize((512, 512)))
    return {
        "image": [(_png(astronaut()), 512, 1), (_png(mosaic()), 1024, 4)],
        "video": [
            (_mp4(scratch / "a.mp4", astronaut()), 512, True),
            (_mp4(scratch / "b.mp4", face_free()), 600, False),
        ],
        "animation": [
            (_gif(blank, astronaut()), 512, True),
            (_gif(face_free(), face_free()[::-1]), 600, False),
        ],
    }


def _evidence(folder: Path, versions, images: int = 6) -> dict[str, list[bytes]]:
    """A folder of images, a video and an animation, each holding one of its two versions (the
    images in turn): {real path: [its two versions' bytes]}."""
    folder.mkdir()
    image, video, animation = (
        [data for data, _, _ in versions[kind]] for kind in ("image", "video", "animation")
    )
    files = {folder / f"photo_{i}.png": image[::-1] if i % 2 else image for i in range(images)}
    files[folder / "clip.mp4"] = video
    files[folder / "loop.gif"] = animation
    for path, (first, _) in files.items():
        path.write_bytes(first)
    return {os.path.realpath(path): both for path, both in files.items()}


class SwapAfterEveryOpen:
    """Each time an input is opened for reading, the path is replaced at once by the input's
    other version, atomically (as an editor or a sync tool saves): what was opened stays one
    version, and any second read of the path sees the other one."""

    def __init__(self, files: dict[str, list[bytes]], monkeypatch):
        self.files = files
        self.now = {path: 0 for path in files}  # the version at the path
        self.lock = threading.Lock()
        real_os_open, real_open = os.open, builtins.open
        self.real_open = real_open

        def os_open(path, flags, *args, **kwargs):
            descriptor = real_os_open(path, flags, *args, **kwargs)
            if not flags & (os.O_WRONLY | os.O_RDWR):
                self.swap(path)
            return descriptor

        def open_(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, Path)) and not set(mode) & set("wax+"):
                self.swap(file)
            return handle

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)

    def put(self, path: str, version: int) -> None:
        temp = f"{path}.swap"
        with self.real_open(temp, "wb") as handle:
            handle.write(self.files[path][version])
        os.replace(temp, path)
        self.now[path] = version

    def restore(self, path: str, sha256: str) -> None:
        """Put back the version whose SHA-256 is ``sha256``."""
        hashes = [hashlib.sha256(data).hexdigest() for data in self.files[path]]
        self.put(path, hashes.index(sha256))

    def swap(self, path) -> None:
        key = os.path.realpath(path)
        if key in self.files:
            with self.lock:
                self.put(key, 1 - self.now[key])


def _scan(weights, inputs, **outputs) -> int:
    request = ScanRequest(
        inputs=[str(path) for path in inputs],
        settings=ScanSettings(device="cpu", workers=2),
        weights=(str(weights),),
        quiet=True,
        **{key: str(value) for key, value in outputs.items()},
    )
    quiet = Console(file=io.StringIO())
    return run_scan(request, stdin=None, console=quiet, error_console=quiet)


def _file_records(path: Path) -> list[dict]:
    lines = check_scan_lines(path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line["type"] == "file"]


def _version_named(record: dict, versions) -> tuple[int, int | bool]:
    """The version whose SHA-256 the record carries: (width, faces) of it."""
    kind = {".mp4": "video", ".gif": "animation"}.get(Path(record["path"]).suffix, "image")
    hashes = [hashlib.sha256(data).hexdigest() for data, _, _ in versions[kind]]
    assert record["sha256"] in hashes, record
    _, width, faces = versions[kind][hashes.index(record["sha256"])]
    return width, faces


def _assert_findings_match_hash(record: dict, versions) -> None:
    width, faces = _version_named(record, versions)
    assert record["status"] != "error" and record["width"] == width, record
    found = len(record["faces"])
    assert (bool(found) if record["path"].endswith((".mp4", ".gif")) else found) == faces, record


def _thumbnail_widths(page: Page, name: str) -> list[int]:
    return [decoded(src).width for kind, _, src in page.section(name)["images"] if kind == "thumb"]


def test_inputs_replaced_after_every_open_keep_hash_faces_and_pictures_together(
    versions, weights, tmp_path, monkeypatch
):
    """A second read of any path during the scan would see the other version: faces, annotated
    copies and HTML pictures must all come from the version the record's hash names."""
    files = _evidence(tmp_path / "case", versions)
    swapper = SwapAfterEveryOpen(files, monkeypatch)
    out = tmp_path / "out"
    code = _scan(
        weights,
        [tmp_path / "case"],
        jsonl_path=out / "r.jsonl",
        html_path=out / "r.html",
        annotate_dir=out / "copies",
    )
    records = _file_records(out / "r.jsonl")
    assert len(records) == len(files)
    for record in records:
        _assert_findings_match_hash(record, versions)
        assert "changed_during_scan" not in record  # an atomic replacement never tears a read
    # a video's or an animation's annotated frames are read from the file again (its frames are
    # not kept): a file replaced since it was scanned gets no copy, and its record says why
    # (exit 3)
    torn = [record for record in records if "error" in record["annotation"]]
    assert all(record["path"].endswith((".mp4", ".gif")) for record in torn)
    assert all("changed since the scan" in record["annotation"]["error"] for record in torn)
    assert code == (3 if torn else 0)
    page = Page((out / "r.html").read_text(encoding="utf-8"))
    for record in records:
        if record["path"].endswith(".png"):
            width, _ = _version_named(record, versions)
            copy = Image.open(record["annotation"]["path"])
            assert copy.width == width, record["path"]  # drawn on the analysed version
            assert _thumbnail_widths(page, Path(record["path"]).name) == [min(width, 640)]

    # mfclip report reads each input once more: put every file back at the version its record
    # names; the report's read swaps it again, so a second read would draw the other version
    for record in records:
        swapper.restore(os.path.realpath(record["path"]), record["sha256"])
    assert report_from_jsonl(out / "r.jsonl", tmp_path / "again.html") == 0
    page = Page((tmp_path / "again.html").read_text(encoding="utf-8"))
    for record in records:
        width, faces = _version_named(record, versions)
        shown = _thumbnail_widths(page, Path(record["path"]).name)
        if record["path"].endswith(".png"):
            assert shown == [min(width, 640)], record["path"]
        else:  # a thumbnail per sampled frame with a face, of the version hashed
            assert shown == [width] * record["video"]["frames_with_faces"], shown
            assert bool(shown) == faces


def test_inputs_rewritten_by_another_process_during_a_scan(versions, weights, tmp_path):
    """The hostile environment of the issue: another process keeps replacing every input
    between its two versions while ``mfclip scan`` runs. No record may pair one version's hash
    with the other's findings."""
    files = _evidence(tmp_path / "case", versions, images=10)
    stop = threading.Event()
    swaps = [0]

    def rewrite_forever():
        now = dict.fromkeys(files, 0)
        while not stop.is_set():
            for path, both in files.items():
                now[path] = 1 - now[path]
                temp = f"{path}.swap"
                Path(temp).write_bytes(both[now[path]])
                os.replace(temp, path)
                swaps[0] += 1
            time.sleep(0.01)

    writer = threading.Thread(target=rewrite_forever, daemon=True)
    writer.start()
    environment = {key: value for key, value in os.environ.items() if key != "MFCLIP_WEIGHTS"}
    try:
        result = subprocess.run(
            [MFCLIP, "scan", str(tmp_path / "case"), "--weights", str(weights), "--jsonl", "-"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**environment, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        stop.set()
        writer.join()
    assert swaps[0] > 10 * len(files), swaps  # the files really moved under the scan
    lines = check_scan_lines(result.stdout.splitlines())
    records = [line for line in lines if line["type"] == "file"]
    assert len(records) == len(files), result.stderr
    for record in records:
        if record.get("changed_during_scan"):
            assert record["status"] == "error" and record["sha256"] is None, record
        else:
            _assert_findings_match_hash(record, versions)


def _after_the_first_frame(monkeypatch, act) -> None:
    """The scan's video reader calls ``act`` once it has read the first frame."""
    sample_video = scan_scanner.sample_video

    def sample(path, **kwargs):
        info, reader = sample_video(path, **kwargs)
        frames = reader._frames

        def then_act():
            for index, frame in enumerate(frames):
                yield frame
                if index == 0:
                    act()

        reader._frames = then_act()
        return info, reader

    monkeypatch.setattr(scan_scanner, "sample_video", sample)


def test_a_video_written_to_during_its_scan_is_flagged_without_a_hash(
    versions, weights, tmp_path, monkeypatch
):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(versions["video"][0][0])
    other = versions["video"][1][0]
    # in place: the same file, other bytes
    _after_the_first_frame(monkeypatch, lambda: clip.write_bytes(other))
    code = _scan(weights, [clip], jsonl_path=tmp_path / "r.jsonl", csv_path=tmp_path / "r.csv")
    assert code == 3  # an input that could not be scanned as one file
    (record,) = _file_records(tmp_path / "r.jsonl")
    assert record["status"] == "error" and record["changed_during_scan"] is True
    assert record["sha256"] is None and record["size"] is None and record["faces"] == []
    assert "changed while it was scanned" in record["error"]


def test_a_video_replaced_during_its_scan_is_scanned_as_the_file_that_was_opened(
    versions, weights, tmp_path, monkeypatch
):
    """Replacing the path (rename) leaves the opened file whole: the record names it and its
    frames, as a scan of it alone finds them."""
    clip = tmp_path / "clip.mp4"
    original, other = versions["video"][0][0], versions["video"][1][0]
    clip.write_bytes(original)
    assert _scan(weights, [clip], jsonl_path=tmp_path / "alone.jsonl") == 0

    def replace() -> None:
        (tmp_path / "new.mp4").write_bytes(other)
        os.replace(tmp_path / "new.mp4", clip)

    _after_the_first_frame(monkeypatch, replace)
    assert _scan(weights, [clip], jsonl_path=tmp_path / "r.jsonl") == 0
    (record,) = _file_records(tmp_path / "r.jsonl")
    assert record == _file_records(tmp_path / "alone.jsonl")[0]
    assert record["sha256"] == hashlib.sha256(original).hexdigest() and record["faces"]


class DiskFullAfter:
    """A report's stream on a disk that fills up after ``lines`` lines: ENOSPC from then on."""

    def __init__(self, stream, lines: int):
        self.stream, self.left = stream, lines

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= text.count("\n")
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def test_a_full_disk_names_the_report_and_resume_continues_it(
    versions, weights, tmp_path, monkeypatch
):
    folder = tmp_path / "case"
    folder.mkdir()
    for i in range(3):
        (folder / f"photo_{i}.png").write_bytes(versions["image"][0][0])
    report = tmp_path / "r.jsonl"
    real_open_sinks = scan_reports.open_sinks

    def sinks_on_a_full_disk(request, console):
        sinks = real_open_sinks(request, console)
        for sink in sinks:
            if isinstance(sink, JsonlSink):
                sink.stream = DiskFullAfter(sink.stream, lines=2)  # the meta and one record
        return sinks

    monkeypatch.setattr(scan_reports, "open_sinks", sinks_on_a_full_disk)
    with pytest.raises(OSError) as failure:
        _scan(weights, [folder], jsonl_path=report)
    message = failure.value.strerror
    assert f"cannot write {report}: {os.strerror(errno.ENOSPC)}" in message
    assert f"--resume --jsonl {report}" in message and "partial" in message
    assert [Path(r["path"]).name for r in _file_records(report)] == ["photo_0.png"]

    monkeypatch.setattr(scan_reports, "open_sinks", real_open_sinks)
    request = ScanRequest(
        inputs=[str(folder)],
        settings=ScanSettings(device="cpu"),
        weights=(str(weights),),
        jsonl_path=str(report),
        resume=True,
        quiet=True,
    )
    quiet = Console(file=io.StringIO())
    assert run_scan(request, stdin=None, console=quiet, error_console=quiet) == 0
    names = [Path(r["path"]).name for r in _file_records(report)]
    assert names == ["photo_0.png", "photo_1.png", "photo_2.png"]


class FullDisk(io.RawIOBase):
    """A file on a full disk: it can be emptied, and every write fails."""

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_disk_full_before_the_first_line_names_the_report_and_leaves_none(
    weights, tmp_path, monkeypatch
):
    """The meta line stayed in the stream's buffer: closing it failed again with an unnamed
    "No space left on device" (exit 1), and the empty report it left refused the retry."""
    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut()).save(photo)
    report = tmp_path / "r.jsonl"
    real_open_sinks = scan_reports.open_sinks

    def sinks_on_a_full_disk(request, console):
        sinks = real_open_sinks(request, console)
        for sink in sinks:
            if isinstance(sink, JsonlSink):  # writes fail as the kernel fails them, on flush
                sink.file.stream.close()
                full = io.TextIOWrapper(io.BufferedWriter(FullDisk()), encoding="utf-8")
                sink.stream = sink.file.stream = full
        return sinks

    monkeypatch.setattr(scan_reports, "open_sinks", sinks_on_a_full_disk)
    with pytest.raises(UsageError, match=f"cannot write {report}: No space left on device"):
        _scan(weights, [photo], jsonl_path=report)  # exit 2, the report named
    assert not report.exists()  # the retry is not refused


def test_a_full_disk_at_the_end_says_the_scan_finished(versions, weights, tmp_path, monkeypatch):
    """The JSON document is written as the run ends: a full disk then leaves a finished scan
    whose JSON Lines report is whole; the message said the reports were partial."""
    (tmp_path / "photo.png").write_bytes(versions["image"][0][0])
    report, document = tmp_path / "r.jsonl", tmp_path / "r.json"

    @contextlib.contextmanager
    def disk_full(path, *, overwrite=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield

    monkeypatch.setattr(json_reports, "atomic_writer", disk_full)
    with pytest.raises(OSError) as failure:
        _scan(weights, [tmp_path / "photo.png"], jsonl_path=report, json_path=document)
    assert "The scan finished and the other reports are whole" in failure.value.strerror
    assert "(room on a full disk)" in failure.value.strerror
    end = check_scan_lines(report.read_text(encoding="utf-8").splitlines())[-1]
    assert end["type"] == "end" and end["complete"] is True
    assert not document.exists()  # nothing at its name: a retry may write it


def test_a_second_scan_naming_a_staged_report_is_refused_at_its_start(tmp_path):
    """Audit Z2: two scans writing one --json both started (the document is written at the
    end); the later to finish threw its whole run away, blaming a full disk. The report is
    locked from the start now, by a hidden file beside it (nothing is at its name until it is
    whole: a run killed outright left an empty report that refused the rerun, audit R F1)."""
    document = tmp_path / "case.json"
    first = JsonSink(str(document))
    assert not document.exists()
    for second in (lambda: JsonSink(str(document)), lambda: HtmlSink(document, force=True)):
        with pytest.raises(ReportError, match="case.json is being written by another mfclip"):
            second()
    first.begin({"type": "meta"})
    first.close({"complete": True})
    assert json.loads(document.read_text())["meta"] == {"complete": True}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["case.json"]  # no lock left
    (tmp_path / ".killed.json.mfclip-lock").write_bytes(b"")  # a killed run's, unlocked
    JsonSink(str(tmp_path / "killed.json")).discard()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["case.json"]
    forced = JsonSink(str(document), force=True)  # the old report kept until the new one is
    assert json.loads(document.read_text())["meta"] == {"complete": True}
    forced.discard()
    assert json.loads(document.read_text())["meta"] == {"complete": True}
    unpublished = JsonSink(str(tmp_path / "new.json"))
    unpublished.discard()
    assert not (tmp_path / "new.json").exists()


def test_a_video_rewritten_with_its_times_set_back_beside_a_link_change_is_caught(
    versions, tmp_path
):
    """Audit Z3: a change time moved with the link count was taken for a rename alone; a write
    of the same size whose modification time was set back at the same time went unseen, and the
    record named the intact bytes' hash beside frames of the others."""
    clip = tmp_path / "clip.mp4"
    original = versions["video"][0][0]
    clip.write_bytes(original)
    with HeldVideo(clip) as video:
        os.link(clip, tmp_path / "second-name.mp4")  # a link alone: nothing written
        video.check_unchanged()
        before = clip.stat()
        with open(clip, "r+b") as handle:  # in place, the same size
            handle.seek(len(original) // 2)
            handle.write(bytes(64))
        os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))  # the link count changed
        with pytest.raises(InputChanged, match="its bytes differ from those hashed"):
            video.check_unchanged()


def test_an_image_written_within_its_reads_clock_tick_is_read_twice_and_caught(
    tmp_path, monkeypatch
):
    """A write landing in the clock tick of an image's read moves no timestamp: the record
    named bytes that were never the file, unflagged (audit O M2). A file written in the last
    two seconds is read a second time; the fstat here stands still, as it does in one tick."""
    from mfclip_cli.engines.scan import evidence

    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut()).save(photo)
    still = photo.stat()
    monkeypatch.setattr(evidence.os, "fstat", lambda fd: still)
    opened = evidence._open_regular

    class Rewritten:
        """The file, rewritten in place (the same size) just after its first read."""

        def __init__(self, handle):
            self.handle, self.reads = handle, 0

        def read(self, size):
            data = self.handle.read(size)
            self.reads += 1
            if self.reads == 1:
                with open(photo, "r+b") as other:
                    other.seek(len(data) // 2)
                    other.write(bytes(64))
            return data

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.handle.close()

    def rewritten_open(path):
        handle, status = opened(path)
        return Rewritten(handle), status

    monkeypatch.setattr(evidence, "_open_regular", rewritten_open)
    with pytest.raises(InputChanged, match="two reads of it differ"):
        read_image(photo)
    monkeypatch.setattr(evidence, "_open_regular", opened)  # a file at rest: read once, as it is
    monkeypatch.setattr(evidence.time, "time_ns", lambda: still.st_mtime_ns + 10**10)
    assert read_image(photo).data == photo.read_bytes()


def test_a_report_is_never_written_over_a_file_scanned(weights, tmp_path):
    """Audit Z6: --csv naming the input emptied it before it was read, and --json naming a file
    in the folder scanned replaced it at the end (exit 0), --force given. Refused (exit 2),
    whatever --force says, by file: a hard link to an input is one too."""
    photo = tmp_path / "case" / "photo.jpg"
    photo.parent.mkdir()
    Image.fromarray(astronaut()).save(photo)
    evidence = photo.read_bytes()
    os.link(photo, tmp_path / "linked.jpg")
    quiet = Console(file=io.StringIO())
    for inputs, option, target in (
        ([photo], "csv_path", photo),
        ([photo.parent], "json_path", photo),
        ([photo.parent], "jsonl_path", tmp_path / "linked.jpg"),
        ([photo], "html_path", tmp_path / "linked.jpg"),
    ):
        request = ScanRequest(
            inputs=[str(path) for path in inputs],
            settings=ScanSettings(device="cpu"),
            weights=(str(weights),),
            quiet=True,
            force=True,
            **{option: str(target)},
        )
        with pytest.raises(UsageError, match="a report is never written over evidence"):
            run_scan(request, stdin=None, console=quiet, error_console=quiet)
        assert photo.read_bytes() == evidence, option


def test_a_folder_named_without_media_is_said_and_recorded(weights, tmp_path):
    """Audit Z1: beside other inputs, an empty evidence folder left no trace (exit 0)."""
    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut()).save(photo)
    (tmp_path / "empty").mkdir()
    said = io.StringIO()
    request = ScanRequest(
        inputs=[str(photo), str(tmp_path / "empty")],
        settings=ScanSettings(device="cpu"),
        weights=(str(weights),),
        quiet=True,
        jsonl_path=str(tmp_path / "r.jsonl"),
        html_path=str(tmp_path / "r.html"),
    )
    code = run_scan(
        request,
        stdin=None,
        console=Console(file=io.StringIO()),
        error_console=Console(file=said, width=400),
    )
    assert code == 0
    meta = check_scan_lines((tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines())[0]
    assert meta["folders_without_media"] == [str(tmp_path / "empty")]
    assert "1 folder(s) named held no image or video" in said.getvalue()
    summary = (tmp_path / "r.html").read_text(encoding="utf-8").split("<h2>Summary</h2>")[1]
    assert "folders named holding no image or video" in summary.split("</table>")[0]


@pytest.mark.parametrize(
    "opener",
    [
        lambda path: JsonlSink(str(path)),
        lambda path: JsonSink(str(path)),
        lambda path: CsvSink(str(path)),
        lambda path: HtmlSink(path),
        lambda path: AnnotateSink(str(path)),
    ],
    ids=["jsonl", "json", "csv", "html", "annotate"],
)
def test_an_output_under_a_regular_file_is_not_a_directory(opener, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target in (blocker / "report", blocker / "deeper" / "report"):
        with pytest.raises(ReportError) as refusal:
            opener(target)
        assert str(refusal.value) == f"cannot write {target}: {blocker} is a file, not a directory"
    assert blocker.read_text() == "" and sorted(tmp_path.iterdir()) == [blocker]


def _lines_file(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("ends", "partial"),
    [
        # interrupted, then resumed to the end: the last end line counts
        ([{"complete": False, "files_written": 1}, {"complete": True, "files_written": 1}], False),
        # finished, then a resumed run that died after a record: partial
        ([{"complete": True, "files_written": 1}, None], True),
    ],
    ids=["resumed-to-the-end", "resume-died"],
)
def test_mfclip_report_takes_a_resumed_reports_last_end_line(ends, partial, tmp_path):
    meta = {"type": "meta", "weights": {"name": "w", "sha256": "0" * 64}, "cwd": str(tmp_path)}
    lines = [meta]
    for i, end in enumerate(ends):
        lines.append({"type": "file", "path": f"gone_{i}.png", "status": "error", "error": "x"})
        if end is not None:
            lines.append({"type": "end", **end})
    report_from_jsonl(_lines_file(tmp_path / "r.jsonl", lines), tmp_path / "r.html")
    assert ("Partial report" in (tmp_path / "r.html").read_text(encoding="utf-8")) == partial


def test_hashing_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    """``sha256_file`` (prepare's, the checkpoints') opens regular files only: a FIFO in a
    manifest would otherwise block the run forever."""
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(NotARegularFile, match="not a regular file"):
        sha256_file(tmp_path / "pipe.png")


def test_a_file_named_directly_that_cannot_be_read_is_worded_as_the_walk_words_it(tmp_path):
    """A broken link, a link loop, a FIFO or a socket named on the command line read "cannot
    read file: No such file or directory" (and others) where a folder's walk said "broken
    symbolic link: ...": a pipeline grouping records by ``error`` saw two faults for one."""
    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "pipe.mp4")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "sock.jpg"))
        os.symlink(tmp_path / "deleted.png", tmp_path / "gone.png")
        os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
        walked = {item.path.name: item.error for item in collect_inputs([str(tmp_path)])}
        named = {}
        for name in walked:
            with pytest.raises(DecodeError) as refusal:
                HeldVideo(tmp_path / name) if name.endswith(".mp4") else read_image(tmp_path / name)
            named[name] = str(refusal.value)
    assert sorted(named) == ["gone.png", "loop.jpg", "pipe.jpg", "pipe.mp4", "sock.jpg"]
    assert named == walked


def test_names_as_reports_and_terminals_show_them():
    """Reports hold a name's bytes that are not UTF-8 as \\xNN (any other lone surrogate, say
    from a JSON escape, as \\uNNNN); terminals also get its control characters escaped."""
    assert readable("été.jpg") == "été.jpg"
    assert readable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert readable("x\ud800y.jpg") == "x\\ud800y.jpg"
    assert shown("a\x1b[31mb\nc\x9b\x7f.jpg") == "a\\x1b[31mb\\nc\\x9b\\x7f.jpg"
    assert shown(os.fsdecode(b"caf\xe9\t.jpg")) == "caf\\xe9\\t.jpg"


def test_names_differing_by_an_invisible_character_are_shown_apart():
    """A zero-width space or a right-to-left override (Unicode's format characters) passed
    through ``shown``: ``a.jpg`` and ``a<U+200B>.jpg`` looked alike with different verdicts."""
    assert shown("a\u200b.jpg") == "a\\u200b.jpg" != shown("a.jpg") == "a.jpg"
    assert shown("x\u202egpj.exe") == "x\\u202egpj.exe"
    assert shown("\ufeffz\U000e0041.png") == "\\ufeffz\\U000e0041.png"  # BOM, a tag letter
    assert shown("été 日本 😀.jpg") == "été 日本 😀.jpg"  # visible text as it is
