"""Whether the samples eval scores (or calibrate fits on) were held out from the checkpoint.

A checkpoint records the data it was trained on (a digest of the sample list) and its protocol.
Scored on that very data, its train and val splits can be recomputed exactly (the protocols split
by a stable hash), so a test split of another protocol that holds samples it trained on (train)
or was selected and calibrated with (val) is found before any scoring: its figures would not be
those of held-out data. On other data nothing can be told, and the report says so (null).
A calibration records its data and protocol alike: eval's test split under another protocol is
checked against the splits it was fitted on (``calibration_overlap``).
On any data, a checkpoint that keeps the digests of the files it trained and selected on
(``data/contents.py``) has the scored files' bytes compared with them (``trained_copies``): a
copy of a training picture under another name, in another folder or another dataset, is found
where no check by path can see it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from mfclip_cli.data import DataIndex, Protocol, Sample, Splits, select
from mfclip_cli.data.contents import ContentDigests, Copies, copies_among
from mfclip_cli.data.identity import index_digest
from mfclip_cli.data.protocols import ProtocolError, recorded_protocol
from mfclip_cli.errors import DataError, UsageError
from mfclip_cli.model.checkpoint import DIGESTED_SPLITS, CheckpointInfo, trained_digests

# what each scored split must not share with the checkpoint's own splits (calibrate's val: its
# temperature, band and thresholds fitted on the checkpoint's own test faces would make eval's
# calibrated figures on them not held out; calibrate's train: its OOD statistics and generator
# fingerprints fitted on them would make those faces in-distribution, their attribution seen)
TRAINED_ON = {"test": ("train", "val"), "val": ("train", "test"), "train": ("test",)}
# a folder of the recorded name is taken for the training folder changed since only where its
# sample count is within this factor of the recorded one (audit R F3: an unrelated "faces")
SAME_FOLDER_SIZE = 2
# what the checkpoint did with the samples of its own splits that a scored split holds
MET_AS = {
    "test": "trained or selected with",
    "val": "trained or is tested on",
    "train": "is tested on",
}
# what is done with them where --allow-training-overlap lets them in
USED_AS = {"test": "scored", "val": "fitted on", "train": "fitted on"}
# what calibrate fitted on each split of its protocol (engines/evaluate/calibrate.py)
CALIBRATED_ON = {
    "train": "OOD statistics and generator fingerprints",
    "val": "temperature, inconclusive band and thresholds",
}
ALLOW_OPTION = "--allow-training-overlap"


def _training_record(info: CheckpointInfo) -> dict[str, Any]:
    return info.metadata.get("training") or {}


def trained_protocol(info: CheckpointInfo, index: DataIndex) -> Protocol | None:
    """The protocol a checkpoint was trained with, where it was trained on this very data (the
    same sample list) and the protocol can still be read: recorded whole since report format
    2.4.0, else found by its name among the shipped ones. Its held-out values are pinned to those
    it held out then, so that it splits alike whatever the order of ``--data`` now (an
    ``after-first`` protocol holds out every --data after the first). None where it cannot be
    told."""
    if as_trained(info, index) is None:
        return None
    return recorded_protocol(_training_record(info).get("protocol") or {})


def as_trained(info: CheckpointInfo, index: DataIndex) -> DataIndex | None:
    """``index`` as the checkpoint was trained on it, or None where it is other data
    (``as_recorded``)."""
    return as_recorded(_training_record(info).get("data") or {}, index)


def as_recorded(recorded: dict[str, Any], index: DataIndex) -> DataIndex | None:
    """``index`` as a record of data (``dataset_identity``) names it, or None where it is other
    data. A folder copied, synced or unpacked under another name is the same data, but the
    ``folder`` layout names its samples' dataset after the folder: where giving them back the
    recorded name gives the very sample list recorded, that index (its splits are those
    recorded)."""
    if recorded.get("index_sha256") == index_digest(index):
        return index
    old, new = recorded.get("name"), Path(index.root).name
    if not old or old == new or index.sources:
        return None
    samples = [replace(s, dataset=old) if s.dataset == new else s for s in index.samples]
    renamed = replace(index, samples=samples)
    return renamed if index_digest(renamed) == recorded.get("index_sha256") else None


def _split_or_none(index: DataIndex, protocol: Protocol | None) -> Splits | None:
    """``index`` split by a recorded ``protocol`` (no split required), or None where there is
    none or it no longer splits this data."""
    if protocol is None:
        return None
    try:
        return select(index, protocol, ())
    except (ProtocolError, DataError):
        return None


def _trained_splits(info: CheckpointInfo, index: DataIndex) -> Splits | None:
    trained_index = as_trained(info, index)  # its digest, once
    if trained_index is None:
        return None
    recorded = _training_record(info).get("protocol") or {}
    splits = _split_or_none(trained_index, recorded_protocol(recorded))
    if splits is None:
        return None
    if (recorded.get("sizes") or {}).get("train") not in (None, len(splits.train)):
        return None  # a protocol file of that name that says otherwise now
    return splits


@dataclass(frozen=True)
class HeldOutTrained:
    """The values a protocol holds out of training (``Splits.held_out``) that a checkpoint
    trained on all the same, and how that is known: its own train split recomputed on this
    very data (``exact``), else its training data's recorded counts, less what its own
    protocol held out (the values were in the data it trained on)."""

    values: list[str]
    exact: bool

    def record(self) -> dict[str, Any]:
        return {"values": self.values, "exact": self.exact}


def held_out_trained(
    info: CheckpointInfo, index: DataIndex, protocol: Protocol, splits: Splits
) -> HeldOutTrained | None:
    """What the checkpoint trained on of the values ``protocol`` holds out: a cross-generator
    figure of a checkpoint trained on every generator (in-domain) read as a held-out one, the
    test files being others than those it trained on (audit AI F3). None where nothing is held
    out or it cannot be told (no training record)."""
    field_name = protocol.holdout
    if field_name is None or not splits.held_out:
        return None
    trained = _trained_splits(info, index)
    if trained is not None:
        seen = {sample.value_of(field_name).lower() for sample in trained.train}
        exact = True
    else:
        record = _training_record(info)
        counts = (record.get("data") or {}).get("counts") or {}
        if field_name == "generator":
            by_label = counts.get("generator") or {}
            values = [
                name for label, names in by_label.items() if label != "real" for name in names
            ]
        else:
            values = list(counts.get(field_name) or {})
        if not values:
            return None
        its_protocol = record.get("protocol") or {}
        its_own = recorded_protocol(its_protocol)
        same_field = its_own is not None and its_own.holdout == field_name
        kept_out = {value.lower() for value in its_protocol.get("held_out") or []}
        seen = {value.lower() for value in values} - (kept_out if same_field else set())
        exact = False
    return HeldOutTrained([v for v in splits.held_out if v.lower() in seen], exact)


@dataclass(frozen=True)
class Overlap:
    """How many scored samples the checkpoint met in each of its own splits."""

    protocol: str  # the checkpoint's training protocol
    counts: dict[str, int]

    def record(self) -> dict[str, Any]:
        return {"protocol": self.protocol, **self.counts}

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ChangedDataOverlap:
    """On the training folder changed since: an upper bound of the scored samples in the
    checkpoint's own splits, with the folder's sample counts then and now."""

    estimate: Overlap
    samples_then: int
    samples_now: int
    # scored samples whose split a manifest's column names, under a protocol that keeps it:
    # where the column was edited since, the bound misses them
    split_named: int = 0

    def record(self) -> dict[str, Any]:
        return {
            **self.estimate.record(),
            "samples_then": self.samples_then,
            "samples_now": self.samples_now,
            "split_named": self.split_named,
        }


def training_overlap(
    info: CheckpointInfo,
    index: DataIndex,
    split: str,
    samples: Sequence[Sample],
    roles: Sequence[str] | None = None,
) -> Overlap | None:
    """The ``samples`` of the scored ``split`` that lie in the checkpoint's own splits it must
    not share (``roles``, by default ``TRAINED_ON[split]``), by path or by video (frames of one
    video are one group); None where it cannot be told."""
    trained = _trained_splits(info, index)
    return None if trained is None else _overlap(trained, roles or TRAINED_ON[split], samples)


def _overlap(trained: Splits, roles: Sequence[str], samples: Sequence[Sample]) -> Overlap:
    """The ``samples`` that lie in each of ``trained``'s splits ``roles``, by path or by
    video."""
    counts = {}
    for role in roles:
        met = getattr(trained, role)
        paths = {sample.path for sample in met}
        videos = {sample.video for sample in met if sample.video}
        counts[role] = sum(
            sample.path in paths or (sample.video is not None and sample.video in videos)
            for sample in samples
        )
    return Overlap(trained.protocol.name, counts)


def calibration_overlap(
    info: CheckpointInfo, index: DataIndex, samples: Sequence[Sample]
) -> Overlap | None:
    """The test ``samples`` that lie in the splits the checkpoint's calibration was fitted on
    (``CALIBRATED_ON``): its temperature, band and thresholds on its protocol's val split, its
    OOD statistics and generator fingerprints on the train split. Where eval's protocol is not
    the calibration's, on the data calibrated on, its test split can hold them. The overlap's
    protocol is the calibration's; None where it cannot be told (no calibration, other data)."""
    fitted = (info.calibration or {}).get("fitted_on") or {}
    data = fitted.get("data")
    if not isinstance(data, dict):  # checkpoints before 1.0.0 named a folder only
        return None
    calibrated = as_recorded(data, index)
    recorded = {
        "name": fitted.get("protocol"),
        "definition": fitted.get("protocol_definition"),
        "held_out": fitted.get("held_out"),
    }
    trained = _training_record(info)
    by_training = (trained.get("protocol") or {}).get("name") == recorded["name"] and (
        trained.get("data") or {}
    ).get("index_sha256") == data.get("index_sha256")
    if by_training and not recorded["definition"]:
        recorded = trained["protocol"]  # calibrated by its run, on its splits: recorded whole
    if calibrated is None:
        return None
    splits = _split_or_none(calibrated, recorded_protocol(recorded))
    return None if splits is None else _overlap(splits, TRAINED_ON["test"], samples)


