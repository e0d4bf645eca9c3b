"""Checkpoints: a ``.safetensors`` tensor file plus a readable ``.json`` sidecar.

The resolved model config travels inside the safetensors header as well, so the tensor file alone
rebuilds the model, and its SHA-256 (the checkpoint's id in every report) covers the config too;
so does the calibration record (``scoring/calibration.py``), the out-of-distribution
statistics (``scoring/ood.py``: a header record and tensors named ``ood.*`` beside the model's)
and the generator model for attribution (``scoring/attribution.py``: a header record and
tensors named ``attribution.*``), where a checkpoint has them. What the header holds is what
the model is, never when it was made: the same training run twice gives the same bytes (so a
published checkpoint can be checked by training it again); the time each record was fitted
(``fitted_utc``) is kept in the sidecar. A trained checkpoint also keeps digests of the bytes
of the files it trained and selected on (tensors named ``trained.*``, ``data/contents.py``), so
that eval finds copies of them under other names.
The sidecar repeats it for people and adds what is known about the run (data, metrics). Nothing
is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from mfclip_cli import __version__
from mfclip_cli.errors import CheckpointError
from mfclip_cli.files import (
    atomic_writer,
    check_safetensors,
    sha256_file,
    sidecar_path,
    write_json_atomic,
)
from mfclip_cli.model.config import ConfigError, config_from_dict
from mfclip_cli.model.detectors import Detector, build_detector, detector_kind, detector_of

CHECKPOINT_FORMAT = "mfclip-checkpoint/1"
CALIBRATION_KEY = "calibration"  # header entry beside "config": scoring/calibration.py's record
OOD_KEY = "ood"  # header entry: scoring/ood.py's record
OOD_TENSOR_PREFIX = "ood."  # its tensors, which are not the model's
ATTRIBUTION_KEY = "attribution"  # header entry: scoring/attribution.py's record
ATTRIBUTION_TENSOR_PREFIX = "attribution."  # its tensors, which are not the model's either
# header entry: the data and protocol a run trained on (``training`` of the sidecar, less its
# clock), so that a checkpoint copied without its sidecar still says which samples it met
TRAINING_KEY = "training"
HELD_OUT_RECORD = ("data", "protocol", "digests")
# fitted after training: header key -> the prefix of its tensors
FITTED = {OOD_KEY: OOD_TENSOR_PREFIX, ATTRIBUTION_KEY: ATTRIBUTION_TENSOR_PREFIX}
# the digests of the bytes of the files a run trained and selected on (``data/contents.py``),
# one int64 tensor per split, ``trained.train`` and ``trained.val``: eval finds copies of them
TRAINED_TENSOR_PREFIX = "trained."
DIGESTED_SPLITS = ("train", "val")  # those its run trained and selected on
CONTENT_DIGEST = "sha256[:8]"  # what a digest is, as the training record says
NOT_MODEL = (*FITTED.values(), TRAINED_TENSOR_PREFIX)  # the tensors that are not the network
CLOCK = "fitted_utc"  # a record's time: in the sidecar, not in the hashed header


@dataclass
class CheckpointInfo:
    path: Path
    sha256: str
    config: Any  # the config of the checkpoint's detector (``detectors.py``)
    metadata: dict[str, Any] = field(default_factory=dict)
    # each from the header, so covered by the SHA-256 (its ``fitted_utc`` from the sidecar)
    calibration: dict[str, Any] | None = None
    ood: dict[str, Any] | None = None  # its tensors in the file
    attribution: dict[str, Any] | None = None  # its tensors in the file
    # why the sidecar beside it was left out of ``metadata`` (it names other weights), if it was
    sidecar_ignored: str | None = None
    # the file as hashed (device, inode, size, modification time): the tensors must be read from
    # the same bytes, or the report's SHA-256 names another file than the one scored
    identity: tuple[int, ...] = ()

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes with its header in one order: safetensors writes its metadata
    in a per-process random order, so two runs of one training, equal to the last bit, gave
    files with two SHA-256s, and a checkpoint could not be checked by training it again."""
    raw = save(tensors, metadata=metadata)
    length = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + length]), sort_keys=True, separators=(",", ":"))
    encoded = header.encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned, as safetensors keeps it
    return len(encoded).to_bytes(8, "little") + encoded + raw[8 + length :]


