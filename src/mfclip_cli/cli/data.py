"""`mfclip prepare`, `mfclip data inspect` and `mfclip synth`: labelled datasets in, aligned face
crops out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mfclip_cli.cli.errors import errors_reported
from mfclip_cli.cli.options import Device, Force, LabelMap, Layout, MinFace, Quiet


def prepare(
    source: str = typer.Argument(
        ...,
        help="A labelled dataset in a layout of docs/datasets.md (DiFF, GenFace, DF40, ...).",
        metavar="DIR|FILE",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Folder for the aligned crops, manifest.jsonl and prepare.json.",
        metavar="DIR",
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check the options, print the layout and counts found and stop (no image decoded).",
    ),
    config: str = typer.Option(
        "vit-b-16",
        "--config",
        help="Model config whose crop size and margin the crops get.",
        metavar="NAME|FILE",
    ),
    frames: int = typer.Option(
        8, "--frames", help="Frames sampled per video, evenly spread.", metavar="N"
    ),
    folder_frames: Optional[int] = typer.Option(
        None,
        "--folder-frames",
        help="Of a video given as a folder of extracted frames (DF40, FF++), N evenly spread "
        "frames, as DeepfakeBench takes 8 (default: every frame).",
        metavar="N",
    ),
    all_faces: bool = typer.Option(
        False, "--all-faces", help="Keep every face, not only the largest of each image or frame."
    ),
    min_face: MinFace = 20,
    device: Device = "auto",
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted prepare into the same --out."
    ),
    quiet: Quiet = False,
) -> None:
    """Detect and align a labelled dataset's faces once.

    The crops, a manifest and a summary, for train, eval and calibrate.

    Exit codes: 0 every file prepared; 1 fatal; 2 usage; 3 unreadable files (in prepare.json).

    Examples:

    \b
      mfclip prepare ~/datasets/DiFF --out faces/ --config vit-b-16
      mfclip prepare ~/datasets/DF40 --out faces/ --dry-run
    """
    from mfclip_cli.engines.prepare.request import PrepareRequest

    request = PrepareRequest(
        source=source,
        out=out,
        layout=layout,
        label_map=label_map,
        config=config,
        frames=frames,
        folder_frames=folder_frames,
        all_faces=all_faces,
        min_face=min_face,
        device=device,
        resume=resume,
        quiet=quiet,
        dry_run=dry_run,
    )
    with errors_reported() as error_console:
        checked = request.check()  # before torch loads: a mistyped option refused in a moment
        from mfclip_cli.engines.prepare.run import run_prepare

        code = run_prepare(request, console=Console(), error_console=error_console, checked=checked)
    raise typer.Exit(code)


def synth(
    out: str = typer.Argument(..., help="Folder to create (folder layout).", metavar="DIR"),
    n: int = typer.Option(200, "--n", min=1, help="Images per class.", metavar="N"),
    seed: int = typer.Option(
        0, "--seed", help="Seed: the same seed writes the same bytes.", metavar="N"
    ),
    size: int = typer.Option(256, "--size", min=64, help="Image side in pixels.", metavar="PX"),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
) -> None:
    """Write a SYNTHETIC labelled dataset for demos and tests.

    Artifacts drawn on public-domain faces.

    It is not evidence and not a benchmark: real GAN and diffusion faces look nothing like it.

    Examples:

    \b
      mfclip synth demo-data/ --n 100 --seed 0
    """
    from mfclip_cli.data.synth import write_synth_dataset

    with errors_reported():
        summary = write_synth_dataset(Path(out), n, seed=seed, size=size, overwrite=force)
    Console().print_json(data=summary)


app = typer.Typer(
    help="Look at labelled datasets before preparing or training on them.", no_args_is_help=True
)


@app.command("inspect")
def data_inspect(
    source: list[str] = typer.Argument(
        ...,
        help="The folder as downloaded, or a manifest; several are read as one, as train's "
        "--data A --data B (--verify then finds files copied from one into another).",
        metavar="DIR|FILE",
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Also write the report here.", metavar="FILE"
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Also read and decode every image, as train and eval will, and list those that "
        "cannot be (exit 3 when there are any) and files holding the same bytes.",
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=1,
        help="Threads decoding for --verify (default: one per core).",
        metavar="N",
    ),
    force: Force = False,
) -> None:
    """Print a dataset's layout, counts and skipped files.

    Samples per split, label, forgery type and generator, the videos, and what is skipped and
    why. Reads folder names only, no image decoded; --verify decodes every image too,
    and finds files holding the same bytes under other names.

    Examples:

    \b
      mfclip data inspect ~/datasets/GenImage
      mfclip data inspect ~/datasets/DF40 --label-map lab.toml --json inspect.json
      mfclip data inspect ~/datasets/DiFF --verify --workers 16
      mfclip data inspect ~/datasets/DiFF ~/datasets/GenFace --verify
    """
    from mfclip_cli.engines.inspect import InspectRequest, run_inspect

    with errors_reported() as error_console:
        request = InspectRequest(
            tuple(source),
            layout,
            label_map,
            verify=verify,
            workers=workers,
            json_path=json_path,
            force=force,
        )
        code = run_inspect(request, Console(), error_console)
    raise typer.Exit(code)
