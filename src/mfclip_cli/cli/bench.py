"""`mfclip bench`: the speed figures, measured on this machine."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from mfclip_cli.cli.errors import errors_reported
from mfclip_cli.cli.options import Device, Force


def bench(
    device: Device = "auto",
    config: str = typer.Option(
        "vit-b-16", "--config", help="Model config (random weights).", metavar="NAME|FILE"
    ),
    images: int = typer.Option(
        64, "--images", min=1, help="Generated JPEGs, one face each.", metavar="N"
    ),
    size: int = typer.Option(1024, "--size", min=64, help="Their side in pixels.", metavar="PX"),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, help="Faces per model and training batch.", metavar="N"
    ),
    min_face: int = typer.Option(
        20,
        "--min-face",
        min=12,
        help="Smallest face in pixels, for the scan and the naive pipeline alike.",
        metavar="PX",
    ),
    repeats: int = typer.Option(
        3,
        "--repeats",
        min=1,
        help="Timed rounds of every stage (the image stages interleaved); each reports its median.",
        metavar="N",
    ),
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Write the figures to FILE.", metavar="FILE"
    ),
    force: Force = False,
) -> None:
    """Measure model, detection, scan and training rates.

    Beside the naive pipeline (facenet-pytorch per image, one forward per face), in one run.

    Examples:

    \b
      mfclip bench --device cpu --config tiny --images 48 --json bench.json
    """
    from mfclip_cli.engines.bench import BenchRequest, run_bench
    from mfclip_cli.files import refuse_existing, write_json_atomic

    with errors_reported():
        if json_path:
            refuse_existing(json_path, force)
        results = run_bench(
            BenchRequest(
                device=device,
                config=config,
                images=images,
                size=size,
                batch_size=batch_size,
                min_face=min_face,
                repeats=repeats,
            ),
            Console(),
        )
        if json_path:
            write_json_atomic(json_path, results, overwrite=force)
