"""File helpers every layer shares: hashing, atomic writes, and refusing unsafe weight files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from mfclip_cli.errors import UnsafeFileError, UsageError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container
_PICKLE_PROTOCOL = 0x80  # first byte of pickle protocol >= 2
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class NotARegularFile(OSError):
    """A path naming a FIFO, a socket or a device: reading it could wait for a writer forever or
    never end."""


def open_regular(path: str | Path) -> tuple[BinaryIO, os.stat_result]:
    """``path`` opened for reading, and its status; anything but a regular file is refused
    (``NotARegularFile``) without blocking on it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(descriptor, "rb"), status


def readable(text: str) -> str:
    """``text`` (a file name, or a message holding one) as a report can hold it. A name's bytes
    that are not UTF-8 reach Python as lone surrogates, which no UTF-8 writer accepts (a scan of
    a folder holding one stopped with a traceback): they are shown as ``\\xNN``, as ``ls -b``
    shows them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name decodes to ("\ud800" in JSON)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# C0 and C1 control characters and DEL, as ``ls -b`` writes them
_CONTROL_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
}


# Unicode's invisible format characters (zero-width space and joiners, the bidirectional
# overrides and isolates, the byte order mark, ...) and its line and paragraph separators
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})


def _code_escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text: str) -> str:
    """``text`` as a terminal may show it, as ``ls -b`` does: a byte that is not UTF-8 as
    ``\\xNN``, control characters escaped, Unicode's invisible format characters (a zero-width
    space, a right-to-left override) as ``\\u200b``, and a backslash doubled, so that no two
    names look alike (a newline shown as ``\\n`` and a name holding a backslash and an n;
    ``a.jpg`` and ``a\\u200b.jpg``). A file name in the evidence holding ESC sequences would
    otherwise restyle or rewrite the analyst's terminal; a newline would make one name look like
    two; a zero-width space would make two names look like one, and a right-to-left override
    would show a name's characters out of order."""
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate no name decodes to
            out.append(f"\\u{code:04x}")
        elif char == "\\":
            out.append("\\\\")
        elif code in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[code])
        elif code > 0x7F and unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            out.append(_code_escape(code))
        else:
            out.append(char)
    return "".join(out)


def sha256_file(
    path: str | Path, chunk_size: int = 1 << 20, *, stop: threading.Event | None = None
) -> str:
    """The SHA-256 of a regular file's bytes (a FIFO or a device is refused, not waited on).
    A set ``stop`` ends it between chunks with ``InterruptedError`` (a hash in a thread must not
    hold up a Ctrl-C)."""
    digest = hashlib.sha256()
    handle, _ = open_regular(path)
    with handle:
        while chunk := handle.read(chunk_size):
            if stop is not None and stop.is_set():
                raise InterruptedError(f"the hash of {path} was stopped")
            digest.update(chunk)
    return digest.hexdigest()


GLOB_CHARS = frozenset("*?[")


def glob_base(pattern: str) -> str:
    """The real folder a glob pattern searches: its path up to the first part holding a
    pattern character (``case/*/x.jpg``: ``case``)."""
    fixed = []
    for part in Path(pattern).parts:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return os.path.realpath(Path(*fixed) if fixed else Path("."))


def file_key(path: str | Path, *, regular: bool = False) -> tuple[int, int] | None:
    """The file ``path`` names, links followed, as (device, inode): what two names of one file
    share (a hard link, another spelling); None where it cannot be asked, or with ``regular``
    where it is no regular file (a pipe or a device is no evidence)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    if regular and not stat.S_ISREG(status.st_mode):
        return None
    return status.st_dev, status.st_ino


def lies_within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is the real folder ``folder`` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` names a pipe or a character device (``/dev/null``, ``/dev/stdout``, a
    shell's ``>(gzip > out.gz)``): an output written straight through, as ``tee`` writes it, never
    refused as existing, replaced, locked or removed."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def sidecar_path(path: str | Path) -> Path:
    """A checkpoint's readable ``.json`` beside its ``.safetensors``."""
    return Path(path).with_suffix(".json")


def refuse_existing(path: str | Path, force: bool) -> None:
    """Checked before long work starts, so a report is never overwritten unasked, nor found
    unwritable too late: a folder in its place, or a file where one of its folders should be
    (an ablation lost hours of runs and its table to that, audit T4). A pipe or a device is no
    file to keep: it is written to."""
    target = Path(path)
    if isinstance(path, str) and path == "-":  # scan's reports take it for standard output;
        raise UsageError(  # elsewhere a file "-" was written where a pipe was meant (audit U L5)
            "'-' names standard output for scan's reports only: give this report a file name"
        )
    if is_stream(target):
        return
    try:
        is_dir, exists = target.is_dir(), target.exists()
    except OSError as error:  # a name too long for the file system (audit Z L3: exit 1)
        raise UsageError(f"cannot write {shown(str(path))}: {error.strerror or error}") from None
    if is_dir:
        raise FileExistsError(f"{shown(str(path))} is a folder: name the file to write there")
    if exists and not force:
        raise FileExistsError(f"{shown(str(path))} already exists (use --force to overwrite it)")
    folder = next(parent for parent in target.absolute().parents if parent.exists())
    if not folder.is_dir():  # where the report's folders would be made
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NAME_MAX = 255  # bytes of one name: ext4, XFS, Btrfs, APFS, NTFS (in UTF-16 units)


