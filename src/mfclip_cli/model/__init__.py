"""The MFCLIP model core: configuration, backbone, encoders, losses and checkpoints."""

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
from mfclip_cli.model.losses import LossBreakdown
from mfclip_cli.model.mfclip import MFCLIP, build_model
from mfclip_cli.model.prompts import LabelSet, build_prompts

__all__ = [
    "CLASS_NAMES",
    "MFCLIP",
    "CheckpointError",
    "CheckpointInfo",
    "ConfigError",
    "LabelSet",
    "LossBreakdown",
    "ModelConfig",
    "build_model",
    "build_prompts",
    "load_checkpoint",
    "load_model_config",
    "read_checkpoint_info",
    "save_checkpoint",
    "shipped_config_names",
]
