"""The batched scan path against the plain one: facenet's ``MTCNN.detect`` image by image, then one
aligned face at a time through the model in fp32. Batching must not change what is found or said."""

import gc
import signal

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from media import (
    MP_DISPARITY,
    MP_UNDEFINED,
    astronaut,
    face_free,
    iou,
    mosaic,
    save_mpo,
    save_pages,
    save_video,
)
from PIL import Image

from mfclip_cli.engines.runtime import long_lived_imports, sigterm_as_ctrl_c
from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.faces import align_faces, sample_video
from mfclip_cli.model import build_model

PROBABILITY_TOLERANCE = 1e-4  # fp32 batched vs one-by-one matmuls differ around 1e-6


def test_batched_scan_matches_the_plain_per_image_per_face_path(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    images = [
        astronaut(),
        mosaic(),
        np.ascontiguousarray(astronaut()[:, ::-1]),
        np.asarray(
            Image.fromarray(mosaic()).resize((400, 400), Image.Resampling.BICUBIC)
        ),  # another size group
    ]
    fast = Scanner(model, ScanSettings(device="cpu", batch_size=3), torch.device("cpu")).faces_of(
        images
    )

    library = MTCNN(keep_all=True, device="cpu")
    crop, margin = tiny_config.preprocess.crop_size, tiny_config.preprocess.margin
    for pixels, found in zip(images, fast):
        boxes, _, landmarks = library.detect(Image.fromarray(pixels), landmarks=True)
        assert len(found) == len(boxes)
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
        for box, points in zip(boxes, landmarks):
            match = max(found, key=lambda item: iou(item[0].box, box))
            assert iou(match[0].box, box) >= 0.95
            face = align_faces(tensor, np.asarray(points, dtype=np.float64)[None], crop, margin)
            with torch.no_grad():
                plain = torch.softmax(model(face).float(), dim=-1)[0].numpy()
            assert np.abs(plain - match[1]).max() < PROBABILITY_TOLERANCE


def test_scan_workers_give_the_records_of_one_batched_pass(tmp_path, tiny_config):
    """On CPU each worker analyses its own images; that must not change a face or a probability."""
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    images = [astronaut(), mosaic(), np.ascontiguousarray(astronaut()[:, ::-1])]
    paths = []
    for i, pixels in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    scanner = Scanner(
        model, ScanSettings(device="cpu", batch_size=4, workers=3, frames=5), torch.device("cpu")
    )
    classes = scanner.model_stage.classes
    records = list(scanner.scan([InputItem(path) for path in paths]))
    batched = scanner.faces_of(images)
    assert [record.path for record in records] == [str(path) for path in paths]
    for record, found in zip(records, batched):
        assert len(record.faces) == len(found) > 0
        for face, (detection, probs, *_) in zip(record.faces, found):
            assert iou(face.box, detection.box) >= 0.99
            assert (
                max(abs(face.probs[name] - p) for name, p in zip(classes, probs))
                < PROBABILITY_TOLERANCE
            )

    # a video's frames are shared out among the workers the same way, and come back in frame order
    save_video(tmp_path / "clip.mp4", frames=5)
    (video,) = list(scanner.scan([InputItem(tmp_path / "clip.mp4")]))
    frames = [frame.pixels for frame in sample_video(tmp_path / "clip.mp4", fps=None, frames=5)[1]]
    assert video.video["frames_sampled"] == 5 and [face.frame for face in video.faces] == list(
        range(5)
    )
    for face, ((detection, probs, *_),) in zip(video.faces, scanner.faces_of(frames)):
        assert iou(face.box, detection.box) >= 0.99
        assert (
            max(abs(face.probs[name] - p) for name, p in zip(classes, probs))
            < PROBABILITY_TOLERANCE
        )

    # a TIFF's pages likewise, each page's faces under its index
    blank = np.ascontiguousarray(face_free()[:512, :512])
    save_pages(tmp_path / "pages.tif", [images[0], blank, images[1]])
    (pages,) = list(scanner.scan([InputItem(tmp_path / "pages.tif")]))
    assert [face.frame for face in pages.faces] == [0] + [2] * len(batched[1])
    for face, (detection, *_) in zip(pages.faces, batched[0] + batched[1]):
        assert iou(face.box, detection.box) >= 0.99

    def scanned(paths: list, in_workers: bool, chunk: int = 8) -> tuple[list, list[int]]:
        """The records of ``paths`` and the sizes of the detection batches that found them."""
        batches, faces_of = [], scanner.faces_of
        scanner.faces_of = lambda pixels: batches.append(len(pixels)) or faces_of(pixels)
        scanner.analyse_in_workers, scanner.chunk_images = in_workers, chunk
        try:
            return list(scanner.scan([InputItem(path) for path in paths])), batches
        finally:
            scanner.analyse_in_workers, scanner.chunk_images = True, 8
            scanner.faces_of = faces_of

    # a photo beside its HDR gain map (an MPO's second image) is scanned as an image is: in a
    # worker on CPU, in the chunk's batch on a GPU (alone, it was a batch of one: audit AE M3)
    grey = np.repeat(images[0].mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    photos = [tmp_path / f"hdr{i}.jpg" for i in range(3)]
    for photo in photos:
        save_mpo(photo, [images[0], grey], {1: MP_UNDEFINED})
    (hdr, on_cpu), (hdr_batched, on_gpu) = scanned(photos, True), scanned(photos, False)
    assert (on_cpu, on_gpu) == ([1, 1, 1], [3])  # a photo per worker; one batch on a GPU
    for ours, theirs in zip(hdr, hdr_batched):
        assert [face.frame for face in ours.faces] == [face.frame for face in theirs.faces] == [0]
        assert ours.pictures_passed_over == [1]
        assert iou(ours.faces[0].box, theirs.faces[0].box) > 0.99
    # a stereo camera's two views likewise: one file at a time, a GPU got batches of two
    stereo = [tmp_path / f"stereo{i}.mpo" for i in range(3)]
    for photo in stereo:
        save_mpo(photo, [images[0], images[2]], {1: MP_DISPARITY})
    (views, on_cpu), (views_batched, on_gpu) = scanned(stereo, True), scanned(stereo, False)
    assert (on_cpu, on_gpu) == ([2, 2, 2], [6])  # a file per worker; one batch on a GPU
    for ours, theirs in zip(views, views_batched):
        assert [face.frame for face in ours.faces] == [face.frame for face in theirs.faces]
        assert [face.frame for face in ours.faces] == [0, 1]
    # a file's views that would overflow the chunk start the next one (audit AG M2: a batch
    # reached twice the chunk)
    assert scanned(stereo, False, chunk=3)[1] == [2, 2, 2]

    # the GPU layout (workers only decode, analysis batched by chunk here), run on CPU: the same
    # records
    (tmp_path / "notes.txt").write_text("not an image")
    inputs = [
        InputItem(path)
        for path in [
            paths[0], tmp_path / "notes.txt", tmp_path / "clip.mp4", tmp_path / "pages.tif",
            *paths[1:],
        ]
    ]  # fmt: skip
    per_core = [record.to_dict() for record in scanner.scan(inputs)]
    scanner.analyse_in_workers = False
    scanner.chunk_images = 2  # the video's 5 frames in three chunks, each continuing the last
    batched = [record.to_dict() for record in scanner.scan(inputs)]
    assert [record["path"] for record in batched] == [str(item.path) for item in inputs]
    assert batched[2]["video"]["frames_sampled"] == 5 and batched[2]["video"]["incomplete"] is None
    assert [record["status"] for record in batched] == ["ok", "error", "ok", "ok", "ok", "ok"]
    assert [face["frame"] for face in batched[3]["faces"]] == [0] + [2] * len(pages.faces[1:])
    for ours, theirs in zip(batched, per_core):
        assert len(ours["faces"]) == len(theirs["faces"])
        for face, other in zip(ours["faces"], theirs["faces"]):
            assert iou(face["box"], other["box"]) >= 0.99 and face.get("frame") == other.get(
                "frame"
            )
            assert (
                max(abs(face["probs"][name] - other["probs"][name]) for name in classes)
                < PROBABILITY_TOLERANCE
            )


def test_worker_counts_follow_the_cores(monkeypatch):
    """CPU: one worker per core. GPU: decoding workers on all cores but one, at least 2, at
    most 16."""
    import types

    import mfclip_cli.engines.scan.scanner as scan_engine

    def workers(device: str, cores: int, asked: int = 0) -> int:
        monkeypatch.setattr(scan_engine, "available_cores", lambda: cores)
        scanner = types.SimpleNamespace(
            settings=ScanSettings(workers=asked), analyse_in_workers=device == "cpu"
        )
        return Scanner.workers.fget(scanner)

    assert [workers("cpu", 2), workers("cpu", 32), workers("cpu", 32, asked=3)] == [2, 32, 3]
    assert [
        workers("cuda", 1),
        workers("cuda", 8),
        workers("cuda", 64),
        workers("cuda", 64, asked=40),
    ] == [2, 7, 16, 40]


def test_long_lived_imports_pause_the_collector_then_freeze_what_they_made():
    """The scan's engine imports run with the collector paused; afterwards it runs again (also
    when an import fails) and what the imports made is out of its passes."""
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        with long_lived_imports():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(kept)
        with pytest.raises(ImportError), long_lived_imports():
            import mfclip_cli.no_such_module  # noqa: F401
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_ctrl_c_during_the_imports_waits_for_their_end():
    """torch swallows a KeyboardInterrupt raised while it imports NumPy from C++, leaving NumPy
    half made: the signal is held until the imports are done, then raised."""
    handler = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), long_lived_imports():
        signal.raise_signal(signal.SIGINT)
        done.append("the rest of the imports")
    assert done and signal.getsignal(signal.SIGINT) is handler


def test_a_sigterm_at_start_up_ends_the_scan_as_ctrl_c_does():
    """SIGTERM while the scan loaded killed it at once (143, no word); held through the imports,
    it now ends the run as an interrupt (the CLI says "interrupted", exit 130)."""
    handler = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        with long_lived_imports():
            signal.raise_signal(signal.SIGTERM)
            done.append("the rest of the imports")
    assert done and signal.getsignal(signal.SIGTERM) is handler


def test_a_video_whose_analysis_fails_is_that_files_error_record(tiny_config, tmp_path):
    """An image whose analysis raises gets an error record; a video's ended the whole run."""
    model = build_model(tiny_config).eval()
    save_video(tmp_path / "clip.mp4", frames=3)
    Image.fromarray(astronaut()).save(tmp_path / "face.png")
    scanner = Scanner(model, ScanSettings(device="cpu", workers=1, frames=3), torch.device("cpu"))
    analyse, calls, photo = scanner.faces_of, [], astronaut()

    def faces_of(images):
        # the video's first frames (decoded from mp4, never the photo's exact pixels); the
        # photo may be analysed first, in a worker thread ahead of the video's frames
        if not calls and not any(np.array_equal(image, photo) for image in images):
            calls.append(len(images))
            raise RuntimeError("broken kernel")
        return analyse(images)

    scanner.faces_of = faces_of
    video, image = scanner.scan(
        [InputItem(tmp_path / "clip.mp4"), InputItem(tmp_path / "face.png")]
    )
    assert (
        video.status == "error"
        and video.error == "face analysis failed: RuntimeError: broken kernel"
    )
    assert image.status == "ok" and len(image.faces) == 1
