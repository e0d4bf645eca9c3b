"""Evaluation protocols as data: TOML files that split samples into train / val / test.

A protocol file (shipped ones live in ``protocols/`` beside this module; any ``.toml`` path works)::

    name = "my-protocol"          # optional; default: the file's stem
    description = "..."
    holdout = "generator"         # generator | forgery_type | dataset; omit (or "none") for none
    holdout_values = "auto"       # or a list, e.g. ["midjourney", "sdxl"], or "after-first"
    val_fraction = 0.1
    test_fraction = 0.2
    use_layout_split = true       # keep a sample's own split (the publisher's) instead of the hash
    require_layout_split = false  # true: a sample without a split of its own is an error
    pair_reals_by_dataset = false  # true: a report value's unpaired reals from its fakes' datasets
    report_by = "generator"       # generator | forgery_type | dataset | label, or a list of them
    seed = 0
    perturb = ["jpeg:90,75", "blur:1"]  # eval's robustness rows (docs/robustness.md); optional

    [train]                       # optional filters, per split: [train], [val], [test]
    include = { dataset = ["DiFF"] }
    exclude = { generator = ["sd21"] }

    [paired_reals]                # optional: the test reals each report_by value is scored
    DiffAE = ["FFHQ"]             # against, by the reals' own report_by value; "*" for the
    "*" = ["CelebA_HQ"]           # values not named (GenFace's authors pair them so)

Semantics (``select``):

1. Group key. A sample's group is its ``video`` if set, else its ``path``; its hash is
   ``u = int.from_bytes(sha256(f"{seed}:{group}")[:8], "big") / 2**64`` in [0, 1). Every frame of a
   video therefore lands in the same split (no leakage between splits), and video keys are full
   relative paths, so ``A/000_003.mp4`` and ``B/000_003.mp4`` are different groups. (With a
   holdout, this holds as long as the frames of a video share their labels, as frames of one video
   do.)
2. Position. ``test`` if ``u < test_fraction``, else ``val`` if
   ``u < test_fraction + val_fraction``, else ``train``; with ``use_layout_split``, a sample that
   carries a ``split`` (the publisher's) takes that instead, except that where no sample of its
   dataset and class (real / fake) carries ``val`` (DF40, GenImage give none), a ``train`` one goes
   to val if ``u < val_fraction``. With ``require_layout_split`` too, a sample that carries no
   split is an error, not hashed: a protocol whose definition promises the publisher's splits
   (``df40``: FF++'s lists for FF++'s reals) must not put a publisher's test video into train.
   The error quotes the data's notes (``DataIndex.notes``), which say why the split is missing.
3. No holdout (in-domain): each sample goes to its position.
4. Holdout on field F with held-out values H. The samples F applies to are the fakes (for F =
   ``dataset``: every sample). Of those, one whose F is in H goes to test only; one whose F is not
   in H goes to train or val only: val if ``u < val_fraction`` else train (with
   ``use_layout_split``, its own split: train or val, and one the layout puts in test is dropped;
   and one in H that its layout puts in train or val is dropped too, so a held-out generator or
   dataset is tested on its publisher's test split; a held-out dataset none of whose samples
   carries ``test`` is tested whole, every split of it);
   one whose F is empty (unknown) is dropped, since it could be a held-out value in disguise. The
   remaining samples (the reals, when F is generator or forgery_type) go to their position. So no
   held-out value of F ever appears in train or val.
5. ``holdout_values = "auto"``: the distinct non-empty F values among the fakes (among all samples
   for ``dataset``), sorted; the last ``ceil(n / 3)`` are held out (at least one, and at least one
   stays for training). Fewer than two values is an error, as is an explicit held-out value that
   no sample has. ``holdout_values = "after-first"`` (with ``holdout = "dataset"``): the datasets
   of every ``--data`` after the first, so the first trains and the others test; fewer than two
   ``--data``, or a dataset name in the first and a later one, is an error.
6. Filters. ``[train]`` / ``[val]`` / ``[test]`` tables apply last: a sample in that split is kept
   only if, for every field in ``include``, its value is one of the listed ones, and, for no field
   in ``exclude``, its value is listed (exact, case-sensitive matches; an unset video/split
   matches ""). Rejected samples are dropped.
7. An empty train, val or test split is an error, and so is one without real or without fake
   faces (training and model selection need both, an AUC needs both), unless ``select`` is told
   to allow it (eval --allow-one-class: a test split of one class, reported by TPR or FPR
   alone). Test reports: ``Splits.test_subsets()`` gives, for each ``report_by`` value among the
   test fakes (with several fields, each combination, ``"DF40-ff / simswap"``), those fakes plus
   the test reals with the same value (paired reals), or, where none has it, every test real
   not paired with another value (with ``pair_reals_by_dataset``, of those the ones of the
   fakes' own datasets where there are any: ``df40``'s FF++ reals for its ff domain, Celeb-DF's
   for cdf); a ``[paired_reals]`` table names the reals' values instead, for the values it
   covers.

Model selection must use val only, never test. ``perturb`` does not change the splits: eval scores
the test split once more under each perturbation it names (``data/perturb.py``).
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mfclip_cli.data.perturb import Perturbation, parse_perturbations
from mfclip_cli.data.samples import (
    LABELS,
    SAMPLE_FIELDS,
    DataIndex,
    DataSource,
    Sample,
    Unreadable,
    summarize,
)
from mfclip_cli.errors import ProtocolError, UsageError
from mfclip_cli.labels import FORGERY_TYPES

PROTOCOL_DIR = Path(__file__).parent / "protocols"
HOLDOUT_FIELDS = ("generator", "forgery_type", "dataset")
REPORT_FIELDS = ("generator", "forgery_type", "dataset", "label")
SPLIT_NAMES = ("train", "val", "test")
AFTER_FIRST = "after-first"  # holdout_values: the datasets of every --data after the first
_KEYS = (
    "name",
    "description",
    "holdout",
    "holdout_values",
    "val_fraction",
    "test_fraction",
    "use_layout_split",
    "require_layout_split",
    "pair_reals_by_dataset",
    "report_by",
    "seed",
    "perturb",
    "paired_reals",
    *SPLIT_NAMES,
)
_FILTER_KEYS = ("include", "exclude")


def _lists_by_name(value: Any, where: str, named: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{name: [values]}`` (or the tuple form; a string is a list of one) -> a sorted tuple of
    ``(name, values)``; ``named`` says what the names are, in errors."""
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where} must be a table of {named} = [values], not {value!r}")
    pairs = []
    for name, values in value.items():
        if isinstance(values, str):
            values = (values,)
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise ProtocolError(f"{where}.{name} must be a list of strings, not {values!r}")
        pairs.append((name, tuple(values)))
    return tuple(sorted(pairs))


