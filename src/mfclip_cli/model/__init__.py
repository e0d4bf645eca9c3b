"""The model core: MFCLIP (configuration, backbone, encoders, losses), its sibling detectors
behind one interface (``detectors.py``), and checkpoints."""

from mfclip_cli.model.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from mfclip_cli.model.config import (
    CLASS_NAMES,
    ConfigError,
    ModelConfig,
    load_model_config,
    shipped_config_names,
)
from mfclip_cli.model.detectors import DETECTORS, Detector, build_detector, detector_of
from mfclip_cli.model.losses import LossBreakdown
from mfclip_cli.model.mfclip import MFCLIP, build_model
from mfclip_cli.model.prompts import LabelSet, build_prompts

__all__ = [
    "CLASS_NAMES",
    "DETECTORS",
    "Detector",
    "MFCLIP",
    "CheckpointError",
    "CheckpointInfo",
    "ConfigError",
    "LabelSet",
    "LossBreakdown",
    "ModelConfig",
    "build_detector",
    "build_model",
    "build_prompts",
    "detector_of",
    "load_checkpoint",
    "load_model_config",
    "read_checkpoint_info",
    "save_checkpoint",
    "shipped_config_names",
]
