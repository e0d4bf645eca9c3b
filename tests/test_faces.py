"""The face pipeline in process: decoding every awkward file, detection against facenet,
alignment."""

import builtins
import io
import math
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from media import (
    ASTRONAUT_BOX,
    HEIC_HEAD,
    MP_DISPARITY,
    MP_THUMBNAIL,
    MP_UNDEFINED,
    astronaut,
    face_free,
    iou,
    mosaic,
    save_decompression_bomb,
    save_exif_rotated,
    save_fli,
    save_heic,
    save_icns_with_bomb,
    save_mpo,
    save_pages,
    save_psd,
    save_tiff_without_size,
    save_truncated_jpeg,
    save_variants,
    save_video,
    set_tiff_tag,
)
from PIL import GifImagePlugin, Image

from mfclip_cli.faces import (
    DecodeError,
    FaceDetector,
    align_faces,
    decode_image,
    holds_video,
    is_media,
    sample_video,
    template_points,
)
from mfclip_cli.faces.align import similarity_transforms
from mfclip_cli.faces.cascade import (
    REMAP_MAX_SIDE,
    MTCNNCascade,
    ProposalNet,
    cumulative_sums,
    cut_boxes,
    integral_images,
    pyramid_level,
)
from mfclip_cli.faces.decode import (
    DEFAULT_MAX_PIXELS,
    UNINDEXED_JPEG,
    StillPictures,
    Timeline,
    animation,
    animation_frames,
    jpeg,
    sample_animation,
)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("cpu")


@pytest.fixture(scope="module")
def library():
    return MTCNN(keep_all=True, device="cpu")


def _library_boxes(library, pixels):
    boxes, _ = library.detect(Image.fromarray(pixels))
    return [] if boxes is None else boxes.tolist()


@pytest.mark.parametrize(
    "make", [astronaut, mosaic, face_free], ids=["astronaut", "mosaic", "face-free"]
)
def test_detections_match_facenet(detector, library, make):
    pixels = make()
    ours = detector.detect([pixels])[0]
    theirs = _library_boxes(library, pixels)
    assert len(ours) == len(theirs)
    for detection in ours:
        assert max(iou(detection.box, box) for box in theirs) >= 0.95


def _normalised_area_resize(
    pixels: torch.Tensor, size: tuple[int, int], dtype=torch.float32
) -> torch.Tensor:
    planar = pixels.permute(0, 3, 1, 2).to(dtype)
    return (torch.nn.functional.interpolate(planar, size=size, mode="area") - 127.5) * 0.0078125