def calibration_data_changed(info: CheckpointInfo, index: DataIndex) -> dict[str, int] | None:
    """``{samples_then, samples_now}`` where ``index`` is a folder of the calibration's recorded
    name holding another sample list (files added, removed, relabelled or moved to another
    split since): whether the test split holds faces the calibration was fitted on then cannot
    be told, and is to be said (audit N M1: a split column edited in place turned the check off
    without a word). None elsewhere."""
    data = ((info.calibration or {}).get("fitted_on") or {}).get("data")
    if not isinstance(data, dict) or not data.get("index_sha256") or index.sources:
        return None
    if data.get("name") != Path(index.root).name or as_recorded(data, index) is not None:
        return None
    then = int(data.get("samples") or 0)
    if not then / SAME_FOLDER_SIZE <= len(index.samples) <= then * SAME_FOLDER_SIZE:
        return None  # a folder of that name only, as for training (audit P L5: "data")
    return {"samples_then": then, "samples_now": len(index.samples)}


def changed_data_overlap(
    info: CheckpointInfo, index: DataIndex, split: str, samples: Sequence[Sample]
) -> ChangedDataOverlap | None:
    """Where ``index`` looks like the checkpoint's training data changed since (the folder of
    the recorded name, another sample list: files added, removed or relabelled), the ``samples``
    its recorded protocol puts in its own splits on the data as it stands (splits go by a stable
    hash of each sample's path or video, so a sample trained on lands there again; a file added
    since may too: an upper bound, by path), with the numbers of samples then and now, and how
    many of the ``samples`` have their split named by a manifest's column under a protocol that
    keeps it (edited since, it moves them where the bound cannot see). None elsewhere,
    and where the sample count is not within ``SAME_FOLDER_SIZE`` of the recorded one (another
    dataset in a folder of that name)."""
    recorded = _training_record(info).get("data") or {}
    if as_trained(info, index) is not None or index.sources:
        return None
    if recorded.get("name") != Path(index.root).name or not recorded.get("index_sha256"):
        return None
    then = int(recorded.get("samples") or 0)
    if not then / SAME_FOLDER_SIZE <= len(index.samples) <= then * SAME_FOLDER_SIZE:
        return None  # a folder of that name only: "faces" of 36 samples is not 1,200 changed
    protocol = recorded_protocol(_training_record(info).get("protocol") or {})
    splits = _split_or_none(index, protocol)
    if protocol is None or splits is None:
        return None
    overlap = _overlap(splits, TRAINED_ON[split], samples)
    # a split named by a manifest's column can be edited in place; one a layout's folders name
    # moves only with its file, to a new path, which no check by path follows anyway
    columns = protocol.use_layout_split and index.layout == "manifest"
    named = sum(s.split is not None for s in samples) if columns else 0
    return ChangedDataOverlap(overlap, then, len(index.samples), named)


