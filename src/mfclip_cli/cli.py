"""The ``mfclip`` command line: thin Typer commands over the engines."""

from __future__ import annotations

import typer

from mfclip_cli import __version__

app = typer.Typer(
    name="mfclip",
    help="Find every face in photos and videos and say how likely it is real, diffusion- or GAN-generated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mfclip {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """mfclip: multi-modal fine-grained CLIP (MFCLIP) for synthetic-face forensics."""


def main() -> None:
    app()