def test_integral_sums_that_wrap_around_still_give_exact_bins():
    """Over 16.8 MP of bright pixels OpenCV's int32 sums wrap past 2^32; bins must still be
    exact."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(200, 256, (1, 4400, 4400, 3), dtype=torch.uint8, generator=generator)
    integral = integral_images(images)
    assert integral.dtype == torch.int32
    exact = cumulative_sums(images, torch.float64)  # the GPU path for such images
    assert exact[0, -1, -1].max() > 2**32  # the sums do wrap
    assert torch.equal(
        integral[0, -1].to(torch.int64) % 2**32, exact[0, -1].to(torch.int64) % 2**32
    )
    for size in [
        (2640, 2640),
        (1871, 1871),
        (13, 13),
    ]:  # float64 reference: float32 drifts over huge bins
        reference = _normalised_area_resize(images, size, torch.float64).float()
        assert torch.allclose(pyramid_level(integral, *size), reference, atol=1e-5), size
    rectangles = torch.tensor(
        [[4300, 4310, 4400, 4400], [0, 0, 4400, 4400], [2000, 10, 2048, 4400]]
    )
    crops = cut_boxes(integral, torch.zeros(3, dtype=torch.int64), rectangles, 48)
    for crop, (x0, y0, x1, y1) in zip(crops, rectangles.tolist()):
        expected = _normalised_area_resize(images[:, y0:y1, x0:x1], (48, 48), torch.float64)[
            0
        ].float()
        assert torch.allclose(crop, expected, atol=1e-5)


def test_pyramid_levels_and_box_crops_equal_area_interpolation():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 157, 203, 3), dtype=torch.uint8, generator=generator)
    integral = integral_images(images)
    for dtype in (torch.int32, torch.float64):  # the GPU path's integral, computed here on CPU
        assert torch.equal(cumulative_sums(images, dtype).to(integral.dtype), integral)
    for size in [(157, 203), (95, 122), (13, 17), (12, 12)]:
        assert torch.allclose(
            pyramid_level(integral, *size), _normalised_area_resize(images, size), atol=1e-5
        )
    wide = torch.randint(
        0, 256, (1, 13, REMAP_MAX_SIDE + 2, 3), dtype=torch.uint8, generator=generator
    )
    for size in [
        (12, 24001),
        (13, REMAP_MAX_SIDE + 2),
    ]:  # too wide for OpenCV's remap: torch gathers instead
        assert torch.allclose(
            pyramid_level(integral_images(wide), *size),
            _normalised_area_resize(wide, size),
            atol=1e-5,
        )
    # x0, y0, x1, y1 end-exclusive: inside, touching every edge, smaller than the output
    # (up-sampling), one pixel
    rectangles = torch.tensor(
        [[10, 20, 97, 111], [0, 0, 203, 157], [150, 140, 161, 157], [5, 5, 6, 6]]
    )
    image_index = torch.tensor([0, 1, 1, 0])
    crops = cut_boxes(integral, image_index, rectangles, 24)
    for crop, b, (x0, y0, x1, y1) in zip(crops, image_index, rectangles.tolist()):
        expected = _normalised_area_resize(images[b : b + 1, y0:y1, x0:x1], (24, 24))[0]
        assert torch.allclose(crop, expected, atol=1e-5)


def test_cascade_agrees_with_the_library_detect_face(library):
    from facenet_pytorch.models.utils.detect_face import detect_face

    cascade = MTCNNCascade("cpu")
    placed = np.full((700, 900, 3), (40, 90, 160), dtype=np.uint8)
    placed[300:512, 500:712] = astronaut()[100:312, 100:312]  # a face off-centre, off-square image
    for pixels in [astronaut(), mosaic(), face_free(), placed]:
        ((boxes, landmarks),) = cascade(torch.from_numpy(pixels)[None], 20.0)
        with torch.no_grad():
            expected_boxes, expected_landmarks = detect_face(
                pixels[None],
                20.0,
                library.pnet,
                library.rnet,
                library.onet,
                cascade.thresholds,
                cascade.factor,
                "cpu",
            )
        expected_boxes = np.asarray(expected_boxes[0], dtype=np.float64).reshape(-1, 5)
        expected_landmarks = np.asarray(expected_landmarks[0], dtype=np.float64).reshape(-1, 5, 2)
        assert boxes.shape == expected_boxes.shape
        np.testing.assert_allclose(boxes[:, :4], expected_boxes[:, :4], atol=0.01)  # pixels
        np.testing.assert_allclose(boxes[:, 4], expected_boxes[:, 4], atol=1e-5)
        np.testing.assert_allclose(landmarks, expected_landmarks, atol=0.01)


@pytest.mark.parametrize("size", [(37, 52), (64, 64), (129, 97)], ids=["odd-even", "even", "odd"])
def test_proposal_net_computes_the_library_pnet(library, size):
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox

    generator = torch.Generator().manual_seed(sum(size))
    # pixels as the pyramid gives them, and extremes that drive every PReLU channel to both signs
    images = (torch.rand(2, 3, *size, generator=generator) * 2 - 1).contiguous(
        memory_format=torch.channels_last
    )
    images[1, :, : size[0] // 2] *= 8
    proposal = ProposalNet(library.pnet)
    with torch.no_grad():
        regression, probabilities = library.pnet(images)
        ours, _ = proposal(images)
        threshold = float(probabilities[:, 1].quantile(0.9))  # a tenth of the windows pass
        expected, expected_index = generateBoundingBox(
            regression, probabilities[:, 1], 0.5, threshold
        )
        windows, index = proposal.candidates(images, 0.5, threshold)
    torch.testing.assert_close(ours, probabilities[:, 1], atol=1e-5, rtol=0)
    assert torch.equal(index, expected_index) and len(windows) > 4
    torch.testing.assert_close(windows, expected, atol=1e-5, rtol=0)


def test_cascade_batches_like_single_images_and_skips_images_smaller_than_a_face():
    cascade = MTCNNCascade("cpu")
    images = [astronaut(), np.ascontiguousarray(mosaic()[:512, :512])]
    together = cascade(torch.from_numpy(np.stack(images)), 20.0)
    for pixels, (boxes, landmarks) in zip(images, together):
        ((alone_boxes, alone_landmarks),) = cascade(torch.from_numpy(pixels)[None], 20.0)
        np.testing.assert_allclose(boxes, alone_boxes, atol=1e-3)
        np.testing.assert_allclose(landmarks, alone_landmarks, atol=1e-3)
    ((boxes, landmarks),) = cascade(torch.from_numpy(astronaut()[:30, :30].copy())[None], 40.0)
    assert boxes.shape == (0, 5) and landmarks.shape == (0, 5, 2)


def test_astronaut_and_mosaic_face_counts(detector):
    found = detector.detect([astronaut(), mosaic(), face_free()])
    assert [len(f) for f in found] == [1, 4, 0]
    assert iou(found[0][0].box, ASTRONAUT_BOX) >= 0.9 and found[0][0].score > 0.999


def test_large_images_are_detected_on_a_smaller_copy_with_full_resolution_boxes(library):
    big = np.asarray(Image.fromarray(astronaut()).resize((2048, 2048), Image.Resampling.BICUBIC))
    ours = FaceDetector("cpu", max_side=1024).detect([big])[0]
    theirs = _library_boxes(library, big)
    assert len(ours) == len(theirs) == 1
    assert iou(ours[0].box, theirs[0]) >= 0.9


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_gives_the_upright_image(tmp_path, detector, orientation):
    path = tmp_path / f"rotated{orientation}.jpg"
    save_exif_rotated(path, orientation)
    with Image.open(path) as stored:
        assert stored.size == (512, 512) and stored.getexif()[0x0112] == orientation
    decoded = decode_image(path)
    assert np.abs(decoded.pixels.astype(int) - astronaut().astype(int)).mean() < 3  # JPEG loss only
    (face,) = detector.detect([decoded.pixels])[0]
    assert iou(face.box, ASTRONAUT_BOX) >= 0.9


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_phones_heic_decodes_upright_with_the_face(tmp_path, detector, orientation):
    """An iPhone's default format was an error record ("this build has no HEIF decoder"):
    libheif decodes it, its rotation applied once (the EXIF orientation Pillow is handed is 1)."""
    path = tmp_path / "IMG_0001.HEIC"
    save_heic(path, orientation)
    decoded = decode_image(path)
    assert decoded.format == "HEIF" and decoded.pixels.shape == (512, 512, 3)
    assert np.abs(decoded.pixels.astype(int) - astronaut().astype(int)).mean() < 3  # HEVC loss
    (face,) = detector.detect([decoded.pixels])[0]
    assert iou(face.box, ASTRONAUT_BOX) >= 0.9
    raw = path.read_bytes()
    assert decode_image(raw).pixels.tobytes() == decoded.pixels.tobytes()
    with pytest.raises(DecodeError, match="^corrupt (HEIC/HEIF )?image: "):
        decode_image(raw[: len(raw) // 2])


def test_a_heif_of_several_images_decodes_its_primary_one_within_the_limit():
    """pillow-heif opens a HEIF at its primary image and the size check read it, then a seek to
    image 0 decoded another picture: the face a viewer sees missed, and a large image 0 past
    the decompression-bomb limit (audit P H2)."""
    from pillow_heif import from_pillow

    heif = from_pillow(Image.fromarray(face_free()[:400, :400]))
    heif.add_from_pillow(Image.fromarray(astronaut()))
    shown_first = io.BytesIO()
    heif.save(shown_first, quality=90, primary_index=1)  # the astronaut is the one shown
    assert decode_image(shown_first.getvalue()).pixels.shape == (512, 512, 3)
    with pytest.raises(DecodeError, match="decompression-bomb limit"):
        decode_image(shown_first.getvalue(), max_pixels=200_000)
    heif = from_pillow(Image.fromarray(astronaut()))
    heif.add_from_pillow(Image.fromarray(face_free()[:400, :400]))
    small_primary = io.BytesIO()
    heif.save(small_primary, quality=90, primary_index=1)
    assert decode_image(small_primary.getvalue(), max_pixels=200_000).pixels.shape == (400, 400, 3)


def test_every_awkward_encoding_decodes_to_rgb_with_the_face(tmp_path, detector):
    paths = save_variants(tmp_path)
    decoded = {name: decode_image(path) for name, path in paths.items()}
    assert {name: image.format for name, image in decoded.items()} == {
        "cmyk": "JPEG",
        "grey16": "PNG",
        "palette": "PNG",
        "rgba": "PNG",
        "gif": "GIF",
        "webp": "WEBP",
        "unicode": "PNG",
    }
    for name, image in decoded.items():
        assert image.pixels.dtype == np.uint8 and image.pixels.shape == (512, 512, 3), name
    assert decoded["grey16"].pixels.max() > 200  # 16-bit values are scaled, not clipped to white
    faces = detector.detect([image.pixels for image in decoded.values()])
    assert [len(f) for f in faces] == [1] * len(decoded)


@pytest.mark.parametrize("scale", [1, 257, 2**23 + 1])
def test_a_32_bit_grey_image_is_scaled_by_its_range(tmp_path, scale):
    """8-, 16- and 32-bit values in a 32-bit TIFF (PIL's mode "I") decode to the same grey
    (audit G L6: values above 65535 were clipped to white)."""
    grey = np.asarray(Image.fromarray(astronaut()).convert("L"), dtype=np.int64)
    path = tmp_path / "grey32.tif"
    Image.fromarray((grey * scale).astype(np.int32)).save(path)
    with Image.open(path) as stored:
        assert stored.mode == "I"
    pixels = decode_image(path).pixels.astype(int)
    assert np.abs(pixels - grey[..., None]).max() <= 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (save_truncated_jpeg, "truncated"),
        (lambda p: p.write_text("this is not a picture"), "not a recognised image format"),
        (save_decompression_bomb, "decompression-bomb limit"),
        (lambda p: p.write_bytes(HEIC_HEAD + bytes(64)), "corrupt HEIC/HEIF image"),
    ],
    ids=["zero-byte", "truncated", "text", "bomb", "heic"],
)
def test_bad_files_raise_a_readable_error(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DecodeError, match=message):
        decode_image(path)


def test_a_picture_nested_in_another_is_held_to_the_limit(tmp_path):
    """An icon file's header says 256 x 256; the PNG in it says more, and only Pillow reads
    that: with Pillow's own check off, it decoded whatever the PNG claimed (Pillow's fuzz file
    oom-8ed3316a.icns took 24 GB and the scan was killed, its report lost)."""
    save_icns_with_bomb(tmp_path / "icon.icns", side=3000)
    with pytest.raises(DecodeError) as refused:
        decode_image(tmp_path / "icon.icns", max_pixels=1_000_000)
    assert str(refused.value) == (
        "a picture of 9.0 megapixels, over the 1.0-megapixel decompression-bomb limit "
        "(scan's --max-megapixels raises it)"
    )
    # a picture within the limit, however nested or wide, is not refused by Pillow's check
    wide = np.repeat(astronaut(), 3, axis=1)  # 0.8 MP: over half the limit, where Pillow warns
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert decode_image(tmp_path / "wide.png", max_pixels=1_000_000).pixels.shape == wide.shape


def test_a_photoshop_file_is_its_composite_its_layers_passed_over(tmp_path):
    """A PSD shows its composite: Pillow opens at it and calls it frame 1, as it calls the
    first layer, so a seek to picture 0 failed ("attempt to seek outside sequence"): every
    layered Photoshop file was "read only in part" (exit 3), its composite never scanned and
    its faces said to be on its first layer. Its layers are parts of what it shows, passed
    over as a TIFF's reduced copies are; one can still be read where it is asked for."""
    face, grey = astronaut(), np.full((512, 512, 3), 128, np.uint8)
    save_psd(tmp_path / "a.psd", face, [grey, face[:, ::-1].copy()])
    image = decode_image(tmp_path / "a.psd")
    assert (image.format, image.pictures, image.index) == ("PSD", 3, 0) and image.stills
    assert np.array_equal(image.pixels, face)
    pictures = StillPictures((tmp_path / "a.psd").read_bytes())
    read = list(pictures)
    assert pictures.passed_over == [1, 2] and not pictures.unread
    assert [frame.index for frame in read] == [0] and np.array_equal(read[0].pixels, face)
    layers = list(StillPictures((tmp_path / "a.psd").read_bytes(), indices=[2, 1, 0]))
    assert [frame.index for frame in layers] == [0, 1, 2]
    assert np.array_equal(layers[1].pixels, grey)
    assert np.array_equal(layers[2].pixels, face[:, ::-1])


