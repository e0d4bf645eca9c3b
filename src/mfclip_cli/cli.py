"""The ``mfclip`` command line: thin Typer commands over the engines."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from mfclip_cli import __version__

app = typer.Typer(
    name="mfclip",
    help=(
        "Find every face in photos and videos and say how likely it is real, diffusion- or "
        "GAN-generated."
    ),
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


def _without_worker_traceback(message: str) -> str:
    """An error raised again from a DataLoader worker carries the worker's traceback in its message;
    the user gets the original message (the traceback's last line, less the exception's name)."""
    if "\nOriginal Traceback" not in message:
        return message
    return message.rstrip().splitlines()[-1].split(": ", 1)[-1]


@contextlib.contextmanager
def _errors_reported() -> Iterator[Console]:
    """Expected failures become one readable line on stderr and their exit code, never a
    traceback."""
    from mfclip_cli.engines.runtime import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE
    from mfclip_cli.errors import (
        BackboneError,
        CheckpointError,
        ConfigError,
        DataError,
        ProtocolError,
        UnsafeFileError,
        UsageError,
        WeightsError,
    )

    error_console = Console(stderr=True, soft_wrap=True)
    code = None
    try:
        yield error_console
    except (WeightsError, CheckpointError, UnsafeFileError, DataError, FileNotFoundError) as error:
        message, code = _without_worker_traceback(str(error)), EXIT_FATAL
    except (UsageError, ConfigError, ProtocolError, BackboneError, FileExistsError) as error:
        message, code = _without_worker_traceback(str(error)), EXIT_USAGE
    except KeyboardInterrupt:
        message, code = "interrupted", EXIT_INTERRUPTED
    except OSError as error:  # a full disk, a vanished folder: what failed and where, no traceback
        where = f" ({error.filename})" if error.filename else ""
        message, code = f"{error.strerror or error}{where}", EXIT_FATAL
    if code is not None:
        error_console.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(code)


@app.command()
def scan(
    paths: list[str] = typer.Argument(
        ..., help="Files, folders, glob patterns, or - to read paths from stdin."
    ),
    weights: Optional[list[str]] = typer.Option(
        None,
        "--weights",
        "-w",
        help=(
            "Checkpoint: registry name or .safetensors path (default: $MFCLIP_WEIGHTS, then the "
            "bundled demo). Repeat it to score each face with every checkpoint side by side "
            "(its 'detectors'); the first is the primary, whose probabilities, label and "
            "--fail-on-fake the report keeps."
        ),
    ),
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Write one JSON document {meta, files} to FILE."
    ),
    jsonl_path: Optional[str] = typer.Option(
        None,
        "--jsonl",
        help="Stream JSON Lines to FILE (- for stdout): a meta line, then one line per file.",
    ),
    csv_path: Optional[str] = typer.Option(
        None, "--csv", help="Write one CSV row per face to FILE."
    ),
    html_path: Optional[str] = typer.Option(
        None,
        "--html",
        help="Write a self-contained HTML case report (pictures, boxes, face crops) to FILE.",
    ),
    annotate: Optional[str] = typer.Option(
        None, "--annotate", help="Write copies of the images with boxes and labels drawn into DIR."
    ),
    explain: Optional[str] = typer.Option(
        None,
        "--explain",
        help="Write, per face, a PNG of where the model looked (heatmap of what drove the fake "
        "score, and the noise branch's patch) into DIR; the HTML report shows it.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --jsonl FILE: skip inputs already recorded there (same path and SHA-256).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files."),
    recursive: bool = typer.Option(
        True, "--recursive/--no-recursive", help="Descend into sub-folders."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Faces per model batch."),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help=(
            "Threads working ahead on the files (0: one per CPU core on CPU, all cores but one, "
            "up to 16, with a GPU)."
        ),
    ),
    min_face: int = typer.Option(
        20, "--min-face", min=1, help="Smallest face searched for, in pixels."
    ),
    det_threshold: float = typer.Option(
        0.7, "--det-threshold", min=0.0, max=1.0, help="MTCNN's final (O-Net) face-score threshold."
    ),
    detect_max_side: int = typer.Option(
        0,
        "--detect-max-side",
        min=0,
        help=(
            "Detect on a copy no longer than this: faster on large photos, but faces under "
            "12 x longest side / N px are not searched (recorded per file as smallest_face). "
            "0 (default): full resolution."
        ),
    ),
    fake_threshold: str = typer.Option(
        "0.5",
        "--fake-threshold",
        help=(
            "A face is labelled fake when 1 - p(real) reaches this: a number in [0, 1], or "
            "fpr:0.01 / fpr:0.001 for the checkpoint's threshold of that validation FPR."
        ),
    ),
    fps: float = typer.Option(1.0, "--fps", help="Video frames sampled per second."),
    frames: Optional[int] = typer.Option(
        None, "--frames", help="Sample this many frames per video, evenly spread (overrides --fps)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    fail_on_fake: bool = typer.Option(
        False, "--fail-on-fake", help="Exit with 4 when any face is labelled non-real."
    ),
) -> None:
    """Find every face, classify it real / diffusion / GAN, and report per-face probabilities.

    Exit codes: 0 every input scanned; 1 fatal error; 2 usage error; 3 finished but some inputs
    could not be read; 4 with --fail-on-fake when any face is labelled non-real.
    """
    from mfclip_cli.engines.calibration import parse_fake_threshold
    from mfclip_cli.engines.scan import ScanRequest, ScanSettings, run_scan

    try:
        fake_number, fake_fpr = parse_fake_threshold(fake_threshold)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--fake-threshold'") from None
    request = ScanRequest(
        inputs=paths,
        settings=ScanSettings(
            device=device,
            batch_size=batch_size,
            workers=workers,
            min_face=min_face,
            detection_thresholds=(0.6, 0.7, det_threshold),
            detect_max_side=detect_max_side,
            fake_threshold=0.5 if fake_number is None else fake_number,
            fake_threshold_fpr=fake_fpr,
            fps=fps,
            frames=frames,
        ),
        weights=tuple(weights or ()),
        recursive=recursive,
        json_path=json_path,
        jsonl_path=jsonl_path,
        csv_path=csv_path,
        html_path=html_path,
        annotate_dir=annotate,
        explain_dir=explain,
        resume=resume,
        force=force,
        quiet=quiet,
        fail_on_fake=fail_on_fake,
    )
    with _errors_reported() as error_console:
        code = run_scan(
            request,
            stdin=sys.stdin if "-" in paths else None,
            console=Console(),
            error_console=error_console,
        )
    raise typer.Exit(code)


@app.command()
def report(
    jsonl_path: str = typer.Argument(..., help="A JSON Lines report of mfclip scan (--jsonl)."),
    html_path: str = typer.Option(..., "--html", help="Write the HTML case report to FILE."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing FILE."),
) -> None:
    """Render the HTML case report of an earlier scan from its JSON Lines report.

    The inputs are read again for their pictures (relative paths from the folder the scan ran
    in). Exit codes: 0 written; 2 not a report, or FILE exists without --force; 3 written, but
    some inputs were missing or changed (their sections say so).
    """
    from mfclip_cli.engines.html_report import report_from_jsonl
    from mfclip_cli.engines.runtime import EXIT_OK, EXIT_UNREADABLE

    with _errors_reported() as error_console:
        unreadable = report_from_jsonl(jsonl_path, html_path, force=force)
    if unreadable:
        error_console.print(
            f"[bold yellow]warning:[/] {unreadable} input(s) could not be read again: "
            f"their pictures are missing from {html_path}",
            highlight=False,
        )
    raise typer.Exit(EXIT_UNREADABLE if unreadable else EXIT_OK)


@app.command()
def prepare(
    source: str = typer.Argument(
        ...,
        help="A labelled dataset in a layout of docs/datasets.md (DiFF, GenFace, DF40, ...).",
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="Folder for the aligned crops, manifest.jsonl and prepare.json."
    ),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="A layout of docs/datasets.md (default: detected)."
    ),
    label_map: Optional[str] = typer.Option(
        None, "--label-map", help="TOML file extending the generator -> class table."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the layout and counts found and stop (no image decoded)."
    ),
    config: str = typer.Option(
        "vit-b-16", "--config", help="Model config whose crop size and margin the crops get."
    ),
    frames: int = typer.Option(8, "--frames", help="Frames sampled per video, evenly spread."),
    all_faces: bool = typer.Option(
        False, "--all-faces", help="Keep every face, not only the largest of each image or frame."
    ),
    min_face: int = typer.Option(
        20, "--min-face", min=1, help="Smallest face searched for, in pixels."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted prepare into the same --out."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Detect and align the faces of a labelled dataset once, for train and eval.

    Exit codes: 0 every file prepared; 1 fatal; 2 usage; 3 unreadable files (in prepare.json).
    """
    if dry_run:
        _print_inspection(source, layout, label_map, include_videos=True)
        return
    from mfclip_cli.engines.prepare import PrepareRequest, run_prepare

    request = PrepareRequest(
        source=source,
        out=out,
        layout=layout,
        label_map=label_map,
        config=config,
        frames=frames,
        all_faces=all_faces,
        min_face=min_face,
        device=device,
        resume=resume,
        quiet=quiet,
    )
    with _errors_reported() as error_console:
        code = run_prepare(request, console=Console(), error_console=error_console)
    raise typer.Exit(code)


