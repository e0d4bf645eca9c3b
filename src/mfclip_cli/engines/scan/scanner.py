"""The scanner: inputs -> read and hash -> decode -> detect -> align -> the model stage
(``model_stage.py``) -> per-file records.

Images are processed in chunks (detection batched per chunk, classification batched over all
faces of the chunk), so memory stays flat in the number of files while records still come out
one per input, in input order. A failure in one file never stops the run: it becomes that file's
error record.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from mfclip_cli.engines.runtime import available_cores, available_memory
from mfclip_cli.engines.scan.duplicates import perceptual_hash
from mfclip_cli.engines.scan.evidence import HeldVideo, ImageBytes, InputChanged, read_image
from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.model_stage import FoundFace, ModelStage, Scorer
from mfclip_cli.engines.scan.records import STATUS_ERROR, STATUS_NO_FACE, STATUS_OK, FileRecord
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.tracks import link_tracks, track_summaries
from mfclip_cli.errors import CheckpointError
from mfclip_cli.faces.decode import (
    ANIMATION_FORMATS,
    DecodedImage,
    DecodeError,
    FrameReader,
    StillPictures,
    VideoFrame,
    VideoInfo,
    decode_image,
    holds_video,
    is_video,
    sample_animation,
    sample_video,
)
from mfclip_cli.faces.decoder_warnings import heard_while_decoding
from mfclip_cli.faces.detect import Detection
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch
from mfclip_cli.model import Detector
from mfclip_cli.provenance import ProvenanceRecord, inspect, inspect_video

# what finding one image's faces takes in memory per pixel searched: the integral image (float64
# above 8.4 megapixels), the first pyramid level and P-Net's activations (measured on CPU: 80 to
# 100 MB a megapixel, 7.2 GB for a 98-megapixel PNG)
DETECTION_BYTES_PER_PIXEL = 100
MEMORY_SHARE = 0.6  # of the memory available when the scan starts, for the workers' detections


# the views of a still image of several decoded and analysed together, as a chunk's photos are,
# where their pixels are at most this (``Scanner._open_views``); more are streamed
CHUNKED_VIEWS_PIXELS = 64_000_000
# what an input's pending analysis holds: an image's pixels, or the views of a still image of
# several (``Scanner._open_views``), or None
Pictures = np.ndarray | list[VideoFrame] | None


class MemoryBudget:
    """At most ``capacity`` bytes of detection at once among the workers; an image that needs
    more runs alone. One worker per core on 48-megapixel phone photos wanted about 5 GB each at
    once: a laptop's memory, and the scan killed without its end line."""

    def __init__(self, capacity: int | None):
        self.capacity = capacity
        self.in_use = 0
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def held(self, cost: int) -> Iterator[None]:
        if self.capacity is None:
            yield
            return
        with self.changed:
            self.changed.wait_for(lambda: self.in_use == 0 or self.in_use + cost <= self.capacity)
            self.in_use += cost
        try:
            yield
        finally:
            with self.changed:
                self.in_use -= cost
                self.changed.notify_all()


