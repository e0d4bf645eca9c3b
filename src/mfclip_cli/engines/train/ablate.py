"""The ablate engine: the full MFCLIP and one variant per part switched off, trained and tested
alike.

Every run is the same training (data, protocol split, schedule) with model-config overrides
(``train --set``) naming the variant, repeated over the same seeds; each best checkpoint (by
validation AUC, as ``train`` picks it) is scored on the protocol's test split. The table gives the
mean and standard deviation over seeds and the difference to the full model, so a claim about any
part rests on the same runs as the others. Runs live in ``OUT/<variant>/seed-<k>``; a rerun with
the same ``--out`` reuses finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mfclip_cli.data import data_record, load_protocol, read_datasets, select
from mfclip_cli.data.contents import content_digests, copies_among
from mfclip_cli.data.identity import index_digest
from mfclip_cli.engines.inference import (
    FaceSource,
    predict_outputs,
    score_samples,
    unreadable_warning,
)
from mfclip_cli.engines.runtime import resolve_device
from mfclip_cli.engines.train.settings import TrainSettings, learning_differences, run_settings
from mfclip_cli.engines.train.training import split_change, train
from mfclip_cli.errors import UsageError
from mfclip_cli.files import refuse_existing, write_json_atomic
from mfclip_cli.model import load_checkpoint, read_checkpoint_info
from mfclip_cli.model.checkpoint import DIGESTED_SPLITS
from mfclip_cli.model.config import MFCLIP_DETECTOR, load_model_config
from mfclip_cli.model.losses import spa_relevance
from mfclip_cli.schemas import report_header
from mfclip_cli.scoring.calibration import softmax, temperature_of
from mfclip_cli.scoring.metrics import json_safe
from mfclip_cli.timestamps import utc_now

# the model as the paper draws it, on top of the named config: a trained language encoder
FULL_MODEL = ("lora.text=true",)
# each variant changes one part of the full model
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "no-spa": ("loss.spa.enabled=false",),
    "spa-soft-negatives": ("loss.spa.false_negatives=embeddings",),
    "spa-hardness-all": ("loss.spa.hardness_among=negatives",),
    "no-noise": ("noise.enabled=false",),
    "one-level": ("prompts.levels=1",),
    "sum-fusion": ("fusion=sum",),
    "frozen-text": ("lora.text=false",),
    "srm-unit-range": ("noise.pixel_range=1.0",),
    "authors-prompts": ("prompts.set=authors",),
}
METRICS = ("auc", "ap", "eer", "acc3")
# on the test fakes of trained generators; None where a run's checkpoint cannot attribute
RESULT_FILE = "ablation-run.json"
RETIRED_RUN_FIELDS = ("attribution_top1", "attribution_top3")  # not reported since 2.0.0


@dataclass(frozen=True)
class AblationRequest:
    """``training`` is the template run: its ``out``, ``seed`` and variant overrides are set per
    run."""

    training: TrainSettings
    seeds: int = 3
    variants: tuple[str, ...] = tuple(VARIANTS)
    out: str | None = None
    json_path: str | None = None
    device: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise UsageError(
                f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
            )
        if "full" not in self.variants:
            raise UsageError("the variants must include 'full': every difference is taken to it")
        twice = sorted({name for name in self.variants if self.variants.count(name) > 1})
        if twice:  # one run counted as two seeds would narrow its spread (audit T3)
            raise UsageError(f"variant(s) named more than once: {', '.join(twice)}")
        fixed = {assignment.partition("=")[0] for assignment in FULL_MODEL}
        overridden = [o for o in self.training.overrides if o.partition("=")[0].strip() in fixed]
        if overridden:  # the full model's own setting would win over it without a word (T7)
            raise UsageError(
                f"--set {', '.join(overridden)}: ablate's full model sets "
                f"{', '.join(FULL_MODEL)} (the model as the paper draws it), and each variant "
                "changes one part of it; the frozen-text variant is the model with "
                "lora.text=false"
            )
        if self.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        detector = load_model_config(self.training.config).detector
        if detector != MFCLIP_DETECTOR:
            raise UsageError(
                f"ablate takes MFCLIP's components away one at a time (SPA, the noise branch, "
                f"the prompt levels, ...); config {self.training.config} is the {detector} "
                "detector, which has none of them: compare detectors with eval --weights A "
                "--weights B (docs/detectors.md)"
            )

    def overrides(self, variant: str) -> tuple[str, ...]:
        return (*self.training.overrides, *FULL_MODEL, *VARIANTS[variant])


def _differences(then: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The leaves (dotted keys) where two config dicts differ; a key one lacks is ``None``
    there."""
    if isinstance(then, dict) and isinstance(now, dict):
        keys = sorted(set(then) | set(now))
        return [
            difference
            for key in keys
            for difference in _differences(then.get(key), now.get(key), f"{prefix}{key}.")
        ]
    return [] if then == now else [(prefix.rstrip("."), then, now)]


