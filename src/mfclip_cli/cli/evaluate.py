"""`mfclip eval` and `mfclip calibrate`: a checkpoint scored on a protocol's splits."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mfclip_cli.cli.errors import errors_reported, exit_if_unreadable
from mfclip_cli.cli.options import (
    AllowTrainingOverlap,
    BatchSize,
    Device,
    Force,
    LabelMap,
    Layout,
    LoaderWorkers,
    Precision,
)


def evaluate(
    data: Optional[list[str]] = typer.Option(
        None,
        "--data",
        help="Labelled face dataset (same layouts as train; repeat it for several).",
        metavar="DIR",
    ),
    protocol: Optional[str] = typer.Option(
        None,
        "--protocol",
        help=(
            "Protocol name or TOML file; its test split is scored. Default: the checkpoint's "
            "training protocol on the data it was trained on, else in-domain."
        ),
        metavar="NAME|FILE",
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
        metavar="NAME|PATH",
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: BatchSize = 64,
    workers: LoaderWorkers = 0,
    threshold: float = typer.Option(
        0.5,
        "--fake-threshold",
        "--threshold",
        min=0.0,
        max=1.0,
        help="Fake-score threshold of acc, real_acc and fake_acc (as scan's --fake-threshold).",
        metavar="X",
    ),
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Write the metrics report to FILE.", metavar="FILE"
    ),
    predictions: Optional[str] = typer.Option(
        None,
        "--predictions",
        help="Write per-sample probabilities to FILE (CSV: path,label,real,diffusion,gan,...).",
        metavar="FILE",
    ),
    plots: Optional[str] = typer.Option(
        None,
        "--plots",
        help="Write ROC curves, reliability diagrams and AUC against perturbation (PNG) into DIR.",
        metavar="DIR",
    ),
    embeddings: Optional[str] = typer.Option(
        None,
        "--embeddings",
        help="Draw a t-SNE of the test face embeddings, by class and by generator, to FILE.png.",
        metavar="FILE.png",
    ),
    bootstrap: int = typer.Option(
        1000,
        "--bootstrap",
        min=0,
        help="Bootstrap replicates of the 95% intervals, at least 50 (0: none).",
        metavar="N",
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seed of the bootstrap, the t-SNE and the noise perturbation.",
        metavar="N",
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
    allow_one_class: bool = typer.Option(
        False,
        "--allow-one-class",
        help=(
            "Score a test split of one class (all fake: its TPR; all real: its FPR) instead of "
            "refusing it; AUC, AP and EER are then reported as undefined."
        ),
    ),
    allow_training_overlap: AllowTrainingOverlap = False,
    force: Force = False,
    list_protocols: bool = typer.Option(
        False, "--list-protocols", help="List the shipped protocols and exit."
    ),
) -> None:
    """Score a checkpoint on a protocol's test split.

    AUC, AP, EER, ACC, 3-way ACC, macro-F1,
    calibration (ECE, Brier, NLL), TPR at FPR 1 % / 0.1 % with thresholds chosen on val and,
    with --perturb, AUC, AP, ACC and ECE under JPEG, resizing, blur and noise. Several --weights
    are compared side by side (--predictions, --plots and --embeddings take one).

    Examples:

    \b
      mfclip eval --data faces/ --protocol cross-generator -w run/best.safetensors
      mfclip eval --data faces/ -w a.safetensors -w b.safetensors --json compare.json
      mfclip eval --data faces/diff --data faces/genimage --protocol cross-dataset-ordered \\
        -w run/best.safetensors
    """
    from mfclip_cli.errors import UsageError

    with errors_reported() as error_console:
        if list_protocols:
            from mfclip_cli.data import shipped_protocols

            table = Table(title="shipped protocols")
            table.add_column("name")
            table.add_column("what it tests")
            for name, description in shipped_protocols().items():
                table.add_row(name, escape(description))  # "[train]" is not markup
            Console().print(table)
            return
        if not data:
            raise UsageError("--data is required")
        from mfclip_cli.engines.evaluate.requests import EvalRequest

        chosen = weights or []
        request = EvalRequest(
            data=tuple(data),
            protocol=protocol,
            weights=chosen[0] if len(chosen) == 1 else None,
            layout=layout,
            label_map=label_map,
            allow_one_class=allow_one_class,
            allow_training_overlap=allow_training_overlap,
            device=device,
            precision=precision,
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
        request.check(chosen)  # before torch loads: a mistyped option in a moment
        from mfclip_cli.engines.evaluate.compare import compare
        from mfclip_cli.engines.evaluate.evaluation import evaluate as run_evaluation

        if len(chosen) > 1:
            report = compare(request, chosen, console=Console(), error_console=error_console)
        else:
            report = run_evaluation(request, console=Console(), error_console=error_console)
        left_out = report["protocol"].get("unreadable", {})
        exit_if_unreadable(
            sum(len(missing) for missing in left_out.values()),
            "they were left out of the scores (the report's protocol.unreadable lists them)",
            error_console,
        )


def calibrate(
    weights: str = typer.Option(
        ...,
        "--weights",
        "-w",
        help="Checkpoint to calibrate: registry name or .safetensors path.",
        metavar="NAME|PATH",
    ),
    data: list[str] = typer.Option(
        ...,
        "--data",
        help="Labelled face dataset (same layouts as train; repeat it for several).",
        metavar="DIR",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="The calibrated checkpoint to write (.safetensors).",
        metavar="FILE.safetensors",
    ),
    protocol: Optional[str] = typer.Option(
        None,
        "--protocol",
        help=(
            "Protocol name or TOML file; its val split is fitted on. Default: the checkpoint's "
            "training protocol on the data it was trained on, else in-domain."
        ),
        metavar="NAME|FILE",
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    device: Device = "auto",
    batch_size: BatchSize = 64,
    workers: LoaderWorkers = 0,
    allow_training_overlap: AllowTrainingOverlap = False,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out."),
    target_accuracy: float = typer.Option(
        0.95,
        "--target-accuracy",
        min=0.01,
        max=1.0,
        help=(
            "The inconclusive band: faces above the largest val uncertainty whose val faces at "
            "or below it are right this often are inconclusive (docs/verdicts.md)."
        ),
        metavar="P",
    ),
) -> None:
    """Fit calibration on val into a new checkpoint.

    Temperature scaling, the FPR 1 % / 0.1 % thresholds and the inconclusive band's uncertainty
    threshold, fitted on a protocol's val split, written into a new checkpoint (new SHA-256);
    the original is left as it is.

    Examples:

    \b
      mfclip calibrate -w run/best.safetensors --data faces/ -o calibrated.safetensors
    """
    with errors_reported() as error_console:
        from mfclip_cli.engines.evaluate.requests import CalibrateRequest
        from mfclip_cli.scoring.calibration import temperature_warning

        request = CalibrateRequest(
            weights=weights,
            data=tuple(data),
            out=out,
            protocol=protocol,
            layout=layout,
            label_map=label_map,
            device=device,
            batch_size=batch_size,
            workers=workers,
            force=force,
            target_accuracy=target_accuracy,
            allow_training_overlap=allow_training_overlap,
        )
        request.check()  # before torch loads
        from mfclip_cli.engines.evaluate.calibrate import calibrate as run_calibration
        from mfclip_cli.engines.evaluate.tables import calibration_lines

        result = run_calibration(request, error_console=error_console)
        if warning := temperature_warning(result["calibration"]):
            error_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
        typer.echo("\n".join(calibration_lines(result)))
        exit_if_unreadable(result["unreadable"], "they were left out of the fit", error_console)
