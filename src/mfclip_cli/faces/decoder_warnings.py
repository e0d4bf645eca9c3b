"""The warnings an image decoder gives of a file it reads past damage, as that file's.

Pillow's plugins warn, and read on, where a file is damaged in a way they can pass over: an MPO
whose index is malformed is read as its first JPEG, an APNG whose frames are out of sequence as
its default image, a TIFF tag pointing past the file's end is skipped; and they log why they
refuse one ("More samples per pixel than can be decoded"). Python printed each on stderr,
naming no file, a warning once per process (a second file's was never shown). Within
``heard_while_decoding`` each is collected, in order and once, for the record of the file this
thread is reading (``FileRecord.decoder_warnings``); outside it each distinct one is still
printed once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from pathlib import Path
from typing import Iterator, TextIO

# Pillow's words about its own conversions, not about the file (a palette's transparency given
# as bytes, converted to RGB as every picture here is), and about a missing optional library
NOT_ABOUT_THE_FILE = (
    "Palette images with Transparency expressed in bytes",
    "Couldn't allocate palette entry for transparency",
    "XMP data cannot be read without defusedxml",
)
DECODER_PACKAGES = frozenset({"PIL", "pillow_heif"})

_heard = threading.local()
_printed: set[tuple[str, str]] = set()
_show_as_python_does = warnings.showwarning


@contextlib.contextmanager
def heard_while_decoding() -> Iterator[list[str]]:
    """The decoders' warnings given in this thread within the block, each once, in order; a
    block within another passes its own on to the outer one's too."""
    outer = getattr(_heard, "warnings", None)
    heard: list[str] = []
    _heard.warnings = heard
    try:
        yield heard
    finally:
        _heard.warnings = outer
        if outer is not None:
            outer.extend(text for text in heard if text not in outer)


def _heard_here(text: str) -> bool:
    """Whether this thread is reading a file: ``text`` is then that file's (once, and not where
    it is about Pillow's own conversions)."""
    heard = getattr(_heard, "warnings", None)
    if heard is None:
        return False
    if text not in heard and not text.startswith(NOT_ABOUT_THE_FILE):
        heard.append(text)
    return True


def _said(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning``, which a decoder's warning reaches every time (the filter below
    says "always", so that each file's is heard): the file's where one is being read, else
    printed once as Python does by default."""
    if issubclass(category, UserWarning) and DECODER_PACKAGES & set(Path(filename).parts):
        text = str(message)
        if _heard_here(text) or (filename, text) in _printed:
            return
        _printed.add((filename, text))
    _show_as_python_does(message, category, filename, lineno, file, line)


class _Logged(logging.Handler):
    """Pillow's log records (warnings and errors), heard as its warnings are; outside a file's
    reading, handled as Python's last resort would (on stderr), there being no other."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _heard_here(record.getMessage()) and logging.lastResort is not None:
            logging.lastResort.handle(record)


logging.getLogger("PIL").addHandler(_Logged(logging.WARNING))
warnings.showwarning = _said
# after the filters already set (``-W``, PYTHONWARNINGS, and decode's own "ignore"s), which win
warnings.filterwarnings(
    "always", category=UserWarning, module=r"(PIL|pillow_heif)(\.|$)", append=True
)
