"""`mfclip train` and `mfclip ablate`: training runs."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from mfclip_cli.cli.errors import errors_reported, exit_if_unreadable
from mfclip_cli.cli.options import Device, Force, LabelMap, Layout, Overrides


def train(
    data: Optional[list[str]] = typer.Option(
        None,
        "--data",
        help=(
            "Labelled face dataset (a prepare output, or a layout of docs/datasets.md). Repeat "
            "it to train on several as one (cross-dataset-ordered: the first trains)."
        ),
        metavar="DIR",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Run folder: checkpoints, metrics.jsonl, train.json.",
        metavar="DIR",
    ),
    settings_file: Optional[str] = typer.Option(
        None,
        "--settings",
        help="TOML file with a [train] table; options given here override it.",
        metavar="FILE",
    ),
    protocol: Optional[str] = typer.Option(
        None,
        "--protocol",
        help="Protocol name or TOML file (default in-domain).",
        metavar="NAME|FILE",
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    config: Optional[str] = typer.Option(
        None,
        "--config",
        help="Model config name or JSON/TOML file (default vit-b-16).",
        metavar="NAME|FILE",
    ),
    clip_weights: Optional[str] = typer.Option(
        None,
        "--clip-weights",
        help="open_clip pretrained tag or local .safetensors file.",
        metavar="TAG|FILE",
    ),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Passes over the train split (default 5).", metavar="N"
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        help="Global batch (split across torchrun processes; default 32).",
        metavar="N",
    ),
    accumulate: Optional[int] = typer.Option(
        None, "--accumulate", help="Micro-batches per optimiser step (default 1).", metavar="N"
    ),
    lr: Optional[float] = typer.Option(
        None, "--lr", help="Peak learning rate of AdamW (default 2e-4).", metavar="RATE"
    ),
    lora_rank: Optional[int] = typer.Option(
        None, "--lora-rank", help="LoRA rank (default: the config's).", metavar="N"
    ),
    lora_alpha: Optional[float] = typer.Option(
        None, "--lora-alpha", help="LoRA alpha (default: the config's).", metavar="X"
    ),
    overrides: Overrides = None,
    balanced: Optional[bool] = typer.Option(
        None, "--balanced/--no-balanced", help="Class-balanced sampling."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed of every random choice (default 0).", metavar="N"
    ),
    val_every: Optional[int] = typer.Option(
        None,
        "--val-every",
        help="Optimiser steps between validations (default: each epoch).",
        metavar="STEPS",
    ),
    checkpoint_every: Optional[int] = typer.Option(
        None,
        "--checkpoint-every",
        help="Optimiser steps between last.* saves (default: at validation).",
        metavar="STEPS",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Data-loading processes (default 1).", metavar="N"
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="auto, cpu, cuda or cuda:N (under torchrun: each rank's own GPU).",
        metavar="DEVICE",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out exactly where it stopped (its saved settings are used).",
    ),
) -> None:
    """Train a detector (MFCLIP by default) on face crops.

    Writes best.safetensors by val AUC, last.* for --resume, metrics.jsonl per step.

    Launch with `torchrun --nproc-per-node N -m mfclip_cli train ...` for data-parallel training.

    Examples:

    \b
      mfclip train --data faces/ --protocol cross-generator --out run/
      mfclip train --data faces/diff --data faces/genimage --protocol cross-dataset-ordered \\
        --out run/
      torchrun --nproc-per-node 4 -m mfclip_cli train --data faces/ --out run/
    """
    from mfclip_cli.engines.train.settings import resolve_train_settings

    given = dict(
        data=tuple(data) if data else None,
        protocol=protocol,
        layout=layout,
        label_map=label_map,
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
    with errors_reported() as error_console:
        settings = resolve_train_settings(
            given, out=out, settings_file=settings_file, resume=resume
        )
        from mfclip_cli.engines.train.training import train as run_training  # torch: seconds

        result = run_training(settings, resume=resume, device=device, console=error_console)
        error_console.quiet = not result["main"]  # one summary, not one per process
        best = result["best"]
        if best:
            error_console.print(
                f"done: {result['step']} steps, {result['samples_seen']} samples; best val "
                f"{best['metric']} {best['value']:.4f} at step {best['step']} -> "
                f"{out}/best.safetensors",
                highlight=False,
                markup=False,
            )
        exit_if_unreadable(
            sum(map(len, result["unreadable"].values())),
            "each train sample's place was taken by another of its class, each val sample was "
            "left out (listed in metrics.jsonl)",
            error_console,
        )


def ablate(
    data: list[str] = typer.Option(
        ...,
        "--data",
        help="Labelled face dataset (as for train; repeat it for several).",
        metavar="DIR",
    ),
    config: str = typer.Option(
        "vit-b-16", "--config", help="Model config name or file.", metavar="NAME|FILE"
    ),
    protocol: str = typer.Option(
        "in-domain", "--protocol", help="Protocol name or TOML file.", metavar="NAME|FILE"
    ),
    layout: Layout = None,
    label_map: LabelMap = None,
    seeds: int = typer.Option(3, "--seeds", help="Runs per variant, seeds 0..N-1.", metavar="N"),
    variants: Optional[str] = typer.Option(
        None,
        "--variants",
        help="Comma-separated subset of the variants (default: all).",
        metavar="A,B,...",
    ),
    settings_file: Optional[str] = typer.Option(
        None,
        "--settings",
        help="TOML [train] table: the schedule every run shares.",
        metavar="FILE",
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per run.", metavar="N"),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Global batch size.", metavar="N"
    ),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate.", metavar="RATE"),
    overrides: Overrides = None,
    out: Optional[str] = typer.Option(
        None,
        "--out",
        "-o",
        help="Keep the runs here (reused and resumed on a rerun); default: none.",
        metavar="DIR",
    ),
    json_path: Optional[str] = typer.Option(
        None, "--json", help="Write the ablation report.", metavar="FILE"
    ),
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Train and test the model and each ablation variant.

    Variants: no SPA, no noise branch, one prompt level, sum fusion, frozen text, SRM on
    [0, 1], the authors' prompt wording; mean ± std over seeds, and each variant's difference
    to the full model.

    Examples:

    \b
      mfclip ablate --data faces/ --config tiny --seeds 3 --json ablation.json
    """
    from mfclip_cli.engines.train.settings import resolve_train_settings

    given = dict(
        data=tuple(data),
        config=config,
        protocol=protocol,
        layout=layout,
        label_map=label_map,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        overrides=tuple(overrides) if overrides else None,
    )
    with errors_reported() as error_console:
        training = resolve_train_settings(given, out="-", settings_file=settings_file)
        from mfclip_cli.engines.train.ablate import (
            VARIANTS,
            AblationRequest,
            run_ablation,
            unreadable_samples,
        )

        request = AblationRequest(
            training=training,
            seeds=seeds,
            variants=tuple(v.strip() for v in variants.split(",")) if variants else tuple(VARIANTS),
            out=out,
            json_path=json_path,
            device=device,
            force=force,
        )
        report = run_ablation(request, Console(), error_console)
        exit_if_unreadable(
            len(unreadable_samples(report)),
            "train samples were replaced by others of their class, val and test samples left "
            "out (each run's in the report's per_seed unreadable)",
            error_console,
        )
