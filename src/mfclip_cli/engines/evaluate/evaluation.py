"""The eval job: a checkpoint in, the field's metrics on a protocol's test split out.

Eval reports the field's metrics on the protocol's test split (model selection happened on val,
in training): overall, per test subset (the held-out generators, forgery types or datasets, each
with all test reals) and, where frames carry a video key, at video level. Probabilities are the
checkpoint's calibrated ones where it has a calibration; their ECE, Brier and NLL are reported
before and after it, and the TPR at FPR 1 % and 0.1 % with thresholds chosen on val (never on
test), with bootstrap confidence intervals. With perturbations (``--perturb``, or the protocol's
``perturb``), the test split is scored again under each and its AUC, AP, ACC and ECE reported
beside the clean ones. Where the checkpoint stores generator fingerprints, the test fakes are
attributed to its trained generators of their true family (``scoring/attribution.py``,
docs/attribution.md): top-1 and top-3 accuracy on seen generators, how well "unknown" separates
unseen ones, a confusion matrix.
Several checkpoints side by side: ``compare.py``; the files written beside the report:
``outputs.py``; the tables: ``tables.py``; calibrate: ``calibrate.py``. Definitions:
docs/calibration.md, docs/robustness.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape

from mfclip_cli.data import (
    Protocol,
    Sample,
    Splits,
)
from mfclip_cli.data.combine import data_record
from mfclip_cli.data.perturb import Perturbation, combine
from mfclip_cli.data.protocols import one_class_problem
from mfclip_cli.engines.evaluate.loading import Scoring, load_scoring
from mfclip_cli.engines.evaluate.outputs import (
    Scored,
    write_embeddings,
    write_inconclusive_plot,
    write_plots,
    write_predictions,
    write_robustness_plot,
)
from mfclip_cli.engines.evaluate.requests import EvalRequest
from mfclip_cli.engines.evaluate.tables import (
    attribution_table,
    calibration_table,
    inconclusive_table,
    metrics_table,
    operating_table,
    robustness_table,
)
from mfclip_cli.engines.inference import Outputs, require_all_read, score_samples
from mfclip_cli.engines.weights.store import (
    weights_record,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.files import readable, write_json_atomic
from mfclip_cli.labels import CLASS_NAMES
from mfclip_cli.schemas import report_header
from mfclip_cli.scoring.attribution import (
    Attributions,
    Attributor,
    attribution_metrics,
    attributor_of,
    seen_figures,
    unavailable_reason,
)
from mfclip_cli.scoring.calibration import (
    FPR_TARGETS,
    calibration_problem,
    calibration_summary,
    nll,
    softmax,
    temperature_of,
    threshold_key,
)
from mfclip_cli.scoring.fpr_bounds import exact_interval, fpr_support
from mfclip_cli.scoring.inconclusive import (
    INCONCLUSIVE,
    band_report,
    inconclusive_mask,
    stored_band,
)
from mfclip_cli.scoring.metrics import (
    bootstrap_intervals,
    calibration_metrics,
    detection_metrics,
    fake_labels,
    fake_scores,
    json_safe,
    rates_at_threshold,
    roc_auc,
    subset_mean,
    threshold_at_fpr,
    tpr_at_fpr,
)
from mfclip_cli.scoring.ood import OodStatistics, ood_of
from mfclip_cli.scoring.plots import (
    plot_confusion,
)
from mfclip_cli.timestamps import utc_now

MIN_TSNE_FACES = 5  # t-SNE's perplexity must stay below the number of points
UNDEFINED_WITH_ONE_CLASS = ("auc", "ap", "eer")  # each needs real and fake faces


def _probability_quality(labels: Sequence[str], logits: np.ndarray, temperature: float) -> dict:
    """ECE, Brier and NLL of softmax(logits / T) on a labelled set, and the AUC of its fake score:
    with three classes the temperature reorders faces by 1 - p(real), so a calibration moves
    the ranking figures too (audit N H2: the demo's test AUC 0.600 at T = 1, 0.722 at T = 22),
    and the report shows by how much."""
    classes = np.array([CLASS_NAMES.index(label) for label in labels], dtype=np.int64)
    probs = softmax(logits, temperature)
    fake = np.array([label != "real" for label in labels], dtype=np.int64)
    return {
        **calibration_metrics(labels, probs),
        "nll": nll(logits, classes, temperature),
        "auc": json_safe(roc_auc(fake, fake_scores(probs))),
    }


def _oracle_problem(fpr: float, test_reals: int) -> str | None:
    """Why the test's own TPR at FPR <= ``fpr`` is not given: below ``1 / fpr`` reals the
    smallest FPR the test can show is above it, and the figure would be the TPR at FPR 0 (the
    fakes above the highest real), far above the TPR at ``fpr``, its bootstrap interval
    covering the truth 5-24 % of the time (audit E F1); below ``2 / fpr`` it can show one
    false positive at most, and the interval still covered it 79 % of the time (audit Q4;
    95 % from 2 / fpr on). None where it can be given."""
    needed = math.ceil(2 / fpr - 1e-9)
    if test_reals >= needed:
        return None
    return (
        f"the test split has {test_reals} real faces; an FPR of {fpr:g} needs at least "
        f"{needed} to be seen"
    )


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
    val_fake, val_score = fake_labels(val), fake_scores(val_probs)
    test_fake, test_score = fake_labels(test), fake_scores(test_probs)
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
    test_reals = int(len(test_fake) - test_fake.sum())
    for position, fpr in enumerate(FPR_TARGETS):
        oracle_problem = _oracle_problem(fpr, test_reals)
        point: dict = {
            "target_fpr": fpr,
            "threshold": None,
            "val": None,
            "test": None,
            "test_oracle_tpr": None
            if oracle_problem
            else json_safe(tpr_at_fpr(test_fake, test_score, fpr)),
            "test_oracle_tpr_ci": intervals["tpr_at_fpr"][position]
            if intervals and not oracle_problem
            else None,
            "test_oracle_problem": oracle_problem,
        }
        if thresholds:
            threshold = thresholds[position]
            at_val = rates_at_threshold(val_fake, val_score, threshold)
            val_reals = val_score[val_fake == 0]
            support = fpr_support(fpr, len(val_reals), int((val_reals >= threshold).sum()))
            at_test = rates_at_threshold(test_fake, test_score, threshold)
            at = intervals["at_threshold"][position] if intervals else {"fpr": None, "tpr": None}
            if intervals:  # no narrower than the exact binomial interval of the test faces
                called = test_score >= threshold
                at = {
                    rate: _hull(
                        at[rate], exact_interval(int((called & chosen).sum()), chosen.sum())
                    )
                    for rate, chosen in (("fpr", test_fake == 0), ("tpr", test_fake == 1))
                }
            point.update(
                threshold=threshold,
                val={"fpr": at_val[0], "tpr": at_val[1], **support},
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


def saturation_warning(probs: np.ndarray, calibration: dict | None) -> str | None:
    """Where test faces' fake scores 1 - p(real) reach exactly 0 or 1 (p(real) beyond what a
    float64 beside 1 can hold, as at a temperature on its lower bound), they tie, and the
    figures that rank faces (AUC, AP, EER, TPR at low FPR) lose their order: said, not hidden."""
    scores, real = fake_scores(probs), CLASS_NAMES.index("real")
    others = np.delete(probs, real, axis=1).sum(axis=1)
    saturated = int(((scores == 1.0) & (probs[:, real] > 0)).sum())  # p(real) lost beside 1
    saturated += int(((scores == 0.0) & (others > 0)).sum())  # p(fake) lost beside 1
    if saturated < 2:
        return None
    why = ""
    if (calibration or {}).get("at_bound") and calibration["temperature"] < 1:
        why = (
            f" (the calibration temperature T = {calibration['temperature']:.3g} sits at its "
            "lower bound: calibrate on a larger val split)"
        )
    return (
        f"{saturated} of {len(probs)} test faces have a fake score 1 - p(real) rounded to exactly "
        "0 or 1 (a float64 beside 1 cannot hold it): they tie, and AUC, AP, EER and the low-FPR "
        f"figures cannot order them{why}"
    )


def _hull(bootstrap: list[float] | None, exact: list[float] | None) -> list[float] | None:
    """The narrowest interval holding both (either may be None: undefined)."""
    if bootstrap is None or exact is None:
        return bootstrap or exact
    return [min(bootstrap[0], exact[0]), max(bootstrap[1], exact[1])]


def _robustness_row(samples: Sequence[Sample], probs: np.ndarray, threshold: float) -> dict:
    """AUC, AP and ACC by the very functions of the overall row, and the ECE of P(fake)."""
    labels = [sample.label for sample in samples]
    detection = detection_metrics(labels, probs, threshold=threshold)
    return {
        **{key: detection[key] for key in ("n", "auc", "ap", "acc")},
        "ece": calibration_metrics(labels, probs)["ece_fake"],
    }


ROBUSTNESS_ATTRIBUTION = (
    "closed-set top-1, the share attributed (not unknown) and the share attributed and right, "
    "over the test fakes of trained generators, under the row's perturbation"
)


def _attribution_row(
    attributor: Attributor | None, statistics: OodStatistics | None, test: Sequence[Sample],
    outputs: Outputs,
) -> dict:  # fmt: skip
    """A robustness row's attribution figures: eval's ``seen`` block under the row's
    perturbation (nothing where the checkpoint does not attribute)."""
    if attributor is None:
        return {}
    figures = seen_figures(attributor, test, _attribute(statistics, attributor, test, outputs))
    return {
        "attribution_top1": figures["top1"],
        "attribution_attributed": figures["attributed"],
        "attribution_open_set_top1": figures["open_set_top1"],
    }


def _robustness(
    scoring: Scoring,
    request: EvalRequest,
    perturbations: Sequence[Perturbation],
    clean: Outputs,
    temperature: float,
    attributor: Attributor | None,
) -> dict:
    """The clean test split's row (``clean``: its outputs) and one per perturbation, each scored
    afresh and calibrated with the same temperature; where the checkpoint attributes, each row's
    attribution figures as well (the faces out of distribution unknown, as in a scan)."""
    test = scoring.splits.test
    statistics = ood_of(scoring.checkpoint.info)
    rows = [
        {
            "name": "clean",
            "perturbation": None,
            "severity": None,
            **_robustness_row(test, softmax(clean.logits, temperature), request.threshold),
            **_attribution_row(attributor, statistics, test, clean),
        }
    ]
    for perturbation in perturbations:
        perturbed = scoring.outputs(
            test,
            request.batch_size,
            request.workers,
            embeddings=attributor is not None and statistics is not None,
            fingerprints=attributor is not None,
            perturbation=perturbation,
            seed=request.seed,
        )
        require_all_read(perturbed, scoring.index.root)
        rows.append(
            {
                "name": perturbation.name,
                "perturbation": perturbation.kind,
                "severity": perturbation.severity,
                **_robustness_row(test, softmax(perturbed.logits, temperature), request.threshold),
                **_attribution_row(attributor, statistics, test, perturbed),
            }
        )
    return {
        "definitions": "docs/robustness.md",
        "applied_to": "each test face image as stored, before it is resized to the model input",
        "seed": request.seed,
        "ece": "ece_fake: P(fake) = 1 - p(real), 15 bins",
        **({"attribution": ROBUSTNESS_ATTRIBUTION} if attributor is not None else {}),
        "rows": rows,
    }


def score_checkpoint(
    scoring: Scoring, request: EvalRequest, perturbations: Sequence[Perturbation]
) -> Scored:
    """Score the protocol's test split (clean, then under each perturbation) and val (for the
    operating points) with one checkpoint: every figure of its report, nothing written."""
    calibration = scoring.calibration
    temperature = temperature_of(calibration)
    attributor = attributor_of(scoring.checkpoint.info)
    started = utc_now()
    statistics = ood_of(scoring.checkpoint.info)
    test_outputs = scoring.split_outputs(
        "test",
        request.batch_size,
        request.workers,
        # one pass for all: the OOD flags read the test embeddings, attribution the fingerprints
        embeddings=bool(request.embeddings_path) or statistics is not None,
        fingerprints=attributor is not None,
    )
    val_outputs = scoring.split_outputs(
        "val",
        request.batch_size,
        request.workers,
        embeddings=attributor is not None and statistics is not None,
        fingerprints=attributor is not None,
    )
    splits = scoring.splits  # without the samples that could not be read
    logits, embeddings = test_outputs.logits, test_outputs.embeddings
    val_logits = val_outputs.logits
    ood = None if statistics is None else statistics.flags(statistics.distances(embeddings))
    probs = softmax(logits, temperature)
    if warning := saturation_warning(probs, calibration):
        scoring.error_console.print(
            f"[bold yellow]warning:[/] {escape(scoring.checkpoint.resolved.name)}: {warning}",
            highlight=False,
        )
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
    # the val faces it chose them on that it trained on (refused unless allowed; audit E F2)
    met = scoring.thresholds_overlap
    operating_points["chosen_on"]["training_overlap"] = met.record() if met else None
    copied = scoring.thresholds_copies
    operating_points["chosen_on"]["trained_copies"] = copied.record() if copied else None
    report = {
        **report_header("eval"),
        "started_utc": started,
        "device": str(scoring.device),
        "precision": scoring.precision.record(),
        "weights": weights_record(scoring.checkpoint),
        "demo": scoring.checkpoint.demo,
        "data": data_record(scoring.index),
        "protocol": {
            **protocol_record(scoring.protocol, splits),
            "training_overlap": overlap.record() if (overlap := scoring.training_overlap) else None,
            "changed_data_overlap": changed.record() if (changed := scoring.changed_data) else None,
            "calibration_overlap": (
                calibrated.record() if (calibrated := scoring.calibration_overlap) else None
            ),
            "calibration_data_changed": scoring.calibration_data_changed,
            "held_out_trained": (
                trained.record() if (trained := scoring.held_out_trained) else None
            ),
            "trained_copies": copies.record() if (copies := scoring.trained_copies) else None,
        },
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
        INCONCLUSIVE: {
            "definitions": "docs/verdicts.md",
            "band": (calibration or {}).get(INCONCLUSIVE),
            **band_report(test_labels, probs, stored_band(calibration), ood, request.threshold),
        },
        "subsets": {},
    }
    single = one_class_problem(splits.test)
    if single:
        report["undefined"] = undefined_metrics(single, splits.test[0].is_real)
    groups = {"overall": (splits.test, probs)}
    for name, members in subsets.items():
        rows = probs[[position[sample.path] for sample in members]]
        report["subsets"][name] = score_samples(members, rows, request.threshold)
        groups[name] = (members, rows)
    if len(report["subsets"]) > 1:
        report["subset_mean"] = subset_mean(list(report["subsets"].values()))
    if not single and (one_class := _one_class_rows(subsets)):
        scoring.error_console.print(one_class, highlight=False, markup=False)
    if perturbations:
        report["robustness"] = _robustness(
            scoring, request, perturbations, test_outputs, temperature, attributor
        )
    attributions = None
    if attributor is None:
        report["attribution"] = {
            "available": False,
            "reason": unavailable_reason(scoring.checkpoint.info),
        }
    else:
        attributions = (
            _attribute(statistics, attributor, splits.test, test_outputs),
            _attribute(statistics, attributor, splits.val, val_outputs),
        )
        report["attribution"] = attribution_metrics(
            attributor, splits.test, attributions[0], splits.val, attributions[1]
        )
    return Scored(
        report,
        logits,
        probs,
        embeddings,
        groups,
        inconclusive_mask(probs, stored_band(calibration), ood, request.threshold),
        attributions=attributions[0] if attributions else None,
        ood=ood,
    )


def _attribute(
    statistics: OodStatistics | None,
    attributor: Attributor,
    samples: Sequence[Sample],
    outputs: Outputs,
) -> Attributions:
    """The attributions of ``samples`` from their fingerprints (``outputs``), each among the
    generators of its true family ("given it is a GAN, which GAN": not the 3-way head's call,
    which the detection figures measure), each face out of distribution marked unknown as in a
    scan."""
    flags = None
    if statistics is not None and outputs.embeddings is not None:
        flags = statistics.flags(statistics.distances(outputs.embeddings)).tolist()
    assert outputs.fingerprints is not None  # asked for where there is an attributor
    return attributor.attribute(outputs.fingerprints, [s.label for s in samples], flags)


def undefined_metrics(problem: str, all_real: bool) -> dict:
    """What a report of a one-class test split (eval --allow-one-class) says it cannot give."""
    return {
        "metrics": list(UNDEFINED_WITH_ONE_CLASS),
        "why": f"the test split has {problem}",
        "defined": "real_acc: 1 - FPR at the threshold"
        if all_real
        else "fake_acc: TPR at the threshold",
    }


def _one_class_rows(subsets: dict[str, list[Sample]]) -> str | None:
    """The warning for report rows of one class (``one_class_problem``: a generator whose
    paired reals the download lacks): their AUC, AP and EER are undefined, and so are the
    mean's, which showed "-" without a word (audit AJ J4)."""
    rows = {
        name: problem.partition(" (")[0]  # "no real faces", without the counts
        for name, members in subsets.items()
        if (problem := one_class_problem(members))
    }
    if not rows:
        return None
    said = ", ".join(f"{name} ({problem})" for name, problem in rows.items())
    return (
        f"warning: {len(rows)} report row(s) hold one class: {said}; their AUC, AP and EER are "
        "undefined, and so are the mean over rows' (the protocol pairs a row with the reals it "
        "names, or the test reals of its own value: the data may lack them)"
    )


