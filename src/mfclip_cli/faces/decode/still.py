"""Still images: a file's first picture (``decode_image``), with PNG and WebP retries where a
part its pixels do not need failed, and each picture of a file of several (``StillPictures``)."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfclip_cli.faces.decode.chunks import (
    PNG_SIGNATURE,
    is_webp,
    png_chunks,
    png_of_its_pixels,
    whole_webp_frames,
)
from mfclip_cli.faces.decode.jpeg import (
    JPEG_FORMATS,
    mp_header,
    refuse_damaged_jpeg,
    unindexed_jpegs,
)
from mfclip_cli.faces.decode.kinds import is_heif, readable_by_pillow
from mfclip_cli.faces.decode.pixels import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    VideoFrame,
    hold_pillow_to,
    over_the_limit,
    picture_count,
    to_rgb,
    too_large_to_read,
    undecodable_because,
    upright,
)
from mfclip_cli.files import open_regular

UNRECOGNISED = "not a recognised image format"
# TIFF compressions (Pillow's names) that every libtiff build Pillow links decodes
TIFF_COMMON_COMPRESSIONS = frozenset(
    {None, "raw", "packbits", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "jpeg",
     "tiff_jpeg", "group3", "group4", "tiff_ccitt", "tiff_raw_16"}
)  # fmt: skip


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Upright RGB pixels of an image file, or of its bytes as read once (so that a hash of those
    bytes names what was decoded), or ``DecodeError`` saying why not."""
    hold_pillow_to(max_pixels)
    if isinstance(source, bytes):
        return _decode_stream(io.BytesIO(source), len(source), "", max_pixels)
    try:  # opened once: its head, Pillow and a PNG's retry read the same open file
        stream, status = open_regular(source)
    except OSError as error:
        raise DecodeError(f"cannot read file: {error.strerror or error}") from error
    with stream:
        return _decode_stream(stream, status.st_size, source.suffix.lstrip(".").upper(), max_pixels)