def refuse_training_overlap(
    overlap: Overlap | None,
    split: str,
    scored_with: str,
    met_as: str | None = None,
    consequence: str = "its figures would not be held out",
) -> None:
    """A usage error naming the overlap, unless there is none (or it cannot be told): what the
    checkpoint did with those samples (``met_as``, by default ``MET_AS[split]``) and what
    scoring them would mean."""
    if overlap is None or not overlap.total:
        return
    met = " and ".join(
        f"{count} in its {role} split" for role, count in overlap.counts.items() if count
    )
    what = met_as or MET_AS[split]
    if overlap.protocol == scored_with:  # its own protocol, the --data in another order
        remedy = (
            "give --data in the order it was trained with, or no --protocol (its held-out "
            "data is then the one it recorded)"
        )
    else:
        remedy = f"use --protocol {overlap.protocol} (the default on the data it was trained on)"
    raise UsageError(
        f"the {split} split of protocol {scored_with!r} holds samples this checkpoint "
        f"{what} ({met}, under its training protocol {overlap.protocol!r}): {consequence}. "
        f"{remedy[0].upper()}{remedy[1:]}, or {ALLOW_OPTION} to score them anyway (the report "
        "records the overlap)"
    )


def trained_copies(
    info: CheckpointInfo,
    split: str,
    contents: Callable[[], ContentDigests],
    roles: Sequence[str] | None = None,
) -> Copies | None:
    """The scored ``split``'s samples (``contents``: their digests, hashed when first asked)
    whose bytes are those of a file in the checkpoint's own splits ``roles`` (by default those
    of ``TRAINED_ON[split]`` it keeps digests of); None where it keeps none, or none of those
    splits."""
    kept = [role for role in roles or TRAINED_ON[split] if role in DIGESTED_SPLITS]
    digests = trained_digests(info) if kept else None
    if digests is None:
        return None
    prepared = bool((_training_record(info).get("digests") or {}).get("from_prepared"))
    return copies_among(contents(), {role: digests[role] for role in kept}, prepared)


