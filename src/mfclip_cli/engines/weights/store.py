"""Which checkpoint to use: ``--weights NAME|PATH``, then ``MFCLIP_WEIGHTS``, then the default.

Two registries name checkpoints, each a folder with ``registry.json`` (file, SHA-256, demo flag):
the bundled one inside the package (the demo, read-only, found through ``importlib.resources`` so
a wheel carries it), and the user's store (``$MFCLIP_HOME/weights``, else the platform's per-user
data folder), where ``mfclip weights add`` registers checkpoints: never the package or a checkout.
A registered file whose hash does not match its entry is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import json
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mfclip_cli.errors import CheckpointError, UnsafeFileError, UsageError, WeightsError
from mfclip_cli.files import atomic_writer, lies_within, sha256_file, write_json_atomic

if TYPE_CHECKING:  # the model core (torch, open_clip) is imported only where a checkpoint is read
    import torch

    from mfclip_cli.model import CheckpointInfo, Detector
    from mfclip_cli.scoring.precision import Precision

MAX_NAME_BYTES = 200  # file names hold 255 bytes
BUNDLED_STORE = Path(str(importlib.resources.files("mfclip_cli") / "weights"))
# demo networks are small (the bundled one 14 MB): a larger one is never hashed again to ask
DEMO_NETWORK_MAX_BYTES = 64 << 20
REGISTRY_FILE = "registry.json"
WEIGHTS_ENV = "MFCLIP_WEIGHTS"
HOME_ENV = "MFCLIP_HOME"


def user_store() -> Path:
    """The per-user weights folder: ``$MFCLIP_HOME/weights``, else the platform's user data
    folder."""
    home = os.environ.get(HOME_ENV)
    if home:
        if not Path(home).expanduser().is_absolute():  # one store per folder run from
            raise UsageError(
                f"${HOME_ENV} is a relative path ({home!r}): each folder mfclip runs from would "
                "have a store of its own; set it to an absolute path"
            )
        return Path(home).expanduser() / "weights"
    import platformdirs

    return Path(platformdirs.user_data_dir("mfclip", appauthor=False)) / "weights"


@dataclass
class ResolvedWeights:
    path: Path
    name: str
    demo: bool
    source: str  # "--weights", "$MFCLIP_WEIGHTS" or "default": where the choice came from
    registry_entry: dict[str, Any] | None = None


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as the registry and reports write it: 64 lowercase hex
    digits."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


def read_registry(store: Path, *, checked: bool = True) -> list[dict[str, Any]]:
    """The store's entries; a registry that is not one (edited by hand, damaged) is one error
    naming it, whatever is wrong with it. Not ``checked``: entries are taken as they are, for
    ``weights remove`` to take out one that fails the checks."""
    path = store / REGISTRY_FILE
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"weights registry {path} is unreadable: {error}") from error
    entries = document.get("weights") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("file"), str)
        for entry in entries
    ):
        raise WeightsError(
            f'weights registry {path} is unreadable: not {{"weights": [{{"name", "file", ...}}]}}'
        )
    for entry in entries if checked else ():
        if problem := _entry_problem(entry):
            raise WeightsError(
                f"weights registry {path} is unreadable: its entry {entry['name']!r} {problem}"
            )
    return entries


def _entry_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with a registry entry (edited by hand), if anything: one without a SHA-256
    was used unchecked, a "default" of "false" counted as default, a file outside the store was
    loaded (audit R F11). Its metrics are only shown: ``weights list`` shows a figure that is no
    number as none."""
    sha256 = entry.get("sha256")
    if not is_sha256(sha256):
        return "has no SHA-256 (sha256: 64 hexadecimal digits)"
    for flag in ("demo", "default"):
        if not isinstance(entry.get(flag, False), bool):
            return f"has a {flag} that is not true or false"
    file = Path(entry["file"])
    if file.is_absolute() or ".." in file.parts:
        return "names a file outside its store"
    return None


def check_name(name: str) -> str:
    """A name a checkpoint can be registered under, as it is kept: its files are NAME.safetensors
    and NAME.json in the store, so a name must stay a file name there and leave the registry's
    own alone."""
    name = same_name(name)
    if (
        not name.strip()
        or name in (".", "..")
        or name.startswith(".")  # hidden: the partial files of weights pull
        or any(char in name for char in "/\\\0")
        or any(not char.isprintable() for char in name)  # a newline broke list's lines
        or name.lower() == Path(REGISTRY_FILE).stem
        # a file of that name here would be read in its place (audit R F8)
        or name.lower().endswith(".safetensors")
        # its longest file, an atomic write's ".NAME.safetensors.XXXXXXXX.tmp", is 26 bytes more
        or len(os.fsencode(name)) > MAX_NAME_BYTES
    ):
        raise UsageError(
            f"{name!r} cannot name weights: use a file name without a path separator or control "
            f"characters, not starting with '.' nor ending in '.safetensors', at most "
            f"{MAX_NAME_BYTES} bytes, other than {Path(REGISTRY_FILE).stem!r}"
        )
    return name