def test_a_tiff_compressed_with_a_codec_libtiff_may_lack_says_which(tmp_path):
    """libtiff says "decoder error -2" of a page whose codec its build lacks (Pillow's wheel:
    WebP), as of damage, and names the codec on stderr only: the record says which."""
    Image.fromarray(astronaut()).save(tmp_path / "a.tif", compression="tiff_lzw")
    set_tiff_tag(tmp_path / "a.tif", 259, 50001)  # Compression: WebP
    with pytest.raises(DecodeError, match=r"\(its compression, webp, may be one this build"):
        decode_image(tmp_path / "a.tif")


def _jpeg(pixels: np.ndarray, mode: str = "RGB", **options) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(stream, "JPEG", quality=90, **options)
    return stream.getvalue()


def _cut_and_closed(data: bytes, share: float) -> bytes:
    """A JPEG cut short and closed with an end-of-image marker, as carving leaves one."""
    return data[: int(len(data) * share)] + b"\xff\xd9"


def test_a_jpeg_whose_coded_data_is_damaged_is_refused_not_grey_filled():
    """Pillow decoded these without a word, the picture past the cut grey (audit W H2): a
    cut-short file closed with an end marker scanned as ``no_face``, or ``ok`` from half a
    face."""
    portrait = np.concatenate([np.full((512, 512, 3), 128, np.uint8), astronaut()])
    baseline, progressive = _jpeg(portrait), _jpeg(portrait, progressive=True)
    noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    middle = len(baseline) // 2
    tables = baseline.find(b"\xff\xdb")  # header padding does not excuse a cut (audit Y M1)
    padded = baseline[:tables] + b"\x00" * 3 + baseline[tables:]
    ff_padded = baseline[:tables] + b"\xff\x00\x00\x02" + baseline[tables:]
    damaged = {
        "ff00 padded and cut": _cut_and_closed(ff_padded, 0.25),
        "cut": _cut_and_closed(baseline, 0.25),
        "progressive cut": _cut_and_closed(progressive, 0.5),
        "cmyk cut": _cut_and_closed(_jpeg(astronaut(), "CMYK"), 0.3),
        "padded and cut": _cut_and_closed(padded, 0.25),
        # and a segment whose length cannot be (audit Z M1: the re-check without the padding
        # read garbage, whose error was no damage word, and the cut file passed)
        "padded, odd segment, cut": _cut_and_closed(
            baseline[:tables] + b"\x00\x00\xff\xfe\x00\x00" + baseline[tables:], 0.3
        ),
        "overwritten": baseline[:middle] + noise + baseline[middle + len(noise) :],
    }
    for data in damaged.values():
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # what the scan relied on: Pillow takes each of them
        with pytest.raises(DecodeError, match="^truncated or corrupt image: Corrupt JPEG data"):
            decode_image(data)


def test_whole_jpegs_decode_as_pillow_decodes_them():
    """The damage check refuses no whole JPEG: grey, CMYK, progressive, bytes after the end
    marker, a camera's MPO (its first picture; the second follows the first's end marker)."""
    grey = _jpeg(astronaut(), "L")
    colour = _jpeg(astronaut())
    tables, scan = colour.find(b"\xff\xdb"), colour.find(b"\xff\xda")
    mpo = io.BytesIO()
    Image.fromarray(astronaut()).save(
        mpo, "MPO", save_all=True, append_images=[Image.fromarray(face_free())]
    )
    whole = {
        "grey": grey,
        "cmyk": _jpeg(astronaut(), "CMYK"),
        "progressive": _jpeg(astronaut(), progressive=True),
        "trailing bytes": grey + b"not a picture" * 8,
        "mpo": mpo.getvalue(),
        # an encoder's padding between header segments, which libjpeg calls "extraneous bytes"
        # (audit Y M1: refused); the pixels are all there
        "padded tables": colour[:tables] + b"\x00\x00" + colour[tables:],
        "padded scan": colour[:scan] + b"\x12\x34\x56" + colour[scan:],
        # padding that holds an 0xFF starting no segment (Pillow's jpeg_ff00_header.jpg, a
        # whole photo, refused: audit AH F1)
        "ff00 padding": colour[:tables] + b"\xff\x00\x00\x02" + colour[tables:],
    }
    for name, data in whole.items():
        with Image.open(io.BytesIO(data)) as image:
            expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(decode_image(data).pixels, expected), name


def test_one_marker_walk_finds_a_jpegs_end_and_its_mp_header(tmp_path):
    """One walk of a JPEG's markers serves its end, its MP header and the padding check (three
    hand-written walks did, each its own way). An EXIF thumbnail's end marker lies in a segment,
    not at the end; a marker declaring a length under 2 in coded data is damage the walk steps
    over (audit AL B1: it stopped there, and a JPEG after a damaged MP index went unsaid); fill
    bytes before an MPO's index no longer hide it (AL B2: its views were refused, cut at offsets
    counted from nowhere): the MP header is where Pillow reads it."""
    thumbnail = _jpeg(face_free()[:32, :32])  # a whole JPEG inside a segment, as EXIF's is
    plain = _jpeg(face_free()[:64, :64])
    segment = b"\xff\xfe" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    photo = plain[:2] + segment + plain[2:]
    assert jpeg._jpeg_end(photo + photo, 0) == len(photo)
    scan = photo.find(b"\xff\xda", 2 + len(segment))  # the photo's own scan
    coded = scan + 2 + int.from_bytes(photo[scan + 2 : scan + 4], "big")
    damaged = photo[:coded] + b"\xff\xfe\x00\x00" + photo[coded:]
    assert jpeg._jpeg_end(damaged + photo, 0) == len(damaged)
    assert jpeg._jpeg_end(photo[:-2], 0) is None  # cut before its end marker
    save_mpo(tmp_path / "c.mpo", [astronaut(), astronaut()[:, ::-1]], {1: MP_DISPARITY})
    mpo = (tmp_path / "c.mpo").read_bytes()
    filled = mpo[:2] + b"\xff\xff" + mpo[2:]  # fill bytes, which any marker may follow
    with Image.open(io.BytesIO(filled)) as image:
        offsets = image._MpoImageFile__mpoffsets
        pillows = offsets[1] - image.mpinfo[0xB002][1]["DataOffset"]
    assert jpeg.mp_header(filled) == pillows == jpeg.mp_header(mpo) + 2
    views = StillPictures(filled)
    assert [frame.index for frame in views] == [0, 1] and not views.unread


def test_a_file_is_opened_once_and_a_pipe_is_never_waited_on(tmp_path, monkeypatch):
    """A path was opened twice (its head, then Pillow): one more open per crop per epoch in
    training's loader. A FIFO in its place is refused, not read (its open would block)."""
    path = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(path)
    opened = []
    os_open, builtin_open = os.open, builtins.open

    def counted(real):
        return lambda file, *args, **kwargs: (opened.append(file), real(file, *args, **kwargs))[1]

    monkeypatch.setattr(os, "open", counted(os_open))
    monkeypatch.setattr(builtins, "open", counted(builtin_open))
    assert decode_image(path).pixels.shape == (512, 512, 3)
    assert [Path(file) for file in opened if not isinstance(file, int)] == [path]
    monkeypatch.undo()
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    with pytest.raises(DecodeError, match="^cannot read file: not a regular file"):
        decode_image(pipe)


def test_video_frames_are_sampled_by_rate_or_count(tmp_path):
    path = tmp_path / "clip.mp4"
    save_video(path, frames=10, fps=5.0)
    info, frames = sample_video(path, fps=1.0)
    assert info.frame_count == 10 and info.fps == pytest.approx(5.0)
    assert [(f.index, f.timestamp) for f in frames] == [(0, 0.0), (5, 1.0)]
    _, frames = sample_video(path, fps=None, frames=4)
    sampled = list(frames)
    assert [f.index for f in sampled] == [1, 3, 6, 8]
    assert sampled[0].pixels.shape == (512, 512, 3)


