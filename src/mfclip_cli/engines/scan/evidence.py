"""Reading an input once, so that the SHA-256 in its record names exactly the bytes analysed.

Hashing a file by its path and decoding it by its path again are two reads, and a file that
another process rewrites in between gives a record the hash of one version and the faces of the
other. So an image is read into memory once: its SHA-256 is taken of those bytes, the decoder
reads the same buffer, and every later use in the run (annotated copies, the HTML report's
pictures, provenance checks) takes those bytes or that decoded image from the record
(``FileRecord.source``), never the path again.

A video cannot be held in memory, and OpenCV's decoder seeks (an MP4's index is often at its
end), so it cannot be hashed as it is decoded. It is opened once and the descriptor held: the
hash is read through it, the decoder opens the same open file (``/proc/self/fd/N``: the same inode
even when the path is replaced meanwhile), and the file's size, modification and change times are
compared before the hash and after the last frame (``FileIdentity``). A video written to in
between raises ``InputChanged``: its record is an error without a hash (``FileRecord.changed``).

Reading a file again later (``mfclip report``, or a report drawn from records that crossed
processes) goes through the same single read and draws nothing unless the bytes are those the
record's SHA-256 names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from mfclip_cli.engines.scan.inputs import LINK_LOOP, not_a_file
from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.faces.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    StillPictures,
    VideoFrame,
    animation_frames,
    decode_image,
    too_large_to_read,
    video_frames,
)
from mfclip_cli.faces.decoder_warnings import heard_while_decoding
from mfclip_cli.files import NotARegularFile, open_regular

HASH_CHUNK = 1 << 20
# an image modified this recently may have been written within the clock tick of its read, which
# no timestamp shows: it is read a second time and the two reads compared (audit O M2: a file
# rewritten in place in a loop gave records of bytes that were never the file, unflagged)
RECENT_WRITE_NS = 2_000_000_000


class InputChanged(Exception):
    """The input changed while it was read or scanned; the message says how, for the report."""


@dataclass(frozen=True)
class FileIdentity:
    """What moves when a file's bytes are written: its size and modification time, and its change
    time, which every write moves and nothing can set back (setting the modification time back
    moves it). The inode needs no comparing: the descriptor the identity is taken from pins it.

    The change time also moves when a link to the file goes (its path replaced by a rename, the
    file deleted), which leaves its bytes as they were: with the link count changed, a change
    time that moved alone is not counted as a change.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    links: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileIdentity:
        return cls(status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_nlink)

    def changes_to(self, later: FileIdentity) -> str | None:
        """How ``later``'s bytes may differ, in words; None when nothing says they do."""
        words = []
        if later.size != self.size:
            words.append(f"size {self.size} -> {later.size} bytes")
        if later.mtime_ns != self.mtime_ns:
            words.append("modification time moved")
        elif later.ctime_ns != self.ctime_ns and later.links == self.links:
            words.append("change time moved")
        return ", ".join(words) or None

    def unclear_from(self, later: FileIdentity) -> bool:
        """Whether ``later`` cannot tell a write from a link's change: the change time moved
        with the link count, which a rename or a deletion does alone, but a write whose
        modification time was set back (``touch -r``) beside one would too (audit Z3)."""
        return later.ctime_ns != self.ctime_ns and later.links != self.links


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """``files.open_regular``, its refusals as the file's ``DecodeError``."""
    try:
        return open_regular(path)
    except OSError as error:
        raise DecodeError(_not_opened(path, error)) from None


def _not_opened(path: Path, error: OSError) -> str:
    """Why ``path`` could not be opened. A broken link, a link loop, a FIFO, a socket or a device
    named directly is worded as a folder's walk words it (``inputs``), so that one fault gets one
    message however the file was named (a broken link read "cannot read file: No such file or
    directory" here, "broken symbolic link: ..." from the walk)."""
    if error.errno == errno.ELOOP:
        return LINK_LOOP
    if isinstance(error, NotARegularFile) or _special(path):
        return not_a_file(path)
    return f"cannot read file: {error.strerror or error}"


