"""What eval and calibrate are asked to do, checked without torch: the command line refuses a
mistyped option or an existing output in a moment, before the engines load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mfclip_cli.data.combine import check_data
from mfclip_cli.data.perturb import Perturbation, parse_perturbations
from mfclip_cli.errors import UsageError
from mfclip_cli.files import refuse_existing, sidecar_path
from mfclip_cli.scoring.inconclusive import TARGET_ACCURACY


@dataclass(frozen=True)
class DataChoice:
    """Which data a job reads and how: one ``--data`` or several, the layout, the label map,
    whether a test split of one class is allowed (a TPR-only report, eval's --allow-one-class)
    and whether samples the checkpoint met in training may be scored (``held_out.py``)."""

    data: str | tuple[str, ...]
    layout: str | None = None
    label_map: str | None = None
    allow_one_class: bool = False
    allow_training_overlap: bool = False


# EvalRequest fields that write one checkpoint's files: refused when several are compared
# the fewest bootstrap replicates whose 2.5th and 97.5th percentiles are not the extreme ones
# (audit E F8: with 1, "AUC 0.400 [0.459, 0.459]")
MIN_BOOTSTRAP = 50
ONE_CHECKPOINT_OPTIONS = {
    "predictions_path": "--predictions",
    "plots_dir": "--plots",
    "embeddings_path": "--embeddings",
}


@dataclass
class EvalRequest:
    data: str | tuple[str, ...]  # one --data, or several read as one (data/combine.py)
    protocol: str | None  # None: the checkpoint's own on the data it trained on, else in-domain
    weights: str | None = None
    layout: str | None = None
    label_map: str | None = None
    allow_one_class: bool = False  # a one-class test split: a TPR-only report, AUC undefined
    # score test samples the checkpoint trained or was selected with (the report says how many)
    allow_training_overlap: bool = False
    device: str = "auto"
    precision: str = "auto"  # fp32, int8 or auto (scoring/precision.py)
    batch_size: int = 64
    workers: int = 0
    threshold: float = 0.5
    json_path: str | None = None
    predictions_path: str | None = None
    plots_dir: str | None = None
    embeddings_path: str | None = None  # a t-SNE of the test embeddings (PNG)
    force: bool = False
    bootstrap: int = 1000  # replicates of the confidence intervals; 0: none
    seed: int = 0  # of the bootstrap, the t-SNE and the noise perturbation
    perturb: Sequence[str] = ()  # "jpeg:90,75", ...: kinds named here replace the protocol's

    def data_choice(self) -> DataChoice:
        return DataChoice(
            self.data,
            self.layout,
            self.label_map,
            self.allow_one_class,
            self.allow_training_overlap,
        )

    def check(self, compared: Sequence[str] | None = None) -> list[Perturbation]:
        """Every output and option checked before anything is loaded or scored (and, from the
        command line, before torch is imported), for the checkpoints ``compared`` (by default
        ``weights``); the perturbations ``perturb`` names."""
        checkpoints = [self.weights] if compared is None else list(compared)
        if len(checkpoints) > 1:
            for name, option in ONE_CHECKPOINT_OPTIONS.items():
                if getattr(self, name):
                    raise UsageError(
                        f"{option} writes one checkpoint's file: with several --weights, run "
                        "eval once per checkpoint for it"
                    )
        _refuse_existing_outputs(self)
        _refuse_writing_over(self, [name for name in checkpoints if name])
        perturbations = parse_perturbations(self.perturb)
        check_data(self.data, self.label_map)
        return perturbations


def _refuse_writing_over(request: EvalRequest, checkpoints: Sequence[str]) -> None:
    """An output named as a scored checkpoint or its sidecar is refused, ``--force`` or not:
    ``--json run/best.json --force`` replaced the record of the checkpoint's training and
    calibration with the eval report (audit AI F7)."""
    theirs = {
        path.resolve(): f"{name}'s {'sidecar' if path.suffix == '.json' else 'weights'}"
        for name in checkpoints
        if Path(name).suffix == ".safetensors"
        for path in (Path(name), sidecar_path(name))
    }
    outputs = (request.json_path, request.predictions_path, request.embeddings_path)
    for target in outputs:
        if target and (whose := theirs.get(Path(target).resolve())):
            raise UsageError(f"{target} is {whose}: write the report elsewhere")


def _refuse_existing_outputs(request: EvalRequest) -> None:
    if request.embeddings_path and not request.embeddings_path.lower().endswith(".png"):
        raise UsageError(
            f"--embeddings writes a PNG: name it FILE.png, not {request.embeddings_path}"
        )
    for target in (request.json_path, request.predictions_path, request.embeddings_path):
        if target:
            refuse_existing(target, request.force)
    if (
        request.plots_dir
        and Path(request.plots_dir).is_dir()
        and any(Path(request.plots_dir).iterdir())
    ):
        if not request.force:
            raise UsageError(f"{request.plots_dir} is not empty (pass --force to write into it)")
    if request.bootstrap < 0 or 0 < request.bootstrap < MIN_BOOTSTRAP:
        raise UsageError(
            f"--bootstrap takes a number of replicates, at least {MIN_BOOTSTRAP} (fewer give "
            "no 95 % interval: its ends would be the extreme replicates), or 0 for none"
        )


@dataclass
class CalibrateRequest:
    weights: str
    data: str | tuple[str, ...]  # one --data, or several read as one (data/combine.py)
    out: str
    protocol: str | None = None  # None: the checkpoint's own on its data, else in-domain
    allow_training_overlap: bool = False  # fit on val samples the checkpoint trained on
    layout: str | None = None
    label_map: str | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    force: bool = False
    target_accuracy: float = TARGET_ACCURACY  # of the inconclusive band's threshold

    def check(self) -> None:
        """The new checkpoint's name checked before the checkpoint and the data are read."""
        if Path(self.out).suffix != ".safetensors":
            raise UsageError(f"--out must name a .safetensors file, not {self.out}")
        for target in (self.out, sidecar_path(self.out)):
            refuse_existing(target, self.force)
        check_data(self.data, self.label_map)