def animation_bytes(pictures: list[np.ndarray], durations: list[float], kind: str) -> bytes:
    """An animation (``kind``: GIF, WEBP or PNG) of ``pictures`` shown ``durations`` ms each."""
    stream = io.BytesIO()
    first, *rest = [Image.fromarray(picture) for picture in pictures]
    first.save(stream, format=kind, save_all=True, append_images=rest, duration=durations)
    return stream.getvalue()


@pytest.mark.parametrize("kind", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_read_as_a_viewer_shows_it(kind):
    """Each frame whole, as Pillow composites it, RGB, timed as a browser shows it (10 ms or
    less, or none, is 100 ms), and the frame shown at each sampling instant taken: a frame held
    for seconds is sampled, one shown between two instants is not."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    data = animation_bytes(pictures, [400, 0, 10, 2500, 300], kind)
    image = decode_image(data)
    assert image.animated and image.pictures == 5
    info, frames = sample_animation(data, fps=2.0)
    assert (info.frame_count, info.width, info.height) == (5, 64, 48)
    read = list(frames)
    # frames from 0, 0.4, 0.5, 0.6 and 3.1 s: the instants 0, 0.5, 1, ... 3 s show 0 2 3 3 3 3 3
    assert [(frame.index, frame.timestamp) for frame in read] == [(0, 0.0), (2, 0.5), (3, 0.6)]
    with Image.open(io.BytesIO(data)) as reference:
        for frame in read:
            reference.seek(frame.index)
            assert np.array_equal(frame.pixels, np.asarray(reference.convert("RGB")))
    assert frames.unread == 0 and frames.shortfall() is None
    assert info.duration == pytest.approx(3.4)  # its own, not the nominal last frame's
    _, spread = sample_animation(data, fps=None, frames=3)
    assert [frame.index for frame in spread] == [0, 2, 4]
    assert [frame.index for frame in animation_frames(data, [4, 1, 4])] == [1, 4]


def test_an_autodesk_animation_is_sampled_as_one(tmp_path):
    """An FLI/FLC is an animation, each frame shown for its header's time: it was read as a
    file of still pictures, each of its frames (384 in Pillow's a.fli) scanned, untimed."""
    face, grey = astronaut(), np.full((512, 512, 3), 128, np.uint8)
    save_fli(tmp_path / "a.flc", [grey, face, grey, face], milliseconds=500)
    image = decode_image(tmp_path / "a.flc")
    assert (image.format, image.pictures) == ("FLI", 4) and image.animated and not image.stills
    info, frames = sample_animation((tmp_path / "a.flc").read_bytes(), fps=1.0)
    assert (info.frame_count, info.duration) == (4, pytest.approx(2.0))
    read = list(frames)
    assert [(frame.index, frame.timestamp) for frame in read] == [(0, 0.0), (2, 1.0)]
    assert np.abs(read[0].pixels.astype(int) - 128).max() <= 2  # one 256-colour palette


@pytest.mark.parametrize("kind", ["PNG", "FLI"])
def test_an_animation_cut_in_a_frame_ends_there(tmp_path, kind):
    """Pillow cannot seek past an APNG's or an FLI's cut frame: each later seek tries it again.
    Each frame the file declares after it was timed 100 ms, so that a cut file lasted longer
    than the whole one and "unread" sampled frames were frames it does not hold (audit AH F5):
    it ends with the cut frame, counted as damaged."""
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    if kind == "PNG":
        data = animation_bytes(pictures, [500] * 40, "PNG")
    else:
        save_fli(tmp_path / "a.flc", pictures, milliseconds=500)
        data = (tmp_path / "a.flc").read_bytes()
    whole, _ = sample_animation(data, fps=1.0)
    assert (whole.frame_count, whole.duration) == (40, pytest.approx(20.0))
    info, frames = sample_animation(data[: len(data) // 4], fps=1.0)
    read = list(frames)
    held = info.frame_count - 1  # the frames before the cut one
    assert 5 <= held < 10 and info.duration == pytest.approx(held * 0.5 + 0.1)
    assert [frame.index for frame in read] == list(range(0, held, 2))
    assert frames.shortfall() == (
        f"1 frame(s) of the stream could not be decoded (from frame {held}), the frames sampled "
        "were read: the file is damaged"
    )


def test_frames_shown_at_each_instant_against_a_timeline():
    """``Timeline.at`` (linear in the frames: a crafted GIF of 50,000 frames of 655 s each took
    minutes at --fps 10 instant by instant, audit AB M4) against a reading of every instant."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        lengths = rng.choice([0.01, 0.1, 0.25, 0.5, 1.0, 3.0], size=int(rng.integers(1, 12)))
        starts = [0.0, *np.cumsum(lengths)[:-1].tolist()]
        rate = float(rng.choice([0.5, 1.0, 2.0, 3.0, 10.0]))
        duration = float(sum(lengths))
        expected = set()
        for i in range(math.ceil(duration * rate + 1)):
            if i / rate >= duration - 1e-9:
                break
            expected.add(max(k for k, start in enumerate(starts) if start <= i / rate + 1e-9))
        assert Timeline(starts, duration, []).at(rate) == sorted(expected), (lengths, rate)


def test_a_damaged_frame_leaves_the_frames_after_it_timed_and_read():
    """A frame that cannot be decoded lasts 100 ms and the frames after it keep their times:
    the timing stopped at it, so a face held 5 s on a later frame was never sampled, and the
    damage went unsaid, ``no_face`` and exit 0 (audit AB H1). It is said now, though no sampled
    frame is the damaged one."""
    rng = np.random.default_rng(2)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    data = bytearray(animation_bytes(pictures, [100, 100, 100, 100, 5000, 100], "GIF"))
    third = gif_image_descriptors(bytes(data))[2]
    palette = 3 << ((data[third + 9] & 7) + 1) if data[third + 9] & 0x80 else 0
    codes = third + 10 + palette + 2  # after its LZW code size and first block's length
    data[codes : codes + 38] = bytes(b ^ 0xFF for b in data[codes : codes + 38])
    info, frames = sample_animation(bytes(data), fps=1.0)
    assert [frame.index for frame in frames] == [0, 4]  # frame 4: from 0.4 s to 5.4 s
    assert info.duration == pytest.approx(5.5)
    assert frames.shortfall() == (
        "1 frame(s) of the stream could not be decoded (from frame 2), the frames sampled were "
        "read: the file is damaged"
    )


def test_an_animation_is_the_frames_it_holds_not_those_it_declares():
    """An APNG's frame count is 4 bytes (acTL): one saying 30 million over 3 frames made lists
    of that length (2.9 GB, then MemoryError at 100 million: audit AB M1). Frames failing in a
    row past ``MAX_UNDECODABLE_RUN`` are the end; the damage is said, without naming a frame
    past the count as a frame of the file (audit AC L5: "from frame 3" of a 3-frame file)."""
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    data = bytearray(animation_bytes(pictures, [500, 500, 500], "PNG"))
    at = data.index(b"acTL")
    data[at + 4 : at + 8] = (30_000_000).to_bytes(4, "big")
    data[at + 12 : at + 16] = zlib.crc32(bytes(data[at : at + 12])).to_bytes(4, "big")
    with Image.open(io.BytesIO(bytes(data))) as image:
        assert image.n_frames == 30_000_000
    info, frames = sample_animation(bytes(data), fps=1.0)
    assert (info.frame_count, info.duration) == (3, 1.5)
    assert [frame.index for frame in frames] == [0, 2]
    assert frames.shortfall() == (
        "its frames after frame 2 could not be decoded: the file is damaged or cut short there; "
        "the frames sampled were read"
    )


def test_an_apngs_default_image_is_no_frame():
    """An APNG's default image is a still for viewers without APNG, which no APNG viewer shows:
    it was sampled as frame 0 at 0 s, and the animation's first frame could be missed (audit AB
    M2). Frames are the animation's: its first at 0 s."""
    rng = np.random.default_rng(4)
    still, *animation = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    stream = io.BytesIO()
    Image.fromarray(still).save(
        stream, format="PNG", save_all=True, default_image=True, duration=900,
        append_images=[Image.fromarray(picture) for picture in animation],
    )  # fmt: skip
    info, frames = sample_animation(stream.getvalue(), fps=1.0)
    read = list(frames)
    assert (info.frame_count, info.duration) == (2, 1.8)
    assert [(frame.index, frame.timestamp) for frame in read] == [(0, 0.0), (1, 0.9)]
    assert np.array_equal(read[0].pixels, animation[0])


def test_a_gif_frame_past_its_canvas_is_cropped_as_browsers_do():
    """A sloppy encoder's frame reaching a pixel past the canvas grows Pillow's size: it ended
    the reading as damage (audit AB M3). It is cropped to the canvas; the frames after it are
    read."""
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    data = bytearray(animation_bytes(pictures, [1000, 1000, 1000], "GIF"))
    second = gif_image_descriptors(bytes(data))[1]
    data[second + 1 : second + 5] = (1).to_bytes(2, "little") * 2  # placed at (1, 1)
    info, frames = sample_animation(bytes(data), fps=1.0)
    read = list(frames)
    assert [frame.index for frame in read] == [0, 1, 2] and frames.shortfall() is None
    assert {frame.pixels.shape for frame in read} == {(48, 64, 3)}


@pytest.mark.parametrize("kind", ["GIF", "WEBP", "PNG", "APNG with a default image"])
def test_an_animation_is_timed_from_its_blocks_as_its_decoding_times_it(kind, monkeypatch):
    """Each frame of a GIF, APNG or WebP was decoded to be timed, then again to be read (audit
    AB M8: half of an animated WebP's scan): its frames are timed from its blocks, as they
    were once decoded, none decoded for it; one reaching past the canvas is still timed as it
    is decoded (a frame far past it ends the frames)."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    lengths = [400, 0, 10, 2500, 300, 20]  # a 0 ms GIF frame: no graphic control extension
    if kind.startswith("APNG"):  # a still for viewers without APNG first, no frame
        stream = io.BytesIO()
        still, *frames = [Image.fromarray(picture) for picture in pictures]
        still.save(stream, "PNG", save_all=True, append_images=frames, default_image=True,
                   duration=[0, *lengths[1:]])  # fmt: skip
        data = stream.getvalue()
    else:
        data = animation_bytes(pictures, lengths, kind)
    with Image.open(io.BytesIO(data)) as image:  # its 6 pictures timed as they are decoded
        decoded = animation._timeline(image, 6, DEFAULT_MAX_PIXELS)
    decodes = []
    monkeypatch.setattr(animation, "_load_frame", lambda *frame: decodes.append(frame))
    assert animation.open_animation(data)[2] == decoded and decodes == []
    assert decoded.skip == kind.startswith("APNG") and len(decoded.starts) == 6 - decoded.skip
    if not decoded.skip:
        shown = [100 if length <= 10 else length for length in lengths]
        assert decoded.duration == pytest.approx(sum(shown) / 1000)
    if kind == "GIF":
        past = bytearray(data)
        struct.pack_into("<H", past, gif_image_descriptors(data)[2] + 5, 65)  # 65 wide on 64
        animation.open_animation(bytes(past))
        assert len(decodes) == 6


def gif_image_descriptors(data: bytes) -> list[int]:
    """Where a GIF's image descriptors (0x2C) start, its blocks walked."""

    def past_sub_blocks(at: int) -> int:
        while data[at]:
            at += data[at] + 1
        return at + 1

    flags = data[10]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while position < len(data) and data[position] != 0x3B:
        if data[position] == 0x21:  # an extension: its label, then its sub-blocks
            position = past_sub_blocks(position + 2)
        else:
            found.append(position)
            local = data[position + 9]
            position += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            position = past_sub_blocks(position + 1)  # after the LZW code size
    return found


def test_a_damaged_animation_frame_is_never_decoded_as_a_giant(monkeypatch):
    """A GIF frame whose descriptor says 65535x65535, as damage says any size (zeroed bytes in
    a frame's data had Pillow read the next frame as 5.8 gigapixels, and the scan was killed
    for memory): a frame whose size is not the canvas's is refused undecoded, the frames before
    it are read and the shortfall said. Every decode is watched, and one of another size
    stopped before it allocates, so that a regression fails rather than exhausts the machine."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    data = bytearray(animation_bytes(pictures, [500, 500, 500], "GIF"))
    second = gif_image_descriptors(bytes(data))[1]
    data[second + 5 : second + 9] = (65535).to_bytes(2, "little") * 2  # its width and height
    decoded, load = [], GifImagePlugin.GifImageFile.load

    def watched_load(image):
        decoded.append(image.size)
        if image.size != (64, 48):
            raise AssertionError(f"a frame of {image.size} decoded")
        return load(image)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "load", watched_load)
    info, frames = sample_animation(bytes(data), fps=1.0)
    assert [frame.index for frame in frames] == [0] and info.frame_count == 1
    assert frames.shortfall() == (
        "its frames after frame 0 could not be decoded: the file is damaged or cut short there; "
        "the frames sampled were read"
    )
    assert set(decoded) == {(64, 48)}


def test_each_picture_of_a_still_image_of_several_is_read_alone(tmp_path):
    """A TIFF's pages, an MPO's views and a HEIF's images are each a picture to scan (a face on
    a scanned ID's second page was in no record): every one decoded upright from the bytes,
    with its index and no time, except a smaller copy of another (a reduced-resolution page,
    an MPO's large thumbnail); a page that cannot be decoded is left out with why, and the
    pages after it are read."""
    face, blank = astronaut(), face_free()[:512, :512]
    small = np.asarray(Image.fromarray(face).resize((128, 128)))
    save_pages(tmp_path / "a.tif", [blank, small, face, blank, face], reduced=(1,), damaged=(3,))
    pictures = StillPictures((tmp_path / "a.tif").read_bytes())
    read = list(pictures)
    assert pictures.count == 5 and pictures.passed_over == [1]
    assert [frame.index for frame in read] == [0, 2, 4]
    assert all(frame.timestamp is None for frame in read)
    assert np.array_equal(read[0].pixels, blank) and np.array_equal(read[1].pixels, face)
    ((index, why),) = pictures.unread
    # the words a damaged first page gets (audit AE L4: two messages for one damage)
    save_pages(tmp_path / "first.tif", [face, blank], damaged=(0,))
    with pytest.raises(DecodeError) as first:
        decode_image(tmp_path / "first.tif")
    assert index == 3 and why == str(first.value) == "cannot decode image: decoder error -2"
    # the pages asked for only (a report drawing the pictures with faces again)
    again = StillPictures((tmp_path / "a.tif").read_bytes(), indices=[4, 2, 2])
    assert [frame.index for frame in again] == [2, 4]
    # the pixels of pages, from their headers (a large page behind a small one: audit AG M1)
    assert StillPictures((tmp_path / "a.tif").read_bytes()).pixels_of([1, 2]) == 128 * 128 + 512**2
    # a file of copies only is no file of copies: all are read
    save_pages(tmp_path / "b.tif", [small, small], reduced=(0, 1))
    assert [f.index for f in StillPictures((tmp_path / "b.tif").read_bytes())] == [0, 1]

    # a stereo camera's second view is scanned; a large thumbnail and a gain map (typed
    # undefined, as an Ultra HDR photo's is) are not
    save_mpo(tmp_path / "c.mpo", [face, face[:, ::-1]], {1: MP_DISPARITY})
    views = StillPictures((tmp_path / "c.mpo").read_bytes())
    read = list(views)
    assert decode_image(tmp_path / "c.mpo").format == "MPO" and views.passed_over == []
    assert [frame.index for frame in read] == [0, 1] and not views.unread
    assert np.abs(read[1].pixels.astype(int) - face[:, ::-1]).mean() < 4  # JPEG's loss
    grey = np.repeat(face.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    save_mpo(tmp_path / "d.mpo", [face, small, grey], {1: MP_THUMBNAIL, 2: MP_UNDEFINED})
    views = StillPictures((tmp_path / "d.mpo").read_bytes())
    assert [frame.index for frame in views] == [0] and views.passed_over == [1, 2]

    from pillow_heif import register_heif_opener

    register_heif_opener()
    big = np.asarray(Image.fromarray(face).resize((1024, 1024)))
    Image.fromarray(blank).save(
        tmp_path / "e.heic", format="HEIF", save_all=True, quality=90,
        append_images=[Image.fromarray(face), Image.fromarray(big)],
    )  # fmt: skip
    images = StillPictures((tmp_path / "e.heic").read_bytes(), max_pixels=600_000)
    assert [frame.pixels.shape for frame in images] == [(400, 512, 3), (512, 512, 3)]
    # an image past the limit is refused before it is decoded (audit P H2), the others read
    assert images.unread == [
        (2, "picture is 1024x1024 = 1.0 megapixels, over the 0.6-megapixel decompression-bomb "
         "limit (scan's --max-megapixels raises it)"),
    ]  # fmt: skip


def test_a_damaged_view_costs_only_itself(tmp_path):
    """An MPO whose second view is garbage lost its first too (a failed seek left Pillow's image
    half overwritten: audit AE H1); a view cut short and closed with an end marker was decoded
    grey past the cut, as a JPEG file is not (audit AE M4). Each is said, the first view read.
    Where every view fails, the preview the file also holds is not read in its place: no
    verdict rests on a thumbnail or a gain map (audit AF F1)."""
    face, blank = astronaut(), np.ascontiguousarray(face_free()[:512, :512])
    save_mpo(tmp_path / "a.mpo", [face, blank], {1: MP_DISPARITY})
    data = bytearray((tmp_path / "a.mpo").read_bytes())
    second = data.rfind(b"\xff\xd8\xff")  # the second view's start of image
    garbage, cut = bytearray(data), bytearray(data)
    garbage[second + 200 : second + 2200] = bytes((i * 37) & 0xFF for i in range(2000))
    end = len(cut) - 2
    cut[second + 3000 : end] = b""  # its coded data cut, its end marker kept
    for damaged, words in ((garbage, "corrupt image"), (cut, "truncated or corrupt image")):
        views = StillPictures(bytes(damaged))
        read = list(views)
        assert [frame.index for frame in read] == [0], words
        assert np.abs(read[0].pixels.astype(int) - face).mean() < 4
        ((index, why),) = views.unread
        assert index == 1 and why.startswith(words), why

    # an editor grew the first JPEG's header (a comment holding "MPF" bytes) and left the MP
    # index's sizes as they were: both views still read (audit AF F3); the second cut short is
    # still refused (F4: the view was looked for from those bytes, and passed unchecked)
    header = data.index(b"\xff\xe2")  # the APP2 segment that holds the MP index
    comment = b"\xff\xfe" + (1002).to_bytes(2, "big") + b"note: MPF\x00 " + bytes(989)
    grown = data[:header] + comment + data[header:]
    assert [frame.index for frame in StillPictures(bytes(grown))] == [0, 1]
    cut_grown = cut[:header] + comment + cut[header:]
    views = StillPictures(bytes(cut_grown))
    assert [frame.index for frame in views] == [0] and [i for i, _ in views.unread] == [1]

    # a damaged MP index (one byte of its byte order, as Pillow's sugarshack_bad_mpo_header.jpg):
    # Pillow reads the first JPEG alone, and the second view went unscanned, silently (audit
    # AH F2). What it is only the index said: it is counted, and said unread
    broken = bytearray(data)
    broken[broken.index(b"MPF\x00") + 4] = ord(" ")
    assert decode_image(bytes(broken)).pictures == 2
    views = StillPictures(bytes(broken))
    assert [frame.index for frame in views] == [0] and views.unread == [(1, UNINDEXED_JPEG)]
    # an Ultra HDR photo, which Pillow reads as its primary JPEG with its index whole: its gain
    # map is no unread picture
    xmp = b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta hdrgm:Version="1.0"/>'
    ultra = data[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data[2:]
    assert Image.open(io.BytesIO(bytes(ultra))).format == "JPEG"
    assert decode_image(bytes(ultra)).pictures == 1

    small = np.asarray(Image.fromarray(face).resize((128, 128)))
    save_pages(tmp_path / "b.tif", [small, face], reduced=(0,), damaged=(1,))
    pages = StillPictures((tmp_path / "b.tif").read_bytes())
    assert pages.passed_over == [0] and [frame.index for frame in pages] == []
    assert [index for index, _ in pages.unread] == [1]


@pytest.mark.parametrize("kind", ["GIF", "WEBP"])
def test_an_animation_cut_short_gives_its_frames_before_the_cut(kind):
    """A GIF cut between two frames (Pillow's frame count fails with an IndexError there) and
    an animated WebP cut in a frame (libwebp refuses the whole file: audit AB L3) failed
    whole, their first frames with them, as a partial download or a carved file is: the
    frames before the cut are read, the cut frame counted, and the reader says the damage. A
    WebP cut before a whole picture says so."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    data = animation_bytes(pictures, [500] * 5, kind)
    if kind == "GIF":
        cut = data[: gif_image_descriptors(data)[3] + 10]  # past frame 3's descriptor
    else:  # in the fourth frame's chunk (ANMF), as WebP's RIFF chunks lie
        cut = data[: [m.start() for m in re.finditer(b"ANMF", data)][3] + 40]
    assert decode_image(cut).pictures == 4
    info, frames = sample_animation(cut, fps=2.0)
    read = list(frames)
    assert [frame.index for frame in read] == [0, 1, 2] and info.frame_count == 4
    for frame, whole in zip(read, animation_frames(data, [0, 1, 2])):  # as in the whole file
        assert np.array_equal(frame.pixels, whole.pixels)
    assert frames.shortfall() == (
        "1 of the 4 frames sampled could not be read (from frame 3): the file is truncated or "
        "damaged; its stream gives 3 of the 4 frames counted in the file"
    )
    assert [frame.index for frame in animation_frames(cut, [2, 1])] == [1, 2]
    if kind == "GIF":  # cut in the next frame's palette: Pillow's count walked past it and
        # left its state changed, and the rest read as a whole shorter GIF (audit AF F5)
        cut = data[: gif_image_descriptors(data)[1] + 400]
        info, frames = sample_animation(cut, fps=2.0)
        assert [frame.index for frame in frames] == [0] and info.frame_count == 2
        assert frames.shortfall().startswith("1 of the 2 frames sampled could not be read")
    if kind == "WEBP":  # a RIFF size 8 bytes too large, nothing cut: no frame gained (F6)
        overstated = bytearray(data)
        overstated[4:8] = (int.from_bytes(data[4:8], "little") + 8).to_bytes(4, "little")
        info, frames = sample_animation(bytes(overstated), fps=2.0)
        assert [frame.index for frame in frames] == list(range(5)) and info.frame_count == 5
    if kind == "WEBP":  # cut in the metadata after its frames: every frame whole, none lost
        exif = Image.Exif()
        exif[0x010E] = "x" * 4000  # ImageDescription: an EXIF chunk after the frames
        stream = io.BytesIO()
        first, *rest = [Image.fromarray(picture) for picture in pictures]
        first.save(
            stream, "WEBP", save_all=True, append_images=rest, duration=500, exif=exif.tobytes()
        )
        info, frames = sample_animation(stream.getvalue()[:-100], fps=2.0)
        assert [frame.index for frame in frames] == list(range(5)) and info.frame_count == 5
        assert frames.shortfall() is None
        with pytest.raises(
            DecodeError, match="the WebP stops at byte 100 of the .* before a whole"
        ):
            decode_image(data[:100])


def test_a_tiff_page_without_its_size_costs_only_that_page(tmp_path):
    """A TIFF whose second page lost its size tags failed whole (Pillow's count of its pages
    fails there: TypeError): its first page is decoded and the second is said."""
    save_tiff_without_size(tmp_path / "pages.tif")
    data = (tmp_path / "pages.tif").read_bytes()
    image = decode_image(data)
    assert image.pictures == 2 and image.stills and np.array_equal(image.pixels, face_free())
    pictures = StillPictures(data)
    assert [frame.index for frame in pictures] == [0]
    ((index, why),) = pictures.unread
    assert index == 1 and why.startswith("corrupt image: TypeError")
    # its sizes read first and page 1 then, as the scanner does: the failed seek to page 1 left
    # Pillow's image on page 0, which was then decoded as page 1 unless the image is reopened
    pictures = StillPictures(data)
    assert pictures.pixels_of(pictures.views) == 2 * face_free().shape[0] * face_free().shape[1]
    assert [frame.index for frame in pictures.read([1])] == [] and len(pictures.unread) == 1


class FakeCapture:
    """What OpenCV's capture says of a file whose frames lie at ``times_ms``: the header's rate
    and frame count as given (Matroska's is duration x nominal rate; without a duration, or for a
    raw stream, OpenCV says -9.2e16 or -1.9e14), each frame's time once grabbed; those in
    ``damaged`` fail to decode, in grab() as FFmpeg's backend fails them (the frames after them
    still come)."""

    def __init__(self, times_ms: list[float], fps: float, count: float, damaged=(), start=0):
        self.times, self.fps, self.count, self.damaged = times_ms, fps, count, set(damaged)
        self.start = start  # the first frame's PTS, in frames: a stream starting late
        self.position = -1

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def grab(self) -> bool:
        self.position += 1
        return self.position < len(self.times) and self.position not in self.damaged

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, np.full((4, 4, 3), self.position % 256, np.uint8)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC:  # OpenCV's 0 before the first frame and past the end
            return self.times[self.position] if 0 <= self.position < len(self.times) else 0.0
        if prop == cv2.CAP_PROP_PTS:  # in frames, from the container's zero
            return float(self.start + self.position)
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count}.get(prop, 4.0)

    def release(self) -> None:
        pass


def fake_video(monkeypatch, path, *capture_args, **capture_kwargs):
    """``path`` (a few bytes) opened by OpenCV as ``FakeCapture(*capture_args)`` each time."""
    path.write_bytes(b"not read: the capture is a stand-in")
    monkeypatch.setattr(
        cv2, "VideoCapture", lambda name: FakeCapture(*capture_args, **capture_kwargs)
    )
    return path


# a phone's variable rate: 50 frames 40 ms apart, then 51 frames 200 ms apart (101, to 12 s)
VFR_TIMES = [40.0 * i for i in range(50)] + [2000.0 + 200 * i for i in range(51)]


def test_a_variable_rate_video_is_timed_and_sampled_by_presentation_time(monkeypatch, tmp_path):
    """A face's time is its frame's, not index / average rate (frame 60 is at 4 s, not 6.96 s),
    and --fps takes the first frame at or after each second (audit W, H1)."""
    path = fake_video(monkeypatch, tmp_path / "vfr.mp4", VFR_TIMES, 101 / 11.72, 101)
    info, frames = sample_video(path, fps=1.0)
    sampled = [(frame.index, frame.timestamp) for frame in frames]
    assert sampled == [(0, 0.0), (25, 1.0)] + [(50 + 5 * k, 2.0 + k) for k in range(11)]
    assert frames.shortfall() is None and info.frame_count == 101
    assert info.duration == pytest.approx(12.116, abs=1e-3)  # to the end of its last frame
    _, frames = sample_video(path, fps=None, frames=4)
    assert [(f.index, f.timestamp) for f in frames] == [
        (12, 0.48),
        (37, 1.48),
        (63, 4.6),
        (88, 9.6),
    ]


def test_a_video_without_a_frame_count_is_read_to_its_end(monkeypatch, tmp_path):
    """A WebM from a browser's MediaRecorder, or any file muxed to a pipe, has no count in its
    header: it was "video has no readable frames" (audit W, H2)."""
    times = [100.0 * i for i in range(100)]
    path = fake_video(monkeypatch, tmp_path / "live.webm", times, 10.0, -9.2e16)
    info, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames] == list(range(0, 100, 10))
    assert (info.frame_count, info.duration, frames.shortfall()) == (100, pytest.approx(10), None)
    info, frames = sample_video(path, fps=None, frames=4)  # counted first
    assert [frame.index for frame in frames] == [12, 37, 62, 87] and info.frame_count == 100
    # a raw H.264 stream has no times either: one nominal frame after another
    path = fake_video(monkeypatch, tmp_path / "raw.mkv", [0.0] * 100, 25.0, -1.9e14)
    info, frames = sample_video(path, fps=1.0)
    assert [(f.index, f.timestamp) for f in frames] == [(25 * k, float(k)) for k in range(4)]
    assert (info.frame_count, info.duration) == (100, pytest.approx(4))


def test_an_estimated_frame_count_is_no_truncation(monkeypatch, tmp_path):
    """A complete variable-rate WebM: OpenCV's count is its duration x nominal 25 fps, 301 for
    101 frames; it was "truncated or damaged" and sampled in its first part (audit W, H3). A
    frame that fails to decode is still damage, and a stream ending seconds before the
    container's duration still a truncation."""
    path = fake_video(monkeypatch, tmp_path / "vfr.webm", VFR_TIMES, 25.0, 301)
    info, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames][-3:] == [90, 95, 100]
    assert (frames.unread, frames.shortfall(), info.frame_count) == (0, None, 101)
    info, frames = sample_video(path, fps=None, frames=4)
    assert [frame.index for frame in frames] == [12, 37, 63, 88] and info.frame_count == 101
    # a damaged frame is passed over, not taken for the end (audit L H1): with --fps the next
    # frame stands in for it and the damage is said; with --frames a sampled one is missing
    path = fake_video(monkeypatch, path, VFR_TIMES, 25.0, 301, damaged=[55, 56])
    _, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames] == [0, 25, 50, 57] + list(range(60, 101, 5))
    assert frames.unread == 0 and frames.shortfall() == (
        "2 frame(s) of the stream could not be decoded (from frame 55), the frames sampled were "
        "read: the file is damaged"
    )
    info, frames = sample_video(path, fps=None, frames=4)
    assert info.frame_count == 101 and [frame.index for frame in frames] == [12, 37, 63, 88]
    path = fake_video(monkeypatch, path, VFR_TIMES, 25.0, 301, damaged=[37])
    info, frames = sample_video(path, fps=None, frames=4)
    assert [frame.index for frame in frames] == [12, 63, 88] and frames.shortfall() == (
        "1 of the 4 frames sampled could not be read (from frame 37): the file is truncated or "
        "damaged"
    )
    path = fake_video(monkeypatch, path, VFR_TIMES[:60], 25.0, 301)  # cut at 3.8 s of 12
    info, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames] == [0, 25, 50, 55]
    said = "9 of the 13 frames sampled could not be read (where the stream ends at frame 60)"
    assert said in frames.shortfall()
    assert (info.frame_count, info.duration) == (301, 12.04)  # what the file claims


