"""The calibrate job: fit temperature scaling, the FPR thresholds, the out-of-distribution
statistics and the generator fingerprints for attribution of an existing checkpoint on a
protocol's train and val splits, and write them into a new checkpoint (new SHA-256); the source
is never changed. Definitions: docs/calibration.md, docs/attribution.md."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from mfclip_cli.data.identity import dataset_identity
from mfclip_cli.engines.evaluate.loading import held_out_check, load_scoring
from mfclip_cli.engines.evaluate.requests import CalibrateRequest, DataChoice
from mfclip_cli.engines.fitting import (
    FITTED_NAMES,
    fit_int8_calibration,
    fit_statistics,
    protocol_fitted_on,
)
from mfclip_cli.engines.inference import unreadable_warning
from mfclip_cli.engines.weights.store import weights_record
from mfclip_cli.errors import UsageError
from mfclip_cli.model.checkpoint import save_fitted
from mfclip_cli.scoring.attribution import attribution_summary, attributor_of
from mfclip_cli.scoring.calibration import CalibrationError, calibration_problem, fit_calibration
from mfclip_cli.scoring.ood import ood_of
from mfclip_cli.scoring.precision import FP32, INT8_KEY


def calibrate(request: CalibrateRequest, error_console: Console) -> dict:
    """Fit the calibration of an existing checkpoint on a protocol's val split and write it into a
    new checkpoint (new SHA-256) at ``request.out``; the source is never changed."""
    request.check()
    out = Path(request.out)
    choice = DataChoice(
        request.data,
        request.layout,
        request.label_map,
        allow_training_overlap=request.allow_training_overlap,
    )
    scoring = load_scoring(
        choice,
        request.protocol,
        request.weights,
        request.device,
        "val",
        error_console,
        None,  # the device's default precision; int8 is measured beside it
    )
    if out.resolve() == scoring.checkpoint.resolved.path.resolve():
        raise UsageError(f"--out {out} is the checkpoint being calibrated; name a new file")
    problem = calibration_problem([sample.label for sample in scoring.splits.val])
    if problem:  # before the scoring, which can take long
        raise CalibrationError(problem)
    # the OOD statistics and fingerprints are fitted on the train split: held out from the
    # checkpoint's test split too (load_scoring checked val)
    # (by path only: a checkpoint keeps no digests of its test split's files)
    train_overlap, _, _ = held_out_check(
        choice,
        scoring.checkpoint,
        scoring.index,
        scoring.protocol,
        scoring.splits,
        "train",
        error_console,
        None,
    )
    val_outputs = scoring.split_outputs("val", request.batch_size, request.workers, embeddings=True)
    val = scoring.splits.val  # without the samples that could not be read
    labels = [sample.label for sample in val]
    problem = calibration_problem(labels)
    if problem:
        raise CalibrationError(f"{problem}, once the samples that cannot be read are left out")
    logits = val_outputs.logits
    source = scoring.checkpoint.info
    fitted_on = {
        "data": dataset_identity(scoring.index),  # a name and digest: the checkpoint travels
        "layout": scoring.index.layout,
        **protocol_fitted_on(scoring.splits),
    }
    # what --allow-training-overlap let in, kept in the checkpoint: eval of it says so, and
    # weights add refuses its report (audit R F4: nothing of it was left)
    allowed = {
        split: overlap
        for split, overlap in (("val", scoring.training_overlap), ("train", train_overlap))
        if overlap is not None and overlap.total
    }
    if allowed:
        fitted_on["training_overlap"] = {
            "protocol": next(iter(allowed.values())).protocol,
            **{split: overlap.counts for split, overlap in allowed.items()},
        }
    if (copies := scoring.trained_copies) is not None and copies.samples:
        # val files copying files it trained on (named in calibrate's stderr, not in the file)
        fitted_on["trained_copies"] = copies.record(named=False)
    record = fit_calibration(
        logits, labels, fitted_on=fitted_on, target_accuracy=request.target_accuracy
    )
    record["source_sha256"] = source.sha256
    record["base_sha256"] = (source.calibration or {}).get("base_sha256", source.sha256)
    faces = scoring.face_source(request.batch_size, request.workers)
    outcome = fit_statistics(
        scoring.checkpoint.model,
        faces,
        scoring.splits.train,
        val,
        wanted=tuple(FITTED_NAMES),
        fitted_on=fitted_on,
        val_embeddings=val_outputs.embeddings,
    )
    # the int8 parity with the OOD statistics the new checkpoint carries (the source's kept
    # where none could be fitted)
    record[INT8_KEY] = fit_int8_calibration(
        scoring.checkpoint.model,
        faces,
        val,
        fp32_outputs=val_outputs if scoring.precision.used == FP32 else None,
        fp32_fit=record,
        fitted_on=fitted_on,
        ood=outcome.ood or ood_of(source),
        target_accuracy=request.target_accuracy,
    )
    for missing in outcome.unreadable.values():  # train samples: val's were left out above
        error_console.print(
            unreadable_warning("train", missing, "left out of the fits"), highlight=False
        )
    for key, problem in outcome.refused.items():
        kept = " (the source's are kept)" if getattr(source, key) else ""
        error_console.print(
            f"[bold yellow]warning:[/] no {FITTED_NAMES[key]} fitted: {escape(problem)}{kept}",
            highlight=False,
        )
    written = save_fitted(
        source, out, calibration=record, fitted=outcome.fitted, overwrite=request.force
    )
    return {
        "weights": str(written.path),
        "sha256": written.sha256,
        "source": weights_record(scoring.checkpoint),
        "calibration": record,
        "ood": written.ood,
        "attribution": attribution_summary(written, attributor_of(written)),
        "unreadable": len(scoring.splits.unreadable.get("val", [])) + len(outcome.unreadable),
    }
