"""The report contract: JSON Schema (draft 2020-12) of every record mfclip writes, as package data.

One schema per report kind, each a JSON file here (read through ``importlib.resources``, so a
wheel install has them), each accepting every record of its kind:

- ``scan``: the ``--json`` document, and each ``--jsonl`` line (meta, file, end);
- ``eval``: ``eval --json`` with one checkpoint (type ``eval``) or several (``eval-comparison``);
- ``prepare``: ``OUT/prepare.json`` and each line of ``OUT/prepare.jsonl``;
- ``inspect``: ``data inspect --json``;
- ``bench``: ``bench --json`` (the int8 figures on a CPU only, the heatmap ones for MFCLIP only);
- ``ablate``: ``ablate --json``, with every run of every variant;
- ``train``: a training run's ``RUN/train.json`` (its settings) and each line of
  ``RUN/metrics.jsonl`` (step, val, and the ood, attribution and int8 fits at its end).

Every report names the format it follows in ``schema_version`` (the scan's meta, the eval
report, prepare's summary, the inspect, bench and ablate reports, a run's ``train.json``). The
lines of a JSON Lines log name it once, in the record they belong to: a scan's file and end lines
in its meta, ``prepare.jsonl`` in ``prepare.json``, ``metrics.jsonl`` in its run's ``train.json``
(written when the run starts, read back by ``--resume``, never rewritten; a run folder started
before 2.2.0 has none). Additions bump the minor version, removals and renames the major one; a
schema reads every report of its major version.
Building blocks sit under ``$defs``, open (``*_fields``, ``meta``, ``run_summary``, ``file``)
where a record extends them and closed where a record is complete (``unevaluatedProperties:
false``); each schema stands alone, and a block two schemas both hold (by the same name) is the
same in both. To add a field, add it to the ``properties`` of its ``$defs`` entry (in every
schema holding it), bump ``SCHEMA_VERSION`` and note it in docs/output.md.

Printing a schema needs nothing beyond the standard library; validating one needs
``jsonschema`` (a test dependency, or any validator of the consumer's choice).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "2.23.0"
SCHEMA_NAMES = ("scan", "eval", "prepare", "inspect", "bench", "ablate", "train")


class UnknownSchemaError(ValueError):
    """A schema name mfclip does not ship."""


def schema_text(name: str) -> str:
    """The schema ``name`` as shipped, JSON text."""
    if name not in SCHEMA_NAMES:
        raise UnknownSchemaError(
            f"no schema named {name!r}; mfclip ships {', '.join(SCHEMA_NAMES)}"
        )
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def report_header(kind: str | None = None) -> dict[str, str]:
    """The fields a report opens with: its ``type`` (where its schema holds several), the format
    it follows, and the tool and version that wrote it."""
    from mfclip_cli import __version__

    header = {"type": kind} if kind else {}
    return {**header, "schema_version": SCHEMA_VERSION, "tool": "mfclip", "version": __version__}


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name``, parsed."""
    return json.loads(schema_text(name))