@pytest.mark.parametrize(
    "kind, name", [("BMP", "a.mp4"), ("PPM", "b.avi"), ("JPEG2000", "c.mkv"), ("PNG", "d.mov")]
)
def test_an_image_named_like_a_video_is_read_as_an_image(tmp_path, kind, name):
    """Audit L M5: a BMP, PPM or JPEG 2000 named .mp4/.avi/.mkv was decoded by FFmpeg as a
    one-frame video (no EXIF orientation, no provenance checks, no decompression-bomb limit)."""
    path = tmp_path / name
    Image.fromarray(astronaut()).save(path, kind)
    assert not holds_video(path)
    decoded = decode_image(path)
    assert decoded.format == kind and decoded.pixels.shape == (512, 512, 3)
    (tmp_path / "text.mp4").write_bytes(b"BM, then no bitmap header at all" + bytes(32))
    assert holds_video(tmp_path / "text.mp4")  # two letters are no proof


def test_a_stream_that_starts_late_is_no_truncation(monkeypatch, tmp_path):
    """Audit L M3: a Matroska cut that keeps its source's times (ffmpeg -copyts) starts at 10 s;
    its duration runs from 0 (14 s, an estimated 350 frames at 25 fps) where its frames' times
    run from the first frame. It was "truncated", and --frames spread over 350 frames, missing
    its faces. A late start that accounts for the difference is no truncation; one that does
    not is still one."""
    times = [40.0 * i for i in range(100)]
    path = fake_video(monkeypatch, tmp_path / "cut.mkv", times, 25.0, 350, start=250)
    info, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames] == [0, 25, 50, 75]
    assert (frames.unread, frames.shortfall(), info.frame_count) == (0, None, 100)
    info, frames = sample_video(path, fps=None, frames=4)
    assert [frame.index for frame in frames] == [12, 37, 62, 87] and info.frame_count == 100
    path = fake_video(monkeypatch, path, times[:50], 25.0, 350, start=250)  # and cut at 2 s
    _, frames = sample_video(path, fps=1.0)
    assert [frame.index for frame in frames] == [0, 25]
    assert "its frames stop at 2.0 s of the 14.0 s it declares" in frames.shortfall()


