"""`mfclip weights ...`: the registry of checkpoints and CLIP weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mfclip_cli.cli.errors import errors_reported

app = typer.Typer(
    help="Registered checkpoints: the bundled demo and yours.",
    no_args_is_help=True,
)
WIDE_LIST = 120  # columns the table of weights list needs; narrower, one entry per two lines


@app.command("list")
def weights_list() -> None:
    """List registered checkpoints, yours and the bundled ones."""
    from mfclip_cli.engines.weights.store import registry_status, user_store

    with errors_reported():
        rows = registry_status()
    # the default in use: the user's store's, listed first, else the bundled one
    in_use = next((row for row in rows if row.get("default")), None)
    shown = []
    for row in rows:
        auc = (row.get("metrics") or {}).get("test", {}).get("auc")
        shown.append(
            {
                "name": row["name"],
                "source": row["source"],
                "config": row.get("config", ""),
                "demo": "yes" if row.get("demo") else "no",
                "default": ("yes" if row is in_use else "yes (overridden)")
                if row.get("default")
                else "no",
                "size": "-" if row["size"] is None else f"{row['size'] / 1e6:.1f} MB",
                "sha256": row.get("sha256", "")[:12],
                "hash check": row["check"],
                "test AUC": "-" if auc is None else f"{auc:.4f}",
            }
        )
    console = Console()
    title = f"registered weights (yours in {user_store()}; details: mfclip weights info NAME)"
    if console.width >= WIDE_LIST:
        table = Table(title=title)
        for column in shown[0] if shown else ():
            table.add_column(
                column,
                no_wrap=column in ("name", "sha256"),
                justify="right" if column in ("size", "test AUC") else "left",
            )
        for values in shown:
            table.add_row(*values.values())
        console.print(table)
        return
    # narrower (a pipe, a CI log): a table cut every column to "MIS…" (audit S F11)
    console.print(title, highlight=False, markup=False, soft_wrap=True)
    for values in shown:
        details = ", ".join(f"{key} {values[key]}" for key in ("source", "config", "demo"))
        console.print(
            f"{values['name']} ({details}, default {values['default']})\n"
            f"  {values['size']}, sha256 {values['sha256']}, hash check {values['hash check']}, "
            f"test AUC {values['test AUC']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


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
    Console(stderr=True).print(f"removed {entry['name']} ({entry['sha256'][:12]})", highlight=False)


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
