"""A training run's settings: what ``mfclip train`` and ``ablate`` read from their options, a
``--settings`` file or a run folder's train.json, checked before anything heavy is imported (a
mistyped option is refused in a moment, not after torch and open_clip have loaded)."""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mfclip_cli import __version__
from mfclip_cli.data.combine import as_data_list, check_data
from mfclip_cli.engines.weights.store import resolve_clip_weights
from mfclip_cli.errors import UsageError
from mfclip_cli.model.config import apply_overrides, load_model_config, replace_config

SETTINGS_FILE = "train.json"
# train.json's record of the run, beside its settings: the format, the mfclip that wrote it, the
# folder it started in (relative paths in the settings are relative to it; a folder started
# before 2.2.0 has no schema_version) and what else its bytes depend on (runtime.run_environment;
# since 2.14.0)
RUN_RECORD_KEYS = ("schema_version", "mfclip_version", "cwd", "environment")


WEIGHT_DECAY_ON = ("weights", "all")
# what a train.json written before weight_decay_on existed trained with
LEGACY_SETTINGS = {"weight_decay_on": "all"}

_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}


def _bool_for_number(value: Any, kind: str) -> bool:
    """true/false where a number is meant (Python counts a bool as an int)."""
    return isinstance(value, bool) and kind != "bool"


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run depends on; saved to RUN/train.json and reused by ``--resume``."""

    data: str | tuple[str, ...]  # one --data, or several read as one (data/combine.py)
    out: str
    protocol: str = "in-domain"
    layout: str | None = None
    label_map: str | None = None  # TOML extending the generator table of a published layout
    config: str = "vit-b-16"
    clip_weights: str | None = None  # open_clip tag or local file; None: the config's own
    lora_rank: int | None = None  # None: the config's own
    lora_alpha: float | None = None
    # model config KEY=VALUE assignments (train --set), applied last, recorded in the checkpoint
    overrides: tuple[str, ...] = ()
    epochs: int = 5
    batch_size: int = 32  # global: split across torchrun processes
    accumulate: int = 1  # micro-batches per optimiser step
    lr: float = 2e-4
    weight_decay: float = 0.05
    # what AdamW decays: "weights" the weight matrices and kernels only, not the biases, norm
    # gains, logit scale or level logits (open_clip trains so; decaying a scale pulls it to 0);
    # "all" every trainable tensor, as runs before report format 2.13.0 did (their train.json
    # has no such key and is read so, keeping their optimiser state resumable)
    weight_decay_on: str = "weights"
    warmup: float = 0.05  # fraction of all optimiser steps spent warming up
    balanced: bool = False  # class-balanced sampling (with replacement)
    seed: int = 0
    val_every: int = 0  # optimiser steps between validations; 0: at the end of each epoch
    checkpoint_every: int = 0  # optimiser steps between last.* saves; 0: at each validation
    workers: int = 1
    threshold: float = 0.5

    def __post_init__(self) -> None:
        self._check_kinds()
        if isinstance(self.overrides, str):
            raise UsageError("overrides is a list of KEY=VALUE strings, not one string")
        object.__setattr__(self, "overrides", tuple(self.overrides))  # a list, read from TOML
        data = as_data_list(self.data)  # a list, read from TOML or train.json
        if not data:
            raise UsageError("data names no dataset")
        object.__setattr__(self, "data", data[0] if len(data) == 1 else tuple(data))
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if not 0 <= self.warmup < 1:
            raise UsageError("warmup is a fraction of the optimiser steps, in [0, 1)")
        if not math.isfinite(self.lr) or self.lr <= 0:  # NaN passed "<= 0" into AdamW
            raise UsageError(f"lr must be a finite positive number, not {self.lr}")
        for name in ("val_every", "checkpoint_every", "workers"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be 0 or more")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise UsageError(f"weight_decay must be 0 or more, not {self.weight_decay}")
        if self.weight_decay_on not in WEIGHT_DECAY_ON:
            raise UsageError(
                f"weight_decay_on must be {' or '.join(map(repr, WEIGHT_DECAY_ON))}, "
                f"not {self.weight_decay_on!r}"
            )

    def _check_kinds(self) -> None:
        """Each value of the kind its field holds: a settings file's ``epochs = "2"`` ended in a
        traceback, and ``balanced = "no"`` was taken as true."""
        for item in fields(self):
            value, kind = getattr(self, item.name), str(item.type).removesuffix(" | None")
            if value is None and str(item.type).endswith(" | None"):
                continue
            accepted = _KINDS.get(kind)
            if accepted and (not isinstance(value, accepted) or _bool_for_number(value, kind)):
                raise UsageError(f"{item.name} must be {_KIND_WORDS[kind]}, not {value!r}")

    def model_config(self) -> Any:
        """The config a new run builds: the named one, then --clip-weights, --lora-*, --set."""
        config = load_model_config(self.config)
        changes: dict[str, Any] = {}
        if self.clip_weights:
            changes["clip"] = resolve_clip_weights(self.clip_weights)
        lora = {
            k: v for k, v in (("rank", self.lora_rank), ("alpha", self.lora_alpha)) if v is not None
        }
        if lora:
            changes["lora"] = lora
        sections = config.to_dict()
        for section, option in (("clip", "--clip-weights"), ("lora", "--lora-rank/--lora-alpha")):
            if section in changes and section not in sections:
                from mfclip_cli.model.detectors import detector_of  # torch: only to say this

                raise UsageError(
                    f"{option}: the {detector_of(config)} detector (config {config.name}) has "
                    f"no {section} settings"
                )
        return apply_overrides(replace_config(config, **changes), self.overrides)


def load_train_settings(path: str | Path, **overrides: Any) -> TrainSettings:
    """Settings from a TOML file's ``[train]`` table (or top level), then explicit overrides."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"training settings file not found: {path}") from None
    except OSError as error:
        raise UsageError(f"cannot read training settings {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}), not a settings file"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None
    table = document.get("train", document)
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(
            f"{path}: unknown training settings {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return TrainSettings(**{**table, **{k: v for k, v in overrides.items() if v is not None}})


def resolve_train_settings(
    given: dict[str, Any], *, out: str, settings_file: str | None = None, resume: bool = False
) -> TrainSettings:
    """A command's settings from its options (``given``: None where an option was not passed):
    a ``--settings`` file with the options over it, else the options alone; for a ``--resume``,
    which takes none, the settings the run in ``out`` saved. Their ``--data`` and label map are
    checked here, before torch loads, for train and ablate alike."""
    chosen = {name: value for name, value in given.items() if value is not None}
    if resume:
        if chosen or settings_file:
            raise UsageError(
                "--resume continues with the run's saved settings; "
                f"drop {', '.join(sorted(chosen)) or '--settings'}"
            )
        settings = resumed_settings(out)
    elif settings_file:
        settings = load_train_settings(settings_file, out=out, **chosen)
    elif not chosen.get("data"):
        raise UsageError("--data is required (or --settings FILE naming it)")
    else:
        settings = TrainSettings(out=out, **chosen)
    check_data(settings.data, settings.label_map)
    return settings


PATH_SETTINGS = ("data", "out", "protocol", "label_map", "clip_weights")


def _saved_settings(saved: Any, out: str) -> TrainSettings:
    """The settings a run folder's train.json holds, less its record keys; one this mfclip
    cannot read as settings (another program's, or a newer mfclip's with settings it does not
    know) is refused by name rather than half-understood."""
    if not isinstance(saved, dict):
        raise UsageError(f"cannot resume {out}: {SETTINGS_FILE} holds no training settings")
    written_by = saved.get("mfclip_version", "an unknown version")
    settings = {key: value for key, value in saved.items() if key not in RUN_RECORD_KEYS}
    settings = {**LEGACY_SETTINGS, **settings}
    unknown = sorted(set(settings) - {field.name for field in fields(TrainSettings)})
    if unknown:
        raise UsageError(
            f"cannot resume {out}: its {SETTINGS_FILE}, written by mfclip {written_by}, holds "
            f"settings this mfclip ({__version__}) does not know: {', '.join(unknown)}"
        )
    try:
        return TrainSettings(**settings)
    except TypeError as error:  # a setting every run records is missing
        raise UsageError(f"cannot resume {out}: {SETTINGS_FILE} is incomplete ({error})") from None


def _from_where_it_began(settings: TrainSettings, saved: dict[str, Any]) -> TrainSettings:
    """A resumed run's relative paths (``--data faces``) as the run that began them meant them:
    from the folder it started in (train.json's ``cwd``), where they are not found from here."""
    began = saved.get("cwd")
    if not isinstance(began, str):
        return settings

    def rebased(value: str) -> str:
        if Path(value).is_absolute() or Path(value).exists():
            return value
        return str(Path(began) / value) if (Path(began) / value).exists() else value

    changes: dict[str, Any] = {}
    for key in PATH_SETTINGS:
        value = getattr(settings, key)
        if key == "out" or value is None:  # out is where --resume was pointed
            continue
        changes[key] = rebased(value) if isinstance(value, str) else tuple(map(rebased, value))
    return replace(settings, **changes)


def saved_run(run: str | Path) -> dict[str, Any] | None:
    """A run folder's train.json as written, None where it has none."""
    try:
        return json.loads((Path(run) / SETTINGS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot resume {run}: {SETTINGS_FILE} is unreadable ({error})") from error


def _settings_saved(run: str | Path, saved: dict[str, Any]) -> TrainSettings:
    """The settings a run folder's train.json (``saved``) holds, paths as the run meant them."""
    return _from_where_it_began(replace(_saved_settings(saved, str(run)), out=str(run)), saved)


def run_settings(run: str | Path) -> TrainSettings | None:
    """The settings of the run in folder ``run`` (paths as the run meant them), None where it
    holds none."""
    saved = saved_run(run)
    return None if saved is None else _settings_saved(run, saved)


def resumed_settings(out: str) -> TrainSettings:
    """The settings ``--resume`` continues the run in ``out`` with, under as many processes as
    it began with: the global batch is split across them and each adds its own per-process loss
    terms, so a run resumed under another torchrun count ends at weights neither count gives
    (checked before torch loads; a run folder from before 2.14.0 records no count)."""
    saved = saved_run(out)
    if saved is None:
        raise UsageError(f"cannot resume {out}: it holds no {SETTINGS_FILE} (no run began there)")
    settings = _settings_saved(out, saved)
    began = (saved.get("environment") or {}).get("processes")
    now = int(os.environ.get("WORLD_SIZE", "1"))
    if began is not None and began != now:
        raise UsageError(
            f"cannot resume {out}: it began in {began} process(es) and this is {now}; resume it "
            f"with torchrun --nproc-per-node {began}"
            + (" (or without torchrun)" if began == 1 else "")
        )
    return settings


# settings that do not change what a run learns: where it is, how fast it reads, when it saves
NOT_LEARNED = ("out", "workers", "checkpoint_every")


def learning_differences(then: TrainSettings, now: TrainSettings) -> list[str]:
    """How two runs' settings differ in what they learn, in words (paths compared resolved)."""

    def comparable(name: str, value: Any) -> Any:
        if name not in PATH_SETTINGS or value is None:
            return value
        if isinstance(value, str):
            return Path(value).resolve()
        return tuple(Path(item).resolve() for item in value)

    return [
        f"{field.name} {getattr(then, field.name)!r} there, {getattr(now, field.name)!r} now"
        for field in fields(TrainSettings)
        if field.name not in NOT_LEARNED
        and comparable(field.name, getattr(then, field.name))
        != comparable(field.name, getattr(now, field.name))
    ]
