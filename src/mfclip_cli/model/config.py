"""Model configuration as data.

A configuration is a JSON (or TOML) document that maps one-to-one onto the dataclasses below.
Shipped configurations live in ``configs/`` beside this file and are found by name; a user file
may name a shipped one in ``extends`` and override only what differs. The resolved configuration
travels inside every checkpoint, so a checkpoint rebuilds exactly the model that wrote it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from mfclip_cli.errors import ConfigError
from mfclip_cli.labels import CLASS_NAMES

CONFIG_DIR = Path(__file__).parent / "configs"
PROMPT_LEVELS = ("authenticity", "forgery_type", "family", "generator")
FALSE_NEGATIVE_RULES = ("prompts", "embeddings")
HARDNESS_AMONG = ("relevant", "negatives")
MFCLIP_DETECTOR = "mfclip"


class SettingsDocument:
    """A detector's settings as the JSON document its checkpoints store: ``to_dict`` writes it,
    ``from_dict`` reads it back, every key type-checked and unknown keys refused (a frozen
    dataclass mixes it in and names its ``document`` for the messages)."""

    document: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON document that ``from_dict`` reads back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Settings from a JSON document; every key is type-checked, unknown keys refused."""
        return _build(cls, data, cls.document)


@dataclass(frozen=True)
class ClipSettings:
    """Which open_clip architecture to build and where its pretrained weights come from."""

    architecture: str = "ViT-B-16"
    # open_clip tag or local .safetensors file; None = random init
    pretrained: str | None = "openai"
    quick_gelu: bool | None = None  # None: take it from the pretrained tag (OpenAI weights need it)


def _check_range(
    key: str, value: float, *, low: float, high: float | None = None, open_low: bool = False
) -> None:
    """A setting that can only train to NaN or crash deep in torch is refused where it is read,
    naming its key: ``low <= value`` (``<`` with ``open_low``), ``value < high``, finite."""
    if (
        isinstance(value, bool)
        or not math.isfinite(value)
        or value < low
        or (open_low and value == low)
        or (high is not None and value >= high)
    ):
        bounds = f"{'above' if open_low else 'at least'} {low:g}"
        bounds += f" and below {high:g}" if high is not None else ""
        raise ConfigError(f"{key} must be a finite number {bounds}, not {value!r}")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # also adapt the text tower (DESIGN's default: the shipped vit-b-16 config and ablate's full
    # model set it); if False it stays frozen and its outputs are cached. False here is what
    # checkpoints written before the key were trained with: a config of your own that omits
    # it trains a frozen text tower (audit M F5)
    text: bool = False

    def __post_init__(self) -> None:
        _check_range("lora.rank", self.rank, low=1)
        _check_range("lora.alpha", self.alpha, low=0, open_low=True)
        _check_range("lora.dropout", self.dropout, low=0, high=1)


@dataclass(frozen=True)
class NoiseSettings:
    # False: no noise branch (and no fusion) is built; the visual embedding is CLIP's image alone
    enabled: bool = True
    patch_size: int = 64  # side of the non-overlapping patches searched for the richest texture
    width: int = 32  # channels of the first noise-encoder stage (doubled twice)
    clip: float = 3.0  # SRM residuals are truncated to [-clip, clip], on the pixel_range scale
    # pixels are 0..pixel_range for the SRM filters: 255 as in the SRM rich models; 1.0 is the
    # authors' code ([0, 1]), where the truncation at 3 never triggers
    pixel_range: float = 255.0

    def __post_init__(self) -> None:
        _check_range("noise.width", self.width, low=1)
        _check_range("noise.clip", self.clip, low=0, open_low=True)
        _check_range("noise.pixel_range", self.pixel_range, low=0, open_low=True)


@dataclass(frozen=True)
class PreprocessSettings:
    # side of the aligned face crop the model receives (noise branch works here)
    crop_size: int = 256
    margin: float = 1.3  # face box enlargement around the alignment template
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        # a checkpoint's header is read here too: a std of 0 or a NaN mean made every face's
        # probabilities NaN, and a crop of 10**6 pixels a side an allocation error per file
        # (audit R F1, F9)
        _check_range("preprocess.crop_size", self.crop_size, low=8, high=4097)
        _check_range("preprocess.margin", self.margin, low=0.5, high=10)
        for key, values in (("mean", self.mean), ("std", self.std)):  # types: config_from_dict
            for value in values:
                _check_range(f"preprocess.{key}", value, low=0, high=1, open_low=key == "std")


@dataclass(frozen=True)
class HeadSettings:
    hidden: int = 512
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check_range("head.hidden", self.hidden, low=1)
        _check_range("head.dropout", self.dropout, low=0, high=1)