def refuse_trained_copies(copies: Copies | None, split: str, name: str, use: CopiesUse) -> None:
    """A usage error naming the scored samples that are copies of files the checkpoint
    ``name`` trained or was selected with, unless there are none (or it cannot be told), and
    what using them would mean (``use``)."""
    if copies is None or not copies.samples:
        return
    raise UsageError(
        f"{copies.said(split, name)}: {use.consequence}. Leave them out of the data{use.listed}, "
        f"or {ALLOW_OPTION} to {use.allowed}"
    )


class CopiesUse(NamedTuple):
    """Where ``--allow-training-overlap`` lets copies of trained files into a split: what
    using them would mean, what the option does instead, and what is said then."""

    consequence: str
    allowed: str
    then: str
    listed: str = ""  # where every copy is named, for a refusal to point to


def refuse_calibration_overlap(overlap: Overlap | None, scored_with: str) -> None:
    """A usage error naming the test samples the checkpoint's calibration was fitted on,
    unless there are none (or it cannot be told)."""
    if overlap is None or not overlap.total:
        return
    met = " and ".join(
        f"{count} in its {role} split ({CALIBRATED_ON[role]})"
        for role, count in overlap.counts.items()
        if count
    )
    raise UsageError(
        f"the test split of protocol {scored_with!r} holds samples this checkpoint's calibration "
        f"was fitted on ({met}, under protocol {overlap.protocol!r}): its calibrated figures "
        f"would not be held out. Use --protocol {overlap.protocol}, calibrate it again under "
        f"{scored_with} (mfclip calibrate --protocol {scored_with}), or {ALLOW_OPTION} to score "
        "them anyway (the report records the overlap)"
    )
