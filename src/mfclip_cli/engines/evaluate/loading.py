"""What eval and calibrate both start from: a protocol's splits of a dataset and a checkpoint
loaded to score them, the data first (its checks are the cheapest)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from mfclip_cli.data import DataIndex, Protocol, Sample, Splits, load_protocol, select
from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.contents import ContentDigests, Copies, content_digests
from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.engines.evaluate.held_out import (
    CALIBRATED_ON,
    MET_AS,
    USED_AS,
    ChangedDataOverlap,
    CopiesUse,
    HeldOutTrained,
    Overlap,
    calibration_data_changed,
    calibration_overlap,
    changed_data_overlap,
    held_out_trained,
    refuse_calibration_overlap,
    refuse_trained_copies,
    refuse_training_overlap,
    trained_copies,
    trained_protocol,
    training_overlap,
)
from mfclip_cli.engines.evaluate.requests import DataChoice
from mfclip_cli.engines.inference import (
    FaceSource,
    Outputs,
    crop_mismatch_warning,
    predict_outputs,
    unreadable_warning,
    untested_warning,
)
from mfclip_cli.engines.runtime import resolve_device
from mfclip_cli.engines.weights.store import (
    LoadedWeights,
    load_weights,
    refuse_incomparable,
    resolve_weights,
    say_caveats,
)
from mfclip_cli.errors import CheckpointError
from mfclip_cli.files import sidecar_path
from mfclip_cli.model.checkpoint import CheckpointInfo
from mfclip_cli.scoring.precision import (
    BF16,
    FP32,
    Precision,
    calibration_at,
    choose_precision,
    device_default,
    model_at,
)

DEFAULT_PROTOCOL = "in-domain"  # where the checkpoint's own cannot be used (held_out.py)


@dataclass
class Scoring:
    """A checkpoint and a protocol's splits of a dataset, ready to score."""

    device: torch.device
    protocol: Protocol
    index: DataIndex
    splits: Splits
    checkpoint: LoadedWeights  # its model at ``precision``
    precision: Precision
    error_console: Console  # where a sample that cannot be read is said to be left out
    # the scored samples the checkpoint met in training; None where that cannot be told
    training_overlap: Overlap | None = None
    # where it cannot, on its training folder changed since: how many it may have met
    changed_data: ChangedDataOverlap | None = None
    # the scored test samples its calibration was fitted on; None where that cannot be told
    calibration_overlap: Overlap | None = None
    # eval: the val samples (where its operating-point thresholds are chosen) it trained on
    thresholds_overlap: Overlap | None = None
    # where the calibration's overlap cannot be told on its folder changed since: the sample
    # counts then and now
    calibration_data_changed: dict[str, int] | None = None
    # the values the protocol holds out that the checkpoint trained on; None: none held out,
    # or it cannot be told
    held_out_trained: HeldOutTrained | None = None
    # the scored samples holding the bytes of files it trained or selected on, wherever they
    # lie; None where it keeps no digests of them
    trained_copies: Copies | None = None
    # eval: the val samples holding the bytes of files it trained on
    thresholds_copies: Copies | None = None

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration its probabilities are computed with, at its precision."""
        return calibration_at(self.checkpoint.info.calibration, self.precision.used)

    def face_source(self, batch_size: int, workers: int) -> FaceSource:
        """Where and how passes over the dataset read its faces."""
        return FaceSource(self.index.root, self.device, batch_size, workers)

    def split_outputs(self, split: str, batch_size: int, workers: int, **options: Any) -> Outputs:
        """One pass over the split ``split`` (``outputs``' options). A sample that cannot be read
        is said on stderr and left out of ``splits`` from then on, where the report lists it."""
        outputs = self.outputs(getattr(self.splits, split), batch_size, workers, **options)
        for missing in outputs.unreadable:
            self.error_console.print(
                unreadable_warning(split, missing, "left out"), highlight=False
            )
        self.splits = self.splits.leaving_out(split, outputs.unreadable)
        return outputs

    def outputs(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        workers: int,
        embeddings: bool = False,
        fingerprints: bool = False,
        perturbation: Perturbation | None = None,
        seed: int = 0,
    ) -> Outputs:
        outputs = predict_outputs(
            self.checkpoint.model,
            self.face_source(batch_size, workers),
            samples,
            embeddings=embeddings,
            fingerprints=fingerprints,
            perturbation=perturbation,
            seed=seed,
            bf16=self.precision.used == BF16,
        )
        self._refuse_non_finite(outputs)
        return outputs

    def _refuse_non_finite(self, outputs: Outputs) -> None:
        """A checkpoint whose outputs hold NaN or an infinity (damaged or converted weights, an
        overflow at low precision) is named with the faces, where the metrics would stop at a
        traceback (audit E F6)."""
        finite = np.isfinite(outputs.logits).all(axis=1)
        if finite.all():
            return
        bad = [sample.path for sample, ok in zip(outputs.samples, finite) if not ok]
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise CheckpointError(
            f"{self.checkpoint.resolved.name} gives outputs that are not finite numbers (NaN "
            f"or an infinity) for {len(bad)} of {len(outputs.samples)} faces ({shown}) at "
            f"precision {self.precision.used}: its weights may be damaged"
            + ("" if self.precision.used == FP32 else "; try --precision fp32")
        )


def default_protocol(
    checkpoints: Sequence[CheckpointInfo], index: DataIndex, error_console: Console
) -> Protocol:
    """With no ``--protocol``: the checkpoints' training protocol, where every one was trained
    with the same one on this very data (its test split is then held out by construction), else
    ``DEFAULT_PROTOCOL``."""
    found = [trained_protocol(info, index) for info in checkpoints]
    first = found[0]
    if first is None or any(p is None or p.to_dict() != first.to_dict() for p in found[1:]):
        error_console.print(  # said, as the checkpoint's own is: the data may be the one it met
            f"protocol: {DEFAULT_PROTOCOL} (none named, and no checkpoint records one trained "
            "on this very data: give --protocol to choose)",
            highlight=False,
            markup=False,
        )
        return load_protocol(DEFAULT_PROTOCOL)
    error_console.print(
        f"protocol: {first.name}, the one the checkpoint was trained with on this data",
        highlight=False,
        markup=False,
    )
    return first


def held_out_check(
    choice: DataChoice,
    loaded: LoadedWeights,
    index: DataIndex,
    protocol: Protocol,
    splits: Splits,
    split: str,
    error_console: Console,
    contents: Callable[[], ContentDigests] | None,
) -> tuple[Overlap | None, ChangedDataOverlap | None, Copies | None]:
    """The ``split``'s overlap with the checkpoint's own splits (``TRAINED_ON``), refused unless
    allowed; where it cannot be told, on the training folder changed since, the bound on it,
    said (not refused: an upper bound, not a count); and its samples that are copies of files
    the checkpoint trained or selected on (``contents``: the split's digests; None where no
    digests are kept of the splits it must not share), refused unless allowed."""
    scored = getattr(splits, split)
    overlap = training_overlap(loaded.info, index, split, scored)
    changed = None
    if overlap is None:
        changed = changed_data_overlap(loaded.info, index, split, scored)
    if changed is not None and (changed.estimate.total or changed.split_named):
        estimate = changed.estimate
        shares = ", ".join(f"{count} {role}" for role, count in estimate.counts.items())
        named = (
            f"; {changed.split_named} of them have their split named by the data (a "
            "manifest's split column), which the bound cannot see if it was edited since"
            if changed.split_named
            else ""
        )
        error_console.print(
            f"[bold yellow]warning:[/] {escape(loaded.resolved.name)} was trained on "
            f"{escape(Path(index.root).name)} as it was then ({changed.samples_then} samples, "
            f"{changed.samples_now} now: files added, removed or relabelled since), so "
            f"whether the {split} split holds faces it {MET_AS[split]} cannot be told "
            f"exactly: under its training protocol {escape(estimate.protocol)}, up to "
            f"{estimate.total} of the {len(scored)} {split} samples lie in its own splits "
            f"({shares}){named}",
            highlight=False,
        )
    if not choice.allow_training_overlap:
        refuse_training_overlap(overlap, split, protocol.name)
    elif overlap is not None and overlap.total:  # allowed, never silent
        shares = ", ".join(f"{count} in its {role} split" for role, count in overlap.counts.items())
        error_console.print(
            f"[bold yellow]warning:[/] {overlap.total} of the {len(scored)} {split} samples are "
            f"not held out from {escape(loaded.resolved.name)} ({shares}, under its training "
            f"protocol {escape(overlap.protocol)}): {USED_AS[split]} anyway, as "
            "--allow-training-overlap asks; its figures on them are not those of unseen data",
            highlight=False,
        )
    copies = trained_copies(loaded.info, split, contents) if contents else None
    if copies is not None and copies.samples:
        if not choice.allow_training_overlap:
            refuse_trained_copies(copies, split, loaded.resolved.name, COPIES_USED[split])
        say_trained_copies(copies, split, loaded.resolved.name, COPIES_USED[split], error_console)
    return overlap, changed, copies


# what copies of trained files in a split would mean (eval scores test; calibrate fits on val;
# eval chooses its thresholds on val, ``THRESHOLDS_ON_COPIES``)
COPIES_USED = {
    "test": CopiesUse(
        "its figures would not be those of unseen pictures",
        "score them anyway (the report records them)",
        "scored anyway, as --allow-training-overlap asks; its figures on them are not those of "
        "unseen pictures",
        " (eval's report with --allow-training-overlap names each: protocol.trained_copies.files)",
    ),
    "val": CopiesUse(
        "a calibration fitted on them would rest on pictures it trained on",
        "fit on them anyway (the new checkpoint's calibration records them)",
        "fitted on anyway, as --allow-training-overlap asks; its calibration rests partly on "
        "pictures it trained on",
    ),
}
THRESHOLDS_ON_COPIES = CopiesUse(
    "the operating-point thresholds eval chooses there, and their val FPR bounds, would rest on "
    "faces it trained on",
    "choose them there anyway (the report records them)",
    "thresholds chosen on them anyway, as --allow-training-overlap asks; its thresholds and val "
    "FPR bounds are optimistic",
    " (eval's report with --allow-training-overlap names each: operating_points.chosen_on."
    "trained_copies.files)",
)


def say_trained_copies(
    copies: Copies, split: str, name: str, use: CopiesUse, error_console: Console
) -> None:
    """The warning where ``--allow-training-overlap`` lets copies of trained files in, and
    what is done with them."""
    error_console.print(
        f"[bold yellow]warning:[/] {escape(copies.said(split, name))}: {use.then}",
        highlight=False,
    )


def thresholds_check(
    choice: DataChoice,
    loaded: LoadedWeights,
    index: DataIndex,
    protocol: Protocol,
    splits: Splits,
    error_console: Console,
    contents: Callable[[], ContentDigests],
) -> tuple[Overlap | None, Copies | None]:
    """Eval's val split, where it chooses its operating-point thresholds (and bounds their FPR),
    against the checkpoint's own train split (audit E F2: under a protocol of other fractions
    they were chosen on faces it trained on, silently), by path and by bytes (``contents``: the
    val split's digests): refused unless allowed, said where allowed."""
    overlap = training_overlap(loaded.info, index, "val", splits.val, roles=("train",))
    copies = trained_copies(loaded.info, "val", contents, roles=("train",))
    use = THRESHOLDS_ON_COPIES
    if not choice.allow_training_overlap:
        refuse_training_overlap(
            overlap, "val", protocol.name, met_as="trained on", consequence=use.consequence
        )
        refuse_trained_copies(copies, "val", loaded.resolved.name, use)
    elif copies is not None and copies.samples:
        say_trained_copies(copies, "val", loaded.resolved.name, use, error_console)
    if choice.allow_training_overlap and overlap is not None and overlap.total:
        error_console.print(
            f"[bold yellow]warning:[/] {overlap.total} of the {len(splits.val)} val samples, "
            f"where the operating-point thresholds are chosen, are in "
            f"{escape(loaded.resolved.name)}'s own train split (under its training protocol "
            f"{escape(overlap.protocol)}): chosen on them anyway, as --allow-training-overlap "
            "asks; its thresholds and val FPR bounds are optimistic",
            highlight=False,
        )
    return overlap, copies


def calibration_check(
    choice: DataChoice,
    loaded: LoadedWeights,
    index: DataIndex,
    protocol: Protocol,
    test: Sequence[Sample],
    error_console: Console,
) -> tuple[Overlap | None, dict[str, int] | None]:
    """The test samples the checkpoint's calibration was fitted on (``calibration_overlap``),
    refused unless allowed, said where allowed; and, where that cannot be told on the folder it
    was fitted on changed since, the sample counts then and now (said, and recorded)."""
    overlap = calibration_overlap(loaded.info, index, test)
    changed = None if overlap is not None else calibration_data_changed(loaded.info, index)
    if changed is not None:
        error_console.print(
            f"[bold yellow]warning:[/] {escape(loaded.resolved.name)}'s calibration was fitted "
            f"on {escape(Path(index.root).name)} as it was then ({changed['samples_then']} "
            f"samples, {changed['samples_now']} now: files added, removed, relabelled or moved "
            "to another split since), so whether the test split holds faces its temperature, "
            "band and thresholds were fitted on cannot be told; calibrate it again on the data "
            "as they are to know",
            highlight=False,
        )
    if not choice.allow_training_overlap:
        refuse_calibration_overlap(overlap, protocol.name)
    elif overlap is not None and overlap.total:
        shares = ", ".join(
            f"{count} in its {role} split ({CALIBRATED_ON[role]})"
            for role, count in overlap.counts.items()
        )
        error_console.print(
            f"[bold yellow]warning:[/] {overlap.total} of the {len(test)} test samples are not "
            f"held out from {escape(loaded.resolved.name)}'s calibration ({shares}, under "
            f"protocol {escape(overlap.protocol)}): scored anyway, as --allow-training-overlap "
            "asks; its calibrated figures on them are not those of unseen data",
            highlight=False,
        )
    return overlap, changed


def say_training_caveats(loaded: LoadedWeights, split: str, error_console: Console) -> None:
    """A checkpoint without a training record (not made by ``mfclip train``) is said unchecked;
    one calibrated on samples of its own splits (``--allow-training-overlap``) or on copies of
    files it trained on (that, or its own run's val split holding them) is said to be."""
    fitted_on = (loaded.info.calibration or {}).get("fitted_on") or {}
    for key, what in (
        ("training_overlap", "with --allow-training-overlap on samples of its own splits"),
        ("trained_copies", "on val files holding the bytes of files it trained on"),
    ):
        if fitted_on.get(key):
            error_console.print(
                f"[bold yellow]warning:[/] {escape(loaded.resolved.name)} was calibrated {what} "
                f"(its calibration's fitted_on.{key}): its calibrated figures are not those of "
                "held-out data",
                highlight=False,
            )
    if not loaded.info.metadata.get("training"):
        error_console.print(
            f"[bold yellow]warning:[/] {escape(loaded.resolved.name)} carries no record of its "
            f"training (neither in it nor in {escape(str(sidecar_path(loaded.resolved.path)))}): "
            f"whether the {split} split holds faces it was trained on cannot be told",
            highlight=False,
        )


def load_checkpoint_for_scoring(
    weights: str | None, device: torch.device, precision: str | None
) -> tuple[LoadedWeights, Precision]:
    """A checkpoint loaded for scoring at ``precision`` (``--precision``; None: the device's
    default, never int8); its caveats (a demo checkpoint, int8 not known to keep its verdicts)
    are the caller's to say, once the checkpoints are known comparable."""
    loaded = load_weights(resolve_weights(weights), device)
    if precision is None:
        chosen = device_default(device)
    else:
        chosen = choose_precision(precision, device, loaded.info.calibration)
    return replace(loaded, model=model_at(loaded.model, chosen.used)), chosen


def load_scorings(
    choice: DataChoice,
    protocol_name: str | None,
    weights: Sequence[str | None],
    device_name: str,
    split: str,
    error_console: Console,
    precision: str | None,
) -> list[Scoring]:
    """Data, protocol and checkpoints loaded to score ``split``, the cheapest checks first (a
    named protocol's splits before any checkpoint; without one, the checkpoints say which,
    ``default_protocol``); each checkpoint's samples of the split it trained on refused
    (``held_out.py``)."""
    device = resolve_device(device_name)
    protocol = load_protocol(protocol_name) if protocol_name else None
    index = read_datasets(choice.data, choice.layout, label_map=choice.label_map)
    one_class = ("test",) if choice.allow_one_class else ()

    def splits_of(protocol: Protocol) -> Splits:
        return select(index, protocol, (split,), one_class_allowed=one_class)

    splits = splits_of(protocol) if protocol is not None else None
    checkpoints = [load_checkpoint_for_scoring(name, device, precision) for name in weights]
    if len(checkpoints) > 1:  # before anything is said of each
        refuse_incomparable(weights, [loaded for loaded, _ in checkpoints])
    for loaded, chosen in checkpoints:
        say_caveats(loaded, chosen, error_console)
    if protocol is None:
        protocol = default_protocol(
            [loaded.info for loaded, _ in checkpoints], index, error_console
        )
        splits = splits_of(protocol)
    if untested := splits.untested_held_out():
        error_console.print(untested_warning(untested, protocol.name), highlight=False)
    hashed: dict[str, ContentDigests] = {}  # each split's bytes hashed once, for every checkpoint

    def contents_of(name: str) -> Callable[[], ContentDigests]:
        def contents() -> ContentDigests:
            if name not in hashed:
                hashed[name] = content_digests(index, getattr(splits, name))
            return hashed[name]

        return contents

    scorings = []
    for loaded, chosen in checkpoints:
        say_training_caveats(loaded, split, error_console)
        if mismatch := crop_mismatch_warning(index, loaded.model, loaded.resolved.name):
            error_console.print(mismatch, highlight=False)
        overlap, changed, copies = held_out_check(
            choice, loaded, index, protocol, splits, split, error_console, contents_of(split)
        )
        trained_held_out = held_out_trained(loaded.info, index, protocol, splits)
        if trained_held_out is not None and trained_held_out.values:
            error_console.print(
                held_out_trained_warning(trained_held_out, loaded.resolved.name, protocol),
                highlight=False,
            )
        calibrated = thresholds = thresholds_copies = calibration_changed = None
        if split == "test":  # calibrate fits anew: the source's calibration is replaced
            calibrated, calibration_changed = calibration_check(
                choice, loaded, index, protocol, splits.test, error_console
            )
            thresholds, thresholds_copies = thresholds_check(
                choice, loaded, index, protocol, splits, error_console, contents_of("val")
            )
        scorings.append(
            Scoring(
                device,
                protocol,
                index,
                splits,
                loaded,
                chosen,
                error_console,
                overlap,
                changed,
                calibrated,
                thresholds,
                calibration_changed,
                trained_held_out,
                copies,
                thresholds_copies,
            )
        )
    return scorings


def held_out_trained_warning(trained: HeldOutTrained, name: str, protocol: Protocol) -> str:
    """What eval says of a protocol's held-out values a checkpoint trained on."""
    known = (
        "its own train split on this data holds"
        if trained.exact
        else "the data it was trained on held (and its protocol did not hold out)"
    )
    return (
        f"[bold yellow]warning:[/] {escape(name)} is scored under {escape(protocol.name)}, "
        f"which holds out {protocol.holdout} {escape(', '.join(trained.values))}; {known} "
        f"{'it' if len(trained.values) == 1 else 'them'}: its figures on them are not a "
        f"{escape(protocol.name)} test's, faces of {protocol.holdout}s it trained on "
        "(protocol.held_out_trained); a held-out figure needs a checkpoint trained under that "
        "protocol"
    )


def load_scoring(
    choice: DataChoice,
    protocol_name: str | None,
    weights: str | None,
    device_name: str,
    split: str,
    error_console: Console,
    precision: str | None,
) -> Scoring:
    """``load_scorings`` of one checkpoint."""
    (scoring,) = load_scorings(
        choice, protocol_name, [weights], device_name, split, error_console, precision
    )
    return scoring