def timeless(record: Any) -> Any:
    """``record`` without the times it was fitted at, at any depth (the int8 model's calibration
    sits inside the fp32 one's): what a header holds of it."""
    if isinstance(record, dict):
        return {key: timeless(value) for key, value in record.items() if key != CLOCK}
    if isinstance(record, list):
        return [timeless(value) for value in record]
    return record


def _header_entry(record: dict[str, Any]) -> str:
    return json.dumps(timeless(record))


def save_checkpoint(
    model: Detector,
    path: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    trained_digests: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> CheckpointInfo:
    """Write ``path`` (.safetensors) and its .json sidecar atomically; return the checkpoint's
    id. ``trained_digests``: {split: int64 digests} of the files the run trained and selected
    on, kept as ``trained.<split>`` tensors (``TRAINED_TENSOR_PREFIX``)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors: {path}")
    if model.inference_only:
        raise ValueError(
            "this model's LoRA adapters are merged into its base weights for inference; "
            "saving it would apply them twice"
        )
    for target in (path, sidecar_path(path)):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists (refusing to overwrite it)")
    config = portable_config(model.config.to_dict())
    tensors = {
        name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()
    }
    for split, digests in (trained_digests or {}).items():
        tensors[TRAINED_TENSOR_PREFIX + split] = torch.from_numpy(
            np.ascontiguousarray(digests, np.int64)
        )
    header = {
        "format": CHECKPOINT_FORMAT,
        "mfclip_version": __version__,
        "config": json.dumps(config),
    }
    if calibration:
        header[CALIBRATION_KEY] = _header_entry(calibration)
    training = (metadata or {}).get(TRAINING_KEY) or {}
    if any(key in training for key in HELD_OUT_RECORD):
        header[TRAINING_KEY] = json.dumps({key: training.get(key) for key in HELD_OUT_RECORD})
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(safetensors_bytes(tensors, header))
    digest = sha256_file(path)
    total, trainable = model.parameter_counts()
    sidecar = {
        "format": CHECKPOINT_FORMAT,
        "mfclip_version": __version__,
        "weights": path.name,
        "sha256": digest,
        "detector": detector_of(model.config),
        "classes": list(model.classes),
        "crop": {"size": model.crop_size, "margin": model.crop_margin},
        **(model.config.highlights() if hasattr(model.config, "highlights") else {}),
        "parameters": {"total": total, "trainable": trainable},
        "config": config,
        **(metadata or {}),
        CALIBRATION_KEY: calibration,
    }
    write_json_atomic(sidecar_path(path), sidecar, overwrite=True)
    return CheckpointInfo(path, digest, model.config, dict(metadata or {}), calibration)


def portable_name(value: str) -> str:
    """A local file or folder (an absolute path, or one that exists) by its name only, as a
    checkpoint records it: it travels, and the folders of the machine that built it mean nothing
    elsewhere. Anything else (an open_clip tag, a shipped protocol's name) is kept as it is."""
    path = Path(value)
    return path.name if path.is_absolute() or path.exists() else value


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a checkpoint records it: a local weights file it was built from (any
    ``pretrained`` entry that is a path: CLIP's, MC-LCR's backbone) by its name only
    (``portable_name``). A checkpoint's weights are its own tensors, so the path is never read
    again; what the build decided from it (activation, mean and std) is already resolved into
    the config."""
    portable = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = portable_config(value)
        elif key == "pretrained" and isinstance(value, str):
            value = portable_name(value)
        portable[key] = value
    return portable


@dataclass
class Fitted:
    """Statistics fitted to a trained model (OOD, attribution): a header record and its tensors,
    named with the prefix ``FITTED`` gives its key."""

    record: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def save_fitted(
    source: CheckpointInfo,
    target: str | Path,
    *,
    calibration: dict[str, Any] | None = None,
    fitted: dict[str, Fitted] | None = None,
    overwrite: bool = False,
) -> CheckpointInfo:
    """A new checkpoint at ``target``: ``source``'s tensors and header, with ``calibration`` and
    each of ``fitted`` (keyed as ``FITTED``: ``ood``, ``attribution``) in place of any earlier
    one where given, so a new SHA-256; its sidecar is ``source``'s, updated. ``target`` may be
    ``source`` itself with ``overwrite`` (the end of training adds its statistics to
    best.safetensors)."""
    target = Path(target)
    if target.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors: {target}")
    for path in (target, sidecar_path(target)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists (refusing to overwrite it)")
    fitted = fitted or {}
    unknown = sorted(set(fitted) - set(FITTED))
    if unknown:
        raise ValueError(f"unknown fitted statistics {unknown}; known: {sorted(FITTED)}")
    header = dict(check_safetensors(source.path).get("__metadata__") or {})
    tensors = load_file(str(source.path), device="cpu")
    # every tensor copied: a scoring load (calibrate's) skips the language encoder's, whose NaN
    # the new file carried on (refused only when registered or resumed)
    refuse_non_finite(tensors, source.path)
    if calibration is not None:
        header[CALIBRATION_KEY] = _header_entry(calibration)
    for key, statistics in fitted.items():
        prefix = FITTED[key]
        if not all(name.startswith(prefix) for name in statistics.tensors):
            raise ValueError(f"{key} tensors are named {prefix}*")
        header[key] = _header_entry(statistics.record)
        refuse_non_finite(statistics.tensors, f"the {key} statistics fitted for {target}")
        tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
        tensors.update({k: v.contiguous() for k, v in statistics.tensors.items()})
    with atomic_writer(target, overwrite=overwrite) as handle:
        handle.write(safetensors_bytes(tensors, header))
    digest = sha256_file(target)
    kept_calibration = calibration if calibration is not None else source.calibration
    kept = {key: getattr(source, key) for key in FITTED}
    kept.update({key: statistics.record for key, statistics in fitted.items()})
    sidecar = {
        "format": CHECKPOINT_FORMAT,
        "config": source.config.to_dict(),
        **source.metadata,
        "weights": target.name,
        "sha256": digest,
        CALIBRATION_KEY: kept_calibration,
        **kept,
    }
    write_json_atomic(sidecar_path(target), sidecar, overwrite=True)
    return CheckpointInfo(target, digest, source.config, sidecar, kept_calibration, **kept)


def read_fitted_tensors(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint named ``prefix*`` (``ood.``, ``attribution.``; the language
    encoder's, which a scoring load skips, when a checkpoint is registered), without reading the
    others; ``CheckpointError`` where one holds values that are not finite numbers."""
    # read into memory of their own: a scan keeps them, which a rewrite of the file in place
    # must not change (nor its truncation kill, audit S3 N1)
    with safe_open(str(path), framework="pt", device="cpu", backend="pread") as handle:
        names = [name for name in handle.keys() if name.startswith(prefix)]
        tensors = {name: handle.get_tensor(name) for name in names}
    refuse_non_finite(tensors, path)
    return tensors


def trained_digests(info: CheckpointInfo) -> dict[str, np.ndarray] | None:
    """{split: the sorted digests of its files} a checkpoint keeps (``DIGESTED_SPLITS``), or
    None where it keeps none (made before 2.23.0, or not by ``mfclip train``);
    ``CheckpointError`` where its tensors disagree with its record (the file was altered)."""
    record = (info.metadata.get(TRAINING_KEY) or {}).get("digests")
    if not isinstance(record, dict) or record.get("of") != CONTENT_DIGEST:
        return None
    tensors = read_fitted_tensors(info.path, TRAINED_TENSOR_PREFIX)
    digests = {}
    for split in DIGESTED_SPLITS:
        tensor = tensors.get(TRAINED_TENSOR_PREFIX + split)
        if (
            tensor is None
            or tensor.dtype != torch.int64
            or tensor.ndim != 1
            or len(tensor) != record.get(split)
        ):
            raise CheckpointError(
                f"{info.path}: its digests of its {split} split's files do not match its "
                "training record: the file was altered"
            )
        digests[split] = tensor.numpy()
    return digests


def refuse_non_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """``CheckpointError`` where a floating tensor holds NaN or an infinity: one such weight
    made every face's probabilities NaN, and a scan reported them, with a leaning, an attribution
    and ``ood: false``, exit 0 (audit R F1). A tensor's sum is finite when all its values are
    (one pass: 0.03 s for 150 M weights on this project's idle 2-core CPU, up to 0.8 s measured
    under load), taken in float32 at least, so that half-precision weights do not overflow it;
    only a sum that overflows is looked at value by value."""

    def finite(tensor: torch.Tensor) -> bool:
        wide = tensor if tensor.dtype == torch.float64 else tensor.float()  # fp8 sums nothing
        return bool(torch.isfinite(wide.sum())) or bool(torch.isfinite(tensor).all())

    damaged = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not finite(tensor)
    )
    if damaged:
        shown = ", ".join(damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        raise CheckpointError(
            f"{path}: values that are not finite numbers (NaN or an infinity) in {shown} "
            f"({len(damaged)} of the {len(tensors)} tensors read): the weights are damaged"
        )


@dataclass
class _Header:
    """What a checkpoint's header says, checked, before its bytes are hashed or read."""

    path: Path
    config: Any
    meta: dict[str, str]
    records: dict[str, Any]  # the calibration and fitted records (None where absent)
    tensors: dict[str, dict[str, Any]]  # the model's tensors' entries: dtype, shape, offsets
    identity: tuple[int, ...]  # the file as the header was read


def _read_header(path: Path) -> _Header:
    """Validate a checkpoint's header: safetensors, our format, a valid config and records."""
    header = check_safetensors(path)
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an mfclip checkpoint "
            f"(format {meta.get('format')!r})"
        )
    try:
        config = config_from_dict(json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as error:
        raise CheckpointError(
            f"{path}: the embedded model config is unreadable: {error}"
        ) from error
    records: dict[str, Any] = {}
    for key in (CALIBRATION_KEY, *FITTED):
        try:
            records[key] = json.loads(meta[key]) if key in meta else None
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: the embedded {key} is unreadable: {error}") from None
    _check_records(path, records)
    tensors = {name: entry for name, entry in header.items() if not name.startswith(NOT_MODEL)}
    return _Header(path, config, meta, records, tensors, file_identity(path))


def _identified(header: _Header, stop: threading.Event | None = None) -> CheckpointInfo:
    """The checkpoint's SHA-256 (of the file whose header was read, or a CheckpointError) and
    what its sidecar adds, if it describes the same bytes. A set ``stop`` ends the hash."""
    path, meta, records = header.path, header.meta, dict(header.records)
    digest = sha256_file(path, stop=stop)
    if not _unchanged(header):
        raise _changed_while_read(path)
    metadata, sidecar_ignored = _sidecar_of(path, digest)
    if TRAINING_KEY in meta:  # the header's held-out record is covered by the SHA-256: it wins
        try:
            embedded = json.loads(meta[TRAINING_KEY])
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: the embedded training is unreadable: {error}") from None
        if not isinstance(embedded, dict):
            raise CheckpointError(f"{path}: the embedded training is not a JSON object")
        beside = metadata.get(TRAINING_KEY)
        metadata[TRAINING_KEY] = {**(beside if isinstance(beside, dict) else {}), **embedded}
    for key, record in records.items():  # the sidecar's copy of the same record has its time
        beside = metadata.get(key)
        if record is not None and isinstance(beside, dict) and timeless(beside) == timeless(record):
            records[key] = beside
    calibration = records.pop(CALIBRATION_KEY)
    return CheckpointInfo(
        path,
        digest,
        header.config,
        metadata,
        calibration,
        **records,
        sidecar_ignored=sidecar_ignored,
        identity=header.identity,
    )


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Validate a checkpoint file without building the model: safetensors, our format, a valid
    config; its SHA-256 and sidecar."""
    return _identified(_read_header(Path(path)))


def file_identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or written: device, inode, size, modification
    time (ns)."""
    status = path.stat()
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _changed_while_read(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} changed while it was being read (replaced or written meanwhile: a training run "
        "saving it?); run again once it is written"
    )


# what a fitted record cannot be read without (an edited header lacking one was a traceback
# wherever it was first read, audit R F5)
_REQUIRED = {
    CALIBRATION_KEY: ("method", "temperature", "fitted_on"),
    **{key: ("method", "threshold", "fitted_on") for key in FITTED},
}


def _check_records(path: Path, records: dict[str, Any]) -> None:
    """``CheckpointError`` for an embedded calibration, OOD or attribution record that is not an
    object holding what it is read for."""
    for key, record in records.items():
        if record is None:
            continue
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}: the embedded {key} is not a JSON object")
        missing = [name for name in _REQUIRED[key] if name not in record]
        if missing:
            raise CheckpointError(
                f"{path}: the embedded {key} lacks {', '.join(missing)}: the file was altered"
            )
    parity = ((records.get(CALIBRATION_KEY) or {}).get("int8") or {}).get("parity")
    if parity is not None and not (
        isinstance(parity, dict)
        and isinstance(parity.get("samples"), int)
        and parity["samples"] >= 0
        and isinstance(parity.get("max_fake_change"), (int, float))
        and isinstance(parity.get("verdict_changes", {}), dict)
    ):
        raise CheckpointError(
            f"{path}: the embedded calibration's int8 parity lacks its samples or "
            "max_fake_change: the file was altered"
        )
    temperature = (records.get(CALIBRATION_KEY) or {}).get("temperature", 1.0)
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise CheckpointError(
            f"{path}: the embedded calibration's temperature {temperature!r} is not a positive "
            "number"
        )


def network_sha256(path: str | Path) -> str:
    """The SHA-256 of the network a checkpoint holds: its model config and model tensors (names,
    dtypes, shapes, bytes), without the records fitted after training (calibration, OOD
    statistics, attribution) or the training record and digests. Two files of one network
    calibrated apart share it, where their SHA-256 differ: their figures then differ by
    calibration alone."""
    path = Path(path)
    header = check_safetensors(path)
    meta = header.pop("__metadata__", None) or {}
    try:  # the config as data, whatever order its header text gives the keys in
        config = json.loads(meta.get("config") or "null")
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the embedded model config is unreadable: {error}") from None
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    names = sorted(name for name in header if not name.startswith(NOT_MODEL))
    with open(path, "rb") as stream:
        start = 8 + struct.unpack("<Q", stream.read(8))[0]
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
            stream.seek(start + begin)
            left = end - begin
            while left > 0:
                chunk = stream.read(min(left, 1 << 24))
                if not chunk:
                    raise CheckpointError(f"{path}: its tensor {name} runs past the file's end")
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


def network_size(path: str | Path) -> int:
    """Bytes of a checkpoint's model tensors, those ``network_sha256`` hashes (from its header:
    none read)."""
    header = check_safetensors(Path(path))
    header.pop("__metadata__", None)
    return sum(
        entry["data_offsets"][1] - entry["data_offsets"][0]
        for name, entry in header.items()
        if not name.startswith(NOT_MODEL)
    )


def _sidecar_of(path: Path, digest: str) -> tuple[dict[str, Any], str | None]:
    """The sidecar's record of the checkpoint whose SHA-256 is ``digest``, and why it was left
    out, if it was: one that names another file's SHA-256 (a checkpoint copied over another's,
    the old sidecar left beside it) described other weights, and its training record turned
    eval's held-out check off without a word (audit S F2)."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}, None
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}, f"{sidecar.name} beside it cannot be read as JSON"
    if not isinstance(metadata, dict):
        return {}, f"{sidecar.name} beside it is not a JSON object"
    named = metadata.get("sha256")
    if named is not None and named != digest:
        return {}, (
            f"{sidecar.name} beside it describes other weights (SHA-256 {str(named)[:12]}, "
            f"not {digest[:12]})"
        )
    return metadata, None


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *, inference: bool = False
) -> tuple[Detector, CheckpointInfo]:
    """Rebuild the model of the detector the embedded config names and load its tensors (no
    download, no pickle).

    With ``inference`` the model is built for scoring only: no gradients kept for its weights,
    and for MFCLIP the LoRA adapters folded into the base weights, no language encoder (its
    tensors not even read), and, for the plain ViTs ``vit.py`` builds, neither open_clip nor
    peft imported (seconds of a one-image scan's start-up). Its outputs equal the trainable
    model's to float rounding. The file's SHA-256 is taken in a thread beside the build (0.4 s
    for a ViT-B-16 checkpoint); a file changed meanwhile is refused.
    """
    header = _read_header(Path(path))
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfclip-sha256") as pool:
        identified = pool.submit(_identified, header, stop)
        try:
            try:
                model = _built(header, path, inference=inference)
            except Exception:
                identified.result()  # a file changed while it was hashed says so first,
                if not _unchanged(header):  # and one replaced after it, before its tensors
                    raise _changed_while_read(header.path) from None  # were read (audit U M1)
                raise
            info = identified.result()
        except KeyboardInterrupt:  # in the build or waiting for the hash: not held up by the
            stop.set()  # hash of a large file (audit U L1, V L1)
            raise
    if not _unchanged(header):  # the tensors are the bytes hashed
        raise _changed_while_read(header.path)
    return model.to(device).eval(), info


def _unchanged(header: _Header) -> bool:
    """Whether the file at the header's path is still the one whose header was read."""
    try:
        return file_identity(header.path) == header.identity
    except OSError:  # removed meanwhile
        return False


def _built(header: _Header, path: str | Path, *, inference: bool) -> Detector:
    """The model ``header`` describes, on the CPU, holding the file's tensors."""
    kind = detector_kind(detector_of(header.config))

    def build(
        tensors: dict[str, torch.Tensor],
    ) -> tuple[Detector, dict[str, torch.Tensor], tuple[str, ...]]:
        """The model, the tensors it loads, and the prefixes of the file's it does without."""
        light = kind.scoring_model(header.config, tensors) if inference else None
        if light:
            return *light, kind.scoring_skips
        return build_detector(header.config, pretrained=False), tensors, ()

    try:
        # names and shapes first, from the header alone: the model built on torch's meta device
        # (nothing allocated: a ViT-bigG in 0.4 s), so that a config describing a larger model
        # than its tensors is refused before that model costs gigabytes, or a byte is read
        with torch.device("meta"):
            skeleton, expected, skipped = build(
                {
                    name: torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
                    for name, entry in header.tensors.items()
                }
            )
        _refuse_mismatch(skeleton, expected, path)
    except (RuntimeError, MemoryError) as error:  # a config torch cannot build (widths < 0)
        raise _unbuildable(path, error) from None
    try:
        state = _read_tensors(header, skipped)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: its tensors cannot be read ({error})") from None
    refuse_non_finite(state, path)
    try:
        with _initialisers_skipped():
            model, state, _ = build(state)
        # the file's tensors become the model's, in the dtypes it was built with: no second
        # copy (the tensors the build made were never written, initialisers skipped)
        built = model.state_dict()
        model.load_state_dict(
            {name: tensor.to(built[name].dtype) for name, tensor in state.items()}, assign=True
        )
    except (RuntimeError, MemoryError) as error:
        raise _unbuildable(path, error) from None
    if inference:  # nothing is trained: no gradients kept for weights (heatmaps take the input's)
        model.merge_adapters().requires_grad_(False)
    return model


def _unbuildable(path: str | Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: the model its config describes cannot be built here ({error}); the "
        "config does not match its tensors, or the file was altered"
    )


def _read_tensors(header: _Header, skipped: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The model's tensors but those named ``skipped*``, in file order, read into memory of
    their own (not mapped): they become the model's parameters, which a later rewrite of the
    file in place must not change (nor its truncation kill, audit S3 N1)."""
    names = sorted(
        (name for name in header.tensors if not (skipped and name.startswith(skipped))),
        key=lambda name: header.tensors[name]["data_offsets"][0],
    )
    with safe_open(str(header.path), framework="pt", device="cpu", backend="pread") as handle:
        return {name: handle.get_tensor(name) for name in names}


# safetensors' dtype names (those ``files.check_safetensors`` lets through) as torch's
_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn, "I16": torch.int16, "U16": torch.uint16,
    "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32, "U32": torch.uint32,
    "F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "U64": torch.uint64,
    "C64": torch.complex64, "F8_E8M0": torch.float8_e8m0fnu,
}  # fmt: skip


# one load's build at a time swaps torch.nn.init's initialisers, and restores them after
_INITIALISERS = threading.RLock()


def _skipped_in(thread: int, initialiser: Any) -> Any:
    def initialise(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if threading.get_ident() == thread:
            return tensor
        return initialiser(tensor, *args, **kwargs)

    return initialise


@contextlib.contextmanager
def _initialisers_skipped() -> Iterator[None]:
    """``torch.nn.init``'s initialisers leave their tensors as they are, in this thread, while a
    model is built whose every parameter and stored buffer its checkpoint overwrites next (the
    meta-device check proved it): drawing ViT-B-16's random weights was 0.4 s of a scan's
    start-up on a CPU, for nothing. Buffers a module computes (its normalisation constants, an
    attention mask) are made as before, and so is any model another thread builds meanwhile;
    loads in several threads take turns (audit S2 F6: overlapping, they left the initialisers
    swapped for good)."""
    from torch.nn import init

    thread = threading.get_ident()
    with _INITIALISERS:
        initialisers = {
            name: getattr(init, name)
            for name in dir(init)
            if name.endswith("_") and not name.startswith("_") and callable(getattr(init, name))
        }
        for name, initialiser in initialisers.items():
            setattr(init, name, _skipped_in(thread, initialiser))
        try:
            yield
        finally:
            for name, initialiser in initialisers.items():
                setattr(init, name, initialiser)


def _refuse_mismatch(model: Detector, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """A CheckpointError naming what differs between ``model``'s tensors and ``state``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{path} does not match its config (detector {detector_of(model.config)}): "
            f"missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, "
            f"wrong shape {reshaped[:3]}"
        )
