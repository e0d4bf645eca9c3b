"""The ``mfclip`` command line: thin Typer commands over the engines."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console

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


def _fail(error_console: Console, message: str, code: int) -> None:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def scan(
    paths: list[str] = typer.Argument(..., help="Files, folders, glob patterns, or - to read paths from stdin."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Checkpoint: registry name or .safetensors path (default: $MFCLIP_WEIGHTS, then the bundled demo)."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write one JSON document {meta, files} to FILE."),
    jsonl_path: Optional[str] = typer.Option(None, "--jsonl", help="Stream JSON Lines to FILE (- for stdout): a meta line, then one line per file."),
    csv_path: Optional[str] = typer.Option(None, "--csv", help="Write one CSV row per face to FILE."),
    annotate: Optional[str] = typer.Option(None, "--annotate", help="Write copies of the images with boxes and labels drawn into DIR."),
    resume: bool = typer.Option(False, "--resume", help="With --jsonl FILE: skip inputs already recorded there (same path and SHA-256)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into sub-folders."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Faces per model batch."),
    min_face: int = typer.Option(20, "--min-face", min=1, help="Smallest face searched for, in pixels."),
    det_threshold: float = typer.Option(0.7, "--det-threshold", min=0.0, max=1.0, help="MTCNN's final (O-Net) face-score threshold."),
    detect_max_side: int = typer.Option(1600, "--detect-max-side", min=0, help="Detect on a copy no longer than this (0: full resolution); crops always come from the full image."),
    fake_threshold: float = typer.Option(0.5, "--fake-threshold", min=0.0, max=1.0, help="A face is labelled fake when 1 - p(real) reaches this."),
    fps: float = typer.Option(1.0, "--fps", help="Video frames sampled per second."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Sample this many frames per video, evenly spread (overrides --fps)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    fail_on_fake: bool = typer.Option(False, "--fail-on-fake", help="Exit with 4 when any face is labelled non-real."),
) -> None:
    """Find every face, classify it real / diffusion / GAN, and report per-face probabilities.

    Exit codes: 0 every input scanned; 1 fatal error; 2 usage error; 3 finished but some inputs
    could not be read; 4 with --fail-on-fake when any face is labelled non-real.
    """
    from mfclip_cli.engines.scan import EXIT_FATAL, EXIT_USAGE, ScanRequest, ScanSettings, ScanUsageError, run_scan
    from mfclip_cli.engines.weights import WeightsError
    from mfclip_cli.files import UnsafeFileError
    from mfclip_cli.model import CheckpointError

    error_console = Console(stderr=True, soft_wrap=True)
    request = ScanRequest(
        inputs=paths,
        settings=ScanSettings(
            device=device,
            batch_size=batch_size,
            min_face=min_face,
            detection_thresholds=(0.6, 0.7, det_threshold),
            detect_max_side=detect_max_side,
            fake_threshold=fake_threshold,
            fps=fps,
            frames=frames,
        ),
        weights=weights,
        recursive=recursive,
        json_path=json_path,
        jsonl_path=jsonl_path,
        csv_path=csv_path,
        annotate_dir=annotate,
        resume=resume,
        force=force,
        quiet=quiet,
        fail_on_fake=fail_on_fake,
    )
    try:
        code = run_scan(request, stdin=sys.stdin if "-" in paths else None, console=Console(), error_console=error_console)
    except (ScanUsageError, FileExistsError) as error:
        _fail(error_console, str(error), EXIT_USAGE)
    except (WeightsError, CheckpointError, UnsafeFileError, FileNotFoundError) as error:
        _fail(error_console, str(error), EXIT_FATAL)
    raise typer.Exit(code)


def main() -> None:
    app()