def test_an_mpeg_transport_stream_named_on_its_own_is_a_video(tmp_path):
    """.ts is TypeScript too, so a walk passes it over, but a named one whose bytes are MPEG-TS
    is read as a video, as docs/scan.md says (audit W, H4), and so is an M2TS misnamed."""
    save_video(tmp_path / "clip.ts", frames=10, fps=5.0)
    assert (tmp_path / "clip.ts").read_bytes()[:377:188] == b"GGG"
    assert holds_video(tmp_path / "clip.ts") and not is_media(tmp_path / "clip.ts")
    info, frames = sample_video(tmp_path / "clip.ts", fps=1.0)
    assert [frame.index for frame in frames] == [0, 5] and info.frame_count == 10
    (tmp_path / "code.ts").write_text("export const g = 'G';\n" * 40)
    assert not holds_video(tmp_path / "code.ts")
    packets = b"".join(b"\0\0\0\0G" + bytes(187) for _ in range(3))
    (tmp_path / "disc.bin").write_bytes(packets)
    assert holds_video(tmp_path / "disc.bin")


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def test_an_unopenable_mp4_says_whether_it_lacks_a_video_stream_or_its_index(tmp_path):
    """Both were "cannot open video (unsupported codec or corrupt file)" (audit W, L3)."""
    handler = _box(b"hdlr", bytes(8) + b"soun" + bytes(12))
    (tmp_path / "memo.mp4").write_bytes(
        _box(b"ftyp", b"M4A \0\0\0\0isom") + _box(b"moov", _box(b"trak", _box(b"mdia", handler)))
    )
    with pytest.raises(DecodeError, match="no video stream in this file"):
        sample_video(tmp_path / "memo.mp4")
    save_video(tmp_path / "whole.mp4", frames=10)  # OpenCV writes the index last
    whole = (tmp_path / "whole.mp4").read_bytes()
    assert whole.rindex(b"moov") > len(whole) // 2
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DecodeError, match="truncated or incomplete video: it has no index"):
        sample_video(tmp_path / "cut.mp4")


