"""mfclip eval with several --weights: each checkpoint scored on the same test samples with the
single-checkpoint report, side by side, and DeLong's test of every pair's AUC difference
(docs/comparison.md)."""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from rich.console import Console

from mfclip_cli.data import DataError, Sample
from mfclip_cli.data.combine import data_record
from mfclip_cli.data.perturb import combine
from mfclip_cli.engines.evaluate.evaluation import protocol_record, score_checkpoint
from mfclip_cli.engines.evaluate.loading import Scoring, load_scorings
from mfclip_cli.engines.evaluate.requests import EvalRequest
from mfclip_cli.engines.evaluate.tables import (
    COMPARED,
    PAIR_FIGURES,
    comparison_table,
    pairs_table,
    robustness_comparison_table,
)
from mfclip_cli.files import write_json_atomic
from mfclip_cli.model.checkpoint import network_sha256
from mfclip_cli.schemas import report_header
from mfclip_cli.scoring.calibration import calibration_summary
from mfclip_cli.scoring.metrics import fake_labels, fake_scores, video_level
from mfclip_cli.scoring.significance import delong_test
from mfclip_cli.timestamps import utc_now

ZERO_ERROR = (
    "the AUCs differ with a standard error of 0 (each checkpoint orders every fake-real pair of "
    "these test faces alike): DeLong's test gives no p-value; more test faces would"
)


def _paired_units(
    test: Sequence[Sample], probs: Sequence[np.ndarray], reports: Sequence[dict]
) -> tuple[str, np.ndarray, list[np.ndarray], list[float | None]]:
    """What DeLong's test pairs: each test face, or, where frames carry video keys, each video
    (the mean of its frames' probabilities, as the video-level figures): its variance takes
    every unit for an independent draw, which frames of one video are not (audit E F3: with 8
    frames a video, p < 0.05 for half of the checkpoints of equal AUC). The unit, fake labels,
    each checkpoint's fake scores and AUC on them (as its own report gives it)."""
    if not any(sample.video for sample in test):
        aucs = [report["overall"]["auc"] for report in reports]
        return "face", fake_labels(test), [fake_scores(one) for one in probs], aucs
    keys, labels = [sample.video for sample in test], [sample.label for sample in test]
    videos = [video_level(keys, labels, one) for one in probs]
    fake = np.array([label != "real" for label in videos[0][1]], dtype=np.int64)
    aucs = [report["overall"]["video"]["auc"] for report in reports]
    return "video", fake, [fake_scores(one) for _, _, one in videos], aucs


