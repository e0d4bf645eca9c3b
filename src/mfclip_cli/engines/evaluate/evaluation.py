"""The eval and calibrate engines: a checkpoint, a dataset and a protocol in.

Eval reports the field's metrics on the protocol's test split (model selection happened on val,
in training): overall, per test subset (the held-out generators, forgery types or datasets, each
with all test reals) and, where frames carry a video key, at video level. Probabilities are the
checkpoint's calibrated ones where it has a calibration; their ECE, Brier and NLL are reported
before and after it, and the TPR at FPR 1 % and 0.1 % with thresholds chosen on val (never on
test), with bootstrap confidence intervals. With perturbations (``--perturb``, or the protocol's
``perturb``), the test split is scored again under each and its AUC, AP, ACC and ECE reported
beside the clean ones. Several checkpoints are compared on the same test samples: each gets
that report, and every pair DeLong's test of its AUC difference. Calibrate fits that calibration
on val and writes a new checkpoint carrying it. Definitions: docs/calibration.md,
docs/robustness.md, docs/comparison.md.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mfclip_cli import __version__
from mfclip_cli.data import (
    DataIndex,
    Protocol,
    Sample,
    Splits,
    load_protocol,
    read_dataset,
    select,
)
from mfclip_cli.data.perturb import KINDS, Perturbation, combine, parse_perturbations
from mfclip_cli.engines.runtime import UsageError, resolve_device
from mfclip_cli.engines.weights.store import (
    ResolvedWeights,
    load_weights,
    refuse_incomparable,
    resolve_weights,
    weights_record,
)
from mfclip_cli.files import atomic_writer, refuse_existing, write_json_atomic
from mfclip_cli.model import CLASS_NAMES, CheckpointInfo, Detector
from mfclip_cli.model.checkpoint import save_fitted, sidecar_path
from mfclip_cli.scoring.calibration import (
    FPR_TARGETS,
    CalibrationError,
    calibration_problem,
    calibration_summary,
    fit_calibration,
    nll,
    softmax,
    temperature_of,
    threshold_key,
)
from mfclip_cli.scoring.inference import predict_outputs, score_samples
from mfclip_cli.scoring.metrics import (
    bootstrap_intervals,
    calibration_metrics,
    detection_metrics,
    json_safe,
    rates_at_threshold,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    tpr_at_fpr,
)
from mfclip_cli.scoring.ood import fit_ood, ood_problem
from mfclip_cli.scoring.plots import plot_embeddings, plot_reliability, plot_robustness, plot_roc
from mfclip_cli.scoring.significance import delong_test
from mfclip_cli.timestamps import utc_now

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
CALIBRATION_REPORTED = {
    "ece_fake": "ECE, P(fake)",
    "ece_top_label": "ECE, top label",
    "brier_fake": "Brier, P(fake)",
    "brier": "Brier, 3 classes",
    "nll": "NLL",
}
_REAL = CLASS_NAMES.index("real")


MIN_TSNE_FACES = 5  # t-SNE's perplexity must stay below the number of points


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
    embeddings_path: str | None = None  # a t-SNE of the test embeddings (PNG)
    force: bool = False
    bootstrap: int = 1000  # replicates of the confidence intervals; 0: none
    seed: int = 0  # of the bootstrap, the t-SNE and the noise perturbation
    perturb: Sequence[str] = ()  # "jpeg:90,75", ...: kinds named here replace the protocol's


@dataclass
class CalibrateRequest:
    weights: str
    data: str
    out: str
    protocol: str = "in-domain"
    layout: str | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    force: bool = False


@dataclass
class _Scoring:
    """A checkpoint and a protocol's splits of a dataset, ready to score."""

    device: torch.device
    protocol: Protocol
    index: DataIndex
    splits: Splits
    resolved: ResolvedWeights
    model: Detector
    info: CheckpointInfo
    demo: bool

    def logits(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        workers: int,
        perturbation: Perturbation | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        return self.outputs(samples, batch_size, workers, perturbation=perturbation, seed=seed)[0]

    def outputs(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        workers: int,
        embeddings: bool = False,
        perturbation: Perturbation | None = None,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return predict_outputs(
            self.model,
            self.index.root,
            samples,
            self.device,
            batch_size=batch_size,
            workers=workers,
            embeddings=embeddings,
            perturbation=perturbation,
            seed=seed,
        )


def _split_data(
    data: str, layout: str | None, protocol_name: str, device_name: str, required: tuple[str, ...]
) -> tuple[torch.device, Protocol, DataIndex, Splits]:
    """The device, and the protocol's splits of the dataset (cheapest checks first)."""
    device = resolve_device(device_name)
    protocol = load_protocol(protocol_name)
    index = read_dataset(Path(data), layout)
    return device, protocol, index, select(index, protocol, required=required)


def _checkpoint(
    weights: str | None, device: torch.device, error_console: Console
) -> tuple[ResolvedWeights, Detector, CheckpointInfo, bool]:
    """A checkpoint loaded for scoring; a demo checkpoint is said so."""
    resolved = resolve_weights(weights)
    model, info, demo = load_weights(resolved, device)
    if demo:
        error_console.print(
            "[bold yellow]warning:[/] using the bundled DEMO weights "
            "(trained on synthetic artifacts)."
        )
    return resolved, model.merge_adapters(), info, demo


def _scoring(
    data: str,
    layout: str | None,
    protocol_name: str,
    weights: str | None,
    device_name: str,
    required: tuple[str, ...],
    error_console: Console,
) -> _Scoring:
    """Data, protocol and checkpoint loaded, the data first (its checks are the cheapest)."""
    device, protocol, index, splits = _split_data(
        data, layout, protocol_name, device_name, required
    )
    return _Scoring(device, protocol, index, splits, *_checkpoint(weights, device, error_console))


def _refuse_existing(request: EvalRequest) -> None:
    """Check every output before the (long) scoring starts, not after it."""
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
    if request.bootstrap < 0:
        raise UsageError("--bootstrap takes a number of replicates, 0 for none")


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


def _fake(samples: Sequence[Sample]) -> np.ndarray:
    return np.array([sample.label != "real" for sample in samples], dtype=np.int64)


def _fake_score(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs[:, _REAL]


def _write_plots(
    folder: str,
    groups: dict[str, tuple[Sequence[Sample], np.ndarray]],
    reliability: dict[str, np.ndarray],
    force: bool,
) -> list[str]:
    """ROC curves of ``groups`` and reliability diagrams of the test split's probabilities
    ``{curve name: probs}`` (uncalibrated, calibrated)."""
    curves = {}
    for name, (samples, probs) in groups.items():
        fake = _fake(samples)
        if 0 < fake.sum() < len(fake):
            fpr, tpr, _ = roc_curve(fake, _fake_score(probs))
            curves[name] = (fpr, tpr, roc_auc(fake, _fake_score(probs)))
    written = []
    if curves:
        path = Path(folder) / "roc.png"
        plot_roc(curves, path, title="ROC, fake score = 1 - p(real)", overwrite=force)
        written.append(str(path))
    test = groups["overall"][0]
    if test:
        classes = np.array([CLASS_NAMES.index(sample.label) for sample in test])
        panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {
            "P(fake) = 1 - p(real)": {},
            "top label (3 classes)": {},
        }
        for name, probs in reliability.items():
            panels["P(fake) = 1 - p(real)"][name] = (_fake_score(probs), _fake(test))
            right = probs.argmax(axis=1) == classes
            panels["top label (3 classes)"][name] = (probs.max(axis=1), right)
        path = Path(folder) / "reliability.png"
        plot_reliability(panels, path, overwrite=force)
        written.append(str(path))
    return written


def _write_embeddings(
    path: str, samples: Sequence[Sample], embeddings: np.ndarray, seed: int, force: bool
) -> dict:
    """A seeded t-SNE (scikit-learn) of the test split's face embeddings, drawn twice: coloured
    by class and by generator (real faces as "real")."""
    from sklearn.manifold import TSNE  # only here: a second of import for a plot

    count = len(embeddings)
    perplexity = min(30.0, (count - 1) / 3)
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(embeddings.astype(np.float64))
    plot_embeddings(
        points,
        {
            "class": [sample.label for sample in samples],
            "generator": [sample.generator or sample.label for sample in samples],
        },
        path,
        title=f"t-SNE of {count} test face embeddings",
        overwrite=force,
    )
    return {"path": path, "method": "t-SNE", "perplexity": perplexity, "seed": seed, "faces": count}


def _probability_quality(labels: Sequence[str], logits: np.ndarray, temperature: float) -> dict:
    """ECE, Brier and NLL of softmax(logits / T) on a labelled set."""
    classes = np.array([CLASS_NAMES.index(label) for label in labels], dtype=np.int64)
    probs = softmax(logits, temperature)
    return {**calibration_metrics(labels, probs), "nll": nll(logits, classes, temperature)}


def _operating_points(
    val: Sequence[Sample],
    val_probs: np.ndarray,
    test: Sequence[Sample],
    test_probs: np.ndarray,
    *,
    replicates: int,
    seed: int,
) -> tuple[dict, dict | None]:
    """TPR at each target FPR with its threshold chosen on val and applied to test, and the
    bootstrap intervals (over videos where test frames have them) of AUC, EER and those rates."""
    problem = calibration_problem([sample.label for sample in val])
    val_fake, val_score = _fake(val), _fake_score(val_probs)
    test_fake, test_score = _fake(test), _fake_score(test_probs)
    thresholds = (
        [] if problem else [threshold_at_fpr(val_fake, val_score, fpr) for fpr in FPR_TARGETS]
    )
    by_video = any(sample.video for sample in test)
    intervals = None
    if replicates:
        intervals = bootstrap_intervals(
            test_fake,
            test_score,
            fprs=FPR_TARGETS,
            thresholds=thresholds,
            units=[sample.video or sample.path for sample in test] if by_video else None,
            replicates=replicates,
            seed=seed,
        )
        intervals["unit"] = "video" if by_video else "sample"
    points = {}
    for position, fpr in enumerate(FPR_TARGETS):
        point: dict = {
            "target_fpr": fpr,
            "threshold": None,
            "val": None,
            "test": None,
            "test_oracle_tpr": json_safe(tpr_at_fpr(test_fake, test_score, fpr)),
            "test_oracle_tpr_ci": intervals["tpr_at_fpr"][position] if intervals else None,
        }
        if thresholds:
            threshold = thresholds[position]
            at_val = rates_at_threshold(val_fake, val_score, threshold)
            at_test = rates_at_threshold(test_fake, test_score, threshold)
            at = intervals["at_threshold"][position] if intervals else {"fpr": None, "tpr": None}
            point.update(
                threshold=threshold,
                val={"fpr": at_val[0], "tpr": at_val[1]},
                test={
                    "fpr": json_safe(at_test[0]),
                    "tpr": json_safe(at_test[1]),
                    "fpr_ci": at["fpr"],
                    "tpr_ci": at["tpr"],
                },
            )
        points[threshold_key(fpr)] = point
    chosen_on = {
        "split": "val",
        "samples": len(val),
        "n_real": int(len(val) - val_fake.sum()),
        "n_fake": int(val_fake.sum()),
        "problem": problem,
    }
    if intervals:
        del intervals["tpr_at_fpr"], intervals["at_threshold"]  # shown with their points
    return {"chosen_on": chosen_on, "points": points}, intervals


def _robustness_row(samples: Sequence[Sample], probs: np.ndarray, threshold: float) -> dict:
    """AUC, AP and ACC by the very functions of the overall row, and the ECE of P(fake)."""
    labels = [sample.label for sample in samples]
    detection = detection_metrics(labels, probs, threshold=threshold)
    return {
        **{key: detection[key] for key in ("n", "auc", "ap", "acc")},
        "ece": calibration_metrics(labels, probs)["ece_fake"],
    }


def _robustness(
    scoring: _Scoring,
    request: EvalRequest,
    perturbations: Sequence[Perturbation],
    probs: np.ndarray,
    temperature: float,
) -> dict:
    """The clean test split's row (``probs``) and one per perturbation, each scored afresh and
    calibrated with the same temperature."""
    test = scoring.splits.test
    rows = [
        {
            "name": "clean",
            "perturbation": None,
            "severity": None,
            **_robustness_row(test, probs, request.threshold),
        }
    ]
    for perturbation in perturbations:
        logits = scoring.logits(
            test, request.batch_size, request.workers, perturbation, request.seed
        )
        rows.append(
            {
                "name": perturbation.name,
                "perturbation": perturbation.kind,
                "severity": perturbation.severity,
                **_robustness_row(test, softmax(logits, temperature), request.threshold),
            }
        )
    return {
        "definitions": "docs/robustness.md",
        "applied_to": "each test face image as stored, before it is resized to the model input",
        "seed": request.seed,
        "ece": "ece_fake: P(fake) = 1 - p(real), 15 bins",
        "rows": rows,
    }


def _write_robustness_plot(folder: str, robustness: dict, force: bool) -> str:
    """AUC against severity, a panel per perturbation kind, the clean AUC as reference."""
    clean, *rows = robustness["rows"]
    curves = {}
    for kind, spec in KINDS.items():
        mine = [row for row in rows if row["perturbation"] == kind]
        if mine:
            severities = [row["severity"] for row in mine]
            aucs = [row["auc"] for row in mine]
            curves[kind] = (severities, aucs, spec.axis, spec.milder_when_higher)
    path = Path(folder) / "robustness.png"
    plot_robustness(curves, clean["auc"], path, overwrite=force)
    return str(path)


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


def _shown(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _calibration_table(report: dict) -> Table:
    calibration = report["calibration"]
    shown = f"T = {calibration['temperature']:.3f}" if calibration["calibrated"] else "none"
    table = Table(title=f"probabilities on test (calibration: {shown})")
    table.add_column("metric")
    table.add_column("uncalibrated", justify="right")
    table.add_column("calibrated", justify="right")
    before, after = calibration["test"]["before"], calibration["test"]["after"] or {}
    for key, name in CALIBRATION_REPORTED.items():
        table.add_row(name, _shown(before.get(key)), _shown(after.get(key)))
    return table


def _operating_table(report: dict) -> Table:
    intervals = report["intervals"]
    level = f"{intervals['level']:.0%} CI by {intervals['unit']}" if intervals else "no CI"
    overall = report["overall"]
    auc = _shown(overall["auc"], intervals and intervals["auc"])
    eer = _shown(overall["eer"], intervals and intervals["eer"])
    table = Table(
        title=f"operating points, thresholds chosen on val ({level}); AUC {auc}, EER {eer}"
    )
    for column in ("target FPR", "threshold", "test FPR", "test TPR", "test's own TPR"):
        table.add_column(column, justify="right")
    for name, point in report["operating_points"]["points"].items():
        test = point["test"] or {}
        table.add_row(
            name,
            _shown(point["threshold"]),
            _shown(test.get("fpr"), test.get("fpr_ci")),
            _shown(test.get("tpr"), test.get("tpr_ci")),
            _shown(point["test_oracle_tpr"], point["test_oracle_tpr_ci"]),
        )
    return table


def _robustness_table(report: dict) -> Table:
    robustness = report["robustness"]
    table = Table(title=f"robustness on test (seed {robustness['seed']}; ECE of P(fake))")
    table.add_column("perturbation")
    table.add_column("severity", justify="right")
    for header in ("n", "AUC", "AP", "ACC", "ECE"):
        table.add_column(header, justify="right")
    for row in robustness["rows"]:
        severity = "-" if row["severity"] is None else row["name"].partition(":")[2]
        table.add_row(
            row["perturbation"] or "clean",
            severity,
            str(row["n"]),
            *(_shown(row[key]) for key in ("auc", "ap", "acc", "ece")),
        )
    return table


@dataclass
class _Scored:
    """One checkpoint's report on the test split and what its optional outputs are drawn from."""

    report: dict
    logits: np.ndarray  # test, uncalibrated
    probs: np.ndarray  # test, calibrated
    embeddings: np.ndarray | None
    groups: dict[str, tuple[Sequence[Sample], np.ndarray]]  # overall and each subset: ROC curves


def _score(
    scoring: _Scoring, request: EvalRequest, perturbations: Sequence[Perturbation]
) -> _Scored:
    """Score the protocol's test split (clean, then under each perturbation) and val (for the
    operating points) with one checkpoint: every figure of its report, nothing written."""
    splits, calibration = scoring.splits, scoring.info.calibration
    temperature = temperature_of(calibration)
    started = utc_now()
    logits, embeddings = scoring.outputs(
        splits.test, request.batch_size, request.workers, embeddings=bool(request.embeddings_path)
    )
    val_logits = scoring.logits(splits.val, request.batch_size, request.workers)
    probs = softmax(logits, temperature)
    position = {sample.path: i for i, sample in enumerate(splits.test)}
    subsets = splits.test_subsets()
    test_labels = [sample.label for sample in splits.test]
    operating_points, intervals = _operating_points(
        splits.val,
        softmax(val_logits, temperature),
        splits.test,
        probs,
        replicates=request.bootstrap,
        seed=request.seed,
    )
    report = {
        "type": "eval",
        "tool": "mfclip",
        "version": __version__,
        "started_utc": started,
        "device": str(scoring.device),
        "weights": weights_record(scoring.resolved, scoring.info, scoring.demo),
        "demo": scoring.demo,
        "data": _data_record(scoring.index),
        "protocol": _protocol_record(scoring.protocol, splits),
        "threshold": request.threshold,
        "calibration": {
            **calibration_summary(calibration),
            "test": {
                "before": _probability_quality(test_labels, logits, 1.0),
                "after": _probability_quality(test_labels, logits, temperature)
                if calibration
                else None,
            },
        },
        "overall": score_samples(splits.test, probs, request.threshold),
        "operating_points": operating_points,
        "intervals": intervals,
        "subsets": {},
    }
    groups = {"overall": (splits.test, probs)}
    for name, members in subsets.items():
        rows = probs[[position[sample.path] for sample in members]]
        report["subsets"][name] = score_samples(members, rows, request.threshold)
        groups[name] = (members, rows)
    if perturbations:
        report["robustness"] = _robustness(scoring, request, perturbations, probs, temperature)
    return _Scored(report, logits, probs, embeddings, groups)


def _data_record(index: DataIndex) -> dict:
    return {"root": str(index.root), "layout": index.layout, "samples": len(index.samples)}


def _protocol_record(protocol: Protocol, splits: Splits) -> dict:
    return {
        "name": protocol.name,
        "held_out": list(splits.held_out),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }


def evaluate(request: EvalRequest, console: Console, error_console: Console) -> dict:
    """Score the protocol's test split (clean, then under each perturbation) and write the
    requested outputs; return the report."""
    _refuse_existing(request)
    requested = parse_perturbations(request.perturb)  # before anything is loaded or scored
    scoring = _scoring(
        request.data,
        request.layout,
        request.protocol,
        request.weights,
        request.device,
        ("test",),
        error_console,
    )
    splits, calibration = scoring.splits, scoring.info.calibration
    perturbations = combine(scoring.protocol.perturb, requested)
    if request.embeddings_path and len(splits.test) < MIN_TSNE_FACES:
        raise UsageError(
            f"--embeddings needs at least {MIN_TSNE_FACES} test faces for a t-SNE, "
            f"the split has {len(splits.test)}"
        )
    scored = _score(scoring, request, perturbations)
    report = scored.report
    if request.predictions_path:
        _write_predictions(
            request.predictions_path,
            splits.test,
            scored.probs,
            scoring.model.classes,
            request.force,
        )
    if request.plots_dir:
        reliability = {"uncalibrated": softmax(scored.logits)}
        if calibration:
            temperature = temperature_of(calibration)
            reliability[f"calibrated (T = {temperature:.3g})"] = scored.probs
        report["plots"] = _write_plots(request.plots_dir, scored.groups, reliability, request.force)
        if perturbations:
            report["plots"].append(
                _write_robustness_plot(request.plots_dir, report["robustness"], request.force)
            )
    if request.embeddings_path:
        report["embeddings"] = _write_embeddings(
            request.embeddings_path, splits.test, scored.embeddings, request.seed, request.force
        )
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    console.print(_table(report))
    console.print(_calibration_table(report))
    console.print(_operating_table(report))
    if perturbations:
        console.print(_robustness_table(report))
    return report


ONE_CHECKPOINT_OPTIONS = {
    "predictions_path": "--predictions",
    "plots_dir": "--plots",
    "embeddings_path": "--embeddings",
}  # EvalRequest fields that write one checkpoint's files: refused when several are compared
COMPARED = ("n", "auc", "ap", "eer", "acc")  # each checkpoint's overall figures, side by side
PAIR_FIGURES = ("auc_a", "auc_b", "difference", "standard_error", "z", "p_value")
SHA_SHOWN = 8  # hex digits of a SHA-256 in the tables


def _pairs(
    fake: np.ndarray, scores: Sequence[np.ndarray], aucs: Sequence[float | None]
) -> list[dict]:
    """DeLong's test of AUC_a = AUC_b for every pair a < b of checkpoints scored on the same test
    faces, or why it cannot run (its variances need two faces of each class); an infinite z
    (zero standard error, different AUCs) is null in JSON."""
    n_fake, n_real = int(fake.sum()), int(len(fake) - fake.sum())
    problem = None
    if min(n_fake, n_real) < 2:
        problem = (
            "DeLong's test needs at least two fake and two real test faces, "
            f"the test split has {n_fake} fake and {n_real} real"
        )
    pairs = []
    for a, b in itertools.combinations(range(len(scores)), 2):
        if problem:
            defined = None not in (aucs[a], aucs[b])
            figures = {
                **dict.fromkeys(PAIR_FIGURES),
                "auc_a": aucs[a],
                "auc_b": aucs[b],
                "difference": aucs[a] - aucs[b] if defined else None,
            }
        else:
            test = delong_test(fake, scores[a], scores[b])
            figures = {key: test[key] for key in PAIR_FIGURES}
            if not math.isfinite(figures["z"]):
                figures["z"] = None
        pairs.append({"a": a, "b": b, **figures, "problem": problem})
    return pairs


def _compared(scoring: _Scoring, report: dict) -> dict:
    """One checkpoint's line of the comparison: who it is, its calibration, its figures (the
    TPRs at the val-chosen thresholds of its operating points)."""
    points = report["operating_points"]["points"]
    return {
        **report["weights"],
        "calibration": calibration_summary(scoring.info.calibration),
        "metrics": {
            **{key: report["overall"][key] for key in COMPARED},
            "tpr_at_fpr": {key: (point["test"] or {}).get("tpr") for key, point in points.items()},
        },
    }


def _comparison_table(report: dict) -> Table:
    comparison = report["comparison"]
    test = comparison["test"]
    table = Table(
        title=f"mfclip eval: {len(comparison['weights'])} checkpoints, protocol "
        f"{report['protocol']['name']}, the same {test['n']} test faces "
        f"({test['n_fake']} fake, {test['n_real']} real)"
    )
    table.add_column("weights", overflow="fold", min_width=7)
    table.add_column("config", overflow="fold", min_width=11)
    table.add_column("SHA-256", no_wrap=True)
    for key in COMPARED:
        table.add_column(REPORTED[key], justify="right", no_wrap=True)
    for fpr in FPR_TARGETS:
        table.add_column(f"TPR at\nFPR\n{fpr * 100:g}%", justify="right", no_wrap=True)
    for position, weights in enumerate(comparison["weights"]):
        metrics = weights["metrics"]
        table.add_row(
            f"#{position} {weights['name']}" + (" (DEMO)" if weights["demo"] else ""),
            weights["config"],
            weights["sha256"][:SHA_SHOWN],
            str(metrics["n"]),
            *(_shown(metrics[key]) for key in COMPARED[1:]),
            *(_shown(metrics["tpr_at_fpr"][threshold_key(fpr)]) for fpr in FPR_TARGETS),
        )
    return table


def _pairs_table(report: dict) -> Table:
    """Every pair's test; why none ran (the test faces are the same for every pair) below it."""
    weights, pairs = report["comparison"]["weights"], report["comparison"]["pairs"]
    table = Table(
        title="AUC differences, DeLong's test (two-sided)",
        caption=pairs[0]["problem"],
    )
    table.add_column("a")
    table.add_column("b")
    for column in ("AUC a", "AUC b", "a - b", "SE", "z", "p"):
        table.add_column(column, justify="right")
    for pair in pairs:
        p_value = pair["p_value"]
        table.add_row(
            f"#{pair['a']} {weights[pair['a']]['name']}",
            f"#{pair['b']} {weights[pair['b']]['name']}",
            *(_shown(pair[key]) for key in ("auc_a", "auc_b", "difference", "standard_error")),
            "-" if pair["z"] is None else f"{pair['z']:.2f}",
            "-" if p_value is None else f"{p_value:.3g}",
        )
    return table


def _robustness_comparison_table(report: dict) -> Table:
    """AUC under each perturbation, a column per checkpoint."""
    reports = report["comparison"]["reports"]
    seed = reports[0]["robustness"]["seed"]
    table = Table(title=f"AUC under perturbation (test, seed {seed})")
    table.add_column("perturbation")
    for position, single in enumerate(reports):
        table.add_column(f"#{position} {single['weights']['name']}", justify="right")
    for rows in zip(*(single["robustness"]["rows"] for single in reports)):
        table.add_row(rows[0]["name"], *(_shown(row["auc"]) for row in rows))
    return table


def compare(
    request: EvalRequest, weights: Sequence[str], console: Console, error_console: Console
) -> dict:
    """Evaluate several checkpoints on the same test samples: each one's full eval report (the
    code of ``evaluate``), their figures side by side and DeLong's test of every pair's AUC
    difference. ``weights`` names the checkpoints (``request.weights`` is not read); every
    check, and the loading of every checkpoint, comes before any scoring."""
    if len(weights) < 2:
        raise ValueError("compare takes two or more checkpoints; evaluate takes one")
    for field, option in ONE_CHECKPOINT_OPTIONS.items():
        if getattr(request, field):
            raise UsageError(
                f"{option} writes one checkpoint's file: with several --weights, run eval "
                "once per checkpoint for it"
            )
    _refuse_existing(request)
    requested = parse_perturbations(request.perturb)
    device, protocol, index, splits = _split_data(
        request.data, request.layout, request.protocol, request.device, ("test",)
    )
    scorings = [
        _Scoring(device, protocol, index, splits, *_checkpoint(name, device, error_console))
        for name in weights
    ]
    refuse_incomparable(weights, scorings)
    perturbations = combine(protocol.perturb, requested)
    started = utc_now()
    scored = [_score(scoring, request, perturbations) for scoring in scorings]
    fake = _fake(splits.test)
    scores = [_fake_score(one.probs) for one in scored]
    aucs = [one.report["overall"]["auc"] for one in scored]
    report = {
        "type": "eval-comparison",
        "tool": "mfclip",
        "version": __version__,
        "started_utc": started,
        "device": str(device),
        "data": _data_record(index),
        "protocol": _protocol_record(protocol, splits),
        "threshold": request.threshold,
        "comparison": {
            "definitions": "docs/comparison.md",
            "score": "fake score 1 - p(real), with each checkpoint's calibrated probabilities",
            "test": {
                "n": len(fake),
                "n_real": int(len(fake) - fake.sum()),
                "n_fake": int(fake.sum()),
            },
            "weights": [_compared(scoring, one.report) for scoring, one in zip(scorings, scored)],
            "pairs": _pairs(fake, scores, aucs),
            "reports": [one.report for one in scored],
        },
    }
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    console.print(_comparison_table(report))
    console.print(_pairs_table(report))
    if perturbations:
        console.print(_robustness_comparison_table(report))
    return report


def calibrate(request: CalibrateRequest, error_console: Console) -> dict:
    """Fit the calibration of an existing checkpoint on a protocol's val split and write it into a
    new checkpoint (new SHA-256) at ``request.out``; the source is never changed."""
    out = Path(request.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, not {out}")
    for target in (out, sidecar_path(out)):
        refuse_existing(target, request.force)
    scoring = _scoring(
        request.data,
        request.layout,
        request.protocol,
        request.weights,
        request.device,
        ("val",),
        error_console,
    )
    if out.resolve() == scoring.resolved.path.resolve():
        raise UsageError(f"--out {out} is the checkpoint being calibrated; name a new file")
    labels = [sample.label for sample in scoring.splits.val]
    problem = calibration_problem(labels)
    if problem:  # before the scoring, which can take long
        raise CalibrationError(problem)
    val = scoring.splits.val
    logits, val_embeddings = scoring.outputs(val, request.batch_size, request.workers, True)
    source = scoring.info
    fitted_on = {
        "data": str(scoring.index.root),
        "layout": scoring.index.layout,
        "protocol": scoring.protocol.name,
    }
    record = fit_calibration(logits, labels, fitted_on=fitted_on)
    record["source_sha256"] = source.sha256
    record["base_sha256"] = (source.calibration or {}).get("base_sha256", source.sha256)
    train = scoring.splits.train
    statistics = None
    ood_refusal = ood_problem([sample.label for sample in train], len(val))
    if ood_refusal:
        kept = " (the source's are kept)" if source.ood else ""
        error_console.print(
            f"[bold yellow]warning:[/] no out-of-distribution statistics fitted: "
            f"{ood_refusal}{kept}"
        )
    else:
        _, train_embeddings = scoring.outputs(train, request.batch_size, request.workers, True)
        statistics = fit_ood(
            train_embeddings,
            [sample.label for sample in train],
            val_embeddings,
            fitted_on=fitted_on,
        )
    written = save_fitted(
        source,
        out,
        calibration=record,
        ood_record=statistics.record if statistics else None,
        ood_tensors=statistics.tensors() if statistics else None,
        overwrite=request.force,
    )
    return {
        "weights": str(written.path),
        "sha256": written.sha256,
        "source": weights_record(scoring.resolved, source, scoring.demo),
        "calibration": record,
        "ood": written.ood,
    }