def _summary(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation; nan where a value is missing, and the deviation of
    one seed, which no run measured (audit E F4: "± 0.000" read as no spread between seeds)."""
    array = np.asarray([math.nan if value is None else value for value in values], np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


class _Runner:
    """Trains (or resumes, or reuses) one run and scores its best checkpoint on the test split."""

    def __init__(self, request: AblationRequest, console: Console):
        self.request, self.console = request, console
        settings = request.training
        self.device = resolve_device(request.device)
        self.index = read_datasets(settings.data, settings.layout, label_map=settings.label_map)
        self.splits = select(self.index, load_protocol(settings.protocol))
        if not self.splits.test:
            raise UsageError(f"protocol {settings.protocol} leaves no test samples in this data")
        # test files holding the bytes of train or val files, which every run scores as eval
        # would refuse to (audit AO F2): said and recorded, one check for all the runs
        contents = {
            split: content_digests(self.index, getattr(self.splits, split))
            for split in ("test", *DIGESTED_SPLITS)
        }
        self.test_copies = copies_among(
            contents["test"], {split: contents[split].known() for split in DIGESTED_SPLITS}
        )
        if self.test_copies.samples:
            console.print(
                f"[bold yellow]warning:[/] {escape(self.test_copies.said('test', 'every run'))}: "
                "every variant's figures rest partly on pictures it trained on; leave them out "
                "of the data (the report --json writes names each: protocol.trained_copies.files)",
                highlight=False,
            )

    def _refuse_other_data(self, run: Path) -> None:
        """A finished run is reused only on the data and splits it was trained and tested on: its
        checkpoint records the sample list's digest (files added, removed or relabelled since
        change it, as ``train --resume`` refuses them) and its protocol whole (a protocol file
        edited since splits them otherwise: audit T2 found such runs averaged with new ones)."""
        trained = read_checkpoint_info(run / "best.safetensors").metadata.get("training") or {}
        recorded = trained.get("data") or {}
        if recorded.get("index_sha256") not in (None, index_digest(self.index)):
            raise UsageError(
                f"{run} was trained and tested on other data ({recorded.get('samples')} samples "
                f"then, {len(self.index.samples)} now: files added, removed or relabelled "
                "since); its figures are not this data's: use another --out"
            )
        if change := split_change(trained.get("protocol") or {}, self.index, self.splits):
            raise UsageError(
                f"{run} was trained and tested on other splits: {change} (the protocol file "
                "was edited since); its figures are not this protocol's: use another --out"
            )

    def _refuse_other_model(self, run: Path, settings: TrainSettings) -> None:
        """A run is reused or resumed only where its checkpoint's model is the one its variant
        names now: the same config name and overrides can build another model after a default
        changed (audit Q2: a `full` trained with SPA's hardness over all negatives was reused
        as today's, and spa-hardness-all compared with the very method it differs from)."""
        recorded = next(
            (
                read_checkpoint_info(run / name).config.to_dict()
                for name in ("last.safetensors", "best.safetensors")
                if (run / name).is_file()
            ),
            None,
        )
        if recorded is None:  # stopped before its first save: it starts afresh
            return
        wanted = settings.model_config().to_dict()
        changed = [
            f"{key} {then!r} there, {now!r} now"
            for key, then, now in _differences(recorded, wanted)
            if not key.startswith("clip.")  # its weights file: compared as a setting above
        ]
        if changed:
            raise UsageError(
                f"{run} holds a model other than the one this variant builds now "
                f"({'; '.join(changed)}): a default changed since it was trained; use another "
                "--out"
            )

    def __call__(self, folder: Path, variant: str, seed: int) -> dict[str, Any]:
        run = folder / variant / f"seed-{seed}"
        overrides = list(self.request.overrides(variant))
        settings = replace(
            self.request.training, out=str(run), seed=seed, overrides=tuple(overrides)
        )
        saved = run_settings(run)
        if saved is not None and (differences := learning_differences(saved, settings)):
            # reused, its figures would be reported under settings they were not trained with
            raise UsageError(
                f"{run} holds a run with other settings ({'; '.join(differences)}); "
                "use another --out"
            )
        if saved is not None:
            self._refuse_other_model(run, settings)
        done = run / RESULT_FILE
        finished = saved is not None and done.is_file()
        state = " (reused: finished before)" if finished else " (resumed)" if saved else ""
        self.console.print(f"ablate: {variant}, seed {seed}{state}", highlight=False, markup=False)
        if finished:
            self._refuse_other_data(run)
            result = json.loads(done.read_text(encoding="utf-8"))
            # a run finished before report 2.0.0 also has its text-prompt attribution
            result = {k: v for k, v in result.items() if k not in RETIRED_RUN_FIELDS}
            if "temperature" not in result:  # scored at T = 1 before 2.12.0: scored again
                result.update(self._test_metrics(run / "best.safetensors"))
                result = _with_unreadable(result, result.get("unreadable"))
                write_json_atomic(done, result, overwrite=True)
            return result
        resume = saved is not None
        started = time.perf_counter()
        trained = train(
            saved if saved is not None else settings,  # a resume goes on as the run began
            resume=resume,
            device=self.request.device,
            console=self.console,
        )
        seconds = time.perf_counter() - started
        result = {
            "variant": variant,
            "seed": seed,
            "overrides": overrides,
            "train_seconds": round(seconds, 1),
            **({"resumed": True} if resume else {}),
            **self._test_metrics(run / "best.safetensors"),
            "spa_relevance": self._spa_relevance(run / "best.safetensors"),
        }
        result = _with_unreadable(result, trained["unreadable"])
        write_json_atomic(done, result, overwrite=True)
        return result

    def _test_metrics(self, checkpoint: Path) -> dict[str, Any]:
        """The checkpoint's figures on the test split, with the probabilities eval and scan give
        it (its calibration's temperature: at T = 1 an ablation row and eval of its checkpoint
        disagreed, audit E F5), its SHA-256 and that temperature."""
        model, info = load_checkpoint(checkpoint, self.device, inference=True)
        outputs = predict_outputs(model, FaceSource(self.index.root, self.device), self.splits.test)
        for missing in outputs.unreadable:
            self.console.print(unreadable_warning("test", missing, "left out"), highlight=False)
        temperature = temperature_of(info.calibration)
        metrics = score_samples(outputs.samples, softmax(outputs.logits, temperature))
        return {
            "checkpoint_sha256": info.sha256,
            "temperature": temperature,
            **{name: metrics[name] for name in METRICS},
            "test_unreadable": sorted(missing.path for missing in outputs.unreadable),
        }

    def _spa_relevance(self, checkpoint: Path) -> dict[str, Any] | None:
        """What SPA made of the training split's label sets under this run's trained prompts
        (None where the variant has no SPA)."""
        model, info = load_checkpoint(checkpoint, self.device)  # with its language encoder
        if not info.config.loss.spa.enabled:
            return None
        label_sets = [sample.label_set for sample in self.splits.train]
        return spa_relevance(model.language, label_sets, info.config.loss.spa)


def _with_unreadable(result: dict[str, Any], training: dict[str, list[str]] | None) -> dict:
    """A run's result with ``unreadable``: the samples of each split it could not read (train
    and val while training, test when scored), where there were any."""
    test = result.pop("test_unreadable", [])
    unreadable = {key: value for key, value in (training or {}).items() if key != "test"}
    if test:
        unreadable["test"] = test
    return {**result, **({"unreadable": unreadable} if unreadable else {})}


def unreadable_samples(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The (split, path) of every sample some run of the ablation could not read."""
    return sorted(
        {
            (split, path)
            for entry in report["variants"].values()
            for run in entry["per_seed"]
            for split, paths in (run.get("unreadable") or {}).items()
            for path in paths
        }
    )


@contextlib.contextmanager
def _runs_folder(out: str | None) -> Iterator[Path]:
    if out:
        yield Path(out)
    else:  # nothing to keep: the runs go to a temporary folder
        with tempfile.TemporaryDirectory(prefix="mfclip-ablate-") as folder:
            yield Path(folder)


def distinct_variants(request: AblationRequest, progress: Console) -> tuple[str, ...]:
    """The requested variants that change the model built from the run's config. A variant whose
    override the config already holds (``srm-unit-range`` on ``vit-b-16``, whose noise branch
    reads [0, 1] pixels) would only retrain the full model under another name; it is left out,
    with a line that says so."""

    def config_of(variant: str) -> dict[str, Any]:
        settings = replace(request.training, overrides=request.overrides(variant))
        return settings.model_config().to_dict()

    full = config_of("full")
    kept = []
    for name in request.variants:
        if name != "full" and config_of(name) == full:
            progress.print(
                f"ablate: {name} left out: on config {request.training.config} it is the full "
                f"model ({', '.join(VARIANTS[name])} changes nothing)",
                highlight=False,
                markup=False,
            )
        else:
            kept.append(name)
    return tuple(kept)


def run_ablation(request: AblationRequest, console: Console, progress: Console) -> dict[str, Any]:
    """Train and test every variant over every seed; print the table, write the JSON, return
    it."""
    if request.json_path:
        refuse_existing(request.json_path, request.force)
    if request.training.seed != 0:  # only a --settings file sets it: ablate has no --seed
        progress.print(
            f"ablate: the settings' seed = {request.training.seed} is not used: the runs of "
            f"each variant are seeded 0..{request.seeds - 1} (--seeds)",
            highlight=False,
            markup=False,
        )
    request = replace(request, variants=distinct_variants(request, progress))
    runner = _Runner(request, progress)
    started = utc_now()
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in request.variants}
    with _runs_folder(request.out) as folder:
        for seed in range(request.seeds):
            for variant in request.variants:
                per_seed[variant].append(runner(folder, variant, seed))
    variants: dict[str, Any] = {}
    for name in request.variants:
        stats = {metric: _summary([r[metric] for r in per_seed[name]]) for metric in METRICS}
        variants[name] = {
            "overrides": list(request.overrides(name)),
            "mean": {metric: mean for metric, (mean, _) in stats.items()},
            "std": {metric: std for metric, (_, std) in stats.items()},
            "per_seed": per_seed[name],
            "spa_relevance": _mean_relevance([r.get("spa_relevance") for r in per_seed[name]]),
        }
    for entry in variants.values():
        entry["delta"] = {
            metric: entry["mean"][metric] - variants["full"]["mean"][metric] for metric in METRICS
        }
    for entry in variants.values():  # a figure no run could give (nan) is null in JSON
        for key in ("mean", "std", "delta"):
            entry[key] = {metric: json_safe(value) for metric, value in entry[key].items()}
    settings = request.training
    report = {
        **report_header("ablation"),
        "started_utc": started,
        "finished_utc": utc_now(),
        "device": str(runner.device),
        "torch_threads": torch.get_num_threads(),
        "data": data_record(runner.index),
        "protocol": {
            "name": settings.protocol,
            "sizes": {name: len(getattr(runner.splits, name)) for name in ("train", "val", "test")},
            "trained_copies": runner.test_copies.record(),
        },
        "config": settings.config,
        "seeds": request.seeds,
        "training": {
            key: value
            for key, value in vars(settings).items()
            if key not in ("data", "out", "seed", "overrides")
        },
        "full_model": list(FULL_MODEL),
        "variants": variants,
    }
    console.print(ablation_table(report))  # first: a JSON that cannot be written loses no table
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    return report


def _mean_relevance(runs: list[dict[str, Any] | None]) -> dict[str, float] | None:
    """Each relation's mean SPA relevance, averaged over the seeds that report one."""
    reported = [run["by_relation"] for run in runs if run]
    if not reported:
        return None
    relations = sorted({relation for run in reported for relation in run})
    return {
        relation: float(np.mean([run[relation]["mean"] for run in reported if relation in run]))
        for relation in relations
    }


def _cell(mean: float | None, std: float | None, delta: float | None) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
    return text if delta is None else f"{text} ({delta:+.3f})"


def ablation_table(report: dict[str, Any]) -> Table:
    """Mean ± std over the seeds, and (for variants) the difference to the full model."""
    table = Table(
        title=(
            f"mfclip ablate: config {report['config']}, protocol {report['protocol']['name']}, "
            f"{report['seeds']} seed(s), test split"
        )
    )
    table.add_column("variant")
    for label in ("AUC", "AP", "EER", "3-way ACC"):
        table.add_column(label, justify="right")
    table.add_column("SPA relevance of negatives\nother generator / type / class", justify="right")
    for name, entry in report["variants"].items():
        relevance = entry.get("spa_relevance") or {}
        table.add_row(
            name,
            *(
                _cell(
                    entry["mean"][metric],
                    entry["std"][metric],
                    None if name == "full" else entry["delta"][metric],
                )
                for metric in METRICS
            ),
            " / ".join(
                f"{relevance[key]:.2f}" if key in relevance else "-"
                for key in ("generator", "forgery_type", "class")
            )
            if relevance
            else "no SPA",
        )
    return table