@app.command()
def train(
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help=(
            "Labelled face dataset (a prepare output, or folder / genface / diff / manifest "
            "layout)."
        ),
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="Run folder: checkpoints, metrics.jsonl, train.json."
    ),
    settings_file: Optional[str] = typer.Option(
        None, "--settings", help="TOML file with a [train] table; options given here override it."
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", help="Protocol name or TOML file (default in-domain)."
    ),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="Dataset layout (default: detected)."
    ),
    config: Optional[str] = typer.Option(
        None, "--config", help="Model config name or JSON/TOML file (default vit-b-16)."
    ),
    clip_weights: Optional[str] = typer.Option(
        None, "--clip-weights", help="open_clip pretrained tag or local .safetensors file."
    ),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Passes over the train split (default 5)."
    ),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Global batch (split across torchrun processes; default 32)."
    ),
    accumulate: Optional[int] = typer.Option(
        None, "--accumulate", help="Micro-batches per optimiser step (default 1)."
    ),
    lr: Optional[float] = typer.Option(
        None, "--lr", help="Peak learning rate of AdamW (default 2e-4)."
    ),
    lora_rank: Optional[int] = typer.Option(
        None, "--lora-rank", help="LoRA rank (default: the config's)."
    ),
    lora_alpha: Optional[float] = typer.Option(
        None, "--lora-alpha", help="LoRA alpha (default: the config's)."
    ),
    overrides: Optional[list[str]] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help=(
            "Set a model config field, e.g. lora.text=true, loss.spa.enabled=false, "
            "noise.enabled=false, prompts.levels=2 (repeatable; recorded in the checkpoint)."
        ),
    ),
    balanced: Optional[bool] = typer.Option(
        None, "--balanced/--no-balanced", help="Class-balanced sampling."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed of every random choice (default 0)."
    ),
    val_every: Optional[int] = typer.Option(
        None, "--val-every", help="Optimiser steps between validations (default: each epoch)."
    ),
    checkpoint_every: Optional[int] = typer.Option(
        None,
        "--checkpoint-every",
        help="Optimiser steps between last.* saves (default: at validation).",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Data-loading processes (default 1)."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: each rank's own GPU)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out exactly where it stopped (its saved settings are used).",
    ),
) -> None:
    """Train MFCLIP: best.safetensors by val AUC, last.* for --resume, metrics.jsonl per step.

    Launch with `torchrun --nproc-per-node N -m mfclip_cli train ...` for data-parallel training.
    """
    from mfclip_cli.engines.runtime import UsageError
    from mfclip_cli.engines.train import TrainSettings, load_train_settings
    from mfclip_cli.engines.train import train as run_training

    given = dict(
        data=data,
        protocol=protocol,
        layout=layout,
        config=config,
        clip_weights=clip_weights,
        epochs=epochs,
        batch_size=batch_size,
        accumulate=accumulate,
        lr=lr,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        overrides=tuple(overrides) if overrides else None,
        balanced=balanced,
        seed=seed,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        workers=workers,
    )
    with _errors_reported() as error_console:
        settings = None
        if resume:
            ignored = sorted(name for name, value in given.items() if value is not None)
            if ignored or settings_file:
                raise UsageError(
                    "--resume continues with the run's saved settings; "
                    f"drop {', '.join(ignored) or '--settings'}"
                )
        elif settings_file:
            settings = load_train_settings(settings_file, out=out, **given)
        else:
            if not data:
                raise UsageError("--data is required (or --settings FILE naming it)")
            settings = TrainSettings(out=out, **{k: v for k, v in given.items() if v is not None})
        result = run_training(
            settings, out=out, resume=resume, device=device, console=error_console
        )
        best = result["best"]
        if best:
            error_console.print(
                f"done: {result['step']} steps, {result['samples_seen']} samples; best val "
                f"{best['metric']} {best['value']:.4f} at step {best['step']} -> "
                f"{out}/best.safetensors",
                highlight=False,
            )