class Scanner:
    """Faces and their class probabilities for files, in input order, by one checkpoint or by
    several side by side."""

    def __init__(
        self,
        model: Detector | Sequence[Scorer],
        settings: ScanSettings,
        device: torch.device,
    ):
        """``model``: the scorers of one checkpoint or several, the primary first (a bare
        detector: uncalibrated, without statistics, as the benchmark runs it). Each face is
        detected once and aligned once per crop geometry the checkpoints read."""
        scorers = model if isinstance(model, (list, tuple)) else [Scorer(model)]
        self.model_stage = ModelStage(scorers, settings, device)
        self.settings = settings
        self.device = device
        # On CPU each worker analyses whole images (or frames); on a GPU the workers only decode and
        # analysis is batched here on the device. Tests switch this to run the GPU layout on CPU.
        self.analyse_in_workers = device.type == "cpu"
        available = available_memory()
        self.memory = MemoryBudget(
            int(MEMORY_SHARE * available) if available and self.analyse_in_workers else None
        )
        # On a GPU a chunk is one detection batch and, at a face or more per image, a full model
        # batch, up to 32 images: two chunks of decoded 24-megapixel photos are then 4.6 GB of
        # memory.
        gpu_chunk = min(max(8, settings.batch_size), 32)
        # images (or video frames) analysed together
        self.chunk_images = 8 if device.type == "cpu" else gpu_chunk
        scorers = self.model_stage.scorers
        (crop_size, margin), *more = dict.fromkeys(scorer.geometry for scorer in scorers)
        self.cropper = FaceCropper(
            FaceSearch(
                crop_size=crop_size,
                margin=margin,
                min_face=settings.min_face,
                thresholds=settings.detection_thresholds,
                detect_max_side=settings.detect_max_side,
                more_crops=tuple(more),
            ),
            device,
        )

    def faces_of(self, images: Sequence[np.ndarray]) -> list[list[FoundFace]]:
        """Detect and align the faces of several RGB images (each face once, at every crop
        geometry the checkpoints read) and have the model stage score them."""
        return self.model_stage.score(images, self.cropper(images))

    def _faces_in_worker(self, images: Sequence[np.ndarray]) -> list[list[FoundFace]]:
        """``faces_of`` in a worker, once the memory its detection takes is free
        (``MemoryBudget``)."""
        cost = 0
        for pixels in images:
            height, width = pixels.shape[:2]
            shrink = self.cropper.detector.detection_scale(height, width)
            cost += int(DETECTION_BYTES_PER_PIXEL * height * width * shrink * shrink)
        with self.memory.held(cost):
            return self.faces_of(images)

    # -- files -------------------------------------------------------------------------------
    @property
    def smallest_face(self) -> float:
        """The smallest face searched for, in original pixels, wherever detection is at full
        resolution."""
        return self.cropper.detector.full_resolution_smallest_face

    def _note_smallest_face(self, record: FileRecord) -> None:
        """A file detected on a downscaled copy (``--detect-max-side``) says how small a face it
        could see."""
        record.smallest_face = self._smallest_face_in(record.height, record.width)

    def _smallest_face_in(self, height: int, width: int) -> int | None:
        """The smallest face a picture of this size is searched for, in its pixels, where
        detection downscales it (else None: the meta's ``min_face``)."""
        smallest = self.cropper.detector.smallest_face(height, width)
        return math.ceil(smallest) if smallest > self.smallest_face * (1 + 1e-9) else None

    def open_record(self, item: InputItem) -> FileRecord:
        """The record of one input, its bytes read once (``scan/evidence.py``): an image whole,
        hashed, to be decoded from the same buffer; a video held open by its descriptor and
        hashed through it. Its ``source`` holds what was read."""
        record = _record_of(item)
        if item.error:
            return record.fail(item.error)
        try:
            if holds_video(item.path):  # by its bytes where its name misleads
                source = HeldVideo(item.path)
            else:
                source = read_image(item.path, self.settings.max_pixels)
        except DecodeError as error:
            return record.fail(str(error))
        except InputChanged as error:
            return record.changed(str(error))
        record.source, record.sha256, record.size = source, source.sha256, source.size
        return record

    def _finish_images(
        self, pending: list[tuple[FileRecord, Pictures, object]]
    ) -> Iterator[FileRecord]:
        """Records for decoded images (and the views of stills of a few: ``_open_views``), their
        faces found by the workers (CPU) or here in one batch (GPU)."""
        waiting = [
            i
            for i, (_, pixels, faces) in enumerate(pending)
            if pixels is not None and faces is None
        ]
        owners, arrays = [], []  # each picture to analyse, and the entry it is of
        for i in waiting:
            for array in _arrays(pending[i][1]):
                owners.append(i)
                arrays.append(array)
        found: dict[int, list] = {i: [] for i in waiting}
        for i, faces in zip(owners, _each_isolated(self.faces_of, arrays)):
            found[i].append(faces)
        for i in waiting:
            record, pixels, _ = pending[i]
            pending[i] = (record, pixels, found[i] if isinstance(pixels, list) else found[i][0])
        for record, pixels, faces in pending:
            if pixels is not None:
                self._faces_into(record, pixels, faces)
            yield record

    def _faces_into(self, record: FileRecord, pixels: Pictures, faces: object) -> None:
        """``record``'s faces, from those found in its image or in each of its views, or the
        error that stopped the analysis."""
        views = pixels if isinstance(pixels, list) else [None]
        results = faces if isinstance(pixels, list) else [faces]
        failure = next((result for result in results if isinstance(result, Exception)), None)
        if failure is not None:  # as ``scan_pictures`` says it (audit AG L2)
            record.fail(f"face analysis failed: {type(failure).__name__}: {failure}")
            record.pictures_in_file = record.pictures_passed_over = record.pictures_unread = None
            return
        if not isinstance(pixels, list) and record.stills:  # the only view of several
            views = [VideoFrame(record.source.image.index, None, pixels)]
        for view, found in zip(views, results):
            record.faces += self.model_stage.face_records(found, len(record.faces), view)
        record.status = STATUS_OK if record.faces else STATUS_NO_FACE

    def _analysed_frames(
        self, frames: Iterator[VideoFrame]
    ) -> Iterator[tuple[VideoFrame, list[tuple[Detection, np.ndarray]]]]:
        """Each sampled frame with its classified faces, in frame order.

        On CPU the workers analyse one frame each, as they do images, while this thread decodes the
        next ones (at most two per worker ahead); on a GPU frames go to the device in chunks.
        """
        if not self.analyse_in_workers:
            while chunk := list(itertools.islice(frames, self.chunk_images)):
                yield from zip(chunk, self.faces_of([frame.pixels for frame in chunk]))
            return
        with self.worker_pool("frames") as pool:
            for frame, (found,) in _in_order_ahead(
                pool, lambda frame: self._faces_in_worker([frame.pixels]), frames, 2 * self.workers
            ):
                yield frame, found

    def _sampled(self, path: Path, source: HeldVideo | ImageBytes) -> tuple[VideoInfo, FrameReader]:
        """The sampled frames of a video held open (through the descriptor that was hashed) or of
        an animation (from the bytes that were hashed)."""
        settings = self.settings
        if isinstance(source, ImageBytes):
            return sample_animation(
                source.data, settings.fps, settings.frames, max_pixels=settings.max_pixels
            )
        return sample_video(source.decoder_path, fps=settings.fps, frames=settings.frames)

    def scan_video(self, path: Path, record: FileRecord) -> FileRecord:
        """The record of a video held open by ``open_record``, or of an animation read whole
        (``DecodedImage.animated``): its frames decoded from what was hashed, and an error without
        the hash when a video was written to between the hash and the last frame."""
        settings = self.settings
        source, record.source = record.source, None
        held = source if isinstance(source, HeldVideo) else contextlib.nullcontext()
        # an animation whose first picture decoded: where none of its frames does, that picture
        # is scanned (``_first_picture_alone``)
        first_decoded = isinstance(source, ImageBytes) and source.image is not None
        sampled, with_faces, frames_found = 0, 0, 0
        with held:
            try:
                info, frames = self._sampled(path, source)
                frames_found = info.frame_count
                if isinstance(source, HeldVideo):
                    container = path.suffix.lstrip(".").upper() if is_video(path) else "video"
                    record.format = f"{container} ({info.codec})"
                    record.width, record.height = info.width, info.height
                    self._note_smallest_face(record)
                for frame, found in self._analysed_frames(frames):
                    sampled += 1
                    with_faces += bool(found)
                    start = len(record.faces)
                    record.faces += self.model_stage.face_records(found, start, frame)
            except DecodeError as error:
                if sampled or not first_decoded:
                    record.fail(str(error))
            except CheckpointError:  # the model's fault, not the video's: the scan stops
                raise
            except Exception as error:  # noqa: BLE001 - one video's fault, as an image's is
                record.fail(f"face analysis failed: {type(error).__name__}: {error}")
            try:
                if isinstance(source, HeldVideo):
                    source.check_unchanged()
            except InputChanged as error:
                return record.changed(str(error))
        if record.status == STATUS_ERROR:
            return record
        if sampled == 0 and first_decoded:
            return self._first_picture_alone(record, source, frames_found)
        if sampled == 0:
            kind = "video" if isinstance(source, HeldVideo) else "animation"
            return record.fail(f"{kind} has no readable frames")
        cuts = frames.shots.cuts()
        stage = self.model_stage
        classes = stage.classes
        probs = np.array([[face.probs[name] for name in classes] for face in record.faces]).reshape(
            -1, 3
        )
        record.video = {
            "fps": round(info.fps, 3),
            "frame_count": info.frame_count,
            "duration": round(info.duration, 3),
            "sampling": {"frames": settings.frames} if settings.frames else {"fps": settings.fps},
            "frames_sampled": sampled,
            # sampled frames that could not be decoded, and why where it is more than a
            # container's estimated length (decode.FrameReader.shortfall)
            "frames_unread": frames.unread,
            "incomplete": frames.shortfall(),
            "frames_with_faces": with_faces,
            "faces": len(record.faces),
            "mean": dict(zip(classes, np.round(probs.mean(0), 6).tolist())) if len(probs) else None,
            "max": dict(zip(classes, np.round(probs.max(0), 6).tolist())) if len(probs) else None,
            # where the shots change (faces.shots): every track ends at a cut
            "cuts": [{"frame": cut.frame, "time": round(cut.time, 3)} for cut in cuts],
        }
        link_tracks(record.faces, [cut.frame for cut in cuts])
        record.video["tracks"] = track_summaries(
            record.faces, classes, stage.label, stage.leaning_label
        )
        record.status = STATUS_OK if record.faces else STATUS_NO_FACE
        return record

    def _first_picture_alone(
        self, record: FileRecord, source: ImageBytes, frames_found: int
    ) -> FileRecord:
        """The record of an animation none of whose frames decodes but whose first picture did:
        an APNG's default image, what a viewer then shows (the APNG spec), scanned as a still
        image's pictures are, and each frame after it found said unread (exit 3). It was an
        error, "animation has no readable frames", of a picture the record gave the size of
        (audit AH F3)."""
        most = 1 + max(frames_found, 1)  # an animation has a frame after its first picture
        source.pictures = StillPictures(source.data, self.settings.max_pixels, most=most)
        record.source = source
        return self.scan_pictures(record)

    def scan_pictures(self, record: FileRecord) -> FileRecord:
        """The record of a still image of several pictures (``DecodedImage.stills``: a TIFF's
        pages, a HEIF's images, an MPO's views), each picture's faces found as a frame's are,
        from the bytes that were hashed; a picture that cannot be decoded is said
        (``pictures_unread``), and the others scanned."""
        source, record.source = record.source, None
        pictures, sizes = source.pictures, []
        try:
            for picture, found in self._analysed_frames(iter(pictures)):
                sizes.append((picture.height, picture.width))
                start = len(record.faces)
                record.faces += self.model_stage.face_records(found, start, picture)
        except CheckpointError:  # the model's fault, not the file's: the scan stops
            raise
        except Exception as error:  # noqa: BLE001 - one file's fault
            return record.fail(f"face analysis failed: {type(error).__name__}: {error}")
        if not self._note_pictures(record, pictures, sizes):
            return record
        record.status = STATUS_OK if record.faces else STATUS_NO_FACE
        return record

    def _note_pictures(
        self, record: FileRecord, pictures: StillPictures, sizes: list[tuple[int, int]]
    ) -> bool:
        """What ``record`` says of the pictures of a still image of several once its views
        were read (``sizes``: each one's height and width): how many, those passed over and
        unread, its size where its first could not be decoded, the largest ``smallest_face``
        of theirs (audit AE L2). False, and
        ``record`` an error, where no view could be read: a thumbnail's or a gain map's verdict
        is no photo's (audit AF F1)."""
        if not sizes:
            why = pictures.unread[0][1] if pictures.unread else "no picture"
            failure = f"none of its {len(pictures.views)} view(s) could be decoded: {why}"
            if pictures.passed_over:
                failure += (
                    f"; its {len(pictures.passed_over)} other picture(s), a smaller copy, a map "
                    "or a layer of a view, not scanned in its place"
                )
            record.fail(failure)
            return False
        record.pictures_in_file = pictures.count
        record.pictures_passed_over = pictures.passed_over or None
        record.pictures_unread = [
            {"picture": index, "error": why} for index, why in pictures.unread
        ] or None
        if record.width is None:  # its first picture could not be decoded
            record.height, record.width = sizes[0]
        smallest = [self._smallest_face_in(height, width) or 0 for height, width in sizes]
        record.smallest_face = max(smallest) or None
        return True

    def _open(self, item: InputItem, skip: Callable[[FileRecord], bool] | None):
        """Read, hash, decode and, on CPU, analyse one input (in a worker thread).

        Returns (record, pixels, the classified faces or the error that stopped them, or None when
        still to do); an input ``skip`` says is done already is a record marked ``resumed``,
        neither decoded nor analysed. A failure nobody
        foresaw (a library meeting a file damaged in a new way) is that file's error record: one
        file never ends the scan.
        """
        with heard_while_decoding() as heard:
            try:
                opened = self._open_input(item, skip)
            except CheckpointError:  # the model's fault, not the file's: the scan stops
                raise
            except Exception as error:  # noqa: BLE001 - reported in that file's record
                failure = f"cannot read this file ({type(error).__name__}: {error})"
                opened = _record_of(item).fail(failure), None, None
        opened[0].heard(heard)
        return opened

    def _open_input(self, item: InputItem, skip: Callable[[FileRecord], bool] | None):
        record = self.open_record(item)
        if record.status == STATUS_ERROR:
            return record, None, None
        if skip is not None and skip(record):
            if isinstance(record.source, HeldVideo):
                record.source.close()
            record.source, record.resumed = None, True
            return record, None, None
        if isinstance(record.source, HeldVideo):
            self._inspect_provenance(item.path, record, None)
            return record, None, None
        source, max_pixels = record.source, self.settings.max_pixels
        try:
            # the bytes just hashed, never the path again
            image = source.image = decode_image(source.data, max_pixels)
        except DecodeError as error:
            self._inspect_provenance(item.path, record, None)
            # a TIFF whose first page is damaged, or over the limit: its other pages are scanned
            source.pictures = _several_stills(source.data, max_pixels)
            if source.pictures is None:
                return record.fail(str(error)), None, None
            record.format = source.pictures.format
            return record, None, None
        self._inspect_provenance(item.path, record, image.pixels)
        record.format, record.width, record.height = image.format, image.width, image.height
        if image.stills:
            pictures = StillPictures(source.data, max_pixels)
            if pictures.views != [image.index]:
                return self._open_views(record, pictures, image)
            # the picture decoded is the only view (a phone photo beside its HDR gain map, a
            # camera's beside its thumbnail): scanned as an image is, in parallel and batched
            pictures.close()
            self._note_pictures(record, pictures, [(image.height, image.width)])
        if self.settings.duplicates and not image.animated:  # an animation's, as a video's:
            # none (its first frame is often a title or a fade shared by unrelated files); nor
            # has a file of several views (a cover page shared by unrelated documents)
            record.phash = perceptual_hash(image.pixels)
        self._note_smallest_face(record)
        if image.animated:  # its frames are sampled as a video's (``scan_video``)
            return record, None, None
        faces = (
            _each_isolated(self._faces_in_worker, [image.pixels])[0]
            if self.analyse_in_workers
            else None
        )
        return record, image.pixels, faces

    def _open_views(self, record: FileRecord, pictures: StillPictures, image: DecodedImage):
        """``_open_input`` of a still image of several views: decoded here and, on CPU,
        analysed, where they fit a chunk, so that files of a few views (a stereo camera's, a
        two-page scan) are analysed in parallel and batched as photos are (one at a time, a
        file of two views kept one worker of eight busy, a GPU batches of two: audit AF); else
        left to be streamed view by view (``scan_pictures``), memory flat in the pages."""
        views = pictures.views
        others = [index for index in views if index != image.index]
        if len(views) > self.chunk_images or pictures.pixels_of(views) > CHUNKED_VIEWS_PIXELS:
            record.source.pictures = pictures  # the sizes of every page, from their headers
            return record, None, None  # (audit AG M1: the first page's, times their number)
        try:  # the picture decoded already is not decoded again
            read = {view.index: view for view in pictures.read(others)}
        finally:
            pictures.close()
        if image.index in views:
            read[image.index] = VideoFrame(image.index, None, image.pixels)
        decoded = [read[index] for index in sorted(read)]
        if not self._note_pictures(record, pictures, [(v.height, v.width) for v in decoded]):
            return record, None, None
        faces = (
            _each_isolated(self._faces_in_worker, [view.pixels for view in decoded])
            if self.analyse_in_workers
            else None
        )
        return record, decoded, faces

    def _inspect_provenance(self, path: Path, record: FileRecord, pixels: np.ndarray | None):
        """The file's own evidence of its origin, beside (never inside) the model's opinion."""
        options = self.settings.provenance
        if options is None:
            return
        source = record.source
        try:
            if isinstance(source, HeldVideo):
                # the file held open and hashed (streamed by the C2PA library, never held)
                with open(source.decoder_path, "rb") as stream:
                    record.provenance = inspect_video(stream, path.suffix, options)
            else:
                # the bytes the scan read once: those its SHA-256 names
                record.provenance = inspect(source.data, path.suffix, pixels, options)
        except OSError as error:
            record.provenance = ProvenanceRecord.failed(f"cannot read file: {error.strerror}")

    @property
    def workers(self) -> int:
        """On CPU one per core. On a GPU they only hash and decode, and the GPU target needs many of
        them (800 images/s of 1024 px JPEGs at 8-10 ms each is about 8 cores): all cores but the one
        that drives the GPU, up to 16, so the look-ahead stays within two chunks."""
        if self.settings.workers:
            return self.settings.workers
        cores = available_cores()
        return cores if self.analyse_in_workers else min(16, max(2, cores - 1))

    @contextlib.contextmanager
    def worker_pool(self, name: str) -> Iterator[ThreadPoolExecutor]:
        """``workers`` threads; those that analyse run one torch thread each, and this thread's
        count is restored after."""
        single = self.analyse_in_workers
        threads = torch.get_num_threads()
        pool = ThreadPoolExecutor(
            self.workers,
            thread_name_prefix=name,
            initializer=torch.set_num_threads if single else None,
            initargs=(1,) if single else (),
        )
        try:
            yield pool
        finally:
            # after an interruption, nothing more is started
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)

    def _opened(
        self, items: Iterable[InputItem], skip
    ) -> Iterator[tuple[InputItem, FileRecord, np.ndarray | None, object]]:
        """Inputs opened ahead by worker threads (``_open``), in input order, at most a chunk ahead.

        On CPU there is one worker per core, each running the whole per-image pipeline with one
        torch thread: MTCNN's small convolutions keep the cores busier that way than one image on
        every core, and no thread pool waits on another (on the 2-core CPU, with the model batched
        on a third thread, the model stage took 8x longer than alone). On a GPU the workers only
        hash and decode, and detection and the model are batched on the device. The bounded
        look-ahead keeps memory flat in the number of files.
        """
        # with the chunk being filled: at most two chunks in memory
        lookahead = max(self.chunk_images, 2 * self.workers)
        with self.worker_pool("open") as pool:
            for item, opened in _in_order_ahead(
                pool, lambda item: self._open(item, skip), items, lookahead
            ):
                yield item, *opened

    def scan(
        self, items: Iterable[InputItem], skip: Callable[[FileRecord], bool] | None = None
    ) -> Iterator[FileRecord]:
        pending: list[tuple[FileRecord, Pictures, object]] = []
        decoded = 0
        for item, record, pixels, found in self._opened(items, skip):
            if record.status != STATUS_ERROR and _has_frames(record):
                yield from self._finish_images(pending)
                pending, decoded = [], 0
                with heard_while_decoding() as heard:  # its frames, or pictures, read here
                    if _holds_stills(record):
                        record = self.scan_pictures(record)
                    else:
                        record = self.scan_video(item.path, record)
                record.heard(heard)
                yield record
                continue
            count = len(_arrays(pixels))
            if decoded and decoded + count > self.chunk_images:  # a file's views in one batch,
                yield from self._finish_images(pending)  # within the chunk (audit AG M2)
                pending, decoded = [], 0
            pending.append((record, pixels, found))
            decoded += count
            if decoded >= self.chunk_images:
                yield from self._finish_images(pending)
                pending, decoded = [], 0
        yield from self._finish_images(pending)