def _pairs(
    fake: np.ndarray, scores: Sequence[np.ndarray], aucs: Sequence[float | None], unit: str
) -> list[dict]:
    """DeLong's test of AUC_a = AUC_b for every pair a < b of checkpoints scored on the same test
    faces, or why it cannot run (its variances need two faces of each class). A zero standard
    error with different AUCs gives no p-value: DeLong's z is infinite and its p 0, a certainty
    that 2 fake and 2 real faces cannot give (an exact permutation test gives 0.125 there)."""
    n_fake, n_real = int(fake.sum()), int(len(fake) - fake.sum())
    problem = None
    if min(n_fake, n_real) < 2:
        problem = (
            f"DeLong's test needs at least two fake and two real test {unit}s, "
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
            # each AUC as the checkpoint's own figures give it: DeLong's placements sum the same
            # AUC in another order, one rounding away (0.5175 and 0.5175000000000001 were shown
            # as 0.517 and 0.518 for one checkpoint)
            test.update(auc_a=aucs[a], auc_b=aucs[b], difference=aucs[a] - aucs[b])
            figures = {key: test[key] for key in PAIR_FIGURES}
            if not math.isfinite(figures["z"]):
                figures["z"] = figures["p_value"] = None
                pairs.append({"a": a, "b": b, **figures, "problem": ZERO_ERROR})
                continue
        pairs.append({"a": a, "b": b, **figures, "problem": problem})
    return pairs


def _compared(scoring: Scoring, report: dict) -> dict:
    """One checkpoint's line of the comparison: who it is (and which network it holds, whatever
    its calibration), its calibration, its figures (the TPRs at the val-chosen thresholds of its
    operating points)."""
    points = report["operating_points"]["points"]
    return {
        **report["weights"],
        "network_sha256": network_sha256(scoring.checkpoint.info.path),
        "precision": scoring.precision.used,
        "calibration": calibration_summary(scoring.calibration),
        "metrics": {
            **{key: report["overall"][key] for key in COMPARED},
            "tpr_at_fpr": {key: (point["test"] or {}).get("tpr") for key, point in points.items()},
            # the test FPR each of those thresholds gave: the TPRs are compared at these
            "test_fpr_at_fpr": {
                key: (point["test"] or {}).get("fpr") for key, point in points.items()
            },
            # the 95 % upper bound on each threshold's FPR, from the val split it was chosen on
            "val_fpr_upper_95": {
                key: (point["val"] or {}).get("fpr_upper_95") for key, point in points.items()
            },
        },
    }


def compare(
    request: EvalRequest, weights: Sequence[str], console: Console, error_console: Console
) -> dict:
    """Evaluate several checkpoints on the same test samples: each one's full eval report (the
    code of ``evaluate``), their figures side by side and DeLong's test of every pair's AUC
    difference. ``weights`` names the checkpoints (``request.weights`` is not read); every
    check, and the loading of every checkpoint, comes before any scoring."""
    if len(weights) < 2:
        raise ValueError("compare takes two or more checkpoints; evaluate takes one")
    requested = request.check(compared=weights)
    scorings = load_scorings(
        request.data_choice(),
        request.protocol,
        weights,
        request.device,
        "test",
        error_console,
        request.precision,
    )
    device, protocol, index = scorings[0].device, scorings[0].protocol, scorings[0].index
    perturbations = combine(protocol.perturb, requested)
    started = utc_now()
    scored = [score_checkpoint(scoring, request, perturbations) for scoring in scorings]
    splits = scorings[0].splits  # as scored: without the samples that could not be read
    if any(scoring.splits.test != splits.test for scoring in scorings[1:]):
        raise DataError(
            "the checkpoints could not read the same test samples: did the dataset change while "
            "it was scored? A comparison pairs each face's scores"
        )
    reports = [one.report for one in scored]
    unit, fake, scores, aucs = _paired_units(splits.test, [one.probs for one in scored], reports)
    test = fake_labels(splits.test)
    compared = [_compared(scoring, one.report) for scoring, one in zip(scorings, scored)]
    pairs = _pairs(fake, scores, aucs, unit)
    for pair in pairs:  # one network scored twice: a difference is its calibrations' alone
        same = compared[pair["a"]]["network_sha256"] == compared[pair["b"]]["network_sha256"]
        pair["same_network"] = same
    report = {
        **report_header("eval-comparison"),
        "started_utc": started,
        "device": str(device),
        "data": data_record(index),
        "protocol": protocol_record(protocol, splits),
        "threshold": request.threshold,
        "comparison": {
            "definitions": "docs/comparison.md",
            "score": "fake score 1 - p(real), with each checkpoint's calibrated probabilities",
            "test": {
                "n": len(test),
                "n_real": int(len(test) - test.sum()),
                "n_fake": int(test.sum()),
            },
            # what DeLong's test pairs: faces, or videos where frames carry video keys
            "pairs_on": {
                "unit": unit,
                "n": len(fake),
                "n_real": int(len(fake) - fake.sum()),
                "n_fake": int(fake.sum()),
            },
            "weights": compared,
            "pairs": pairs,
            "reports": reports,
        },
    }
    if request.json_path:
        write_json_atomic(request.json_path, report, overwrite=request.force)
    console.print(comparison_table(report))
    console.print(pairs_table(report))
    if perturbations:
        console.print(robustness_comparison_table(report))
    return report
