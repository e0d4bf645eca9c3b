"""Build-machine paths in checkpoints: what a header or sidecar may not hold (issue 31)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from mfclip_cli.engines.weights.store import BUNDLED_STORE, read_registry
from mfclip_cli.files import check_safetensors
from mfclip_cli.model.checkpoint import CHECKPOINT_FORMAT, sidecar_path

# a POSIX absolute path ("/tmp/x"), a home-relative one ("~/x") or a Windows one ("C:\x", "\\srv")
_ABSOLUTE = re.compile(r"^(/[^/\s]|~/|[A-Za-z]:[\\/]|\\\\)")
# the checkpoint every install ships and uses without --weights
BUNDLED_DEMO = BUNDLED_STORE / next(e["file"] for e in read_registry(BUNDLED_STORE) if e["default"])


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        try:  # header entries are JSON documents held as strings
            inner = json.loads(value)
        except ValueError:
            yield where, value
        else:
            if isinstance(inner, (dict, list)):
                yield from _strings(inner, where)
            else:
                yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def absolute_paths(value: Any, where: str = "") -> list[str]:
    """Every string in ``value`` (JSON, nested JSON strings included) that is an absolute path,
    as ``where: value``."""
    return [f"{at}: {text}" for at, text in _strings(value, where) if _ABSOLUTE.match(text)]


def checkpoint_build_paths(path: Path) -> list[str]:
    """The absolute paths an mfclip checkpoint's safetensors header and .json sidecar record
    (none for a safetensors file that is not an mfclip checkpoint)."""
    header = check_safetensors(path).get("__metadata__") or {}
    if header.get("format") != CHECKPOINT_FORMAT:
        return []
    found = absolute_paths(header, "header")
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        found += absolute_paths(json.loads(sidecar.read_text(encoding="utf-8")), "sidecar")
    return found