def _element(ident: int, payload: bytes, unknown_size: bool = False) -> bytes:
    """One EBML element: its ID, an 8-byte size (all ones: unknown, as a live recording's
    Segment), its payload."""
    size = b"\x01" + (b"\xff" * 7 if unknown_size else len(payload).to_bytes(7, "big"))
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + size + payload


def _matroska(track_type: int, codec: bytes) -> bytes:
    """A Matroska file of one track of ``track_type`` (1 video, 2 audio) and an empty cluster."""
    header = _element(0x1A45DFA3, _element(0x4282, b"webm"))
    entry = _element(0xD7, b"\x01") + _element(0x83, bytes([track_type])) + _element(0x86, codec)
    tracks = _element(0x1654AE6B, _element(0xAE, entry))
    cluster = _element(0x1F43B675, _element(0xE7, b"\x00"))
    return header + _element(0x18538067, tracks + cluster, unknown_size=True)


def test_an_audio_only_matroska_says_it_has_no_video_stream(tmp_path):
    """A voice memo or a browser's audio recording in WebM/MKV was "cannot open video
    (unsupported codec or corrupt file)", as if damaged (audit L, L2); a video track's file
    that cannot be opened keeps that message."""
    (tmp_path / "memo.webm").write_bytes(_matroska(2, b"A_OPUS"))
    with pytest.raises(DecodeError, match="no video stream in this file"):
        sample_video(tmp_path / "memo.webm")
    (tmp_path / "broken.mkv").write_bytes(_matroska(1, b"V_NOSUCHCODEC"))
    with pytest.raises(DecodeError, match="cannot open video"):
        sample_video(tmp_path / "broken.mkv")
    # a junk file of a million tiny elements is not walked to its end (9 minutes a GB: audit
    # P L3): the track list is looked for among the first elements only, as real files hold it
    header = _element(0x1A45DFA3, _element(0x4282, b"webm"))
    voids = b"\xec\x80" * 1_000_000
    audio = _element(0x1654AE6B, _element(0xAE, _element(0x83, b"\x02")))
    (tmp_path / "junk.webm").write_bytes(header + _element(0x18538067, voids + audio, True))
    with pytest.raises(DecodeError, match="cannot open video"):
        sample_video(tmp_path / "junk.webm")


