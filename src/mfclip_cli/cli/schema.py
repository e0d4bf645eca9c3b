"""`mfclip schema`: the published report contract, printed."""

from __future__ import annotations

import typer


def schema(
    name: str = typer.Argument(
        ...,
        help="The report kind: scan, eval, prepare, inspect, bench, ablate or train.",
        metavar="NAME",
    ),
) -> None:
    """Print the JSON Schema (draft 2020-12) of a report kind, as this version writes it.

    scan: --json and each --jsonl line; eval: --json, one checkpoint or a comparison; prepare:
    prepare.json and each prepare.jsonl line; inspect: data inspect --json; bench: bench --json;
    ablate: ablate --json; train: a run folder's train.json and each metrics.jsonl line. Every
    report names its schema_version (docs/output.md).

    Examples:

    \b
      mfclip schema scan > scan.schema.json
    """
    from mfclip_cli.schemas import UnknownSchemaError, schema_text

    try:
        typer.echo(schema_text(name), nl=False)
    except UnknownSchemaError as error:
        raise typer.BadParameter(str(error), param_hint="'NAME'") from None
