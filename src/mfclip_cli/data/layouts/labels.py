"""The generator -> real / diffusion / GAN table the layout readers label fakes with.

The shipped table is ``labels.toml`` beside this module (its header says what each entry holds);
``--label-map FILE.toml`` overrides entries or adds new ones in the same format. A method the table
does not know is never guessed: readers collect every unmapped name and fail with all of them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mfclip_cli.errors import DataError, LabelMapError

TABLE_PATH = Path(__file__).with_name("labels.toml")
CLASSES = ("diffusion", "gan", "exclude")
_ENTRY_KEYS = ("label", "forgery_type", "aliases", "source", "note")


def normalise(name: str) -> str:
    """The matching key of a name: lower case, letters and digits only (``SD-2.1`` -> ``sd21``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class Method:
    """One generator or manipulation method and the class its fakes get."""

    name: str
    label: str
    forgery_type: str = ""
    aliases: tuple[str, ...] = ()
    source: str = ""
    note: str = ""

    @property
    def excluded(self) -> bool:
        return self.label == "exclude"


def skip_reason(method: Method | None) -> str | None:
    """Why a file of ``method`` is not a sample, or None when it is: ``unmapped`` where the label
    table lacks the name (the reader's ``Resolver.check`` names them all), or its exclusion."""
    if method is None:
        return "unmapped"
    if method.excluded:
        return f"{method.name}: excluded by the label table ({method.note})"
    return None


def _method(name: str, value: Any, where: str) -> Method:
    if isinstance(value, str):
        value = {"label": value}
    if not isinstance(value, Mapping):
        raise LabelMapError(f"{where}: {name!r} must be a table or a class name, not {value!r}")
    unknown = sorted(set(value) - set(_ENTRY_KEYS))
    if unknown:
        raise LabelMapError(
            f"{where}: {name!r} has unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(_ENTRY_KEYS)})"
        )
    label = str(value.get("label", "")).strip().lower()
    if label not in CLASSES:
        raise LabelMapError(
            f"{where}: {name!r} needs label = one of {', '.join(CLASSES)}, not {label!r}"
        )
    aliases = value.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise LabelMapError(f"{where}: {name!r}: aliases must be a list of strings")
    return Method(
        name=name,
        label=label,
        forgery_type=str(value.get("forgery_type", "")).strip().lower(),
        aliases=tuple(aliases),
        source=str(value.get("source", "")),
        note=str(value.get("note", "")),
    )


@dataclass
class LabelTable:
    """Methods per dataset, found by any of their spellings (see ``normalise``)."""

    methods: dict[str, dict[str, Method]] = field(default_factory=dict)

    @classmethod
    def load(cls, override: str | Path | None = None) -> "LabelTable":
        """The shipped table, with the entries of ``override`` (a label-map file) on top."""
        table = cls()
        table.merge(TABLE_PATH)
        if override is not None:
            table.merge(Path(override), sections_known=True)
        return table

    def merge(self, path: Path, *, sections_known: bool = False) -> None:
        """Add the entries of a label-map file; an entry with a known spelling replaces it.

        With ``sections_known`` (a user's file), a section names a dataset of the table in any
        case (``[diff]`` is ``[DiFF]``), and a section naming none is an error: an override
        that no reader would look up must not be dropped in silence."""
        if not path.is_file():
            raise LabelMapError(f"label map file not found: {path}")
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise LabelMapError(f"{path}: not valid TOML ({error})") from None
        sections = {name.lower(): name for name in self.methods}
        for dataset, entries in document.items():
            if not isinstance(entries, Mapping):
                raise LabelMapError(f"{path}: [{dataset}] must be a table of methods")
            if sections_known:
                if dataset.lower() not in sections:
                    raise LabelMapError(
                        f"{path}: [{dataset}] is no dataset of the label table; its sections "
                        f"are {', '.join(f'[{name}]' for name in self.methods)}"
                    )
                dataset = sections[dataset.lower()]
            known = self.methods.setdefault(dataset, {})
            for name, value in entries.items():
                method = _method(name, value, f"{path} [{dataset}]")
                for spelling in (method.name, *method.aliases):
                    old = known.get(normalise(spelling))
                    if old is not None:  # the override replaces every spelling of the old entry
                        for stale in (old.name, *old.aliases):
                            known.pop(normalise(stale), None)
                for spelling in (method.name, *method.aliases):
                    known[normalise(spelling)] = method

    def find(self, dataset: str, name: str) -> Method | None:
        return self.methods.get(dataset, {}).get(normalise(name))

    def entries(self, dataset: str) -> list[Method]:
        """The distinct methods of one dataset, in table order."""
        seen: dict[int, Method] = {}
        for method in self.methods.get(dataset, {}).values():
            seen.setdefault(id(method), method)
        return list(seen.values())


@dataclass
class Resolver:
    """Looks names up for one reader and remembers the ones the table lacks, to report them all."""

    table: LabelTable
    datasets: tuple[str, ...]
    unmapped: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __call__(self, name: str, where: str) -> Method | None:
        for dataset in self.datasets:
            method = self.table.find(dataset, name)
            if method is not None:
                return method
        count, example = self.unmapped.get(name, (0, where))
        self.unmapped[name] = (count + 1, example)
        return None

    def check(self, root: Path, layout: str) -> None:
        """Fail naming every method the table lacks, with a file of each and its count."""
        if not self.unmapped:
            return
        listed = "; ".join(
            f"{name!r} ({count} file(s), e.g. {example})"
            for name, (count, example) in sorted(self.unmapped.items())
        )
        raise DataError(
            f"{root}: {len(self.unmapped)} method(s) of the {layout} layout have no class in the "
            f"label table ({', '.join(self.datasets)}): {listed}. Add them to a label-map file "
            '(--label-map FILE.toml: [Dataset] Name = "diffusion" | "gan" | "exclude"); '
            "see docs/datasets.md"
        )


__all__ = ["CLASSES", "TABLE_PATH", "LabelTable", "Method", "Resolver", "normalise", "skip_reason"]