def _conditions(value: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{field: [values]}`` (or the tuple form) -> a sorted tuple of ``(field, values)``."""
    conditions = _lists_by_name(value, where, "field")
    for name, _ in conditions:
        if name not in SAMPLE_FIELDS:
            raise ProtocolError(
                f"{where}: unknown sample field {name!r} (fields: {', '.join(SAMPLE_FIELDS)})"
            )
    return conditions


@dataclass(frozen=True)
class SplitFilter:
    """``include`` / ``exclude`` conditions of one split, as sorted ``(field, values)`` pairs."""

    include: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", _conditions(self.include, "include"))
        object.__setattr__(self, "exclude", _conditions(self.exclude, "exclude"))

    def accepts(self, sample: Sample) -> bool:
        if any(sample.value_of(name) not in values for name, values in self.include):
            return False
        return not any(sample.value_of(name) in values for name, values in self.exclude)

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        document: dict[str, dict[str, list[str]]] = {}
        if self.include:
            document["include"] = {name: list(values) for name, values in self.include}
        if self.exclude:
            document["exclude"] = {name: list(values) for name, values in self.exclude}
        return document


def _perturbations(value: Any) -> tuple[Perturbation, ...]:
    """``perturb``: Perturbations, or texts such as ``"jpeg:90,75"`` parsed into them."""
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f'perturb must be a list such as ["jpeg:90,75"], not {value!r}')
    if not all(isinstance(item, (str, Perturbation)) for item in value):
        raise ProtocolError(f"perturb must be a list of strings, not {value!r}")
    texts = [item.name if isinstance(item, Perturbation) else item for item in value]
    try:
        return tuple(parse_perturbations(texts))
    except UsageError as error:
        raise ProtocolError(f"perturb: {error}") from None


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ProtocolError(f"{name} must be a number in [0, 1), not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Protocol:
    """One protocol (see the module docstring for what each field does)."""

    name: str
    description: str = ""
    holdout: str | None = None
    holdout_values: tuple[str, ...] | str = ()  # a tuple, "auto" or "after-first"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    use_layout_split: bool = False
    require_layout_split: bool = False  # a sample with no split of its own is refused, not hashed
    # a report value without reals of its own takes the unpaired reals of its fakes' datasets
    pair_reals_by_dataset: bool = False
    report_by: str | tuple[str, ...] = "generator"  # several: a row per combination
    seed: int = 0
    perturb: tuple[Perturbation, ...] = ()  # texts such as "jpeg:90,75" are parsed
    # {report_by value, or "*": the report_by values of the test reals it is scored against}
    paired_reals: tuple[tuple[str, tuple[str, ...]], ...] = ()
    train: SplitFilter = field(default_factory=SplitFilter)
    val: SplitFilter = field(default_factory=SplitFilter)
    test: SplitFilter = field(default_factory=SplitFilter)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ProtocolError(f"name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.description, str):
            raise ProtocolError(f"description must be a string, not {self.description!r}")
        holdout = self.holdout
        if isinstance(holdout, str) and holdout.strip().lower() in ("", "none"):
            holdout = None
        if holdout is not None and holdout not in HOLDOUT_FIELDS:
            raise ProtocolError(
                f"holdout must be one of {', '.join(HOLDOUT_FIELDS)} (or none), not {holdout!r}"
            )
        values = self.holdout_values
        if values == AFTER_FIRST and holdout != "dataset":
            raise ProtocolError(f"holdout_values = '{AFTER_FIRST}' needs holdout = 'dataset'")
        if values in ("auto", AFTER_FIRST):
            if holdout is None:
                raise ProtocolError(f"holdout_values = '{values}' needs a holdout field")
        elif isinstance(values, (list, tuple)) and all(isinstance(v, str) and v for v in values):
            values = tuple(values)
            if holdout is None and values:
                raise ProtocolError("holdout_values are given but holdout names no field")
            if holdout is not None and not values:
                raise ProtocolError("holdout_values must list at least one value, or be 'auto'")
            if len(set(values)) != len(values):
                raise ProtocolError(f"holdout_values lists a value twice: {list(values)}")
        else:
            raise ProtocolError(
                f"holdout_values must be 'auto', '{AFTER_FIRST}' or a list of non-empty strings, "
                f"not {values!r}"
            )
        val_fraction = _fraction(self.val_fraction, "val_fraction")
        test_fraction = _fraction(self.test_fraction, "test_fraction")
        if val_fraction + test_fraction >= 1.0:
            raise ProtocolError(
                "val_fraction + test_fraction must be below 1 "
                f"(got {val_fraction} + {test_fraction})"
            )
        if not isinstance(self.use_layout_split, bool):
            raise ProtocolError(
                f"use_layout_split must be true or false, not {self.use_layout_split!r}"
            )
        for name in ("require_layout_split", "pair_reals_by_dataset"):
            if not isinstance(getattr(self, name), bool):
                raise ProtocolError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.require_layout_split and not self.use_layout_split:
            raise ProtocolError("require_layout_split = true needs use_layout_split = true")
        report_by = (self.report_by,) if isinstance(self.report_by, str) else self.report_by
        if (
            not isinstance(report_by, (list, tuple))
            or not report_by
            or not all(isinstance(field, str) and field in REPORT_FIELDS for field in report_by)
            or len(set(report_by)) < len(report_by)
        ):
            raise ProtocolError(
                f"report_by must be one of {', '.join(REPORT_FIELDS)}, or a list of them, "
                f"not {self.report_by!r}"
            )
        object.__setattr__(
            self, "report_by", report_by[0] if len(report_by) == 1 else tuple(report_by)
        )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ProtocolError(f"seed must be an integer, not {self.seed!r}")
        object.__setattr__(self, "perturb", _perturbations(self.perturb))
        pairings = _lists_by_name(self.paired_reals, "[paired_reals]", "report value")
        object.__setattr__(self, "paired_reals", pairings)
        for split in SPLIT_NAMES:
            if not isinstance(getattr(self, split), SplitFilter):
                raise ProtocolError(f"{split} must be a SplitFilter, not {getattr(self, split)!r}")
        object.__setattr__(self, "holdout", holdout)
        object.__setattr__(self, "holdout_values", values)
        object.__setattr__(self, "val_fraction", val_fraction)
        object.__setattr__(self, "test_fraction", test_fraction)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able document (for run configs); ``parse_protocol`` rebuilds the same protocol."""
        document: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "holdout": self.holdout,
            "holdout_values": self.holdout_values
            if isinstance(self.holdout_values, str)
            else list(self.holdout_values),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "use_layout_split": self.use_layout_split,
            "report_by": self.report_by
            if isinstance(self.report_by, str)
            else list(self.report_by),
            "seed": self.seed,
        }
        for name in ("require_layout_split", "pair_reals_by_dataset"):
            if getattr(self, name):  # only where set: older records read back the same
                document[name] = True
        if self.perturb:
            document["perturb"] = [perturbation.name for perturbation in self.perturb]
        if self.paired_reals:
            document["paired_reals"] = {name: list(reals) for name, reals in self.paired_reals}
        for split in SPLIT_NAMES:
            conditions = getattr(self, split).to_dict()
            if conditions:
                document[split] = conditions
        return document


