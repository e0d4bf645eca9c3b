"""Test media made on the fly from scikit-image's public-domain pictures (astronaut: NASA)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

# facenet-pytorch's MTCNN on astronaut(): DESIGN §8 gives about [181, 62, 268, 172].
ASTRONAUT_BOX = (181.05, 62.16, 267.75, 172.05)


def astronaut() -> np.ndarray:
    return data.astronaut()


def mosaic() -> np.ndarray:
    """2x2 mosaic: the astronaut and mirrored copies, four faces."""
    image = astronaut()
    top = np.concatenate([image, image[:, ::-1]], axis=1)
    return np.concatenate([top, top[:, ::-1]], axis=0)


def face_free() -> np.ndarray:
    return data.coffee()


def save_exif_rotated(path: Path, orientation: int) -> None:
    """Store the astronaut so that a viewer must apply EXIF ``orientation`` (6 or 8) to see it
    upright."""
    upright = Image.fromarray(astronaut())
    # 6 = "rotate 90 CW to view": the stored pixels are the upright picture turned 90 CCW.
    stored = upright.transpose(
        Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())


def save_heic(path: Path, orientation: int = 1) -> None:
    """The astronaut as a phone's HEIC (HEVC by libheif's x265, through pillow-heif); with
    ``orientation`` 6 its pixels are stored turned and the file says to turn them back, as an
    iPhone held upright stores them (pillow-heif writes the EXIF orientation as HEIF's irot)."""
    from pillow_heif import from_pillow

    stored = Image.fromarray(astronaut())
    exif = Image.Exif()
    if orientation == 6:
        stored = stored.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = orientation
    from_pillow(stored).save(path, quality=90, exif=exif.tobytes())


def save_truncated_jpeg(path: Path) -> None:
    Image.fromarray(astronaut()).save(path, "JPEG", quality=90)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


# the first bytes of an iPhone photo: an ISO BMFF "ftyp" box of brand heic
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def save_tiff_without_size(path: Path) -> None:
    """A two-page TIFF whose second page lost its width and height tags: Pillow fails on it with
    a TypeError, not the OSError of a plainly truncated file."""
    page = Image.fromarray(face_free())
    page.save(path, "TIFF", save_all=True, append_images=[page])
    raw = bytearray(path.read_bytes())
    first = struct.unpack_from("<I", raw, 4)[0]
    count = struct.unpack_from("<H", raw, first)[0]
    second = struct.unpack_from("<I", raw, first + 2 + 12 * count)[0]
    for entry in range(struct.unpack_from("<H", raw, second)[0]):
        offset = second + 2 + 12 * entry
        tag = struct.unpack_from("<H", raw, offset)[0]
        if tag in (256, 257):  # ImageWidth, ImageLength: renamed to private tags
            struct.pack_into("<H", raw, offset, 0xFFF0 + tag - 256)
    path.write_bytes(bytes(raw))


def save_pages(
    path: Path,
    pages: list[np.ndarray],
    reduced: tuple[int, ...] = (),
    damaged: tuple[int, ...] = (),
) -> None:
    """A TIFF of ``pages`` (deflate-compressed, as a scanner writes), those in ``reduced`` marked
    reduced-resolution copies (NewSubfileType 1), the coded data of those in ``damaged``
    overwritten (their decoding fails, the others' does not)."""
    images = [Image.fromarray(page) for page in pages]
    for index in reduced:
        images[index].encoderinfo = {"tiffinfo": {254: 1}}  # Pillow takes a page's own info
    images[0].save(
        path, "TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate"
    )
    raw = bytearray(path.read_bytes())
    with Image.open(path) as stored:
        for index in damaged:
            stored.seek(index)
            start = stored.tag_v2[273][0]  # the first strip's offset
            raw[start + 2 : start + 202] = bytes(range(200))
    path.write_bytes(bytes(raw))


# MP types (CIPA DC-007) of an MPO's images after the first
MP_DISPARITY = 0x020002  # a stereo camera's second view
MP_THUMBNAIL = 0x010001  # "Large Thumbnail (VGA Equivalent)": a smaller copy of the photo
MP_UNDEFINED = 0  # as an Ultra HDR photo's gain map is typed (and as Pillow writes them)


def save_mpo(path: Path, views: list[np.ndarray], types: dict[int, int]) -> None:
    """An MPO of ``views``, each after the first typed in its MP index as ``types`` says."""
    images = [Image.fromarray(view) for view in views]
    images[0].save(path, "MPO", save_all=True, append_images=images[1:])
    raw = bytearray(path.read_bytes())
    header = raw.index(b"MPF\x00") + 4  # the MP index's TIFF header (Pillow's little-endian)
    ifd = header + struct.unpack_from("<I", raw, header + 4)[0]
    for entry in range(struct.unpack_from("<H", raw, ifd)[0]):
        tag, _, _, offset = struct.unpack_from("<HHII", raw, ifd + 2 + 12 * entry)
        if tag == 0xB002:  # MPEntry: 16 bytes a view, its attribute first
            for index, kind in types.items():
                struct.pack_into("<I", raw, header + offset + 16 * index, kind)
    path.write_bytes(bytes(raw))


def save_psd(path: Path, composite: np.ndarray, layers: list[np.ndarray]) -> None:
    """A Photoshop file (RGB, 8 bits, raw channels) showing ``composite``, of ``layers`` the
    size of its canvas (Adobe's Photoshop File Formats Specification)."""
    height, width = composite.shape[:2]

    def planes(picture: np.ndarray) -> list[bytes]:
        return [np.ascontiguousarray(picture[..., band]).tobytes() for band in range(3)]

    records, channels = b"", b""
    for number, layer in enumerate(layers):
        name = f"layer {number}".encode()
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (-len(pascal) % 4)
        extra = struct.pack(">II", 0, 0) + pascal  # no mask, no blending ranges
        records += struct.pack(">iiiiH", 0, 0, height, width, 3)
        records += b"".join(struct.pack(">HI", band, 2 + height * width) for band in range(3))
        records += b"8BIMnorm" + bytes([255, 0, 0, 0]) + struct.pack(">I", len(extra)) + extra
        channels += b"".join(struct.pack(">H", 0) + plane for plane in planes(layer))
    layer_info = struct.pack(">h", len(layers)) + records + channels
    layer_info += b"\0" * (len(layer_info) % 2)
    masks = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    data = header + struct.pack(">II", 0, 0) + struct.pack(">I", len(masks)) + masks
    path.write_bytes(data + struct.pack(">H", 0) + b"".join(planes(composite)))


def save_fli(path: Path, frames: list[np.ndarray], milliseconds: int = 100) -> None:
    """An Autodesk FLC animation of ``frames`` (RGB, quantised to one 256-colour palette), each
    shown ``milliseconds``: a palette chunk, then each frame's pixels uncompressed (FLI_COPY)."""
    height, width = frames[0].shape[:2]
    strip = Image.fromarray(np.concatenate(frames, axis=0)).quantize(256)
    indices = np.asarray(strip).reshape(len(frames), height, width)
    palette = bytes((strip.getpalette() or []) + [0] * 768)[:768]

    def chunk(kind: int, data: bytes) -> bytes:
        data += b"\0" * (len(data) % 2)
        return struct.pack("<IH", 6 + len(data), kind) + data

    body = b""
    for number, frame in enumerate(indices):
        parts = [chunk(16, frame.tobytes())]  # FLI_COPY
        if number == 0:  # COLOR_256: one packet of 256 colours (a count of 0)
            parts.insert(0, chunk(4, struct.pack("<HBB", 1, 0, 0) + palette))
        data = b"".join(parts)
        body += struct.pack("<IHH8x", 16 + len(data), 0xF1FA, len(parts)) + data
    header = struct.pack(
        "<IHHHHHHI", 128 + len(body), 0xAF12, len(frames), width, height, 8, 3, milliseconds
    )
    path.write_bytes(header.ljust(128, b"\0") + body)


def save_icns_with_bomb(path: Path, side: int) -> None:
    """An Apple icon file whose 256 x 256 icon holds a PNG whose header claims side x side
    pixels: the picture nested in it is larger than any header of the file says."""
    bomb = path.with_suffix(".png")
    save_decompression_bomb(bomb, side)
    png = bomb.read_bytes()
    bomb.unlink()
    entry = b"ic08" + struct.pack(">I", 8 + len(png)) + png
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(entry)) + entry)


