"""The model core: MFCLIP (configuration, backbone, encoders, losses), its sibling detectors
behind one interface (``detectors.py``), and checkpoints.

The names below are loaded on first use (PEP 562), as in ``faces``: reading a config
(``model.config``) imports no torch.
"""

import importlib
from typing import Any

_HOMES = {
    "CheckpointError": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint_info": "checkpoint",
    "save_checkpoint": "checkpoint",
    "CLASS_NAMES": "config",
    "ConfigError": "config",
    "ModelConfig": "config",
    "load_model_config": "config",
    "shipped_config_names": "config",
    "DETECTORS": "detectors",
    "Detector": "detectors",
    "build_detector": "detectors",
    "detector_kind": "detectors",
    "detector_of": "detectors",
    "LossBreakdown": "losses",
    "MFCLIP": "mfclip",
    "build_model": "mfclip",
    "LabelSet": "prompts",
    "build_prompts": "prompts",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