def test_alignment_puts_landmarks_on_the_template(detector):
    pixels = astronaut()
    (face,) = detector.detect([pixels])[0]
    crop = align_faces(
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, face.landmarks[None], 128, 1.3
    )
    assert crop.shape == (1, 3, 128, 128) and 0 <= float(crop.min()) and float(crop.max()) <= 1
    # Where the similarity fit says the landmarks land in the crop ...
    a, t = similarity_transforms(
        torch.from_numpy(face.landmarks[None]), torch.from_numpy(template_points(128, 1.3))
    )[0]
    mapped = a * torch.complex(*torch.from_numpy(face.landmarks).T) + t
    expected = np.stack([mapped.real.numpy(), mapped.imag.numpy()], axis=1)
    assert np.abs(expected - template_points(128, 1.3)).max() < 6  # a real face is not the template
    # ... is where MTCNN finds them again in the warped crop.
    (again,) = FaceDetector("cpu").detect(
        [(crop[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)]
    )[0]
    assert np.abs(again.landmarks - expected).max() < 2.0


def test_alignment_of_a_large_face_is_not_aliased():
    """A face 8x larger than the crop is box-filtered first: stripes finer than the crop average
    out."""
    stripes = np.zeros((1024, 1024, 3), np.float32)
    stripes[:, ::2] = 1.0  # 1-pixel stripes
    image = torch.from_numpy(stripes).permute(2, 0, 1)
    landmarks = template_points(1024, 1.3)[None]
    crop = align_faces(image, landmarks, 128, 1.3)
    assert abs(float(crop.mean()) - 0.5) < 0.02 and float(crop.std()) < 0.05


def _whole_image_alignment(
    image: torch.Tensor, landmarks: np.ndarray, crop_size: int, margin: float
) -> torch.Tensor:
    """The reference: pool the whole float image by each face's factor, then sample it
    bilinearly."""
    a, t = similarity_transforms(
        torch.from_numpy(landmarks), torch.from_numpy(template_points(crop_size, margin))
    ).T
    coords = torch.arange(crop_size, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    crops = []
    for scale, shift in zip(a, t):
        factor = max(1, int(torch.floor(1.0 / scale.abs())))
        pooled = torch.nn.functional.avg_pool2d(image[None], factor)
        src = (torch.complex(grid_x, grid_y) - shift) / scale
        x = (src.real - (factor - 1) / 2) / factor
        y = (src.imag - (factor - 1) / 2) / factor
        height, width = pooled.shape[-2:]
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], -1).to(image.dtype)[
            None
        ]
        crops.append(
            torch.nn.functional.grid_sample(
                pooled, grid, padding_mode="border", align_corners=False
            )[0]
        )
    return torch.stack(crops).clamp(0, 1).mul(255).round().div(255)  # as a PNG stores it


def _equal_but_for_rounding(crops: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal on the 8-bit grid, but where a value within the two's summation-order difference of a
    rounding boundary rounds the other way: by 1 / 255, in one value of 100 at most."""
    differ = (crops.double() - expected.double()).abs()
    assert differ.max().item() <= 1 / 255 + 1e-6  # float32's k / 255 is off by up to 3e-8
    assert (differ > 1e-6).float().mean().item() < 1e-2


def test_alignment_reads_only_the_faces_region_with_the_whole_images_values():
    """Crops from the face's region equal crops from the whole image: big and small faces, at edges
    and corners."""
    generator = torch.Generator().manual_seed(3)
    # no side a multiple of 3
    pixels = torch.randint(0, 256, (3, 1001, 1502), dtype=torch.uint8, generator=generator)
    template = template_points(112, 1.0)
    landmarks = np.stack(
        [
            template * 3.3
            + [1150, 700],  # factor 3, the crop reaching past the right and bottom edges
            template * 3.3 + [-60, -40],  # factor 3, past the top-left corner
            template * 0.8 + [700, 400],  # factor 1, inside
            template * 0.8 + [1440, 3],  # factor 1, past the top-right corner
            (template - 56) * 2.2 @ np.array([[0.8, 0.6], [-0.6, 0.8]])
            + [500, 500],  # factor 2, rotated
        ]
    )
    # in float64 the two agree exactly but for summation order; float32 grids round differently
    # (1e-4 before the crops are put on the 8-bit grid)
    exact = pixels.double() / 255
    _equal_but_for_rounding(
        align_faces(exact, landmarks, 128, 1.3), _whole_image_alignment(exact, landmarks, 128, 1.3)
    )
    expected = _whole_image_alignment(pixels.float() / 255, landmarks, 128, 1.3)
    for image in (pixels, pixels.float() / 255):
        _equal_but_for_rounding(align_faces(image, landmarks, 128, 1.3), expected)