def save_apng_of_no_frames(path: Path, pictures: list[np.ndarray]) -> None:
    """An animated PNG of ``pictures`` whose acTL chunk says it holds 0 frames: Pillow warns
    ("Invalid APNG") and reads its default image only, the first picture."""
    first, *rest = [Image.fromarray(picture) for picture in pictures]
    first.save(path, "PNG", save_all=True, append_images=rest, duration=500)
    raw = bytearray(path.read_bytes())
    actl = raw.index(b"acTL")
    raw[actl + 4 : actl + 8] = struct.pack(">I", 0)
    crc = zlib.crc32(bytes(raw[actl : actl + 12])) & 0xFFFFFFFF
    raw[actl + 12 : actl + 16] = struct.pack(">I", crc)
    path.write_bytes(bytes(raw))


def save_apng_of_broken_frames(path: Path, default: np.ndarray, frames: list[np.ndarray]) -> None:
    """An animated PNG whose default image, ``default``, is no frame of its animation, and whose
    frames lost their data (every fdAT chunk): Pillow reads the default image, and refuses each
    frame ("no more images in APNG file"), as it does Pillow's apng/chunk_no_fdat.png's."""
    first, *rest = [Image.fromarray(picture) for picture in (default, *frames)]
    first.save(path, "PNG", save_all=True, append_images=rest, default_image=True, duration=500)
    raw = path.read_bytes()
    kept, position = [raw[:8]], 8
    while position < len(raw):
        size = struct.unpack_from(">I", raw, position)[0]
        if raw[position + 4 : position + 8] != b"fdAT":
            kept.append(raw[position : position + 12 + size])
        position += 12 + size
    path.write_bytes(b"".join(kept))