def same_name(name: str) -> str:
    """A name as registrations keep it: "café" typed with one accented letter (NFC, most
    keyboards) or with a letter and a combining accent (NFD, macOS file names) is one name
    (audit R F15)."""
    return unicodedata.normalize("NFC", name)


Named = tuple[Path, dict[str, Any]]  # (the store, the entry) of a registration


def _named(registrations: list[Named], value: str) -> Named | None:
    """The registration ``value`` names: the one spelled exactly so, else the one equal to it
    as Unicode NFC; None for neither. Two equal as NFC, none spelled so (registered before names
    were normalised), are an error naming both: neither is taken for the other (audit S2 F1)."""
    exact = [registration for registration in registrations if registration[1]["name"] == value]
    alike = exact or [
        registration
        for registration in registrations
        if same_name(registration[1]["name"]) == same_name(value)
    ]
    if len({(folder, entry["name"]) for folder, entry in alike}) > 1:
        spellings = ", ".join(ascii(entry["name"]) for _, entry in alike)
        raise WeightsError(
            f"{value!r} names several registered weights, spelled in other Unicode forms "
            f"({spellings}): copy the name you mean from 'mfclip weights list', or pass the file"
        )
    return alike[0] if alike else None


@contextlib.contextmanager
def _registry_locked(store: Path) -> Iterator[None]:
    """The store's registry held by this process while it is read, changed and written back, so
    that two commands registering at once both land. The lock is on the store's folder (the
    registry itself is replaced, not rewritten, so a lock on it would not hold)."""
    store.mkdir(parents=True, exist_ok=True)
    folder = os.open(store, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


@contextlib.contextmanager
def _partial_held(partial: Path, name: str) -> Iterator[None]:
    """The partial file of a pull held by this process for the whole pull (fetch, check,
    register): a second pull of the same name at once is refused in words instead of finding
    its partial file renamed away (audit S F13). The lock is on the partial file, which a pull
    keeps anyway to resume: no other file is left behind."""
    descriptor = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WeightsError(
                f"another mfclip weights pull of {name!r} into {partial.parent} is under way; "
                "let it finish (or stop it), then run this one again"
            ) from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _registries(store: Path | None) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, entry) of every registered checkpoint: the user's store first, then the bundled
    ones."""
    store = store or user_store()
    folders = [store] if store.resolve() == BUNDLED_STORE.resolve() else [store, BUNDLED_STORE]
    return [(folder, entry) for folder in folders for entry in read_registry(folder)]


def _from_registry(folder: Path, entry: dict[str, Any], source: str) -> ResolvedWeights:
    """A registered file, to be checked against its SHA-256 where it is read (``check_registered``):
    hashed here too, a 600 MB checkpoint was read once more on every scan."""
    path = folder / entry["file"]
    if not path.is_file():
        raise WeightsError(f"registered weights {entry['name']!r} are missing: {path}")
    return ResolvedWeights(path, entry["name"], bool(entry.get("demo")), source, entry)


def check_registered(resolved: ResolvedWeights, digest: str) -> None:
    """A WeightsError unless ``digest``, the SHA-256 of the bytes read, is the one registered for
    ``resolved`` (nothing to compare for a file given by path)."""
    expected = (resolved.registry_entry or {}).get("sha256")
    if expected and digest != expected:
        raise WeightsError(
            f"registered weights {resolved.name!r} fail their hash check: {resolved.path} has "
            f"SHA-256 {digest}, the registry says {expected}"
        )


@contextlib.contextmanager
def _altered_said(resolved: ResolvedWeights) -> Iterator[None]:
    """A registered checkpoint that no longer reads as one was altered: its failed hash check is
    the error, rather than what its altered bytes broke."""
    try:
        yield
    except (CheckpointError, UnsafeFileError) as error:
        if resolved.registry_entry:
            try:
                check_registered(resolved, sha256_file(resolved.path))
            except WeightsError as altered:
                raise altered from error
        raise


def resolve_weights(
    value: str | None, store: Path | None = None, *, option: str = "--weights"
) -> ResolvedWeights:
    """A registered name or a file path; with neither, the user's default, else the bundled one.
    ``option``: what named ``value``, for messages."""
    source = option
    if not value:
        value, source = os.environ.get(WEIGHTS_ENV) or None, f"${WEIGHTS_ENV}"
    if value and (os.sep in value or value.endswith(".safetensors")) and Path(value).is_file():
        # a path, which no name can be: no registry read (a damaged one blocked it, audit S F12)
        return ResolvedWeights(Path(value), Path(value).stem, False, source)
    everything = _registries(store)
    registered = [(folder, entry) for folder, entry in everything if not _is_clip(entry)]
    if not value:
        defaults = [(folder, entry) for folder, entry in registered if entry.get("default")]
        if not defaults:
            raise WeightsError(
                "no weights given: pass --weights PATH (a .safetensors checkpoint) "
                f"or set {WEIGHTS_ENV}"
            )
        return _from_registry(*defaults[0], "default")
    by_name: dict[str, Named] = {}
    for folder, entry in registered:
        by_name.setdefault(entry["name"], (folder, entry))
    path, named = Path(value), _named(list(by_name.values()), value)
    if named:
        if path.is_file():  # a file here of a registered name: which is meant cannot be told
            raise WeightsError(
                f"{source} {value} is both a registered checkpoint and a file here: write "
                f"./{value} for the file, or rename it"
            )
        # a folder of that name (its run folder, most often) does not hide it (audit S F4)
        return _from_registry(*named, source)
    if path.is_dir():  # a training run's folder, most often
        inside = sorted(
            str(path / item.name)
            for item in path.glob("*.safetensors")
            if not item.name.endswith(".state.safetensors")
        )
        hint = f": name a checkpoint in it ({', '.join(inside)})" if inside else ""
        raise WeightsError(f"{source} {value} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        known = f"; registered: {', '.join(by_name)}" if by_name else ""
        if _named([(folder, entry) for folder, entry in everything if _is_clip(entry)], value):
            known += f"; {value} is CLIP weights (import-clip), for train --clip-weights"
        where = store or user_store()
        raise WeightsError(
            f"weights not found: {value} (from {source}; no such file, nor a name in {where} or "
            f"the bundled store{known})"
        )
    return ResolvedWeights(path, path.stem, False, source)


def _is_clip(entry: dict[str, Any]) -> bool:
    """CLIP backbone weights for ``train --clip-weights``, not an mfclip checkpoint."""
    return entry.get("kind") == "clip"


def resolve_clip_weights(value: str, store: Path | None = None) -> dict[str, Any]:
    """``train --clip-weights``: the model config's ``clip`` settings it stands for. A name
    registered by ``weights import-clip`` becomes its file (hash checked) and the activation
    recorded for it; a local path or an open_clip tag passes through unchanged."""
    if Path(value).exists():
        return {"pretrained": value}
    named = _named([(f, e) for f, e in _registries(store) if _is_clip(e)], value)
    if named is None:
        return {"pretrained": value}
    resolved = _from_registry(*named, "--clip-weights")
    check_registered(resolved, sha256_file(resolved.path))  # open_clip reads it next
    path, quick_gelu = str(resolved.path), named[1].get("quick_gelu")
    if quick_gelu is None:  # registered before the activation was recorded
        return {"pretrained": path}
    return {"pretrained": path, "quick_gelu": quick_gelu}


def _clip_file(path: Path) -> Path:
    """The open_clip weights at ``path``: the file itself, or the one that a folder (an open_clip or
    Hugging Face cache snapshot) holds."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"{path}: no such file or folder")
    found = sorted(path.rglob("open_clip_model.safetensors")) or sorted(path.rglob("*.safetensors"))
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(path)) for p in found[:5]) or "none"
        raise WeightsError(
            f"{path} holds {len(found)} .safetensors files ({listed}); name the one to import"
        )
    return found[0]


