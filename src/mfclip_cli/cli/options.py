"""Options that several commands share, defined once: the same name, metavar and help
everywhere. Each is an ``Annotated`` type; a command gives its default in its signature."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N (auto: the first GPU if there is one).",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="fp32|int8|auto",
        help=(
            "fp32, int8 (CPU only: the faster int8 model), or auto: int8 on a CPU where the "
            "checkpoint's recorded validation parity allows it (mfclip calibrate measures it), "
            "else fp32; bf16 autocast on a GPU; scan --explain runs fp32. See docs/performance.md."
        ),
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, metavar="N", help="Faces per model batch.")
]
LoaderWorkers = Annotated[
    int, typer.Option("--workers", min=0, metavar="N", help="Data-loading processes.")
]
Layout = Annotated[
    Optional[str],
    typer.Option(
        "--layout",
        metavar="NAME",
        help="A dataset layout of docs/datasets.md (default: detected).",
    ),
]
LabelMap = Annotated[
    Optional[str],
    typer.Option(
        "--label-map", metavar="FILE", help="TOML file extending the generator -> class table."
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
AllowTrainingOverlap = Annotated[
    bool,
    typer.Option(
        "--allow-training-overlap",
        help=(
            "Score samples the checkpoint was trained on (or, for eval, selected with; for "
            "calibrate, tested on), or files holding the bytes of files it trained on or was "
            "selected with, instead of refusing; said on stderr, and recorded (eval's report: "
            "protocol.training_overlap, protocol.trained_copies)."
        ),
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
MinFace = Annotated[
    int, typer.Option("--min-face", min=1, metavar="PX", help="Smallest face searched for.")
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help=(
            "Set a model config field, e.g. lora.text=true, loss.spa.enabled=false, "
            "noise.enabled=false, prompts.levels=2 (repeatable; recorded in the checkpoint)."
        ),
    ),
]