def set_tiff_tag(path: Path, tag: int, value: int) -> None:
    """The tag ``tag`` of a (little-endian) TIFF's first page set to one SHORT, ``value``, as
    damage or another writer leaves it."""
    raw = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", raw, ifd)[0], 12):
        if struct.unpack_from("<H", raw, entry)[0] == tag:
            struct.pack_into("<HHIHH", raw, entry, tag, 3, 1, value, 0)
    path.write_bytes(bytes(raw))


def save_tiff_of_many_samples(path: Path) -> None:
    """A TIFF whose SamplesPerPixel says 65535: Pillow logs "More samples per pixel than can be
    decoded" (a log record, not a warning) and cannot identify the file."""
    Image.new("RGB", (8, 8)).save(path, "TIFF")
    set_tiff_tag(path, 277, 65535)  # SamplesPerPixel


def save_decompression_bomb(path: Path, side: int = 30000) -> None:
    """A tiny PNG whose header claims side x side pixels (900 MP by default)."""
    Image.new("L", (1, 1)).save(path, "PNG")
    raw = bytearray(path.read_bytes())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(raw[ihdr : ihdr + 17])) & 0xFFFFFFFF
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(raw))


def save_variants(folder: Path) -> dict[str, Path]:
    """The astronaut in every awkward encoding an evidence folder may hold."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(astronaut())
    paths = {}
    paths["cmyk"] = folder / "cmyk.jpg"
    image.convert("CMYK").save(paths["cmyk"], "JPEG", quality=95)
    paths["grey16"] = folder / "grey16.png"
    grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(paths["grey16"])  # mode I;16
    paths["palette"] = folder / "palette.png"
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(paths["palette"])
    paths["rgba"] = folder / "rgba.png"
    rgba = image.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(paths["rgba"])
    paths["gif"] = folder / "animated.gif"
    second = Image.fromarray(face_free()).resize(image.size)
    image.convert("P").save(
        paths["gif"], save_all=True, append_images=[second.convert("P")], duration=100, loop=0
    )
    paths["webp"] = folder / "face.webp"
    image.save(paths["webp"], "WEBP", quality=90)
    paths["unicode"] = folder / "астронавт 宇航员.png"
    image.save(paths["unicode"])
    return paths


def save_video(
    path: Path,
    frames: int = 10,
    fps: float = 5.0,
    picture: np.ndarray | None = None,
    codec: str = "mp4v",
) -> None:
    """A video of the astronaut (or of ``picture``), shifting a little each frame: an mp4, or
    with ``codec="MJPG"`` an AVI whose header counts its frames exactly (cut in half, a truncated
    video that still claims every frame)."""
    frame = cv2.cvtColor(astronaut() if picture is None else picture, cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*codec), fps, (frame.shape[1], frame.shape[0])
    )
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.roll(frame, 4 * i, axis=1))
    writer.release()


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)