def import_clip(
    path: str | Path,
    name: str,
    architecture: str,
    *,
    quick_gelu: bool | None = None,
    force: bool = False,
    store: Path | None = None,
) -> dict[str, Any]:
    """Register open_clip CLIP weights for ``train --clip-weights NAME``, after proving that
    ``architecture`` loads them (every tensor, by name and shape). ``quick_gelu`` (the activation
    they were trained with) is recorded; None only where the architecture leaves no doubt."""
    from mfclip_cli.model.backbone import create_clip_towers
    from mfclip_cli.model.config import ClipSettings

    store = store or user_store()
    name = check_name(name)
    source = _clip_file(Path(path).expanduser())
    _registry_for(name, store, force)  # a name in use refused before the towers are built
    towers = create_clip_towers(
        ClipSettings(architecture=architecture, pretrained=str(source), quick_gelu=quick_gelu)
    )
    target = store / "clip" / f"{name}.safetensors"
    # the registry read and written under the store's lock: read before the towers were built,
    # a checkpoint registered meanwhile was dropped from it (audit S F7)
    with _registry_locked(store), _removed_on_failure(target):
        registry, _ = _registry_for(name, store, force)
        _refuse_the_users_files(target, name, sha256_file(source), force)
        with atomic_writer(target, overwrite=True) as handle, open(source, "rb") as reader:
            while chunk := reader.read(1 << 24):
                handle.write(chunk)
        entry = {
            "name": name,
            "kind": "clip",
            "file": f"clip/{target.name}",
            "sha256": sha256_file(target),
            "config": f"CLIP {architecture}",
            "architecture": architecture,
            "quick_gelu": towers.quick_gelu,
            "origin": str(source),
        }
        write_json_atomic(store / REGISTRY_FILE, {"weights": [*registry, entry]}, overwrite=True)
    return entry