@app.command("eval")
def evaluate(
    data: Optional[str] = typer.Option(
        None, "--data", help="Labelled face dataset (same layouts as train)."
    ),
    protocol: str = typer.Option(
        "in-domain", "--protocol", help="Protocol name or TOML file; its test split is scored."
    ),
    weights: Optional[list[str]] = typer.Option(
        None,
        "--weights",
        "-w",
        help=(
            "Checkpoint: registry name or .safetensors path. Repeat it to compare checkpoints on "
            "the same test samples, with DeLong's test of each pair's AUC difference "
            "(docs/comparison.md)."
        ),
    ),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="Dataset layout (default: detected)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Faces per model batch."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data-loading processes."),
    threshold: float = typer.Option(
        0.5,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Fake-score threshold of acc, real_acc and fake_acc.",
    ),
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Write the metrics report to FILE."
    ),
    predictions: Optional[str] = typer.Option(
        None,
        "--predictions",
        help="Write per-sample probabilities to FILE (CSV: path,label,real,diffusion,gan,...).",
    ),
    plots: Optional[str] = typer.Option(
        None,
        "--plots",
        help="Write ROC curves, reliability diagrams and AUC against perturbation (PNG) into DIR.",
    ),
    embeddings: Optional[str] = typer.Option(
        None,
        "--embeddings",
        help="Draw a t-SNE of the test face embeddings, by class and by generator, to FILE.png.",
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap replicates of the 95% intervals (0: none)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the bootstrap, the t-SNE and the noise perturbation."
    ),
    perturb: Optional[list[str]] = typer.Option(
        None,
        "--perturb",
        metavar="KIND:S1,S2",
        help=(
            "Score the test split again under each severity: jpeg:90,75,50 (quality), "
            "resize:0.5,0.25 (down and back up), blur:1,2 (sigma px), noise:5,10 (std, 0-255). "
            "Repeatable; a kind named here replaces the protocol's severities of that kind. "
            "See docs/robustness.md."
        ),
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    list_protocols: bool = typer.Option(
        False, "--list-protocols", help="List the shipped protocols and exit."
    ),
) -> None:
    """Evaluate a checkpoint on a protocol's test split: AUC, AP, EER, ACC, 3-way ACC, macro-F1,
    calibration (ECE, Brier, NLL), TPR at FPR 1 % / 0.1 % with thresholds chosen on val and,
    with --perturb, AUC, AP, ACC and ECE under JPEG, resizing, blur and noise. Several --weights
    are compared side by side (--predictions, --plots and --embeddings take one)."""
    from mfclip_cli.engines.runtime import UsageError

    with _errors_reported() as error_console:
        if list_protocols:
            from mfclip_cli.data import shipped_protocols

            table = Table(title="shipped protocols")
            table.add_column("name")
            table.add_column("what it tests")
            for name, description in shipped_protocols().items():
                table.add_row(name, description)
            Console().print(table)
            return
        if not data:
            raise UsageError("--data is required")
        from mfclip_cli.engines.evaluate import EvalRequest, compare
        from mfclip_cli.engines.evaluate import evaluate as run_evaluation

        chosen = weights or []
        request = EvalRequest(
            data=data,
            protocol=protocol,
            weights=chosen[0] if len(chosen) == 1 else None,
            layout=layout,
            device=device,
            batch_size=batch_size,
            workers=workers,
            threshold=threshold,
            json_path=json_path,
            predictions_path=predictions,
            plots_dir=plots,
            embeddings_path=embeddings,
            force=force,
            bootstrap=bootstrap,
            seed=seed,
            perturb=tuple(perturb or ()),
        )
        if len(chosen) > 1:
            compare(request, chosen, console=Console(), error_console=error_console)
        else:
            run_evaluation(request, console=Console(), error_console=error_console)


