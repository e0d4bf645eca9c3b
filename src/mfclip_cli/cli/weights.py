"""`mfclip weights ...`: the registry of checkpoints and CLIP weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from mfclip_cli.cli.errors import errors_reported

app = typer.Typer(
    help="Registered checkpoints: the bundled demo and yours.",
    no_args_is_help=True,
)


@app.command("list")
def weights_list() -> None:
    """List registered checkpoints, yours and the bundled ones."""
    from mfclip_cli.engines.weights.listing import print_registry

    with errors_reported():
        print_registry(Console())


@app.command("pull")
def weights_pull(
    source: str = typer.Argument(
        ...,
        help="An http(s):// URL or a local path of an mfclip .safetensors checkpoint.",
        metavar="URL|PATH",
    ),
    name: str = typer.Option(
        ..., "--name", help="Registry name, usable as --weights NAME.", metavar="NAME"
    ),
    sha256: Optional[str] = typer.Option(
        None,
        "--sha256",
        help="The SHA-256 its publisher gives: registered only if it matches.",
        metavar="HEX",
    ),
    trust: bool = typer.Option(
        False, "--trust", help="Register without --sha256 (its digest is still recorded)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a registered checkpoint of the same name."
    ),
) -> None:
    """Download or copy a checkpoint into your store.

    Downloads resume; the SHA-256 is verified before the checkpoint is registered.

    Examples:

    \b
      mfclip weights pull https://example.org/m.safetensors --name lab --sha256 HEX
    """
    from mfclip_cli.engines.weights.store import pull_weights

    with errors_reported() as error_console:
        entry = pull_weights(
            source, name, sha256=sha256, trust=trust, force=force, console=error_console
        )
    Console().print_json(data=entry)


@app.command("import-clip")
def weights_import_clip(
    path: str = typer.Argument(
        ...,
        help="open_clip CLIP weights: a .safetensors file, or a cache folder holding one.",
        metavar="PATH",
    ),
    architecture: str = typer.Option(
        ..., "--architecture", help="Its open_clip architecture, e.g. ViT-B-16.", metavar="NAME"
    ),
    name: str = typer.Option(
        ..., "--name", help="Registry name, usable as train --clip-weights NAME.", metavar="NAME"
    ),
    quick_gelu: Optional[bool] = typer.Option(
        None,
        "--quick-gelu/--gelu",
        help="The activation the weights were trained with: QuickGELU (OpenAI, DFN, MetaCLIP) "
        "or GELU (LAION, DataComp). Needed where the architecture has weights of both kinds.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace registered weights of the same name."
    ),
) -> None:
    """Register CLIP weights on disk for train --clip-weights NAME.

    Examples:

    \b
      mfclip weights import-clip clip.safetensors --architecture ViT-B-16 --name openai --quick-gelu
    """
    from mfclip_cli.engines.weights.store import import_clip

    with errors_reported():
        entry = import_clip(path, name, architecture, quick_gelu=quick_gelu, force=force)
    Console().print_json(data=entry)


@app.command("remove")
def weights_remove(
    name: str = typer.Argument(..., help="A name registered in your store.", metavar="NAME"),
) -> None:
    """Unregister a checkpoint of your store and delete its file."""
    from mfclip_cli.engines.weights.store import remove_weights

    with errors_reported():
        entry = remove_weights(name)
    digest = entry.get("sha256")  # an entry edited by hand, failing the checks, is removed too
    shown = f" ({digest[:12]})" if isinstance(digest, str) else ""
    Console(stderr=True).print(f"removed {escape(entry['name'])}{shown}", highlight=False)


@app.command("add")
def weights_add(
    checkpoint: str = typer.Argument(
        ..., help="An mfclip .safetensors checkpoint (e.g. RUN/best.safetensors).", metavar="FILE"
    ),
    name: str = typer.Option(
        ..., "--name", help="Registry name, usable as --weights NAME.", metavar="NAME"
    ),
    eval_report: Optional[str] = typer.Option(
        None,
        "--eval",
        help="An `mfclip eval --json` report whose metrics are recorded with it.",
        metavar="FILE",
    ),
    trained_on: str = typer.Option(
        "", "--trained-on", help="What it was trained on, in words.", metavar="TEXT"
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Mark it as demo weights: every report says so."
    ),
    default: bool = typer.Option(
        False, "--default", help="Use it when neither --weights nor MFCLIP_WEIGHTS is given."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a registered checkpoint of the same name."
    ),
    store: Optional[str] = typer.Option(
        None,
        "--store",
        help=(
            "Register into this folder instead of your store (maintainers: the package's "
            "bundled weights)."
        ),
        metavar="DIR",
    ),
) -> None:
    """Copy a checkpoint into your store and register it.

    Examples:

    \b
      mfclip weights add run/best.safetensors --name my-model
    """
    from mfclip_cli.engines.weights.store import read_eval_metrics, register_weights

    with errors_reported():
        metrics = read_eval_metrics(eval_report) if eval_report else None
        entry = register_weights(
            checkpoint,
            name,
            demo=demo,
            default=default,
            trained_on=trained_on,
            metrics=metrics,
            force=force,
            store=Path(store) if store else None,
        )
    Console().print_json(data=entry)


@app.command("info")
def weights_info(
    target: str = typer.Argument(
        ..., help="A registry name or a .safetensors checkpoint.", metavar="NAME|FILE"
    ),
) -> None:
    """Show a checkpoint's config, metrics and hash."""
    from mfclip_cli.engines.weights.store import weights_info as describe

    with errors_reported():
        info = describe(target)
    Console().print_json(data=info)