@contextlib.contextmanager
def _removed_on_failure(*paths: Path) -> Iterator[None]:
    """The store files a registration creates, removed if it fails before the registry names
    them (a full disk): left behind, they refused every retry ("already exists") and no command
    could remove them, no entry naming them (audit S F1)."""
    existed = {path: path.exists() for path in paths}
    try:
        yield
    except BaseException:
        for path, was in existed.items():
            if not was:
                path.unlink(missing_ok=True)
        raise


def _refuse_the_users_files(target: Path, name: str, digest: str, force: bool) -> None:
    """Refuse, unless ``force``, a registration whose files would replace the user's."""
    taken = [] if force else _not_ours(target, name, digest)
    if taken:
        raise WeightsError(
            f"{' and '.join(taken)} in {target.parent} already exist and no registered weights "
            "name them: not replaced (pass --force to replace them, or choose another name)"
        )


def _not_ours(target: Path, name: str, digest: str) -> list[str]:
    """The files at a registration's names (``target`` and its sidecar) that are not a failed
    registration's leftovers, so the user's: overwritten without ``--force`` before (a ``--store``
    pointed at a run folder, a ``pull`` over a file of that name; audit R F3). A leftover of
    an older version's failed registration is the same checkpoint, or a sidecar naming it."""
    taken = []
    if target.exists() or target.is_symlink():
        if not (target.is_file() and sha256_file(target) == digest):
            taken.append(target.name)
    sidecar = target.with_suffix(".json")
    if sidecar.exists() or sidecar.is_symlink():
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            ours = isinstance(record, dict) and record.get("registered_name") == name
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            ours = False
        if not ours:
            taken.append(sidecar.name)
    return taken


def weights_record(checkpoint: LoadedWeights) -> dict[str, Any]:
    """How every report names the checkpoint it used."""
    from mfclip_cli.model.detectors import detector_of  # the checkpoint, loaded, imported torch

    info = checkpoint.info
    return {
        "name": checkpoint.resolved.name,
        "path": str(checkpoint.resolved.path),
        "sha256": info.sha256,
        "demo": checkpoint.demo,
        "config": info.config.name,
        "detector": detector_of(info.config),
    }


def refuse_incomparable(given: Sequence[str | None], loaded: Sequence[Any]) -> None:
    """Checkpoints side by side (eval, scan): each of ``loaded`` has ``info`` and ``model``. One
    named twice compares with itself, and checkpoints with different classes do not score the
    same question: usage errors."""
    seen: dict[str, str] = {}
    for name, one in zip(given, loaded):
        info = one.info
        if info.sha256 in seen:
            raise UsageError(
                f"--weights {seen[info.sha256]} and --weights {name} are the same checkpoint "
                f"(SHA-256 {info.sha256[:12]}...); name each checkpoint once"
            )
        seen[info.sha256] = name
    classes = {tuple(one.model.classes) for one in loaded}
    if len(classes) > 1:
        listed = " / ".join(", ".join(group) for group in sorted(classes))
        raise UsageError(f"the checkpoints' classes differ ({listed}): their scores do not compare")


def _demo_entries(store: Path | None) -> list[dict[str, Any]]:
    """Registry entries of demo weights. A damaged user registry leaves the bundled ones: it
    blocked every scan, ``--weights PATH`` too, whose only use of it is this (audit R F4)."""
    try:
        registries = _registries(store)
    except WeightsError:
        registries = [(BUNDLED_STORE, entry) for entry in read_registry(BUNDLED_STORE)]
    return [entry for _, entry in registries if entry.get("demo")]


def is_demo(info: CheckpointInfo, store: Path | None = None) -> bool:
    """Demo status follows the checkpoint's hash (or its sidecar's word), never a missing sidecar or
    a new name; a calibrated copy (``mfclip calibrate``) follows the hash it was made from. The
    demo's network under other header bytes (re-saved: safetensors orders its metadata at
    random; its version or records edited or stripped) is the demo still (audit R F2): a network
    as small as a demo's is hashed again and compared with the demos' ``network_sha256``."""
    from mfclip_cli.model.checkpoint import network_sha256, network_size

    entries = _demo_entries(store)
    hashes = {entry["sha256"] for entry in entries if entry.get("sha256")}
    base = (info.calibration or {}).get("base_sha256")
    if info.sha256 in hashes or base in hashes or bool(info.metadata.get("demo")):
        return True
    networks = {entry["network_sha256"] for entry in entries if entry.get("network_sha256")}
    return (
        bool(networks)
        and network_size(info.path) <= DEMO_NETWORK_MAX_BYTES
        and network_sha256(info.path) in networks
    )