@app.command()
def calibrate(
    weights: str = typer.Option(
        ..., "--weights", "-w", help="Checkpoint to calibrate: registry name or .safetensors path."
    ),
    data: str = typer.Option(..., "--data", help="Labelled face dataset (same layouts as train)."),
    out: str = typer.Option(
        ..., "--out", "-o", help="The calibrated checkpoint to write (.safetensors)."
    ),
    protocol: str = typer.Option(
        "in-domain", "--protocol", help="Protocol name or TOML file; its val split is fitted on."
    ),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="Dataset layout (default: detected)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Faces per model batch."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data-loading processes."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out."),
) -> None:
    """Fit temperature scaling and the FPR 1 % / 0.1 % thresholds on a protocol's val split and
    write them into a new checkpoint (new SHA-256); the original is left as it is."""
    with _errors_reported() as error_console:
        from mfclip_cli.engines.evaluate import CalibrateRequest
        from mfclip_cli.engines.evaluate import calibrate as run_calibration

        request = CalibrateRequest(
            weights=weights,
            data=data,
            out=out,
            protocol=protocol,
            layout=layout,
            device=device,
            batch_size=batch_size,
            workers=workers,
            force=force,
        )
        result = run_calibration(request, error_console=error_console)
        record = result["calibration"]
        fitted = record["fitted_on"]
        lines = [
            f"temperature {record['temperature']:.4f}: val NLL {record['nll']['before']:.4f} -> "
            f"{record['nll']['after']:.4f} ({fitted['samples']} samples, {fitted['n_real']} real, "
            f"protocol {fitted['protocol']})",
            *(
                f"{name}: threshold {entry['threshold']:.6f} (val FPR {entry['val_fpr']:.4f}, "
                f"TPR {entry['val_tpr']:.4f})"
                for name, entry in record["thresholds"].items()
            ),
            f"wrote {result['weights']} (sha256 {result['sha256']})",
        ]
        if record["at_bound"]:
            error_console.print(
                "[bold yellow]warning:[/] the temperature is at its search bound: the val split "
                "is (nearly) separated, so the calibrated probabilities are near 0 or 1; "
                "calibrate on a larger val split",
                highlight=False,
            )
        typer.echo("\n".join(lines))


