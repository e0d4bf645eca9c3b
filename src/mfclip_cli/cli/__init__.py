"""The ``mfclip`` command line: thin Typer commands over the engines, one module per command
group (``scan.py``: scan, report; ``data.py``: prepare, data inspect, synth; ``train.py``:
train, ablate; ``evaluate.py``: eval, calibrate; ``bench.py``; ``schema.py``; ``weights.py``),
the options they share in ``options.py`` and the error-to-exit-code mapping in ``errors.py``.

Importing it imports no torch: each command imports its engine when it runs.
"""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from mfclip_cli import __version__
from mfclip_cli.cli import bench, data, evaluate, scan, schema, train, weights

app = typer.Typer(
    name="mfclip",
    help=(
        "Find every face in photos and videos and say how likely it is real, diffusion- or "
        "GAN-generated."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no markup to eat "[train]", no "<bool>" on flags
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mfclip {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """mfclip: multi-modal fine-grained CLIP (MFCLIP) for synthetic-face forensics."""
    from mfclip_cli.engines.runtime import reuse_freed_buffers

    reuse_freed_buffers()


for command, name in (
    (scan.scan, "scan"),
    (scan.report, "report"),
    (data.prepare, "prepare"),
    (train.train, "train"),
    (evaluate.evaluate, "eval"),
    (evaluate.calibrate, "calibrate"),
    (train.ablate, "ablate"),
    (data.synth, "synth"),
    (bench.bench, "bench"),
    (schema.schema, "schema"),
):
    app.command(name)(command)
app.add_typer(data.app, name="data")
app.add_typer(weights.app, name="weights")


def _refuse_option_names_as_values(current: typer.core.TyperCommand | TyperGroup) -> None:
    """Click gives an option that takes a value the next word whatever it is, so
    ``--explain --jsonl out.jsonl`` would write heatmaps into a folder named ``--jsonl`` and scan
    ``out.jsonl`` as an input; a value that is one of the command's own option names is refused
    as a usage error instead."""
    names = {name for param in current.params for name in (*param.opts, *param.secondary_opts)}
    for param in current.params:
        if not isinstance(param, TyperOption) or param.is_flag or param.count:
            continue

        def process_value(ctx, value, param=param, original=param.process_value):
            given = value if isinstance(value, (list, tuple)) else (value,)
            clash = next((item for item in given if isinstance(item, str) and item in names), None)
            if clash is not None:
                raise typer.BadParameter(
                    f"got {clash!r}, an option of this command, as its value: give "
                    f"{param.opts[0]} its {param.metavar or 'value'} first",
                    ctx=ctx,
                    param=param,
                )
            return original(ctx, value)

        param.process_value = process_value  # type: ignore[method-assign]


def command() -> TyperGroup:
    """The click command tree of ``app``, its arguments' help showing their metavar alone: typer's
    plain help appends its own type label to an argument (``PATH <list[str]>``), which says
    nothing the metavar and help do not, and which no option shows; and no option takes another
    option's name for its value (``_refuse_option_names_as_values``)."""
    root_command = typer.main.get_command(app)
    assert isinstance(root_command, TyperGroup)
    pending = [root_command]
    while pending:
        current = pending.pop()
        pending += getattr(current, "commands", {}).values()
        _refuse_option_names_as_values(current)
        for param in current.params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    return root_command


def main() -> None:
    command()()
