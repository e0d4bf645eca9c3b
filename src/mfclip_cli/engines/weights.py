"""Which checkpoint to use: ``--weights NAME|PATH``, then ``MFCLIP_WEIGHTS``, then the bundled demo.

Names are looked up in the registry ``weights/registry.json`` at the repository root, whose entries
record each checkpoint's file, SHA-256 and whether it is the demo. A registered file whose hash
does not match its entry is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mfclip_cli.files import atomic_writer, sha256_file, write_json_atomic
from mfclip_cli.model import MFCLIP, CheckpointInfo, load_checkpoint, read_checkpoint_info

WEIGHTS_DIR = Path(__file__).resolve().parents[3] / "weights"
REGISTRY_FILE = "registry.json"
WEIGHTS_ENV = "MFCLIP_WEIGHTS"


class WeightsError(RuntimeError):
    """No usable checkpoint: named but missing, failing its hash, or none found at all."""


@dataclass
class ResolvedWeights:
    path: Path
    name: str
    demo: bool
    source: str  # "--weights", MFCLIP_WEIGHTS or "bundled demo"
    registry_entry: dict[str, Any] | None = None


def read_registry(weights_dir: Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    path = weights_dir / REGISTRY_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("weights", []))
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise WeightsError(f"weights registry {path} is unreadable: {error}") from error


def _from_registry(entry: dict[str, Any], source: str, weights_dir: Path) -> ResolvedWeights:
    path = weights_dir / entry["file"]
    if not path.is_file():
        raise WeightsError(f"registered weights {entry['name']!r} are missing: {path}")
    digest = sha256_file(path)
    if entry.get("sha256") and digest != entry["sha256"]:
        raise WeightsError(
            f"registered weights {entry['name']!r} fail their hash check: {path} has SHA-256 {digest}, "
            f"the registry says {entry['sha256']}"
        )
    return ResolvedWeights(path, entry["name"], bool(entry.get("demo")), source, entry)


def resolve_weights(value: str | None, weights_dir: Path = WEIGHTS_DIR) -> ResolvedWeights:
    source = "--weights"
    if not value:
        value, source = os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV
    registry = read_registry(weights_dir)
    if not value:
        defaults = [entry for entry in registry if entry.get("default")]
        if not defaults:
            raise WeightsError(
                f"no weights given: pass --weights PATH (a .safetensors checkpoint) or set {WEIGHTS_ENV}"
            )
        return _from_registry(defaults[0], "bundled demo", weights_dir)
    by_name = {entry["name"]: entry for entry in registry}
    if value in by_name and not Path(value).exists():
        return _from_registry(by_name[value], source, weights_dir)
    path = Path(value)
    if not path.is_file():
        known = f" (registered names: {', '.join(by_name)})" if by_name else ""
        raise WeightsError(f"weights not found: {value}{known}")
    return ResolvedWeights(path, path.stem, False, source)


def demo_hashes(weights_dir: Path = WEIGHTS_DIR) -> set[str]:
    """SHA-256 of every checkpoint registered as demo weights, the bundled registry's always included."""
    entries = read_registry(WEIGHTS_DIR) + (read_registry(weights_dir) if weights_dir != WEIGHTS_DIR else [])
    return {entry["sha256"] for entry in entries if entry.get("demo") and entry.get("sha256")}


def is_demo(info: CheckpointInfo, weights_dir: Path = WEIGHTS_DIR) -> bool:
    """Demo status follows the checkpoint's hash (or its sidecar's word), never a missing sidecar or a new name."""
    return info.sha256 in demo_hashes(weights_dir) or bool(info.metadata.get("demo"))


def load_weights(resolved: ResolvedWeights, device: torch.device) -> tuple[MFCLIP, CheckpointInfo, bool]:
    """Load the checkpoint and say whether it is demo weights (by registry entry, hash or sidecar)."""
    model, info = load_checkpoint(resolved.path, device=device)
    return model, info, resolved.demo or is_demo(info)


def registry_status(weights_dir: Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    """Every registry entry with the result of checking its file against its recorded SHA-256."""
    rows = []
    for entry in read_registry(weights_dir):
        path = weights_dir / entry["file"]
        if not path.is_file():
            check = "MISSING"
        else:
            digest = sha256_file(path)
            check = "ok" if digest == entry.get("sha256") else f"MISMATCH ({digest[:12]}...)"
        rows.append({**entry, "check": check})
    return rows


def weights_info(target: str, weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """What a checkpoint is, where it came from and how it scored; a registered one must match its hash."""
    resolved = resolve_weights(target, weights_dir)
    info = read_checkpoint_info(resolved.path)
    entry = resolved.registry_entry
    return {
        "name": resolved.name,
        "path": str(resolved.path),
        "sha256": info.sha256,
        "hash_check": "matches the registry" if entry else "not registered (hash computed, nothing to compare with)",
        "demo": resolved.demo or is_demo(info, weights_dir),
        "config": info.config.to_dict(),
        "parameters": info.metadata.get("parameters"),
        "training": info.metadata.get("training"),
        "registry": entry,
    }


def register_weights(
    source: str | Path,
    name: str,
    *,
    demo: bool = False,
    default: bool = False,
    trained_on: str = "",
    metrics: dict[str, Any] | None = None,
    force: bool = False,
    weights_dir: Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """Copy a checkpoint (and its sidecar) into the registry folder and record its name and hash."""
    info = read_checkpoint_info(source)  # refuses anything that is not an mfclip safetensors checkpoint
    demo = demo or is_demo(info, weights_dir)  # the demo stays the demo under any name
    registry = [entry for entry in read_registry(weights_dir) if entry["name"] != name or not force]
    if any(entry["name"] == name for entry in registry):
        raise WeightsError(f"weights {name!r} are already registered (pass --force to replace them)")
    target = weights_dir / f"{name}.safetensors"
    with atomic_writer(target, overwrite=force) as handle:
        handle.write(Path(source).read_bytes())
    sidecar = {**info.metadata, "demo": demo, "registered_name": name}
    if metrics is not None:
        sidecar["metrics"] = metrics
    write_json_atomic(target.with_suffix(".json"), sidecar, overwrite=True)
    entry = {
        "name": name,
        "file": target.name,
        "sha256": info.sha256,
        "config": info.config.name,
        "demo": demo,
        "default": default,
        "trained_on": trained_on,
        "metrics": metrics or {},
    }
    if default:
        registry = [{**other, "default": False} for other in registry]
    registry.append(entry)
    write_json_atomic(weights_dir / REGISTRY_FILE, {"weights": registry}, overwrite=True)
    return entry