@app.command()
def ablate(
    data: str = typer.Option(..., "--data", help="Labelled face dataset (as for train)."),
    config: str = typer.Option("vit-b-16", "--config", help="Model config name or file."),
    protocol: str = typer.Option("in-domain", "--protocol", help="Protocol name or TOML file."),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="Dataset layout (default: detected)."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Runs per variant, seeds 0..N-1."),
    variants: Optional[str] = typer.Option(
        None, "--variants", help="Comma-separated subset of the variants (default: all)."
    ),
    settings_file: Optional[str] = typer.Option(
        None, "--settings", help="TOML [train] table: the schedule every run shares."
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per run."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="Model config field set in every run."
    ),
    out: Optional[str] = typer.Option(
        None, "--out", help="Keep the runs here (reused and resumed on a rerun); default: none."
    ),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the ablation report."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json report."),
) -> None:
    """Train and test the full model and each variant (no SPA, no noise branch, one prompt level,
    sum fusion, frozen text, SRM on [0, 1]) alike; mean ± std over seeds, difference to full."""
    from mfclip_cli.engines.ablate import VARIANTS, AblationRequest, run_ablation
    from mfclip_cli.engines.train import TrainSettings, load_train_settings

    given = dict(
        data=data,
        config=config,
        protocol=protocol,
        layout=layout,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        overrides=tuple(overrides) if overrides else None,
    )
    chosen = {k: v for k, v in given.items() if v is not None}
    with _errors_reported() as error_console:
        if settings_file:
            training = load_train_settings(settings_file, out="-", **chosen)
        else:
            training = TrainSettings(out="-", **chosen)
        request = AblationRequest(
            training=training,
            seeds=seeds,
            variants=tuple(v.strip() for v in variants.split(",")) if variants else tuple(VARIANTS),
            out=out,
            json_path=json_path,
            device=device,
            force=force,
        )
        run_ablation(request, Console(), error_console)