def read_image_bytes(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """An image file's bytes, read once, to be hashed and decoded (``decode_image``) as one: a
    hash of one read names other bytes than the decoding of another where the file changes
    between them. ``DecodeError`` where it cannot be read or is too large to hold an image
    within ``max_pixels`` (``too_large_to_read``: never read into memory)."""
    try:
        stream, status = open_regular(path)
        with stream:
            if (too_large := too_large_to_read(status.st_size, max_pixels)) is not None:
                raise DecodeError(too_large)
            data = stream.read(status.st_size + 1)  # a byte more: a file growing shows
    except OSError as error:
        raise DecodeError(f"cannot read file: {error.strerror or error}") from None
    if len(data) != status.st_size:  # grown past its size as checked, or cut while read
        raise DecodeError(
            f"the file changed while it was read ({len(data)} bytes read of {status.st_size})"
        )
    return data


def _decode_stream(stream: BinaryIO, size: int, suffix: str, max_pixels: int) -> DecodedImage:
    """``decode_image``'s work on an open ``stream`` of ``size`` bytes, at its start."""
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        head = stream.read(512)
        stream.seek(0)
    except OSError as error:
        raise DecodeError(f"cannot read file: {error.strerror or error}") from error
    readable_by_pillow(head)
    try:
        return _decoded(stream, head, suffix, max_pixels)
    except DecodeError as error:
        # a PNG may fail for a chunk its pixels do not need, a WebP for being cut short (an
        # animated one has whole frames before the cut); a bomb is refused by its size
        if (head[:8] != PNG_SIGNATURE and not is_webp(head)) or "decompression" in str(error):
            raise
        failure = error
    try:
        stream.seek(0)
        data = stream.read()
    except OSError:
        raise failure from None
    if head[:8] != PNG_SIGNATURE:
        return _webp_again(data, failure, max_pixels)
    return _png_again(data, failure, suffix, max_pixels)


def _webp_again(data: bytes, failure: DecodeError, max_pixels: int) -> DecodedImage:
    """A WebP that failed to decode: an animated one cut short decoded from its whole frames
    (``whole_webp_frames``), the cut frame counted among its pictures (it fails as it is read,
    and is said, as a GIF's does); one cut short before a whole picture said to be; else
    ``failure``."""
    mended = whole_webp_frames(data)
    declared = struct.unpack_from("<I", data, 4)[0] + 8 if len(data) >= 8 else 0
    if mended is None and declared > len(data):
        raise DecodeError(
            f"truncated or corrupt image: the WebP stops at byte {len(data)} of the {declared} "
            "its header declares, before a whole picture"
        )
    if mended is None:
        raise failure
    whole, frame_cut = mended
    image = _decoded(io.BytesIO(whole), whole[:512], "", max_pixels)
    return DecodedImage(image.pixels, image.format, image.pictures + frame_cut)


def _png_again(data: bytes, failure: DecodeError, suffix: str, max_pixels: int) -> DecodedImage:
    """A PNG that failed to decode, decoded again with only the chunks its pixels need (an
    ancillary one kept only where its CRC holds): a damaged comment, or a workflow inflating
    past Pillow's limit, made the whole file undecodable (audit O M4). Else ``failure``, or the
    retry's own where Pillow's first was "not a recognised image format" (stopped by a damaged
    chunk, not the pixels' fault), or, for a file that stops before its IEND chunk, that it is
    truncated, whatever stopped Pillow first."""
    chunks = list(png_chunks(data))
    if not chunks or chunks[-1][0] != b"IEND":  # no chunk dropping mends a truncated file
        raise DecodeError("truncated or corrupt image: the PNG stops before its IEND chunk")
    mended = png_of_its_pixels(data)
    if mended is None:
        raise failure
    try:
        return _decoded(io.BytesIO(mended), PNG_SIGNATURE, suffix, max_pixels)
    except DecodeError as again:
        # Pillow's first word, stopped by a damaged chunk, named no fault of the pixels
        raise (again if str(failure) == UNRECOGNISED else failure) from None


def _decoded(stream: Any, head: bytes, suffix: str, max_pixels: int) -> DecodedImage:
    """Pillow's decoding of an open ``stream`` whose first bytes are ``head``."""
    try:
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(over_the_limit("image", width, height, max_pixels))
            image_format = image.format or suffix or "unknown"
            pictures = picture_count(image)
            index = _at_first_picture(image, pictures)
            _load(image)
            if image_format in JPEG_FORMATS:
                stream.seek(0)
                data = stream.read()
                refuse_damaged_jpeg(data)
                pictures += unindexed_jpegs(image, data)
            pixels = to_rgb(upright(image))
    except DecodeError:
        raise
    except UnidentifiedImageError:
        if is_heif(head):  # libheif found no image it can decode in it
            raise DecodeError("corrupt HEIC/HEIF image: no decodable picture in it") from None
        raise DecodeError(UNRECOGNISED) from None
    except Exception as error:  # noqa: BLE001 - a damaged file breaks a plugin in any way
        # (a TIFF page without its size tags: TypeError); that file fails, never the scan
        raise DecodeError(undecodable_because(error)) from None
    # a writable copy
    return DecodedImage(np.array(pixels, dtype=np.uint8, order="C"), image_format, pictures, index)


def _load(image: Image.Image) -> None:
    """``image`` decoded; a TIFF page that fails, compressed otherwise than every libtiff build
    decodes, names its compression: libtiff says only "decoder error -2" of a codec its build
    lacks (its own words, which name it, go to stderr: "WEBP compression support is not
    configured"), as it does of damage."""
    try:
        image.load()
    except OSError as error:
        compression = image.info.get("compression") if image.format == "TIFF" else None
        if compression in TIFF_COMMON_COMPRESSIONS or "decoder error" not in str(error):
            raise
        raise DecodeError(
            f"{undecodable_because(error)} (its compression, {compression}, may be one this "
            "build of libtiff cannot decode)"
        ) from None


def _at_first_picture(image: Image.Image, pictures: int) -> int:
    """The index of the picture scanned first, ``image`` set at it: picture 0, but a HEIF's
    primary image, whose size was checked (image 0 could be another, and a bomb: audit P H2).
    A PSD is at its composite as it opens (Pillow names it frame 1, as it does the first
    layer, and cannot seek back to it: ``picture_count``)."""
    if image.format == "HEIF":
        return image.tell()
    if pictures > 1 and image.format != "PSD":
        image.seek(0)
    return 0


# the MP types (CIPA DC-007, as Pillow names them) of an MPO's images that are views of their
# own: the primary, and a stereo camera's or a panorama's frames. The others are not: a large
# thumbnail (a smaller copy of the primary) and an image of undefined type, which is what an
# Ultra HDR or HDR phone photo's gain map is (a luminance map of the primary: its faces again)
MPO_VIEW_TYPES = ("Baseline MP Primary Image", "Multi-Frame Image")
UNINDEXED_JPEG = (
    "not scanned: the file's MP index is damaged, and without it whether this JPEG is another "
    "view, a thumbnail or a gain map cannot be told"
)
TIFF_REDUCED_COPY = 1  # a TIFF page's NewSubfileType (tag 254) bit: a smaller copy of a page


def _not_a_view(image: Image.Image, index: int, mp_entries: list[dict[str, Any]]) -> bool:
    """Whether picture ``index``, the one ``image`` is at, is no view of its own but a copy or
    a map of another picture of its file: a TIFF page marked reduced-resolution, an MPO's image
    other than its first that is typed neither primary nor multi-frame (a large thumbnail, a
    gain map), a PSD's layer (a part of its composite, picture 0, what the file shows)."""
    if image.format == "PSD":
        return index > 0
    if image.format == "TIFF":
        return bool(int(image.tag_v2.get(254, 0) or 0) & TIFF_REDUCED_COPY)
    if image.format == "MPO" and 0 < index < len(mp_entries):
        kind = str((mp_entries[index].get("Attribute") or {}).get("MPType", ""))
        return not kind.startswith(MPO_VIEW_TYPES)
    return False


class StillPictures:
    """The pictures of a still image file that holds several that are not an animation's frames
    (``DecodedImage.stills``): a TIFF's pages, a HEIF's images, an MPO's views. Each is a face's
    place as a video frame is (``VideoFrame`` with its index and no time), decoded alone,
    upright, each within ``max_pixels`` (a HEIF's other image may be larger than its primary:
    audit P H2), an MPO's view refused where its JPEG data is damaged, as a JPEG file is.

    A picture that is no view of its own (a TIFF's reduced-resolution page, an MPO's large
    thumbnail or gain map: ``_not_a_view``) is passed over (``passed_over``) where the file holds
    one that is a view, even where every view fails (a damaged photo's gain map, read in its
    place, was labelled: audit AF F1); one that cannot be decoded is left out, with why
    (``unread``), and the others read on. ``indices``: those pictures only, passed over
    or not (a report drawing again the pictures its faces were found in). ``most``: the
    pictures counted at most (an APNG read as stills: its default image and the frames found
    in it, not the count it declares)."""

    def __init__(
        self,
        data: bytes,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        indices: Iterable[int] | None = None,
        most: int | None = None,
    ):
        readable_by_pillow(data[:512])  # a HEIF's plugin, where nothing registered it yet
        hold_pillow_to(max_pixels)
        self.data, self.max_pixels = data, max_pixels
        self.image = Image.open(io.BytesIO(data))
        self.format = self.image.format
        self.indexed = picture_count(self.image)  # the pictures Pillow reads
        if most is not None:
            self.indexed = min(self.indexed, most)
        self.count = self.indexed + unindexed_jpegs(self.image, data)
        self._reopen()  # a count that met a damaged picture may leave Pillow's image half set
        self.unread: list[tuple[int, str]] = []
        mpinfo = getattr(self.image, "mpinfo", None) or {}
        self.mp_entries: list[dict[str, Any]] = mpinfo.get(0xB002) or []
        passed_over = [index for index in range(self.count) if self._no_view(index)]
        self.passed_over = passed_over if len(passed_over) < self.count else []
        self.asked = indices is not None
        wanted = range(self.count) if indices is None else sorted(set(indices))
        self.wanted = [index for index in wanted if index < self.count]

    @property
    def views(self) -> list[int]:
        """The pictures to scan: all but those passed over."""
        return [index for index in range(self.count) if index not in self.passed_over]

    def _no_view(self, index: int) -> bool:
        """``_not_a_view`` of picture ``index``: an MPO's by its MP index, without seeking (a view
        that fails to open leaves Pillow's image half overwritten: audit AE H1)."""
        if self.format != "TIFF":
            return _not_a_view(self.image, index, self.mp_entries)
        try:
            self.image.seek(index)
            return _not_a_view(self.image, index, self.mp_entries)
        except Exception:  # noqa: BLE001 - the reading says why (``unread``)
            self._reopen()
            return False

    def _reopen(self, seek_failed: bool = True) -> None:
        """A fresh image, where a failed seek or decode may have left Pillow's half set (an
        MPO's: audit AE H1; a TIFF's after a failed seek, whose next seek to that page then
        stayed on the page before and decoded it as that one). A TIFF whose page failed to
        decode, once its seek succeeded, is not reopened: its next seek reloads the page's
        directory from where it lies, and reopened, it walked every page before again, and
        damaged pages took quadratic time (audit AF F2: 1,000 of them 9 s)."""
        if self.format == "TIFF" and not seek_failed:
            return
        self.image.close()
        self.image = Image.open(io.BytesIO(self.data))

    def __iter__(self) -> Iterator[VideoFrame]:
        try:
            skipped = [] if self.asked else self.passed_over
            yield from self.read([i for i in self.wanted if i not in skipped])
        finally:
            self.close()

    def close(self) -> None:
        self.image.close()

    def pixels_of(self, indices: list[int]) -> int:
        """How many pixels the pictures at ``indices`` hold, from their headers (a picture whose
        header cannot be read counted as the largest of the others)."""
        sizes: list[int | None] = []
        for index in indices:
            try:
                self._seek(index)
                sizes.append(self.image.size[0] * self.image.size[1])
            except Exception:  # noqa: BLE001 - the reading says why (``unread``)
                self._reopen()
                sizes.append(None)
        largest = max((size for size in sizes if size is not None), default=0)
        return sum(largest if size is None else size for size in sizes)

    def read(self, indices: list[int]) -> Iterator[VideoFrame]:
        """The pictures at ``indices`` that decode; those that do not are said (``unread``)."""
        for index in indices:
            try:
                self._seek(index)
            except Exception as error:  # noqa: BLE001 - a damaged picture, in any way
                self.unread.append((index, undecodable_because(error)))
                self._reopen()
                continue
            try:
                pixels = self._decode(index)
            except Exception as error:  # noqa: BLE001 - a damaged picture, in any way
                self.unread.append((index, undecodable_because(error)))
                self._reopen(seek_failed=False)
                continue
            yield VideoFrame(index, None, pixels)

    def _seek(self, index: int) -> None:
        """The image set at picture ``index``. A PSD's picture 0 is its composite, which Pillow
        opens at and names frame 1, as it names the first layer: reopened for it, and set back
        to a frame of none before a seek to layer 1, which Pillow would take for no move. A JPEG
        after a damaged MP index is not read (``unindexed_jpegs``)."""
        if index >= self.indexed:
            raise DecodeError(UNINDEXED_JPEG)
        if self.format != "PSD":
            self.image.seek(index)
            return
        self._reopen()
        if index:
            self.image.frame = 0
            self.image.seek(index)

    def _decode(self, index: int) -> np.ndarray:
        """Picture ``index``, the one the image is at."""
        image = self.image
        width, height = image.size
        if width * height > self.max_pixels:
            raise DecodeError(over_the_limit("picture", width, height, self.max_pixels))
        _load(image)
        if self.format == "MPO":
            refuse_damaged_jpeg(self._view_bytes(index))
        return np.array(to_rgb(upright(image)), dtype=np.uint8, order="C")

    def _view_bytes(self, index: int) -> bytes:
        """An MPO view's JPEG: from where its MP index places it (offsets after the first
        view's count from the MP header of the first JPEG's APP2 segment, CIPA DC-007) to the
        next view, or the end; not by its recorded size, which an editor growing the first
        JPEG's header leaves short (audit AF F3), nor from the first "MPF" bytes anywhere (a
        comment may hold them: F4)."""
        header = mp_header(self.data)
        starts = [0] + [header + int(entry.get("DataOffset") or 0) for entry in self.mp_entries[1:]]
        start = starts[index] if index < len(starts) and header >= 0 else 0
        ahead = [other for other in starts if other > start]
        return self.data[start : min(ahead, default=len(self.data))]