@dataclass
class LoadedWeights:
    """A checkpoint ready to score with: where it came from, the inference model (adapters
    folded), its header and whether it is demo weights. The one loaded-checkpoint type of scan,
    eval and calibrate."""

    resolved: ResolvedWeights
    model: Detector
    info: CheckpointInfo
    demo: bool


def load_weights(resolved: ResolvedWeights, device: torch.device) -> LoadedWeights:
    """Load the checkpoint for inference and say whether it is demo weights (by registry entry,
    hash or sidecar)."""
    from mfclip_cli.model import load_checkpoint

    with _altered_said(resolved):
        model, info = load_checkpoint(resolved.path, device=device, inference=True)
    check_registered(resolved, info.sha256)  # the SHA-256 of the very bytes loaded
    return LoadedWeights(resolved, model.merge_adapters(), info, resolved.demo or is_demo(info))


def say_caveats(
    loaded: LoadedWeights, precision: Precision, console: Console, *, named: bool = False
) -> None:
    """On stderr, before any result: a precision that may change verdicts, a calibration whose
    temperature is at a bound of its search, and demo weights (``named``: the checkpoint's name
    too, where several are compared)."""
    if precision.warning:
        console.print(f"[bold yellow]warning:[/] {escape(precision.warning)}", highlight=False)
    if loaded.info.sidecar_ignored:
        console.print(
            f"[bold yellow]warning:[/] {escape(loaded.resolved.name)}: "
            f"{escape(loaded.info.sidecar_ignored)}: left out (the record in the checkpoint "
            "itself is used)",
            highlight=False,
        )
    from mfclip_cli.scoring.calibration import temperature_warning  # numpy: not at start-up

    if warning := temperature_warning(loaded.info.calibration):  # said at training only
        console.print(  # (audit AK F1)
            f"[bold yellow]warning:[/] {escape(loaded.resolved.name)}: {escape(warning)}",
            highlight=False,
        )
    if loaded.demo:
        which = f" (--weights {loaded.resolved.name})" if named else ""
        console.print(
            f"[bold yellow]warning:[/] using the bundled DEMO weights{escape(which)}, trained on "
            "synthetic artifacts: the probabilities are not evidence. Pass --weights for a real "
            "checkpoint."
        )


def registry_status(store: Path | None = None) -> list[dict[str, Any]]:
    """Every registered checkpoint, user's and bundled, with its source, size and hash check."""
    rows = []
    for folder, entry in _registries(store):
        path = folder / entry["file"]
        if not path.is_file():
            check, size = "MISSING", None
        else:
            digest = sha256_file(path)
            check = "ok" if digest == entry.get("sha256") else f"MISMATCH ({digest[:12]}...)"
            size = path.stat().st_size
        source = "bundled" if folder.resolve() == BUNDLED_STORE.resolve() else "user"
        rows.append({**entry, "source": source, "path": str(path), "size": size, "check": check})
    return rows


def weights_info(target: str, store: Path | None = None) -> dict[str, Any]:
    """What a checkpoint is, where it came from and how it scored; a registered one must match its
    hash."""
    from mfclip_cli.model import read_checkpoint_info

    resolved = resolve_weights(target, store, option="weights info")
    with _altered_said(resolved):
        info = read_checkpoint_info(resolved.path)
    check_registered(resolved, info.sha256)
    entry = resolved.registry_entry
    return {
        "name": resolved.name,
        "path": str(resolved.path),
        "sha256": info.sha256,
        "hash_check": "matches the registry"
        if entry
        else "not registered (hash computed, nothing to compare with)",
        "demo": resolved.demo or is_demo(info, store),
        "config": info.config.to_dict(),
        "parameters": info.metadata.get("parameters"),
        "training": info.metadata.get("training"),
        "calibration": info.calibration,
        "registry": entry,
        **({"sidecar_ignored": info.sidecar_ignored} if info.sidecar_ignored else {}),
    }


def remove_weights(name: str, store: Path | None = None) -> dict[str, Any]:
    """Unregister a checkpoint of the user's store and delete its files; bundled ones are
    read-only."""
    store = store or user_store()
    with _registry_locked(store):
        registry = read_registry(store, checked=False)  # an entry failing the checks included
        named = _named([(store, entry) for entry in registry], name)
        entry = named[1] if named else None
        if entry is None:
            if _named([(BUNDLED_STORE, other) for other in read_registry(BUNDLED_STORE)], name):
                raise WeightsError(
                    f"weights {name!r} are bundled with mfclip and cannot be removed"
                )
            raise WeightsError(f"no weights named {name!r} in {store}")
        remaining = [e for e in registry if e is not entry]
        write_json_atomic(store / REGISTRY_FILE, {"weights": remaining}, overwrite=True)
        # an entry names a file of the store: a checkpoint at its top, CLIP weights in clip/
        # (the name alone left import-clip's file behind, audit S F6); nothing outside it. A
        # link in the store is removed, never its target (the link and sidecar were left,
        # audit R F16)
        files = store / entry["file"]
        location = Path(os.path.realpath(files.parent)) / files.name
        if lies_within(str(location), os.path.realpath(store)):
            for path in (files, files.with_suffix(".json")):
                if path.name != REGISTRY_FILE:
                    path.unlink(missing_ok=True)
    return entry