def parse_protocol(
    document: Mapping[str, Any], *, name: str | None = None, source: str = "protocol"
) -> Protocol:
    """Build a protocol from a parsed TOML/JSON document; errors start with ``source``."""
    try:
        if not isinstance(document, Mapping):
            raise ProtocolError(f"a protocol must be a table, not {type(document).__name__}")
        unknown = sorted(set(document) - set(_KEYS))
        if unknown:
            raise ProtocolError(
                f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_KEYS)})"
            )
        values = dict(document)
        values.setdefault("name", name)
        if values.get("holdout") not in (None, "", "none") and "holdout_values" not in values:
            values["holdout_values"] = "auto"
        for split in SPLIT_NAMES:
            if split not in values:
                continue
            table = values[split]
            if not isinstance(table, Mapping):
                raise ProtocolError(
                    f"[{split}] must be a table with include / exclude, not {table!r}"
                )
            extra = sorted(set(table) - set(_FILTER_KEYS))
            if extra:
                shown = ", ".join(map(repr, extra))
                raise ProtocolError(
                    f"[{split}]: unknown key(s) {shown} (allowed: include, exclude)"
                )
            try:
                values[split] = SplitFilter(table.get("include", {}), table.get("exclude", {}))
            except ProtocolError as error:
                raise ProtocolError(f"[{split}] {error}") from None
        return Protocol(**values)
    except ProtocolError as error:
        raise ProtocolError(f"{source}: {error}") from None