@app.command()
def synth(
    out: str = typer.Argument(..., help="Folder to create (folder layout)."),
    n: int = typer.Option(200, "--n", min=1, help="Images per class."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same bytes."),
    size: int = typer.Option(256, "--size", min=64, help="Image side in pixels."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
) -> None:
    """Write a SYNTHETIC labelled dataset (artifacts on public-domain faces) for demos and tests.

    It is not evidence and not a benchmark: real GAN and diffusion faces look nothing like it.
    """
    from mfclip_cli.data.synth import write_synth_dataset

    with _errors_reported():
        summary = write_synth_dataset(Path(out), n, seed=seed, size=size, overwrite=force)
    Console().print_json(data=summary)


@app.command()
def bench(
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    config: str = typer.Option("vit-b-16", "--config", help="Model config (random weights)."),
    images: int = typer.Option(64, "--images", min=1, help="Generated JPEGs, one face each."),
    size: int = typer.Option(1024, "--size", min=64, help="Their side in pixels."),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, help="Faces per model and training batch."
    ),
    min_face: int = typer.Option(
        20,
        "--min-face",
        min=12,
        help="Smallest face in pixels, for the scan and the naive pipeline alike.",
    ),
    repeats: int = typer.Option(
        3,
        "--repeats",
        min=1,
        help="Interleaved timed rounds of the image stages; each reports its median.",
    ),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the figures to FILE."),
    force: bool = typer.Option(False, "--force", help="Overwrite --json FILE."),
) -> None:
    """Measure model, detection, scan and training rates beside the naive pipeline, in one run."""
    from mfclip_cli.engines.bench import BenchRequest, run_bench
    from mfclip_cli.files import refuse_existing, write_json_atomic

    with _errors_reported():
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


def _print_inspection(
    source: str, layout: Optional[str], label_map: Optional[str], *, include_videos: bool = False
) -> None:
    from mfclip_cli.data.inspect import inspect_dataset, render

    with _errors_reported():
        report = inspect_dataset(source, layout, label_map, include_videos=include_videos)
        typer.echo("\n".join(render(report)))


data_app = typer.Typer(help="Look at labelled datasets before preparing or training on them.")
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def data_inspect(
    source: str = typer.Argument(..., help="The folder as downloaded, or a manifest."),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="A layout of docs/datasets.md (default: detected)."
    ),
    label_map: Optional[str] = typer.Option(
        None, "--label-map", help="TOML file extending the generator -> class table."
    ),
    json_path: Optional[str] = typer.Option(None, "--json", help="Also write the report here."),
) -> None:
    """Print the layout found and the samples per split, label, forgery type and generator, the
    videos, and what is skipped and why. Reads folder names only: no image is decoded."""
    from mfclip_cli.data.inspect import inspect_dataset, render
    from mfclip_cli.files import write_json_atomic

    with _errors_reported():
        report = inspect_dataset(source, layout, label_map)
        if json_path:
            write_json_atomic(Path(json_path), report)
        typer.echo("\n".join(render(report)))