def protocol_record(protocol: Protocol, splits: Splits) -> dict:
    """The protocol, by name and whole (a file's name says nothing of its seed or filters, and a
    shipped protocol's selection can change between versions), the sizes of its splits as
    scored, and the samples left out of them because they could not be read."""
    record: dict[str, Any] = {
        "name": protocol.name,
        "definition": protocol.to_dict(),
        "held_out": list(splits.held_out),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }
    if splits.unreadable:
        record["unreadable"] = {
            split: [{"path": readable(m.path), "error": readable(m.error)} for m in missing]
            for split, missing in splits.unreadable.items()
        }
    return record


def evaluate(request: EvalRequest, console: Console, error_console: Console) -> dict:
    """Score the protocol's test split (clean, then under each perturbation) and write the
    requested outputs; return the report."""
    requested = request.check()  # before anything is loaded or scored
    scoring = load_scoring(
        request.data_choice(),
        request.protocol,
        request.weights,
        request.device,
        "test",
        error_console,
        request.precision,
    )
    splits, calibration = scoring.splits, scoring.calibration
    perturbations = combine(scoring.protocol.perturb, requested)
    if request.embeddings_path and len(splits.test) < MIN_TSNE_FACES:
        raise UsageError(
            f"--embeddings needs at least {MIN_TSNE_FACES} test faces for a t-SNE, "
            f"the split has {len(splits.test)}"
        )
    scored = score_checkpoint(scoring, request, perturbations)
    splits, report = scoring.splits, scored.report  # the splits as scored
    if "undefined" in report:
        undefined = report["undefined"]
        # without --allow-one-class, only unreadable images can have left one class
        why = "--allow-one-class" if request.allow_one_class else "the others could not be read"
        error_console.print(
            f"[bold yellow]warning:[/] {', '.join(undefined['metrics']).upper()} undefined: "
            f"{escape(undefined['why'])} ({why}); reported: {undefined['defined']}",
            highlight=False,
        )
    if request.predictions_path:
        write_predictions(
            request.predictions_path,
            splits.test,
            scored,
            scoring.checkpoint.model.classes,
            request.force,
        )
    if request.plots_dir:
        reliability = {"uncalibrated": softmax(scored.logits)}
        if calibration:
            temperature = temperature_of(calibration)
            reliability[f"calibrated (T = {temperature:.3g})"] = scored.probs
        report["plots"] = write_plots(request.plots_dir, scored.groups, reliability, request.force)
        if perturbations:
            report["plots"].append(
                write_robustness_plot(request.plots_dir, report["robustness"], request.force)
            )
        confusion = report["attribution"].get("confusion")
        if confusion and confusion["rows"]:
            path = Path(request.plots_dir) / "attribution-confusion.png"
            plot_confusion(
                confusion,
                path,
                title="attribution of test fakes (rows: true generator)",
                overwrite=request.force,
            )
            report["plots"].append(str(path))
        report["plots"].append(
            write_inconclusive_plot(
                request.plots_dir, splits.test, scored, request.threshold, request.force
            )
        )
    if request.embeddings_path:
        report["embeddings"] = write_embeddings(
            request.embeddings_path, splits.test, scored.embeddings, request.seed, request.force
        )
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    console.print(metrics_table(report))
    console.print(calibration_table(report))
    console.print(operating_table(report))
    console.print(inconclusive_table(report))
    if perturbations:
        console.print(robustness_table(report))
    console.print(attribution_table(report))
    return report