def shipped_protocol_names() -> list[str]:
    return sorted(path.stem for path in PROTOCOL_DIR.glob("*.toml"))


def shipped_protocols() -> dict[str, str]:
    """``{name: description}`` of every shipped protocol, sorted by name."""
    return {name: load_protocol(name).description for name in shipped_protocol_names()}


def load_protocol(name_or_path: str | Path | Protocol) -> Protocol:
    """A shipped protocol by name (``cross-generator``) or a protocol TOML file by path."""
    if isinstance(name_or_path, Protocol):
        return name_or_path
    text = str(name_or_path)
    looks_like_path = (
        isinstance(name_or_path, Path)
        or text.lower().endswith(".toml")
        or "/" in text
        or os.sep in text
    )
    shipped = PROTOCOL_DIR / f"{text}.toml"
    if not looks_like_path and shipped.is_file():
        path, source = shipped, shipped.name
    elif looks_like_path or Path(text).is_file():
        path, source = Path(text), text
        if not path.is_file():
            raise ProtocolError(f"{text}: protocol file not found")
    else:
        raise ProtocolError(
            f"no protocol named {text!r} "
            f"(shipped: {', '.join(shipped_protocol_names())}; or give a .toml file)"
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"{source}: not valid TOML ({error})") from None
    return parse_protocol(document, name=path.stem, source=source)