def _registry_for(
    name: str, store: Path, force: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The store's entries that stay when ``name`` is registered, and the one it replaces
    (``force``); refuses a name in use."""
    if store.resolve() != BUNDLED_STORE.resolve() and _named(
        [(BUNDLED_STORE, entry) for entry in read_registry(BUNDLED_STORE)], name
    ):
        raise WeightsError(f"{name!r} names bundled weights; choose another name")
    registry = read_registry(store)
    named = _named([(store, entry) for entry in registry], name)
    if named is None:
        return registry, None
    entry = named[1]
    if entry["name"] != name:  # registered before names were normalised: its files are others
        raise WeightsError(
            f"weights {ascii(entry['name'])} ({entry['file']}) are registered under this name "
            "in another Unicode form: remove them first (mfclip weights remove, with the name "
            "copied from mfclip weights list), then register these"
        )
    if not force:
        raise WeightsError(
            f"weights {name!r} are already registered (pass --force to replace them)"
        )
    return [other for other in registry if other is not entry], entry


def pull_weights(
    source: str,
    name: str,
    *,
    sha256: str | None,
    trust: bool = False,
    force: bool = False,
    store: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Fetch a checkpoint (URL or path) into the store, check it, and register it.

    Nothing is registered unless the file's SHA-256 equals ``sha256`` (or ``trust`` is given) and
    it is an mfclip safetensors checkpoint. An interrupted transfer keeps its partial file, and the
    same command resumes it; any other failure removes it.
    """
    store = store or user_store()
    expected = sha256.lower() if sha256 else None
    if expected is not None and not is_sha256(expected):
        raise UsageError("--sha256 takes the 64 hexadecimal digits of a SHA-256")
    name = check_name(name)
    _registry_for(name, store, force)  # before any byte is fetched
    store.mkdir(parents=True, exist_ok=True)
    partial = store / f".{name}.safetensors.part"
    with _partial_held(partial, name):
        return _pull_into(source, name, partial, expected, trust, force, store, console)


def _pull_into(
    source: str,
    name: str,
    partial: Path,
    expected: str | None,
    trust: bool,
    force: bool,
    store: Path,
    console: Console | None,
) -> dict[str, Any]:
    """``pull_weights`` with its partial file held."""
    from mfclip_cli.engines.weights.download import TransferError, fetch

    progress = Progress(
        TextColumn(f"pulling {name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
        disable=console is None or not console.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("pull", total=None)
            fetch(
                source,
                partial,
                on_start=lambda total, done: progress.update(task, total=total, completed=done),
                on_bytes=lambda count: progress.advance(task, count),
            )
    except TransferError as error:
        if not error.resumable:
            partial.unlink(missing_ok=True)
            raise WeightsError(str(error)) from None
        raise WeightsError(f"{error}; run the same command again to resume") from None
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise WeightsError(f"cannot write {partial}: {error.strerror or error}") from None
    try:
        digest = sha256_file(partial)
        if expected is not None and digest != expected:
            raise WeightsError(
                f"{source} has SHA-256 {digest}, not the expected {expected}: not registered"
            )
        if expected is None and not trust:
            raise WeightsError(
                f"{source} has SHA-256 {digest}; not registered. Compare it with the publisher's "
                f"and run again with --sha256 {digest} (or --trust)"
            )
        # register_weights refuses a truncated, pickled or foreign file before it moves it
        try:
            return register_weights(
                partial, name, force=force, store=store, move=True, origin=source
            )
        except (CheckpointError, UnsafeFileError) as error:  # named as the user named it
            raise type(error)(str(error).replace(str(partial), source)) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_eval_metrics(path: str | Path) -> dict[str, Any]:
    """What ``weights add --eval`` records: the protocol and test metrics of a single-checkpoint
    ``mfclip eval --json`` report, and the SHA-256 of the checkpoint it scored; a usage error
    for a file that is not one (a comparison of several checkpoints included), or for a report
    whose test split the checkpoint was trained or selected with."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--eval {path}: cannot read it as a JSON report ({error})") from error
    if not isinstance(report, dict) or report.get("type") != "eval":
        raise UsageError(
            f"--eval {path} is not the JSON report of a single-checkpoint mfclip eval "
            f"(type {report.get('type') if isinstance(report, dict) else None!r})"
        )
    if problem := _eval_report_problem(report):
        raise UsageError(f"--eval {path} is not a well-formed mfclip eval report: {problem}")
    try:
        _refuse_figures_not_held_out(report, path)
    except (AttributeError, TypeError, KeyError) as error:  # a nested record of another shape
        raise UsageError(
            f"--eval {path} is not a well-formed mfclip eval report ({type(error).__name__}: "
            f"{error})"
        ) from None
    return {
        "protocol": report["protocol"],
        "test": report["overall"],
        "subsets": report["subsets"],
        "weights_sha256": report["weights"]["sha256"],
    }


# the figures a registry entry shows and compares: numbers (or null where undefined)
_LISTED_METRICS = ("n", "auc", "ap", "eer", "acc", "real_acc", "fake_acc", "acc3", "macro_f1")


def _eval_report_problem(report: dict[str, Any]) -> str | None:
    """What makes an eval report unfit to be recorded with a checkpoint, if anything: one
    whose figures were not numbers broke every later ``weights list`` (audit R F10)."""
    for key in ("protocol", "overall", "subsets", "weights"):
        if not isinstance(report.get(key), dict):
            return f"its {key} is not an object"
    sha256 = report["weights"].get("sha256")
    if not is_sha256(sha256):
        return "it names no checkpoint (weights.sha256 is not a SHA-256)"
    tables = {"overall": report["overall"]}
    for name, subset in report["subsets"].items():
        if not isinstance(subset, dict):
            return f"its subset {name!r} is not an object"
        tables[f"subset {name!r}"] = subset
    for where, table in tables.items():
        for metric in _LISTED_METRICS:
            value = table.get(metric)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                return f"the {metric} of its {where} is {value!r}, not a number"
    return None


def _refuse_figures_not_held_out(report: dict[str, Any], path: str | Path) -> None:
    """A usage error for a report whose test split the checkpoint was trained, selected or
    calibrated with."""
    protocol = report["protocol"]
    if met := _met_in_training(protocol.get("training_overlap")):
        # scored with --allow-training-overlap: not figures of held-out data
        raise UsageError(
            f"--eval {path} scored {met} test sample(s) the checkpoint was trained or selected "
            "with (protocol.training_overlap, --allow-training-overlap): its figures are not a "
            "held-out test's; register a report of a held-out test split"
        )
    if copies := _copies_scored(protocol.get("trained_copies")):
        raise UsageError(
            f"--eval {path} scored {copies} test sample(s) holding the bytes of files the "
            "checkpoint was trained or selected with (protocol.trained_copies, "
            "--allow-training-overlap): its figures are not a held-out test's; register a "
            "report of data without them"
        )
    fitted_on = (report.get("calibration") or {}).get("fitted_on") or {}
    if fitted_on.get("trained_copies"):
        raise UsageError(
            f"--eval {path} scored a checkpoint calibrated on val files holding the bytes of "
            "files it was trained on (calibration.fitted_on.trained_copies: its own run's val "
            "split, or calibrate --allow-training-overlap): its calibrated figures are not a "
            "held-out test's; register one calibrated on held-out data (mfclip calibrate)"
        )
    fitted = fitted_on.get("training_overlap")
    if fitted:  # calibrated with --allow-training-overlap on samples of its own splits
        raise UsageError(
            f"--eval {path} scored a checkpoint calibrated on samples of its own splits "
            "(calibration.fitted_on.training_overlap, --allow-training-overlap): its calibrated "
            "figures are not a held-out test's; register one calibrated on held-out data"
        )
    chosen_on = (report.get("operating_points") or {}).get("chosen_on") or {}
    if chose_on_trained := _met_in_training(chosen_on.get("training_overlap")):
        raise UsageError(
            f"--eval {path} chose its operating-point thresholds on {chose_on_trained} val "
            "sample(s) the checkpoint was trained on (operating_points.chosen_on."
            "training_overlap, --allow-training-overlap): its thresholds and val FPR bounds are "
            "not a held-out test's; register a report under its training protocol"
        )
    if chose_on_copies := _copies_scored(chosen_on.get("trained_copies")):
        raise UsageError(
            f"--eval {path} chose its operating-point thresholds on {chose_on_copies} val "
            "sample(s) holding the bytes of files the checkpoint was trained on "
            "(operating_points.chosen_on.trained_copies, --allow-training-overlap): its "
            "thresholds and val FPR bounds are not a held-out test's"
        )
    if calibrated_on := _met_in_training(protocol.get("calibration_overlap")):
        raise UsageError(
            f"--eval {path} scored {calibrated_on} test sample(s) the checkpoint's calibration "
            "was fitted on (protocol.calibration_overlap, --allow-training-overlap): its "
            "calibrated figures are not a held-out test's; register a report under the "
            "protocol it was calibrated with, or calibrate it again"
        )
    changed = protocol.get("changed_data_overlap") or {}
    if may_have_met := _met_in_training(changed):
        raise UsageError(
            f"--eval {path} scored the checkpoint's training folder changed since it was "
            f"trained, where up to {may_have_met} test sample(s) lie in its own train and val "
            "splits (protocol.changed_data_overlap): its figures may not be a held-out test's; "
            "register a report of data it was not trained on, or of the folder as it was"
        )
    if named := changed.get("split_named", 0):
        raise UsageError(
            f"--eval {path} scored the checkpoint's training folder changed since it was "
            f"trained, where {named} test sample(s) have their split named by the data, which "
            "may have been edited since (protocol.changed_data_overlap.split_named): whether it "
            "trained on them cannot be told; register a report of data it was not trained on, "
            "or of the folder as it was"
        )
    if trained := (protocol.get("held_out_trained") or {}).get("values"):
        raise UsageError(
            f"--eval {path} holds out {', '.join(trained)} under {protocol['name']}, which the "
            "checkpoint trained on (protocol.held_out_trained): its figures are not a held-out "
            "test's; register a report of a checkpoint trained under that protocol"
        )


def _copies_scored(copies: dict[str, Any] | None) -> int:
    """How many samples an eval report's ``trained_copies`` counts as copies of files the
    checkpoint trained or was selected with: ``samples`` (each once), else, where a report
    lacks it (not a well-formed one), ``train`` + ``val``, which counts a copy of both twice."""
    copies = copies or {}
    return copies.get("samples", _met_in_training(copies))


def _met_in_training(overlap: dict[str, Any] | None) -> int:
    """How many test samples an eval report's overlap record puts in the train and val splits
    the checkpoint was trained or calibrated with (``protocol.training_overlap``,
    ``protocol.changed_data_overlap``, ``protocol.calibration_overlap``)."""
    return sum((overlap or {}).get(role, 0) for role in ("train", "val"))


def _loaded_info(source: str | Path) -> CheckpointInfo:
    """The header record of the checkpoint at ``source``, loaded as a scan loads it (built,
    with its OOD statistics and attribution): ``CheckpointError`` or ``UnsafeFileError`` where no
    scan could score with it, or where the tensors a scan does not read (MFCLIP's language
    encoder) are not finite numbers: a registered checkpoint is sound whole, for training too."""
    from mfclip_cli.model import load_checkpoint
    from mfclip_cli.model.checkpoint import read_fitted_tensors, trained_digests
    from mfclip_cli.model.detectors import detector_kind, detector_of
    from mfclip_cli.scoring.attribution import attributor_of
    from mfclip_cli.scoring.ood import ood_of

    _, info = load_checkpoint(source, inference=True)
    for prefix in detector_kind(detector_of(info.config)).scoring_skips:
        read_fitted_tensors(info.path, prefix)  # refuses values that are not finite
    ood_of(info)
    attributor_of(info)
    trained_digests(info)  # eval reads them: altered, refused now rather than at an eval
    return info


def register_weights(
    source: str | Path,
    name: str,
    *,
    demo: bool = False,
    default: bool = False,
    trained_on: str = "",
    metrics: dict[str, Any] | None = None,
    force: bool = False,
    store: Path | None = None,
    move: bool = False,
    origin: str = "",
) -> dict[str, Any]:
    """Copy (or ``move``) a checkpoint into the store (the user's by default) and record its name
    and hash."""
    from mfclip_cli.model.checkpoint import network_sha256

    store = store or user_store()
    name = check_name(name)
    # refuses anything that is not an mfclip safetensors checkpoint, and one that no scan could
    # load: tensors that do not fit its config or are not finite, fitted records without their
    # tensors (registered and listed "hash check ok", audit R F7)
    info = _loaded_info(source)
    scored = (metrics or {}).get("weights_sha256")
    if scored is not None and scored != info.sha256:
        raise UsageError(
            f"the --eval report scored checkpoint {scored[:12]}, not {source} ({info.sha256[:12]})"
        )
    demo = demo or is_demo(info, store)  # the demo stays the demo under any name
    network = network_sha256(source) if demo else None
    target = store / f"{name}.safetensors"
    with _registry_locked(store), _removed_on_failure(target, target.with_suffix(".json")):
        registry, replaced = _registry_for(name, store, force)
        _refuse_the_users_files(target, name, info.sha256, force)
        # --force over the default keeps it the default (scans fell back to the demo, audit R F13)
        default = default or bool(replaced and replaced.get("default"))
        if move:
            os.replace(source, target)
        else:
            with atomic_writer(target, overwrite=True) as handle, open(source, "rb") as stream:
                shutil.copyfileobj(stream, handle)  # in chunks: a checkpoint may be large
        sidecar = {**info.metadata, "sha256": info.sha256, "demo": demo, "registered_name": name}
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
        if network:
            entry["network_sha256"] = network  # the demo's network, whatever its header says
        if origin:
            entry["origin"] = origin  # where ``weights pull`` fetched it from
        if default:
            registry = [{**other, "default": False} for other in registry]
        registry.append(entry)
        write_json_atomic(store / REGISTRY_FILE, {"weights": registry}, overwrite=True)
        return entry