def hidden_sibling(name: str, suffix: str) -> str:
    """``.NAME<suffix>``: a hidden file beside ``name`` (a report's lock, the start of its
    temporary file), whose name stays within ``NAME_MAX`` bytes: a report named with 242 bytes
    or more was refused at the end of its scan, or at its start naming a file the user never
    named (audit X M4). A name too long keeps its first bytes and a digest of the whole."""
    whole = f".{name}{suffix}"
    if len(os.fsencode(whole)) <= NAME_MAX:
        return whole
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    room = NAME_MAX - len(os.fsencode(f"..{digest}{suffix}"))
    head = os.fsdecode(os.fsencode(name)[:room])  # a character cut in two: escaped bytes
    return f".{head}.{digest}{suffix}"


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in the same folder, renamed into place on success.

    Readers never see a half-written file, and a crash leaves the previous file intact. An
    existing file is replaced only with ``overwrite=True``. A pipe or a device (``is_stream``) is
    written straight through.
    """
    target = Path(path)
    if is_stream(target):
        with open(target, "wb") as handle:
            yield handle
        return
    if target.exists() and not overwrite:
        raise FileExistsError(f"{shown(str(target))} already exists (refusing to overwrite it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # ".NAME.", to which mkstemp adds 8 characters and the suffix
    prefix = hidden_sibling(target.name, ".XXXXXXXX.tmp").removesuffix("XXXXXXXX.tmp")
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp's 0600 would hide reports from colleagues
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def write_json_atomic(path: str | Path, document: object, *, overwrite: bool = False) -> None:
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(data)


def keep_jsonl_prefix(
    path: str | Path, keep: Callable[[dict], bool] = lambda record: True
) -> list[dict]:
    """The records of a JSON Lines log up to its first unreadable line (one cut off by a crash),
    less those ``keep`` rejects; the file is rewritten atomically to exactly what is returned."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    records: list[dict] = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if keep(record):
            kept.append(line if line.endswith("\n") else line + "\n")
            records.append(record)
    if len(kept) != len(lines) or (text and not text.endswith("\n")):
        with atomic_writer(path, overwrite=True) as handle:
            handle.write("".join(kept).encode("utf-8"))
    return records


def _looks_pickled(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC) or (len(head) > 0 and head[0] == _PICKLE_PROTOCOL)


# bytes per element of the dtypes safetensors writes (sub-byte ones, F4 and F6_*, are named as
# not read)
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8,
    "F8_E8M0": 1,
}  # fmt: skip


def _check_data_length(path: Path, header: dict, data_bytes: int) -> None:
    """Every tensor's dtype, shape and byte range must agree, the ranges must tile the data, and
    the metadata must be text: a cut-off download fails here, with a message, and so does a
    header the safetensors library would stop at with its own exception (a traceback, audit R
    F5)."""
    malformed = f"{path} is not a valid safetensors file (malformed header"
    metadata = header.get("__metadata__")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise UnsafeFileError(f"{malformed}: its __metadata__ is not a table of texts)")
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if isinstance(dtype, str) and dtype not in _SAFETENSORS_ITEMSIZE:
            raise UnsafeFileError(f"{path}: tensor {name!r} is of dtype {dtype}, not read here")
        try:
            begin, end = entry["data_offsets"]
            shape, itemsize = entry["shape"], _SAFETENSORS_ITEMSIZE[entry["dtype"]]
            numbers = [begin, end, *shape]
            if not all(type(n) is int and n >= 0 for n in numbers) or begin > end:
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise UnsafeFileError(f"{malformed}: tensor {name!r})") from None
        if end - begin != math.prod(shape) * itemsize:
            raise UnsafeFileError(f"{malformed}: tensor {name!r}'s size is not its shape's)")
        ranges.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise UnsafeFileError(f"{malformed}: tensor {name!r} overlaps another or leaves a gap)")
        position = end
    if data_bytes < position:
        raise UnsafeFileError(
            f"{path} is truncated: its header describes {position} bytes of tensors, "
            f"the file holds {data_bytes}"
        )
    if data_bytes > position:
        raise UnsafeFileError(
            f"{path} is not a valid safetensors file ({data_bytes - position} bytes "
            "after its last tensor)"
        )


def check_safetensors(path: str | Path) -> dict:
    """Return the parsed safetensors header of ``path``, or raise ``UnsafeFileError``.

    Decided by content, not by name. Pickled PyTorch files (``torch.save`` zips and raw pickles)
    get their own message: unpickling a file someone handed us can execute arbitrary code.
    """
    path = Path(path)
    if path.is_dir():  # it was "not found", though it exists
        raise IsADirectoryError(f"{path} is a folder, not a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        plausible = 2 <= header_len <= min(_MAX_SAFETENSORS_HEADER, size - 8)
        raw = handle.read(header_len) if plausible else b""
    header = None
    if raw.startswith(b"{"):
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            header = None
    if isinstance(header, dict):
        _check_data_length(path, header, size - 8 - header_len)
        return header
    if _looks_pickled(head):
        raise UnsafeFileError(
            f"refusing to load {path}: it is a pickled PyTorch file, and unpickling can run "
            "arbitrary code. mfclip loads only .safetensors weights; convert the file on a "
            "machine you trust (safetensors.torch.save_file(torch.load(...), 'out.safetensors'))."
        )
    raise UnsafeFileError(
        f"{path} is not a safetensors file ({size} bytes, no valid safetensors header)"
    )
