"""The eval engine: a checkpoint, a dataset and a protocol in; the field's metrics out.

Only the protocol's test split is scored (model selection happened on val, in training). Metrics
are reported overall, per test subset (the held-out generators, forgery types or datasets, each
with all test reals) and, where frames carry a video key, at video level.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mfclip_cli import __version__
from mfclip_cli.data import Sample, Splits, load_protocol, read_dataset, select
from mfclip_cli.data.faceset import FaceImages, collate_faces
from mfclip_cli.engines.metrics import (
    detection_metrics,
    plot_roc,
    roc_auc,
    roc_curve,
    video_metrics,
)
from mfclip_cli.engines.runtime import UsageError, resolve_device, utc_now
from mfclip_cli.engines.weights import load_weights, resolve_weights, weights_record
from mfclip_cli.files import atomic_writer, refuse_existing, write_json_atomic
from mfclip_cli.model import MFCLIP

REPORTED = {
    "n": "n",
    "auc": "AUC",
    "ap": "AP",
    "eer": "EER",
    "acc": "ACC",
    "real_acc": "real\nACC",
    "fake_acc": "fake\nACC",
    "acc3": "3-way\nACC",
}  # the table; the JSON has every metric


@torch.no_grad()
def predict(
    model: MFCLIP,
    root: Path,
    samples: Sequence[Sample],
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
) -> np.ndarray:
    """Class probabilities [N, 3] of dataset samples; bf16 autocast on CUDA, fp32 on CPU."""
    model.eval()
    images = FaceImages(root, [sample.path for sample in samples], model.crop_size)
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_faces,
        pin_memory=device.type == "cuda",
    )
    results = []
    for faces, _ in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(faces.to(device, non_blocking=True))
        results.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(results).numpy() if results else np.zeros((0, len(model.classes)))


def score_samples(samples: Sequence[Sample], probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Detection metrics of one set of samples, plus video-level ones when frames have video
    keys."""
    labels = [sample.label for sample in samples]
    result = detection_metrics(labels, probs, threshold=threshold)
    result["video"] = video_metrics([sample.video for sample in samples], labels, probs, threshold)
    return result


@dataclass
class EvalRequest:
    data: str
    protocol: str
    weights: str | None = None
    layout: str | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    threshold: float = 0.5
    json_path: str | None = None
    predictions_path: str | None = None
    plots_dir: str | None = None
    force: bool = False


def _refuse_existing(request: EvalRequest) -> None:
    """Check every output before the (long) scoring starts, not after it."""
    for target in (request.json_path, request.predictions_path):
        if target:
            refuse_existing(target, request.force)
    if (
        request.plots_dir
        and Path(request.plots_dir).is_dir()
        and any(Path(request.plots_dir).iterdir())
    ):
        if not request.force:
            raise UsageError(f"{request.plots_dir} is not empty (pass --force to write into it)")


def _write_predictions(
    path: str, samples: Sequence[Sample], probs: np.ndarray, classes: Sequence[str], force: bool
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", *classes, "forgery_type", "generator", "dataset", "video"])
    for sample, row in zip(samples, probs):
        writer.writerow(
            [
                sample.path,
                sample.label,
                *(f"{value:.8f}" for value in row),
                sample.forgery_type,
                sample.generator,
                sample.dataset,
                sample.video or "",
            ]
        )
    with atomic_writer(path, overwrite=force) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def _write_plots(
    folder: str, groups: dict[str, tuple[Sequence[Sample], np.ndarray]], force: bool
) -> list[str]:
    curves = {}
    for name, (samples, probs) in groups.items():
        fake = np.array([sample.label != "real" for sample in samples], dtype=int)
        if 0 < fake.sum() < len(fake):
            fpr, tpr, _ = roc_curve(fake, 1.0 - probs[:, 0])
            curves[name] = (fpr, tpr, roc_auc(fake, 1.0 - probs[:, 0]))
    written = []
    if curves:
        path = Path(folder) / "roc.png"
        plot_roc(curves, path, title="ROC, fake score = 1 - p(real)", overwrite=force)
        written.append(str(path))
    return written


def _table(report: dict) -> Table:
    table = Table(title=f"mfclip eval: protocol {report['protocol']['name']}, test split")
    table.add_column("subset", overflow="fold", min_width=12)
    for header in REPORTED.values():
        table.add_column(header, justify="right", no_wrap=True)
    rows = [("overall", report["overall"]), *report["subsets"].items()]
    if report["overall"].get("video"):
        rows.append(("overall (video)", report["overall"]["video"]))
    for name, values in rows:
        table.add_row(
            name,
            *(
                "-"
                if values.get(k) is None
                else (str(values[k]) if k == "n" else f"{values[k]:.3f}")
                for k in REPORTED
            ),
        )
    return table


def evaluate(request: EvalRequest, console: Console, error_console: Console) -> dict:
    """Score the protocol's test split and write the requested outputs; return the report."""
    _refuse_existing(request)
    device = resolve_device(request.device)
    protocol = load_protocol(request.protocol)
    index = read_dataset(Path(request.data), request.layout)
    splits: Splits = select(index, protocol, required=("test",))
    resolved = resolve_weights(request.weights)
    model, info, demo = load_weights(resolved, device)
    if demo:
        error_console.print(
            "[bold yellow]warning:[/] evaluating the bundled DEMO weights "
            "(trained on synthetic artifacts)."
        )
    started = utc_now()
    probs = predict(
        model.merge_adapters(),
        index.root,
        splits.test,
        device,
        batch_size=request.batch_size,
        workers=request.workers,
    )
    position = {sample.path: i for i, sample in enumerate(splits.test)}
    subsets = splits.test_subsets()
    report = {
        "type": "eval",
        "tool": "mfclip",
        "version": __version__,
        "started_utc": started,
        "device": str(device),
        "weights": weights_record(resolved, info, demo),
        "demo": demo,
        "data": {"root": str(index.root), "layout": index.layout, "samples": len(index.samples)},
        "protocol": {
            "name": protocol.name,
            "held_out": list(splits.held_out),
            "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        },
        "threshold": request.threshold,
        "overall": score_samples(splits.test, probs, request.threshold),
        "subsets": {},
    }
    groups = {"overall": (splits.test, probs)}
    for name, members in subsets.items():
        rows = probs[[position[sample.path] for sample in members]]
        report["subsets"][name] = score_samples(members, rows, request.threshold)
        groups[name] = (members, rows)
    if request.predictions_path:
        _write_predictions(
            request.predictions_path, splits.test, probs, model.classes, request.force
        )
    if request.plots_dir:
        report["plots"] = _write_plots(request.plots_dir, groups, request.force)
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    console.print(_table(report))
    return report
