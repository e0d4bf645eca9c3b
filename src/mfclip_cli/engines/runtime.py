"""What every engine needs from its surroundings: the device, the clock, exit codes, usage errors."""

from __future__ import annotations

import datetime as dt

import torch

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_UNREADABLE, EXIT_FAKE = 0, 1, 2, 3, 4


class UsageError(ValueError):
    """Options that cannot work together or point at the wrong place (exit code 2)."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``, checked against the machine."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise UsageError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return device


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