def _arrays(pixels: Pictures) -> list[np.ndarray]:
    """The pixels to analyse of an image, or of the views of a still image of several."""
    if pixels is None:
        return []
    return [view.pixels for view in pixels] if isinstance(pixels, list) else [pixels]


def _has_frames(record: FileRecord) -> bool:
    """Whether ``record``'s input is read frame by frame: a video or an animation
    (``Scanner.scan_video``), or a still image of several views (``Scanner.scan_pictures``)."""
    source = record.source
    if isinstance(source, ImageBytes):
        animated = source.image is not None and source.image.animated
        return animated or source.pictures is not None
    return isinstance(source, HeldVideo)


def _holds_stills(record: FileRecord) -> bool:
    """Whether ``record``'s input is a still image of several views (``Scanner.scan_pictures``)."""
    source = record.source
    return isinstance(source, ImageBytes) and source.pictures is not None


def _several_stills(data: bytes, max_pixels: int) -> StillPictures | None:
    """The pictures of a still image of several whose first could not be decoded (a TIFF's
    first page damaged, or over the limit), else None: its other pages are scanned, the first
    said (audit AE M2: the whole file failed)."""
    try:
        pictures = StillPictures(data, max_pixels)
    except Exception:  # noqa: BLE001 - not a file Pillow opens: the first failure stands
        return None
    several = pictures.count > 1 and pictures.format not in ANIMATION_FORMATS
    return pictures if several else None