@dataclass(frozen=True)
class SpaSettings:
    """Sample pair attention over the negatives of the contrastive loss (see ``losses.py``)."""

    enabled: bool = True
    hardness: float = 5.0  # how strongly similar (hard) negatives are emphasised
    # what makes a pair a false negative: "prompts", the same prompt texts at every level in use
    # (exact); "embeddings", level embeddings closer than identity_eps (soft, and it moves as a
    # trained text tower draws prompts together). The default is the one checkpoints written
    # before the key existed were trained with; the shipped configs set "prompts".
    false_negatives: str = "embeddings"
    # scale of two texts' dissimilarity (summed over the prompt levels) below which they count
    # as a false negative; "embeddings" only
    identity_eps: float = 0.02
    # over which negatives the hardness softmax runs: "relevant", weighted by relevance, so the
    # relevant negatives' weights average 1 and the hard ones exceed it (DESIGN: emphasised);
    # "negatives", all of them, false negatives too, which (as similar as the positive) took
    # most of the mass and left every relevant negative below 1 in a trained model (audit M F3).
    # The default is the one checkpoints written before the key existed were trained with; the
    # shipped configs set "relevant".
    hardness_among: str = "negatives"

    def __post_init__(self) -> None:
        _check_range("loss.spa.hardness", self.hardness, low=0)
        _check_range("loss.spa.identity_eps", self.identity_eps, low=0)
        if self.hardness_among not in HARDNESS_AMONG:
            raise ConfigError(
                f"loss.spa.hardness_among must be one of {', '.join(HARDNESS_AMONG)}, "
                f"not {self.hardness_among!r}"
            )
        if self.false_negatives not in FALSE_NEGATIVE_RULES:
            raise ConfigError(
                f"loss.spa.false_negatives must be one of {', '.join(FALSE_NEGATIVE_RULES)}, "
                f"not {self.false_negatives!r}"
            )


@dataclass(frozen=True)
class LossSettings:
    contrastive_weight: float = 0.5  # lambda_c
    distill_weight: float = 0.5  # lambda_k
    distill_temperature: float = 2.0  # T
    spa: SpaSettings = field(default_factory=SpaSettings)

    def __post_init__(self) -> None:
        _check_range("loss.contrastive_weight", self.contrastive_weight, low=0)
        _check_range("loss.distill_weight", self.distill_weight, low=0)
        _check_range("loss.distill_temperature", self.distill_temperature, low=0, open_low=True)


# Named prompt wordings a config selects with ``prompts.set``; its other ``prompts`` keys are
# changes on top of the set. "mfclip" is this project's; "authors" is the MFCLIP authors' loader's
# (train_mfclip.py of Jenine-321/MFCLIP): the same levels 1 and 4, their level-2 and level-3
# texts, and names of ours for the forgery types their data lacks (fe, t2i, i2i).
PROMPT_SETS: dict[str, dict[str, Any]] = {
    "mfclip": {
        "real": "a photo of a real face",
        "fake": "a photo of a fake face",
        "forgery_type": "a photo of a fake face made by {forgery_type}",
        "family": "a photo of a fake face generated by {family}",
        "generator": "the source generative model of this photo is {generator}",
        "forgery_type_names": {
            "efs": "entire face synthesis",
            "fs": "face swap",
            "fe": "face editing",
            "am": "attribute manipulation",
            "t2i": "text-to-image generation",
            "i2i": "image-to-image translation",
        },
        "family_names": {"diffusion": "a diffusion model", "gan": "a GAN"},
        "unknown": "an unknown method",
    },
    "authors": {
        "real": "a photo of a real face",
        "fake": "a photo of a fake face",
        "forgery_type": "a photo of {forgery_type}",
        "family": "a photo generated by {family}",
        "generator": "the source generative model of this photo is {generator}",
        "forgery_type_names": {
            "efs": "an entire synthesized face",
            "fs": "an identity swapped face",
            "am": "an attribute manipulated face",
            "fe": "an edited face",
            "t2i": "a text-to-image generated face",
            "i2i": "an image-to-image translated face",
        },
        "family_names": {
            "diffusion": "the diffusion-based model",
            "gan": "the GAN-based model",
        },
        "unknown": "a manipulated face",
    },
}
DEFAULT_PROMPT_SET = "mfclip"
_WORDING = tuple(PROMPT_SETS[DEFAULT_PROMPT_SET])  # the keys a prompt set gives


