"""A training run's resumable state (``last.state.safetensors``): the trainable weights, the
optimiser, the position in the data and the RNG states, in safetensors (no pickle)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mfclip_cli.errors import UsageError
from mfclip_cli.files import atomic_writer, check_safetensors
from mfclip_cli.model import Detector
from mfclip_cli.model.checkpoint import safetensors_bytes

STATE_FORMAT = "mfclip-train-state/1"


@dataclass
class RunPosition:
    """Where a run stands; saved in the state file's header."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    next_batch: int = 0  # first global batch of ``epoch`` not yet trained on
    samples_seen: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "step"}


def save_state(
    path: Path, model: Detector, optimizer: torch.optim.Optimizer, progress: RunPosition
) -> None:
    """The trainable weights, the optimiser's state, the position and the RNG states, written
    atomically: what ``--resume`` needs to continue exactly where the run stopped."""
    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            tensors[f"param/{name}"] = parameter.detach().cpu().contiguous()
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    header = {
        "format": STATE_FORMAT,
        "progress": json.dumps(asdict(progress)),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    with atomic_writer(path, overwrite=True) as handle:
        handle.write(safetensors_bytes(tensors, header))


def load_state(path: Path, model: Detector, optimizer: torch.optim.Optimizer) -> RunPosition:
    """Put a state file's weights, optimiser and RNG states back; its position is returned."""
    header = check_safetensors(path).get("__metadata__") or {}
    if header.get("format") != STATE_FORMAT:
        raise UsageError(f"{path} is not an mfclip training state")
    # in memory of their own: the optimiser keeps them, the file is replaced at each save
    tensors = load_file(str(path), device="cpu", backend="pread")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("param/"):
                parameters[key.removeprefix("param/")].copy_(value)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in json.loads(header["optim_scalars"]).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["param_groups"])})
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return RunPosition(**json.loads(header["progress"]))