def _special(path: Path) -> bool:
    """Whether ``path`` is a broken link or names anything but a file or a folder (a socket, which
    cannot be opened at all)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path.is_symlink()
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@dataclass
class ImageBytes:
    """An image input as read once: ``data`` is exactly what ``sha256`` names and what ``image``
    was decoded from. Provenance checks read ``data`` too."""

    data: bytes
    sha256: str
    image: DecodedImage | None = None  # once decoded
    # a still image of several views to scan one by one (``Scanner.scan_pictures``)
    pictures: StillPictures | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageBytes:
    """The whole file at ``path``, read once, and its SHA-256; ``InputChanged`` when it was written
    to while it was read (the bytes may then mix two versions), ``DecodeError`` when it cannot be
    read or is too large to be an image within ``max_pixels``."""
    handle, before = _open_regular(path)
    with handle:
        if (too_large := too_large_to_read(before.st_size, max_pixels)) is not None:
            raise DecodeError(f"{too_large} (--max-megapixels raises it)")
        try:
            data = handle.read(before.st_size + 1)  # a byte more: a file growing shows
            after = os.fstat(handle.fileno())
            identity = FileIdentity.of(before)
            changes = identity.changes_to(FileIdentity.of(after))
            if changes is None and len(data) != before.st_size:
                changes = f"{len(data)} bytes read of {before.st_size}"
            if changes is None and _written_lately(after):
                handle.seek(0)
                if handle.read(before.st_size + 1) != data:
                    changes = "two reads of it differ: it is being written"
        except OSError as error:
            raise DecodeError(f"cannot read file: {error.strerror or error}") from None
    if changes:
        raise InputChanged(f"the file changed while it was read ({changes}); scan it again")
    return ImageBytes(data, hashlib.sha256(data).hexdigest())


def _written_lately(status: os.stat_result) -> bool:
    """Whether a file's last write or status change is recent enough to have fallen within the
    clock tick of a read of it (``RECENT_WRITE_NS``)."""
    return time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns) < RECENT_WRITE_NS


class HeldVideo:
    """A video input opened once and held while it is scanned: hashed through the descriptor,
    decoded through it (``decoder_path``), its identity checked after the last frame."""

    def __init__(self, path: Path):
        self.handle, status = _open_regular(path)
        self.identity = FileIdentity.of(status)
        try:
            self.sha256 = self._hash()
        except BaseException:
            self.handle.close()
            raise

    def _hash(self) -> str:
        """The SHA-256 of the held file, read by offset (``pread``): the descriptor's own position
        stays at 0 where the decoder shares it (``/dev/fd`` duplicates it)."""
        digest, offset, descriptor = hashlib.sha256(), 0, self.handle.fileno()
        try:
            while chunk := os.pread(descriptor, HASH_CHUNK, offset):
                digest.update(chunk)
                offset += len(chunk)
        except OSError as error:
            raise DecodeError(f"cannot read file: {error.strerror or error}") from None
        if offset != self.identity.size:
            raise InputChanged(
                f"the file changed while it was read ({offset} bytes read of "
                f"{self.identity.size}); scan it again"
            )
        return digest.hexdigest()

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def decoder_path(self) -> Path:
        """A name of the held file for the decoder to open: the file hashed, whatever the path
        names by then (Linux: ``/proc/self/fd/N``; macOS and the BSDs: ``/dev/fd/N``)."""
        folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        return Path(folder, str(self.handle.fileno()))

    def check_unchanged(self, when: str = "scanned") -> None:
        """``InputChanged`` when the file was written to since it was opened (and hashed); where
        its status cannot tell (``unclear_from``), its bytes are hashed again."""
        later = FileIdentity.of(os.fstat(self.handle.fileno()))
        changes = self.identity.changes_to(later)
        if not changes and self.identity.unclear_from(later) and self._hash() != self.sha256:
            changes = "its bytes differ from those hashed, the modification time kept"
        if changes:
            raise InputChanged(
                f"the file changed while it was {when} ({changes}): its frames are not those "
                "its hash would name; scan it again"
            )

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> HeldVideo:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _changed_since_scan() -> InputChanged:
    return InputChanged("the file has changed since the scan (its SHA-256 differs)")


def image_of(record: FileRecord, base: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """The upright image ``record``'s faces were found in: the scan's own decoded copy, else the
    file (``base / record.path``) read again once and decoded only if its bytes are those the
    record's SHA-256 names, within the scan's ``max_pixels`` (``--max-megapixels``)."""
    source = record.source
    if isinstance(source, ImageBytes) and source.image is not None:
        return source.image
    read = read_image(base / record.path, max_pixels)
    if read.sha256 != record.sha256:
        raise _changed_since_scan()
    with heard_while_decoding():  # said in the record already, as the scan read the file
        return decode_image(read.data, max_pixels)


@contextlib.contextmanager
def frames_of(
    record: FileRecord, base: Path, indices: list[int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Iterator[VideoFrame]]:
    """The frames at ``indices`` of ``record``'s video, read again through one held descriptor
    whose SHA-256 is the record's; ``InputChanged`` at the end when it was written to meanwhile
    (what was drawn from it must then be dropped). An animation's (``FileRecord.animated``) are
    decoded from its bytes, read again once within the scan's ``max_pixels``, where those are the
    record's; so are the pictures of a still image of several (``FileRecord.stills``: a TIFF's
    pages), ``indices`` then theirs."""
    path = base / record.path
    if record.animated or record.stills:
        read = read_image(path, max_pixels)
        if read.sha256 != record.sha256:
            raise _changed_since_scan()
        with heard_while_decoding():  # said in the record already, as the scan read the file
            if record.stills:
                yield iter(StillPictures(read.data, max_pixels, indices))
            else:
                yield animation_frames(read.data, indices, max_pixels)
        return
    with HeldVideo(path) as video:
        if video.sha256 != record.sha256:
            raise _changed_since_scan()
        yield video_frames(video.decoder_path, indices)
        video.check_unchanged("read again")