@dataclass(frozen=True)
class PromptSettings:
    """Templates of the four prompt levels; ``{...}`` fields are filled from a sample's labels.

    Built from a config, the templates a table leaves out are those of its ``set`` (see
    ``PROMPT_SETS``); the defaults here are the "mfclip" set's, which checkpoints written before
    there was a choice were trained with."""

    set: str = DEFAULT_PROMPT_SET
    real: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["real"]
    fake: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["fake"]
    forgery_type: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["forgery_type"]
    family: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["family"]
    generator: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["generator"]
    forgery_type_names: Mapping[str, str] = field(
        default_factory=lambda: dict(PROMPT_SETS[DEFAULT_PROMPT_SET]["forgery_type_names"])
    )
    family_names: Mapping[str, str] = field(
        default_factory=lambda: dict(PROMPT_SETS[DEFAULT_PROMPT_SET]["family_names"])
    )
    unknown: str = PROMPT_SETS[DEFAULT_PROMPT_SET]["unknown"]
    # how many levels the language encoder uses, from the coarsest: 1 = authenticity only
    levels: int = len(PROMPT_LEVELS)

    def __post_init__(self) -> None:
        if self.set not in PROMPT_SETS:
            raise ConfigError(
                f"prompts.set must be one of {', '.join(PROMPT_SETS)}, not {self.set!r}"
            )