# ----------------------------------------------------------------------------- selection


def recorded_protocol(recorded: Mapping[str, Any]) -> Protocol | None:
    """A protocol as a run or a fit recorded it (``{name, definition, held_out}``), as it split
    then: recorded whole since report format 2.4.0, else found by its name among the shipped
    ones, its held-out values pinned to those it held out. None where it cannot be read."""
    try:
        if recorded.get("definition"):
            definition = dict(recorded["definition"])
        elif recorded.get("name"):
            definition = load_protocol(str(recorded["name"])).to_dict()
        else:
            return None
        if definition.get("holdout") and recorded.get("held_out"):
            definition["holdout_values"] = list(recorded["held_out"])
        return parse_protocol(definition)
    except (ProtocolError, OSError):
        return None


def group_fraction(group: str, seed: int) -> float:
    """The stable hash of a group key in [0, 1): sha256 of ``f"{seed}:{group}"``, first 8 bytes."""
    digest = hashlib.sha256(f"{seed}:{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class Splits:
    """The train / val / test samples a protocol selects, in input order."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    held_out: tuple[str, ...] = ()
    protocol: Protocol | None = None
    dropped: list[Sample] = field(default_factory=list)  # samples no split takes
    # per split, the samples left out because their images could not be read when scored
    unreadable: dict[str, list[Unreadable]] = field(default_factory=dict)

    def untested_held_out(self) -> list[str]:
        """The held-out values no test sample carries: held out of training, yet not tested
        (a generator its publisher has no test folder for: its train and val images are not
        tested, as they are not the publisher's test set). Commands say them."""
        if self.protocol is None or self.protocol.holdout is None:
            return []
        field_name = self.protocol.holdout
        tested = {sample.value_of(field_name) for sample in self.test}
        return [value for value in self.held_out if value not in tested]

    def leaving_out(self, split: str, unreadable: Sequence[Unreadable]) -> Splits:
        """These splits with the ``unreadable`` samples of ``split`` left out, and recorded."""
        if not unreadable:
            return self
        gone = {missing.path for missing in unreadable}
        return replace(
            self,
            **{split: [sample for sample in getattr(self, split) if sample.path not in gone]},
            unreadable={**self.unreadable, split: [*self.unreadable.get(split, []), *unreadable]},
        )

    def test_subsets(self) -> dict[str, list[Sample]]:
        """``{value: that value's test fakes + its reals}`` per ``report_by`` value, sorted. Its
        reals are those the protocol's ``[paired_reals]`` names for it (GenFace's; none where
        the test split has none of them: the row is one class, and eval says so), else the test
        reals with the same value (GenImage's and DF40's paired reals, a dataset's own), or, where
        none has it, every test real not paired with another value; with the protocol's
        ``pair_reals_by_dataset``, of those the ones of the fakes' own datasets where any is
        (``df40``: its ff-domain fakes are not scored against Celeb-DF's reals, nor its cdf-domain
        fakes against FF++'s). A fake without the value is reported as "unknown"; a real without
        it names no pairing (most reals name no generator: one fake without a generator took
        them all from every named generator's row, audit N H1)."""
        report_by = self.protocol.report_by if self.protocol is not None else "generator"
        pairings = dict(self.protocol.paired_reals) if self.protocol is not None else {}
        by_dataset = self.protocol is not None and self.protocol.pair_reals_by_dataset

        fields = (report_by,) if isinstance(report_by, str) else report_by

        def key(sample: Sample) -> str:
            return " / ".join(sample.value_of(field) or "unknown" for field in fields)

        def real_key(sample: Sample) -> str | None:
            values = [sample.value_of(field) for field in fields]
            return " / ".join(values) if all(values) else None

        keys = sorted({key(s) for s in self.test if not s.is_real})
        reals = [s for s in self.test if s.is_real]
        unpaired = [s for s in reals if real_key(s) not in keys]
        subsets = {}
        for value in keys:
            named = pairings.get(value, pairings.get("*"))
            if named is not None:
                paired = [s for s in reals if real_key(s) in named]
            else:
                paired = [s for s in reals if real_key(s) == value]  # GenImage's, DF40's reals
            fakes = [s for s in self.test if not s.is_real and key(s) == value]
            if not paired and by_dataset:
                datasets = {s.dataset for s in fakes}
                paired = [s for s in unpaired if s.dataset in datasets]
            if named is None:  # reals the protocol names, and only those (audit AJ J3:
                paired = paired or unpaired  # GenFace's DiffAE scored against CelebA_HQ)
            chosen = {id(s) for s in fakes + paired}
            subsets[value] = [s for s in self.test if id(s) in chosen]
        return subsets

    def summary(self) -> dict[str, Any]:
        """What a run records about its data: the protocol, held-out values and counts per split."""
        return {
            "protocol": self.protocol.to_dict() if self.protocol is not None else None,
            "held_out": list(self.held_out),
            "train": summarize(self.train),
            "val": summarize(self.val),
            "test": summarize(self.test),
            "dropped": len(self.dropped),
        }


def _filter_said(kept: SplitFilter, samples: Sequence[Sample]) -> str:
    """What a split's ``include`` filter keeps, beside what the data hold, for the error of a
    split it left empty (audit AJ J5: GenImage's benchmark trains on Stable Diffusion V1.4
    alone, which the error did not say)."""
    said = [
        f"its {field_name} in {', '.join(values)}; the data's: "
        + ", ".join(sorted({s.value_of(field_name) or "-" for s in samples})[:12])
        for field_name, values in kept.include
    ]
    return f": its filter keeps {'; and '.join(said)}" if said else ""


def _applies(sample: Sample, holdout: str) -> bool:
    return holdout == "dataset" or not sample.is_real


def _after_first(protocol: Protocol, sources: Sequence[DataSource]) -> tuple[str, ...]:
    """The datasets of every ``--data`` after the first: the first trains, the others test."""
    if len(sources) < 2:
        raise ProtocolError(
            f"protocol {protocol.name!r} trains on the first --data and tests on each later "
            "one: give two or more --data"
        )
    first = set(sources[0].datasets)
    later = sorted({name for source in sources[1:] for name in source.datasets})
    shared = sorted(first & set(later))
    if shared:
        raise ProtocolError(
            f"protocol {protocol.name!r}: dataset name(s) {', '.join(shared)} are in the first "
            f"--data ({sources[0].given}) and in a later one, so their test samples would "
            "train; give each --data its own dataset"
        )
    return tuple(later)


def resolve_holdout(
    samples: Iterable[Sample], protocol: Protocol, sources: Sequence[DataSource] = ()
) -> tuple[str, ...]:
    """The held-out values of ``protocol.holdout`` for these samples (``()`` without a holdout);
    ``sources`` are the several ``--data`` the samples came from (``after-first``)."""
    holdout = protocol.holdout
    if holdout is None:
        return ()
    if protocol.holdout_values == AFTER_FIRST:
        return _after_first(protocol, sources)
    who = "samples" if holdout == "dataset" else "fake samples"
    found = sorted({s.value_of(holdout) for s in samples if _applies(s, holdout)} - {""})
    if len(found) < 2:
        kinds = {s.forgery_type for s in samples if s.label != "real"}
        unknown = sorted(kind for kind in kinds if kind and kind.lower() not in FORGERY_TYPES)
        hint = (
            f" (its fakes' forgery types include {', '.join(unknown)}, none of the known ones: "
            "the folder layout reads the first folder below gan/ or diffusion/ as the forgery "
            "type, the second as the generator)"
            if holdout == "generator" and unknown
            else ""
        )
        raise ProtocolError(
            f"protocol {protocol.name!r} holds out by {holdout} and needs at least two "
            f"{holdout} values among the {who}; found {len(found)}: {found}{hint}"
        )
    if protocol.holdout_values == "auto":
        if (
            holdout == "generator"
        ):  # hold out within each family, so train and test both see GANs and diffusion
            families = [
                sorted({s.generator for s in samples if s.label == label and s.generator})
                for label in sorted({s.label for s in samples if not s.is_real})
            ]
            per_family = [
                names[-math.ceil(len(names) / 3) :] for names in families if len(names) >= 2
            ]
            if per_family:
                return tuple(sorted(name for names in per_family for name in names))
        count = min(max(1, math.ceil(len(found) / 3)), len(found) - 1)
        return tuple(found[-count:])
    missing = [value for value in protocol.holdout_values if value not in found]
    if missing:
        raise ProtocolError(
            f"protocol {protocol.name!r}: held-out {holdout} value(s) {missing} not found "
            f"among the {who} (found: {found})"
        )
    if set(found) <= set(protocol.holdout_values):
        raise ProtocolError(
            f"protocol {protocol.name!r} holds out every {holdout} ({found}); "
            "at least one must stay for training"
        )
    return tuple(protocol.holdout_values)


def one_class_problem(samples: Sequence[Sample]) -> str | None:
    """``"no real faces (real 0, diffusion 3, gan 2)"`` when the samples hold one class only
    (real, or fakes only), else None."""
    counts = Counter(sample.label for sample in samples)
    if counts["real"] and len(samples) > counts["real"]:
        return None
    missing = "real" if not counts["real"] else "fake"
    shown = ", ".join(f"{label} {counts[label]}" for label in LABELS)
    return f"no {missing} faces ({shown})"


def _refuse_one_class(protocol: Protocol, name: str, chosen: list[Sample]) -> None:
    """A split without real or without fake faces cannot train, select a model or give an AUC:
    refuse it before any training or scoring, naming the split and its counts."""
    problem = one_class_problem(chosen)
    if problem is None:
        return
    hint = " (eval --allow-one-class reports its TPR or FPR alone)" if name == "test" else ""
    raise ProtocolError(
        f"protocol {protocol.name!r}: the {name} split has {problem}; "
        f"it cannot {'train a detector' if name == 'train' else 'give an AUC'}. Check the data "
        f"(mfclip data inspect) or choose a protocol whose splits hold both{hint}"
    )


def _refuse_unsplit(
    protocol: Protocol, samples: Sequence[Sample], notes: Mapping[str, int]
) -> None:
    """A protocol that promises the publisher's splits (``require_layout_split``) refuses samples
    that carry none, rather than hash a publisher's test video into train; the message quotes the
    reader's notes, which say what is missing and where it comes from."""
    if not protocol.require_layout_split:
        return
    unsplit = [sample for sample in samples if sample.split is None]
    if not unsplit:
        return
    first = unsplit[0]
    why = "; ".join(notes) if notes else "their layout gives them no split of its own"
    raise ProtocolError(
        f"protocol {protocol.name!r} keeps the publisher's splits, but {len(unsplit)} sample(s) "
        f"carry none (e.g. {first.path}: {first.label}, {first.generator or 'unknown'}, "
        f"{first.dataset or 'no dataset'}) and would be split by hash against its definition: "
        f"{why}"
    )


def select(
    data: DataIndex | Iterable[Sample],
    protocol: Protocol | str | Path,
    required: Sequence[str] = SPLIT_NAMES,
    *,
    one_class_allowed: Sequence[str] = (),
) -> Splits:
    """Split ``data`` by ``protocol`` (a ``Protocol``, a shipped name or a TOML path).

    The ``required`` splits must not come out empty: training needs all three, evaluation only test
    (a test-only dataset, with no sample falling into val, is still evaluable). Nor may they hold
    one class only, except those in ``one_class_allowed`` (eval --allow-one-class: test).
    """
    protocol = load_protocol(protocol)
    samples = list(data.samples if isinstance(data, DataIndex) else data)
    for sample in samples:
        if not isinstance(sample, Sample):
            raise TypeError(f"select() takes Sample objects, not {type(sample).__name__}")
    _refuse_unsplit(protocol, samples, data.notes if isinstance(data, DataIndex) else {})
    holdout = protocol.holdout
    sources = data.sources if isinstance(data, DataIndex) else ()
    held = resolve_holdout(samples, protocol, sources)
    held_set = set(held)
    test_cut = protocol.test_fraction
    val_cut = protocol.test_fraction + protocol.val_fraction
    splits: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    dropped: list[Sample] = []
    given_val = {(s.dataset, s.is_real) for s in samples if s.split == "val"}
    datasets_tested = {s.dataset for s in samples if s.split == "test"}  # by their publishers
    for sample in samples:
        u = group_fraction(sample.group, protocol.seed)
        layout_split = sample.split if protocol.use_layout_split else None
        if (
            layout_split == "train"
            and (sample.dataset, sample.is_real) not in given_val
            and u < protocol.val_fraction
        ):
            layout_split = "val"  # the publisher gives this class no val split: carve it
        if holdout is not None and _applies(sample, holdout):
            value = sample.value_of(holdout)
            if not value:
                destination = None
            elif value in held_set:  # never trained on
                # tested on its publisher's test split where its layout gives one, as published
                # (a GenImage generator's train/ fakes against its val/ reals alone made ACC
                # fake-ACC, audit H H1; a held-out dataset's train split is no benchmark's test
                # set, audit H M6); a dataset whose publisher gives it no test split, whole
                whole = layout_split is None or (
                    holdout == "dataset" and sample.dataset not in datasets_tested
                )
                destination = "test" if whole or layout_split == "test" else None
            elif layout_split is not None:
                destination = layout_split if layout_split != "test" else None
            else:
                destination = "val" if u < protocol.val_fraction else "train"
        elif layout_split is not None:
            destination = layout_split
        else:
            destination = "test" if u < test_cut else "val" if u < val_cut else "train"
        if destination is not None and getattr(protocol, destination).accepts(sample):
            splits[destination].append(sample)
        else:
            dropped.append(sample)
    for name in required:
        if not splits[name]:
            raise ProtocolError(
                f"protocol {protocol.name!r} leaves the {name} split empty "
                f"({len(samples)} samples in, train/val/test = "
                f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}, "
                f"{len(dropped)} dropped){_filter_said(getattr(protocol, name), samples)}"
            )
    for name in required:
        if name not in one_class_allowed:
            _refuse_one_class(protocol, name, splits[name])
    return Splits(splits["train"], splits["val"], splits["test"], held, protocol, dropped)


__all__ = [
    "AFTER_FIRST",
    "HOLDOUT_FIELDS",
    "PROTOCOL_DIR",
    "REPORT_FIELDS",
    "Protocol",
    "ProtocolError",
    "SplitFilter",
    "Splits",
    "group_fraction",
    "load_protocol",
    "one_class_problem",
    "parse_protocol",
    "resolve_holdout",
    "select",
    "shipped_protocol_names",
    "shipped_protocols",
]
