"""The errors mfclip reports to its user as one line: the CLI maps each to its exit code.

They live here, apart from the modules that raise them, so that the CLI can catch them without
importing torch, open_clip or the face pipeline (``mfclip --help`` and ``weights list`` stay fast).
"""


class BackboneError(RuntimeError):
    """The CLIP backbone could not be built as asked (unknown architecture, weights unavailable)."""


class ConfigError(ValueError):
    """A configuration that cannot be read or does not describe a valid model."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: not safetensors, not ours, or not matching its config."""


class ReaderGone(Exception):
    """The reader of standard output went away (``| head -1``): the command ends quietly, with
    the code a shell gives a program ended by SIGPIPE."""


class UsageError(ValueError):
    """Options that cannot work together or point at the wrong place (exit code 2)."""


class WeightsError(RuntimeError):
    """No usable checkpoint: named but missing, failing its hash, or none found at all."""


class UnsafeFileError(ValueError):
    """A weights file mfclip will not load because loading it could run code, or it is malformed."""


class DataError(ValueError):
    """A dataset, manifest or sample that cannot be read as described."""


class LabelMapError(UsageError):
    """A label-map file (``--label-map``) that is missing, not TOML, or names what no reader looks
    up: a file of settings the user wrote, so a usage error (exit code 2), as a protocol file's
    are; the dataset it would relabel is not at fault."""


class LayoutMismatch(DataError):
    """Images a layout puts nowhere: the tree is not that layout, or not all of it (a usage
    error where the user named the layout, ``read_dataset``)."""


class TrainingError(RuntimeError):
    """Training that cannot go on: its gradients stopped being finite numbers."""


class ProtocolError(ValueError):
    """A protocol that cannot be read, or that cannot split the samples it was given."""
