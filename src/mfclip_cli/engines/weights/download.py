"""Bringing a checkpoint file into the weights store: streamed, resumable, nothing trusted yet.

``fetch`` copies an ``http(s)://`` URL or a local path into a partial file. Over HTTP an existing
partial file is continued with a ``Range`` request, so an interrupted download resumes where it
stopped; a server that ignores the range gets the whole file again. Whether the result may be
registered (hash, format) is decided by the caller, ``weights.pull_weights``.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20
TIMEOUT_S = 60


class TransferError(RuntimeError):
    """The transfer failed. ``resumable``: the partial file is kept, and running again continues
    it."""

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable


def fetch(
    source: str,
    target: Path,
    *,
    on_start: Callable[[int | None, int], None],
    on_bytes: Callable[[int], None],
) -> None:
    """Bring ``source`` to ``target``; ``on_start(total, already)`` then ``on_bytes(n)`` report
    progress.

    Local write failures (a full disk) propagate as ``OSError``; transfer failures are
    ``TransferError``.
    """
    if source.startswith(("http://", "https://")):
        _fetch_http(source, target, on_start, on_bytes)
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise TransferError(
            f"{source}: no such file (give an http(s):// URL or a local path)", resumable=False
        )
    on_start(path.stat().st_size, 0)
    with open(path, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            on_bytes(len(chunk))


def _fetch_http(url: str, target: Path, on_start, on_bytes) -> None:
    offset = target.stat().st_size if target.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the partial file already holds everything
            on_start(offset, offset)
            return
        raise TransferError(f"{url}: HTTP {error.code} {error.reason}", resumable=False) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise TransferError(f"{url}: {reason}", resumable=offset > 0) from None
    with response:
        if offset and response.status != 206:  # the server sends the whole file again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        on_start(total, offset)
        received = offset
        with open(target, "ab" if offset else "wb") as writer:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (
                    http.client.IncompleteRead,
                    ConnectionError,
                    TimeoutError,
                    OSError,
                ) as error:
                    raise TransferError(
                        f"{url}: the connection broke after {received} bytes ({error})",
                        resumable=True,
                    ) from None
                if not chunk:
                    break
                writer.write(chunk)
                received += len(chunk)
                on_bytes(len(chunk))
    if total is not None and received < total:
        raise TransferError(
            f"{url}: the connection closed after {received} of {total} bytes", resumable=True
        )