def _record_of(item: InputItem) -> FileRecord:
    """A new record of ``item``, under its name and carrying its other names."""
    return FileRecord(path=item.display, also_named=item.other_names)


def _in_order_ahead(
    pool: ThreadPoolExecutor, function: Callable, items: Iterable, ahead: int
) -> Iterator[tuple]:
    """(item, ``function(item)``) on ``pool``, in input order, with at most ``ahead`` items
    submitted beyond the one being waited for: the workers stay busy and memory stays bounded."""
    queue: deque[tuple[object, Future]] = deque()
    for item in items:
        queue.append((item, pool.submit(function, item)))
        if len(queue) > ahead:
            first, future = queue.popleft()
            yield first, future.result()
    while queue:
        first, future = queue.popleft()
        yield first, future.result()


def _each_isolated(analyse: Callable[[list], list], items: list) -> list:
    """``analyse(items)``, or, when that fails, ``analyse([item])`` for each item with its error
    in its place.

    One file that breaks a batch must not cost the other files of the batch their results.
    """
    if not items:
        return []
    try:
        return list(analyse(items))
    except CheckpointError:  # the model's fault: every file would fail, the scan stops
        raise
    except Exception:  # noqa: BLE001 - retried one by one below
        results = []
        for item in items:
            try:
                results.extend(analyse([item]))
            except CheckpointError:
                raise
            except Exception as error:  # noqa: BLE001 - reported in that file's record
                results.append(error)
        return results