def _with_prompt_set(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config document whose ``prompts`` table is its set's wording with the table's own keys
    on top (a name table merged entry by entry)."""
    prompts = data.get("prompts") if isinstance(data, Mapping) else None
    if not isinstance(prompts, Mapping):
        return data
    name = prompts.get("set", DEFAULT_PROMPT_SET)
    if name not in PROMPT_SETS:
        return data  # PromptSettings names the choices
    return {**data, "prompts": _deep_merge(copy.deepcopy(PROMPT_SETS[name]), prompts)}


@dataclass(frozen=True)
class ModelConfig(SettingsDocument):
    """MFCLIP's configuration; other detectors have their own (``detectors.py``)."""

    name: str
    detector: str = MFCLIP_DETECTOR  # left out by the configs written before there was a choice
    clip: ClipSettings = field(default_factory=ClipSettings)
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    fusion: str = "gated"  # "sum" or "gated"
    head: HeadSettings = field(default_factory=HeadSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    classes: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        if self.detector != MFCLIP_DETECTOR:
            raise ConfigError(f"an MFCLIP config's detector is {MFCLIP_DETECTOR!r}")
        if self.fusion not in ("sum", "gated"):
            raise ConfigError(f"fusion must be 'sum' or 'gated', not {self.fusion!r}")
        if tuple(self.classes) != CLASS_NAMES:
            raise ConfigError(f"classes must be {list(CLASS_NAMES)}, not {list(self.classes)}")
        if self.preprocess.crop_size < self.noise.patch_size:
            raise ConfigError(
                f"noise.patch_size ({self.noise.patch_size}) exceeds preprocess.crop_size "
                f"({self.preprocess.crop_size})"
            )
        if self.noise.patch_size < 8:
            raise ConfigError("noise.patch_size must be at least 8 pixels")
        if not 1 <= self.prompts.levels <= len(PROMPT_LEVELS):
            raise ConfigError(
                f"prompts.levels must be 1 to {len(PROMPT_LEVELS)}, not {self.prompts.levels}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """The config a document describes, its prompt set's wording under its own keys."""
        return _build(cls, _with_prompt_set(data), "config")

    def highlights(self) -> dict[str, Any]:
        """What a checkpoint's sidecar repeats of it for people (``Detector``'s settings)."""
        config = self.to_dict()
        return {
            "architecture": config["clip"]["architecture"],
            "preprocessing": config["preprocess"],
            "lora": config["lora"],
            "prompts": config["prompts"],
        }

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with top-level fields changed; nested sections take dicts of overrides."""
        return replace_config(self, **changes)


def replace_config(config: Any, **changes: Any) -> Any:
    """A copy of any detector's config with fields changed (nested sections take dicts), rebuilt
    and validated as one read from a file. A change of ``prompts.set`` replaces the wording
    whole (the new set's texts, then any other prompt change given with it)."""
    base = config.to_dict()
    prompts, changed = base.get("prompts"), changes.get("prompts")
    if (
        isinstance(prompts, dict)
        and isinstance(changed, Mapping)
        and changed.get("set", prompts.get("set")) != prompts.get("set")
    ):
        base["prompts"] = {key: v for key, v in prompts.items() if key not in _WORDING}
    return config_from_dict(_deep_merge(base, changes))


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        elif get_origin(hint) is Mapping:  # a table of names: checked by its dataclass
            kwargs[key] = value
        else:
            kwargs[key] = _typed(value, hint, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def config_from_dict(data: Mapping[str, Any]) -> Any:
    """The config of the detector that ``data`` names (MFCLIP's when it names none)."""
    from mfclip_cli.model.detectors import detector_kind

    detector = data.get("detector", MFCLIP_DETECTOR) if isinstance(data, Mapping) else None
    return detector_kind(detector or MFCLIP_DETECTOR).settings_class().from_dict(data)


def _parse_value(text: str) -> Any:
    """A TOML value (``true``, ``8``, ``0.5``, ``"x"``, ``[1, 2]``), else JSON (``null``), else
    the bare text as a string, so that ``fusion=sum`` needs no quotes."""
    try:
        document = tomllib.loads(f"value = {text}")
        if list(document) == ["value"]:
            return document["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _describe(hint: Any) -> str:
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else _describe(arg) for arg in args)
    if get_origin(hint) is tuple:
        if args[-1] is Ellipsis:
            return f"a list of {_describe(args[0])} values"
        return f"a list of {len(args)} values ({', '.join(_describe(arg) for arg in args)})"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


def _typed(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the field's type hint asks (an int is a valid float, a list a tuple), or a
    ConfigError saying what was expected."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _typed(value, option, key)
                except ConfigError:
                    pass
    elif origin is tuple and isinstance(value, (list, tuple)):
        items = args[:1] * len(value) if args[-1] is Ellipsis else args
        if len(items) == len(value):
            return tuple(_typed(item, arg, key) for item, arg in zip(value, items))
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint in (bool, str) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key} must be {_describe(hint)}, not {json.dumps(value)}")


def _keys(section: type) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(section)))


def _override(assignment: str, root: type) -> dict[str, Any]:
    """``"loss.spa.enabled=false"`` -> ``{"loss": {"spa": {"enabled": False}}}``, the key checked
    against the config's dataclasses and the value against the field's type."""
    key, equals, text = assignment.partition("=")
    key = key.strip()
    if not equals or not key:
        raise ConfigError(f"override {assignment!r} is not KEY=VALUE (e.g. lora.rank=8)")
    path = key.split(".")
    hint: Any = root
    for depth, part in enumerate(path):
        where = ".".join(path[:depth]) or "the config"
        if get_origin(hint) is Mapping:  # a table of names (prompts.family_names.gan=...)
            hint = get_args(hint)[1]
        elif dataclasses.is_dataclass(hint):
            if part not in {f.name for f in dataclasses.fields(hint)}:
                raise ConfigError(f"unknown key {key}: {where} has {_keys(hint)}")
            hint = get_type_hints(hint)[part]
        else:
            raise ConfigError(f"unknown key {key}: {where} is a value, not a section")
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{key} is a section; set one of its keys: {_keys(hint)}")
    if get_origin(hint) is Mapping:
        raise ConfigError(f"{key} is a table of names; set one entry: {key}.NAME=VALUE")
    nested: Any = _typed(_parse_value(text.strip()), hint, key)
    for part in reversed(path):
        nested = {part: nested}
    return nested


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """``config`` with dotted ``KEY=VALUE`` assignments applied, in order (``train --set``).

    Keys name fields of the config's dataclasses (for MFCLIP ``lora.text``, ``loss.spa.enabled``;
    any detector's settings alike); values are
    TOML or JSON scalars or lists, type-checked against the field. The result is an ordinary
    config, validated as any other, so it travels inside the checkpoint like one read from a file.
    """
    changes: dict[str, Any] = {}
    for assignment in assignments:
        changes = _deep_merge(changes, _override(assignment, type(config)))
    return replace_config(config, **changes) if changes else config


def shipped_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from error
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"config {path} is not valid {path.suffix.lstrip('.').upper()}: {error}"
        ) from error


def _resolve(name_or_path: str | Path, seen: tuple[str, ...]) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix in (".json", ".toml") and path.is_file():
        document = _read_document(path)
    elif (CONFIG_DIR / f"{name_or_path}.json").is_file():
        document = _read_document(CONFIG_DIR / f"{name_or_path}.json")
    else:
        raise ConfigError(
            f"no model config {str(name_or_path)!r}: not a .json/.toml file and not one of "
            f"{', '.join(shipped_config_names())}"
        )
    parent = document.pop("extends", None)
    if parent is None:
        return document
    if str(parent) in seen:
        raise ConfigError(f"config {name_or_path}: 'extends' forms a cycle through {parent}")
    base = _resolve(parent, seen + (str(parent),))
    base.pop("name", None)
    return _deep_merge(base, document)


def load_model_config(name_or_path: str | Path) -> Any:
    """A shipped config by name (``tiny``, ``vit-b-16``, ``mc-lcr-tiny``, ...) or a user JSON/TOML
    file: the config of the detector it names."""
    document = _resolve(name_or_path, (str(name_or_path),))
    document.setdefault("name", Path(name_or_path).stem)
    return config_from_dict(document)