weights_app = typer.Typer(
    help="Registered checkpoints: the bundled demo and your own store ($MFCLIP_HOME/weights).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list() -> None:
    """Registered checkpoints, yours and the bundled ones, with their hash check."""
    from mfclip_cli.engines.weights import registry_status, user_store

    with _errors_reported():
        rows = registry_status()
    table = Table(
        title=f"registered weights (yours in {user_store()}; details: mfclip weights info NAME)"
    )
    for column in (
        "name",
        "source",
        "config",
        "demo",
        "default",
        "size",
        "sha256",
        "hash check",
        "test AUC",
    ):
        table.add_column(
            column,
            no_wrap=column in ("name", "sha256"),
            justify="right" if column in ("size", "test AUC") else "left",
        )
    for row in rows:
        auc = (row.get("metrics") or {}).get("test", {}).get("auc")
        size = "-" if row["size"] is None else f"{row['size'] / 1e6:.1f} MB"
        table.add_row(
            row["name"],
            row["source"],
            row.get("config", ""),
            "yes" if row.get("demo") else "no",
            "yes" if row.get("default") else "no",
            size,
            row.get("sha256", "")[:12],
            row["check"],
            "-" if auc is None else f"{auc:.4f}",
        )
    Console().print(table)


@weights_app.command("pull")
def weights_pull(
    source: str = typer.Argument(
        ..., help="An http(s):// URL or a local path of an mfclip .safetensors checkpoint."
    ),
    name: str = typer.Option(..., "--name", help="Registry name, usable as --weights NAME."),
    sha256: Optional[str] = typer.Option(
        None, "--sha256", help="The SHA-256 its publisher gives: registered only if it matches."
    ),
    trust: bool = typer.Option(
        False, "--trust", help="Register without --sha256 (its digest is still recorded)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a registered checkpoint of the same name."
    ),
) -> None:
    """Download (resumably) or copy a checkpoint into your store, verify it, and register it."""
    from mfclip_cli.engines.weights import pull_weights

    with _errors_reported() as error_console:
        entry = pull_weights(
            source, name, sha256=sha256, trust=trust, force=force, console=error_console
        )
    Console().print_json(data=entry)


@weights_app.command("import-clip")
def weights_import_clip(
    path: str = typer.Argument(
        ..., help="open_clip CLIP weights: a .safetensors file, or a cache folder holding one."
    ),
    architecture: str = typer.Option(
        ..., "--architecture", help="Its open_clip architecture, e.g. ViT-B-16."
    ),
    name: str = typer.Option(
        ..., "--name", help="Registry name, usable as train --clip-weights NAME."
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
    """Register CLIP weights you have on disk (OpenAI, LAION) for train --clip-weights NAME."""
    from mfclip_cli.engines.weights import import_clip

    with _errors_reported():
        entry = import_clip(path, name, architecture, quick_gelu=quick_gelu, force=force)
    Console().print_json(data=entry)


@weights_app.command("remove")
def weights_remove(
    name: str = typer.Argument(..., help="A name registered in your store."),
) -> None:
    """Unregister a checkpoint of your store and delete its file (bundled weights stay)."""
    from mfclip_cli.engines.weights import remove_weights

    with _errors_reported():
        entry = remove_weights(name)
    Console(stderr=True).print(f"removed {entry['name']} ({entry['sha256'][:12]})", highlight=False)


@weights_app.command("add")
def weights_add(
    checkpoint: str = typer.Argument(
        ..., help="An mfclip .safetensors checkpoint (e.g. RUN/best.safetensors)."
    ),
    name: str = typer.Option(..., "--name", help="Registry name, usable as --weights NAME."),
    eval_report: Optional[str] = typer.Option(
        None, "--eval", help="An `mfclip eval --json` report whose metrics are recorded with it."
    ),
    trained_on: str = typer.Option("", "--trained-on", help="What it was trained on, in words."),
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
    ),
) -> None:
    """Copy a checkpoint into your weights store and register it with its SHA-256."""
    from mfclip_cli.engines.weights import read_eval_metrics, register_weights

    with _errors_reported():
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


@weights_app.command("info")
def weights_info(
    target: str = typer.Argument(..., help="A registry name or a .safetensors checkpoint."),
) -> None:
    """A checkpoint's config, provenance and metrics, with its SHA-256 verified."""
    from mfclip_cli.engines.weights import weights_info as describe

    with _errors_reported():
        info = describe(target)
    Console().print_json(data=info)


def main() -> None:
    app()
