"""The train engine: a detector (MFCLIP, or a sibling its config names) on a labelled face dataset
under a protocol, resumable and data-parallel.

A run folder holds everything: ``train.json`` (the settings, written once), ``metrics.jsonl`` (one
line per optimiser step and per validation, then the statistics fitted into the best checkpoint),
``best.safetensors`` (highest val AUC; test is never looked at), ``last.safetensors`` (the latest
weights) and ``last.state.safetensors`` (trainable weights, optimiser, schedule, data position and
RNG: what ``--resume`` needs to continue exactly). All of them are written atomically, and only by
rank 0 under ``torchrun``.

``train.json`` and every line of ``metrics.jsonl`` follow the ``train`` schema
(``mfclip schema train``). ``train.json`` names its ``schema_version``, for the whole run folder
(the lines carry none: they are the same run's, as a scan's file lines are its meta's); a folder
started before 2.2.0 has none, and ``--resume`` continues it all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from torch.nn.utils import get_total_norm

from mfclip_cli import __version__
from mfclip_cli.data import (
    DataError,
    DataIndex,
    ProtocolError,
    Sample,
    Splits,
    Unreadable,
    load_protocol,
    recorded_protocol,
    select,
)
from mfclip_cli.data.combine import read_datasets
from mfclip_cli.data.contents import ContentDigests, Copies, content_digests, copies_among
from mfclip_cli.data.faceset import BatchList, EpochOrder, FaceImages, collate_faces
from mfclip_cli.data.identity import dataset_identity
from mfclip_cli.data.protocols import SPLIT_NAMES
from mfclip_cli.engines.fitting import (
    FITTED_NAMES,
    fit_int8_calibration,
    fit_statistics,
    protocol_fitted_on,
)
from mfclip_cli.engines.inference import (
    FaceSource,
    crop_mismatch_warning,
    predict_outputs,
    score_samples,
    unreadable_warning,
    untested_warning,
)
from mfclip_cli.engines.runtime import (
    counting_bar,
    join_world,
    run_environment,
    sigterm_as_ctrl_c,
)
from mfclip_cli.engines.train.settings import (
    PATH_SETTINGS,
    SETTINGS_FILE,
    TrainSettings,
    learning_differences,
    resumed_settings,
    saved_run,
)
from mfclip_cli.engines.train.state import RunPosition, load_state, save_state
from mfclip_cli.errors import TrainingError, UsageError
from mfclip_cli.files import (
    keep_jsonl_prefix,
    write_json_atomic,
)
from mfclip_cli.model import (
    Detector,
    build_detector,
    load_checkpoint,
    save_checkpoint,
)
from mfclip_cli.model.checkpoint import (
    CONTENT_DIGEST,
    DIGESTED_SPLITS,
    portable_name,
    read_checkpoint_info,
    save_fitted,
    trained_digests,
)
from mfclip_cli.schemas import SCHEMA_VERSION
from mfclip_cli.scoring.calibration import (
    calibration_problem,
    fit_calibration,
    softmax,
    temperature_warning,
)
from mfclip_cli.scoring.ood import ood_of
from mfclip_cli.scoring.precision import INT8_KEY
from mfclip_cli.timestamps import utc_now

METRICS_FILE = "metrics.jsonl"
UNREADABLE_LINE = "unreadable"  # metrics.jsonl's line for a sample that cannot be read
BEST, LAST, STATE = "best.safetensors", "last.safetensors", "last.state.safetensors"


def portable_settings(settings: TrainSettings) -> dict[str, Any]:
    """The settings as a checkpoint records them: the data and run folders, a protocol or label
    map file and a local CLIP weights file by name only (``portable_name``: a checkpoint
    travels). RUN/train.json keeps them as given, for ``--resume``."""
    recorded = asdict(settings)
    for key in PATH_SETTINGS:
        value = recorded[key]
        if isinstance(value, tuple):
            recorded[key] = [portable_name(item) for item in value]
        elif value is not None:
            recorded[key] = portable_name(value)
    return recorded


class _LossStep(torch.nn.Module):
    """The training forward as a module, so DistributedDataParallel can wrap it: the total loss,
    then the detector's loss terms (detached), named in ``names`` (``loss`` for the total)."""

    def __init__(self, model: Detector):
        super().__init__()
        self.model = model
        self.names: tuple[str, ...] = ()

    def forward(self, faces: torch.Tensor, label_sets: list) -> tuple[torch.Tensor, ...]:
        parts = vars(self.model.loss(faces, label_sets))  # a dataclass of tensors, total first
        self.names = ("loss", *list(parts)[1:])
        total, *terms = parts.values()
        return (total, *(term.detach() for term in terms))


EPOCH_LINES = ("step", "val", UNREADABLE_LINE)  # the metrics lines placed in the schedule


def adamw(
    parameters: list[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    decay_on: str,
    fused: bool,
) -> torch.optim.AdamW:
    """AdamW decaying what ``decay_on`` names (TrainSettings.weight_decay_on): "all" is one group,
    the layout older runs' optimiser states were saved in; "weights" decays the tensors of two
    or more dimensions (matrices, kernels, LoRA factors) and leaves the rest (biases, norm gains,
    the logit scale, the level logits) undecayed, in a second group."""
    if decay_on == "all":
        groups = [{"params": parameters}]
    else:
        groups = [
            {"params": [p for p in parameters if p.ndim >= 2]},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ]
    return torch.optim.AdamW(
        [group for group in groups if group["params"]],
        lr=lr,
        weight_decay=weight_decay,
        fused=fused,
    )


def _schedule(total_steps: int, warmup: float):
    warmup_steps = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / remaining)))

    return factor


# -- the run --------------------------------------------------------------------------------------
def split_change(recorded: dict[str, Any], index: DataIndex, splits: Splits) -> str | None:
    """How the protocol a run recorded (its checkpoint's ``training.protocol``) splits
    ``index`` otherwise than ``splits``, or None where they agree or it cannot be read (a run
    from before protocols were recorded whole is not checked). The same data and a train split
    of the same size are not enough: a protocol file given another hash seed keeps its sizes and
    moves samples between splits, and a run resumed or reused under it was tested on samples it
    had trained on (audit T1, T2)."""
    protocol = recorded_protocol(recorded)
    if protocol is None:
        return None
    try:
        then = select(index, protocol, ())
    except (ProtocolError, DataError) as error:
        return f"the protocol it began with no longer splits these data ({error})"

    def split_of(chosen: Splits) -> dict[tuple[str, str], str]:
        return {
            (sample.dataset, sample.path): name
            for name in SPLIT_NAMES
            for sample in getattr(chosen, name)
        }

    before, now = split_of(then), split_of(splits)
    moved = sum(before.get(key) != name for key, name in now.items())
    moved += len(before.keys() - now.keys())
    if not moved:
        return None
    return (
        f"{moved} of the {len(index.samples)} samples lie in another split than under the "
        f"protocol it began with ({protocol.name!r} as it recorded it)"
    )


class Trainer:
    def __init__(self, settings: TrainSettings, *, resume: bool, device: str, console: Console):
        self.settings = settings
        self.console = console
        self.world, self.device = join_world(device)
        self.environment = run_environment(self.world, self.device)
        self.run = Path(settings.out)
        self.held: int | None = None  # the run folder, locked by the main process (_hold)
        self._check_run_folder(resume)
        # a config that cannot work is reported before the data is read
        config = None if resume else self.settings.model_config()
        self.index: DataIndex = read_datasets(
            settings.data, settings.layout, label_map=settings.label_map
        )
        self.data_identity = dataset_identity(self.index)  # its name and digest, not its path
        self.data_summary = {
            **self.data_identity,
            "layout": self.index.layout,
            "counts": self.index.counts(),
        }
        self.protocol = load_protocol(settings.protocol)
        self.splits: Splits = select(self.index, self.protocol)
        self.train_samples: list[Sample] = self.splits.train
        if resume:
            self._refuse_other_data()
        # best.safetensors carries a calibration fitted on val, where val can give one
        uncalibratable = calibration_problem([s.label for s in self.splits.val])
        if uncalibratable and self.world.main:
            console.print(
                f"[bold yellow]warning:[/] best.safetensors will not be calibrated: "
                f"{escape(uncalibratable)}",
                highlight=False,
            )
        if settings.batch_size % self.world.size:
            raise UsageError(
                f"batch size {settings.batch_size} is not divisible by {self.world.size} processes"
            )
        if len(self.train_samples) < settings.batch_size:
            raise UsageError(
                f"the train split has {len(self.train_samples)} samples, "
                f"fewer than one batch ({settings.batch_size})"
            )

        self.model = self._build_model(config)
        if config is not None and self.world.main:  # said when the run begins, not resumes
            if mismatch := crop_mismatch_warning(self.index, self.model, f"config {config.name}"):
                console.print(mismatch, highlight=False)
            if untested := self.splits.untested_held_out():
                console.print(untested_warning(untested, self.protocol.name), highlight=False)
        self.order = EpochOrder(
            [self.model.classes.index(s.label) for s in self.train_samples],
            settings.batch_size,
            settings.seed,
            settings.balanced,
        )
        self.steps_per_epoch = math.ceil(self.order.batches_per_epoch / settings.accumulate)
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.optimizer = adamw(
            self.model.trainable_parameters(),
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            decay_on=settings.weight_decay_on,
            fused=self.device.type == "cuda",
        )
        self.progress = (
            load_state(self.run / STATE, self.model, self.optimizer) if resume else RunPosition()
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(self.total_steps, settings.warmup)
        )
        with warnings.catch_warnings():  # torch warns of a replay before any optimiser step
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for _ in range(self.progress.step):  # the schedule is a pure function of the step
                self.scheduler.step()
        self.loss_step = _LossStep(self.model)
        self.step_module: torch.nn.Module = self.loss_step
        if self.world.distributed:
            self.step_module = torch.nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.images = FaceImages(
            self.index.root,
            [s.path for s in self.train_samples],
            self.model.crop_size,
            flip_seed=settings.seed,
            stand_ins=self.order.classes,
        )
        self.reported_unreadable: set[tuple[str, str]] = set()  # (split, path) warned of
        # the bytes of the files it trains and selects on, as its checkpoints record them
        self.digests_record, self.digests, self.val_copies = self._hash_splits(resume)
        if not resume:
            self._start_run_folder()
        elif self.world.main:  # last, so that no later failure of the start leaves it held
            self._hold()
            self._say_other_environment()

    def _check_run_folder(self, resume: bool) -> None:
        if resume:
            for name in (SETTINGS_FILE, LAST, STATE):
                if not (self.run / name).is_file():
                    raise UsageError(f"cannot resume: {self.run / name} is missing")
        elif self.run.exists() and any(self.run.iterdir()):
            raise UsageError(
                f"run folder {self.run} is not empty (use --resume to continue it, or a new --out)"
            )

    def _hold(self) -> None:
        """Lock the run folder for as long as this process trains into it: a second train into
        it (a --resume while the workers of a killed torchrun launcher still train) is refused,
        not a second writer of its checkpoints and log. The lock is on the folder itself, so no
        file is left behind; ``release`` (when ``train`` ends) or the process's end frees it."""
        descriptor = os.open(self.run, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise UsageError(
                f"{self.run} is being trained into by another mfclip train (still running: its "
                "processes may outlive a killed torchrun); stop it, then --resume"
            ) from None
        self.held = descriptor

    def release(self) -> None:
        """Unlock the run folder (``train`` does once the run ends, however it ends)."""
        if self.held is not None:
            os.close(self.held)
            self.held = None

    def _say_other_environment(self) -> None:
        """A run resumed on another device, thread count or library version goes on, but its
        float sums are ordered otherwise: its final weights differ in low digits from an
        uninterrupted run's (the processes are checked before torch loads, resumed_settings)."""
        then = (saved_run(self.run) or {}).get("environment")
        if not isinstance(then, dict):
            return

        def flat(environment: dict[str, Any]) -> dict[str, Any]:
            return {**environment, **(environment.get("versions") or {}), "versions": None}

        before = flat(then)
        differences = [
            f"{name} {before.get(name)} then, {value} now"
            for name, value in flat(self.environment).items()
            if name != "processes" and before.get(name) != value
        ]
        if differences:
            self.console.print(
                f"note: {self.run} is resumed in another environment ({'; '.join(differences)}): "
                "its weights will differ in low digits from an uninterrupted run's",
                highlight=False,
                markup=False,
            )

    def _refuse_other_data(self) -> None:
        """A run continues only on the data it began with: the batches of every epoch are drawn
        from the train split's sample list, so with files added, removed or relabelled since,
        the resumed run would train on other batches than the run it continues, without a word.
        The last checkpoint names its data by the digest of its sample list and its split sizes
        (a run folder from before they were recorded is not checked)."""
        trained = read_checkpoint_info(self.run / LAST).metadata.get("training") or {}
        then = trained.get("data") or {}
        then_train = ((trained.get("protocol") or {}).get("sizes") or {}).get("train")
        now = self.data_identity
        same_list = then.get("index_sha256") in (None, now["index_sha256"])
        same_split = then_train in (None, len(self.train_samples))
        if not (same_list and same_split):
            raise UsageError(
                f"cannot resume {self.run}: its data differ from those it began with "
                f"({then.get('samples')} samples, {then_train} in its train split, sample list "
                f"{str(then.get('index_sha256'))[:12]} then; {now['samples']}, "
                f"{len(self.train_samples)} and {now['index_sha256'][:12]} now): files were "
                "added, removed or relabelled, or the protocol changed. Restore the data, or "
                "train into a new --out"
            )
        if change := split_change(trained.get("protocol") or {}, self.index, self.splits):
            raise UsageError(
                f"cannot resume {self.run}: {change}: the protocol file was edited since (its "
                "seed, fractions or filters). Restore it, or train into a new --out"
            )

    def _start_run_folder(self) -> None:
        """Written only once data, protocol and model are known to work, so a failed start leaves
        nothing."""
        self.world.barrier()
        if self.world.main:
            self.run.mkdir(parents=True, exist_ok=True)
            record = {
                "schema_version": SCHEMA_VERSION,
                "mfclip_version": __version__,
                "cwd": os.getcwd(),
                "environment": self.environment,
            }
            write_json_atomic(self.run / SETTINGS_FILE, {**record, **asdict(self.settings)})
            self._hold()

    def forget_unresumable_start(self) -> None:
        """A run that failed before its first ``last.*`` save cannot be resumed; remove what it
        wrote, so that the same ``--out`` can be used again (a run that saved once stays, for
        ``--resume``)."""
        if not self.world.main or (self.run / LAST).exists():
            return
        for name in (SETTINGS_FILE, METRICS_FILE, BEST, Path(BEST).with_suffix(".json").name):
            (self.run / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.run.rmdir()  # only when empty: never anything of the user's

    def _build_model(self, config: Any | None) -> Detector:
        """A new model from ``config``, or (None) the one in the run's last checkpoint."""
        if config is None:
            # frozen weights never change, so any save has them
            model, _ = load_checkpoint(self.run / LAST)
            return model.to(self.device)
        # the random-initialised parts (and tiny's whole backbone)
        torch.manual_seed(self.settings.seed)
        return build_detector(config).to(self.device)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any], *, every_process: bool = False) -> None:
        """One line of metrics.jsonl, from the main process (or, ``every_process``, from any:
        a line is one append, which the ranks' other appends cannot split). Step, val and
        unreadable lines carry ``epochs_done``, the one x-axis that means the same on each:
        their ``epoch`` counts the epoch under way, but a validation at an epoch's end counts
        the epochs completed (kept as it is: it is the report format's)."""
        if record["type"] in EPOCH_LINES:
            record["epochs_done"] = round(record["step"] / self.steps_per_epoch, 6)
        if self.world.main or every_process:
            with open(self.run / METRICS_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _report_unreadable(self, split: str, unreadable: list[Unreadable], fate: str) -> None:
        """Each sample of ``split`` found unreadable, and its ``fate``, said once per run on
        stderr and in metrics.jsonl."""
        for missing in unreadable:
            if (split, missing.path) in self.reported_unreadable:
                continue
            self.reported_unreadable.add((split, missing.path))
            self.console.print(unreadable_warning(split, missing, fate), highlight=False)
            self._log(
                {
                    "type": UNREADABLE_LINE,
                    "step": self.progress.step,
                    "epoch": self.progress.epoch,
                    "split": split,
                    "path": missing.path,
                    "error": missing.error,
                },
                every_process=split == "train",
            )

    def _trim_metrics(self) -> None:
        """On resume, forget what was logged after the state we continue from, and remember the
        unreadable samples logged before it (each is logged once per run). A state saved at an
        epoch's last step (``--checkpoint-every``) comes before that epoch's validation, which
        the resumed run does again: a val line of that step goes too, or it would be logged
        twice."""
        path = self.run / METRICS_FILE
        step = self.progress.step
        redone = (
            not self.settings.val_every and self.progress.next_batch >= self.order.batches_per_epoch
        )

        def keep(record: dict[str, Any]) -> bool:
            at = record.get("step", 0)
            return at < step or (at == step and not (redone and record["type"] == "val"))

        if self.world.main and path.is_file():
            keep_jsonl_prefix(path, keep=keep)
        self.world.barrier()
        if path.is_file():
            records = map(json.loads, path.read_text(encoding="utf-8").splitlines())
            self.reported_unreadable = {
                (record["split"], record["path"])
                for record in records
                if record["type"] == UNREADABLE_LINE
            }

    def _unreadable_by_split(self) -> dict[str, list[str]]:
        """The samples that could not be read (met up to this step), by split, sorted."""
        unreadable: dict[str, list[str]] = {}
        for split, path in sorted(self.reported_unreadable):
            unreadable.setdefault(split, []).append(path)
        return unreadable

    def _hash_splits(self, resume: bool) -> tuple[dict[str, Any], dict[str, np.ndarray], Copies]:
        """The record and the digests of the train and val splits' files (``data/contents.py``),
        which each checkpoint keeps, so that eval finds copies of them in other data; and the
        val samples copying train files, which best's calibration is fitted on. Test is hashed
        too, to say before training what eval of this run will refuse. A resumed run keeps the
        digests its last checkpoint kept as well (files replaced in place since it began)."""
        record: dict[str, Any] = {"of": CONTENT_DIGEST, "unreadable": 0, "from_prepared": 0}
        contents = {split: self._gathered_contents(split) for split in SPLIT_NAMES}
        for split in DIGESTED_SPLITS:
            record["unreadable"] += int((~contents[split].readable).sum())
            record["from_prepared"] += contents[split].from_sources
        digests = {split: contents[split].known() for split in DIGESTED_SPLITS}
        before = trained_digests(read_checkpoint_info(self.run / LAST)) if resume else None
        if before:  # the bytes it met before the resume are kept too
            changed = any(np.setdiff1d(digests[k], before[k]).size for k in DIGESTED_SPLITS)
            digests = {k: np.union1d(before[k], digests[k]) for k in DIGESTED_SPLITS}
            if changed:  # said once: the next save keeps both
                self._say(
                    "files of the train or val split (or the prepare.jsonl naming their "
                    "sources) changed in place since its last save: its checkpoints keep the "
                    "digests of their bytes then and now"
                )
        record.update({split: len(digests[split]) for split in DIGESTED_SPLITS})
        val_copies = copies_among(contents["val"], {"train": digests["train"]})
        test_copies = copies_among(contents["test"], digests)
        record["val_copying_train"] = val_copies.samples
        record["test_copying_trained"] = test_copies.samples
        if val_copies.samples:
            self._say(
                f"{val_copies.said('val', 'this run', 'trains on')}: the model is selected and "
                "best.safetensors calibrated partly on pictures it trains on (its calibration's "
                "fitted_on.trained_copies counts them); leave them out of the data"
            )
        if test_copies.samples:
            self._say(
                f"{test_copies.said('test', 'this run', 'trains on or is selected with')}: eval "
                "of its checkpoints on this data will refuse them (or score them with "
                "--allow-training-overlap); leave them out of the data"
            )
        return record, digests, val_copies

    def _gathered_contents(self, split: str) -> ContentDigests:
        """The digests of ``split``'s files. Under torchrun each process hashes every N-th
        file and all are gathered: one process hashing a large dataset alone kept the others
        waiting at a barrier, which times out."""
        world, samples = self.world, getattr(self.splits, split)
        share = content_digests(self.index, samples[world.rank :: world.size])
        fields = ("values", "readable", "sources", "has_source")
        mine = (world.rank, *(getattr(share, name).tobytes() for name in fields))
        whole = {name: np.zeros(len(samples), getattr(share, name).dtype) for name in fields}
        for rank, *parts in world.union({mine}):
            for name, part in zip(fields, parts):
                whole[name][rank :: world.size] = np.frombuffer(part, whole[name].dtype)
        paths = [self.index.absolute(sample) for sample in samples]
        return ContentDigests(**whole, paths=paths, names=[sample.path for sample in samples])

    def _say(self, warning: str) -> None:
        """A warning, from the main process only."""
        if self.world.main:
            self.console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)

    def _metadata(self) -> dict[str, Any]:
        """What a checkpoint of this run records about it; the samples that could not be read
        (met up to its step), where there were any."""
        unreadable = self._unreadable_by_split()
        return {
            "demo": False,
            "training": {
                "settings": portable_settings(self.settings),
                "data": self.data_summary,
                "protocol": {
                    "name": self.protocol.name,
                    # whole: eval and calibrate recompute its splits (engines/evaluate/held_out)
                    "definition": self.protocol.to_dict(),
                    "held_out": list(self.splits.held_out),
                    "sizes": {
                        "train": len(self.splits.train),
                        "val": len(self.splits.val),
                        "test": len(self.splits.test),
                    },
                },
                "digests": self.digests_record,
                "environment": self.environment,
                "step": self.progress.step,
                "epoch": self.progress.epoch,
                "samples_seen": self.progress.samples_seen,
                "finished_utc": utc_now(),
                **({"unreadable": unreadable} if unreadable else {}),
            },
        }

    def _gather_unreadable(self) -> None:
        """Every process's unreadable samples, known to all before a checkpoint records them
        (each process meets those of its own share of the batches)."""
        self.reported_unreadable = self.world.union(self.reported_unreadable)

    def _save_last(self) -> None:
        self._gather_unreadable()
        if self.world.main:
            save_checkpoint(
                self.model,
                self.run / LAST,
                metadata=self._metadata(),
                trained_digests=self.digests,
                overwrite=True,
            )
            save_state(self.run / STATE, self.model, self.optimizer, self.progress)
        self.world.barrier()

    def validate(self) -> dict[str, Any] | None:
        """Val metrics; a new best (by val AUC, else 3-way accuracy) is saved as
        best.safetensors."""
        result = None
        self._gather_unreadable()
        if self.world.main:
            outputs = predict_outputs(self.model, self.face_source, self.splits.val)
            if outputs.unreadable:  # left out from now on: of calibration and fitting too
                self._report_unreadable("val", outputs.unreadable, "left out")
                self.splits = self.splits.leaving_out("val", outputs.unreadable)
            logits = outputs.logits
            result = score_samples(self.splits.val, softmax(logits), self.settings.threshold)
            self.model.train()
            metric = "auc" if result["auc"] is not None else "acc3"
            value = result[metric]
            self._log(
                {"type": "val", "step": self.progress.step, "epoch": self.progress.epoch, **result}
            )
            best = self.progress.best
            if value is not None and (not best or value > best["value"]):
                self.progress.best = {"metric": metric, "value": value, "step": self.progress.step}
                metadata = self._metadata()
                metadata["training"]["val"] = result
                calibration = None
                labels = [s.label for s in self.splits.val]
                if not calibration_problem(labels):
                    calibration = fit_calibration(
                        logits, labels, fitted_on=self._calibration_fitted_on(self.progress.step)
                    )
                save_checkpoint(
                    self.model,
                    self.run / BEST,
                    metadata=metadata,
                    calibration=calibration,
                    trained_digests=self.digests,
                    overwrite=True,
                )
        self.world.barrier()
        return result

    def fit_statistics(self) -> None:
        """At the end of training, what scoring with the best checkpoint needs beyond its weights
        is added to best.safetensors, unless it has it for its step already: the
        out-of-distribution statistics (its train embeddings' class means and shared precision,
        the threshold from val), the generator fingerprints for attribution (the train fakes'
        label-set means and shared precision, the open-set threshold from val), and the int8
        entry of its calibration."""
        if self.world.main and (self.run / BEST).is_file():
            self._fit_best_statistics(self.run / BEST)
            self._fit_best_int8(self.run / BEST)
        self.world.barrier()

    @property
    def face_source(self) -> FaceSource:
        """Where and how validation and the fits read the dataset's faces."""
        return FaceSource(
            self.index.root, self.device, self.settings.batch_size, self.settings.workers
        )

    def _fitted_on(self, step: int | None) -> dict[str, Any]:
        """Where a record fitted on this run's data comes from."""
        return {
            "data": self.data_identity,
            "layout": self.data_summary["layout"],
            **protocol_fitted_on(self.splits),
            "step": step,
        }

    def _calibration_fitted_on(self, step: int | None) -> dict[str, Any]:
        """Where best's calibration comes from, with the val files copying train files it was
        fitted on (said when the run began), as calibrate records those
        --allow-training-overlap lets it fit on: eval says so, weights add refuses."""
        copies = self.val_copies
        named = {"trained_copies": copies.record(named=False)} if copies.samples else {}
        return {**self._fitted_on(step), **named}

    def _fit_best_int8(self, best: Path) -> None:
        """The best checkpoint's calibration refitted on its inference model's val pass (the
        one scans run), with the int8 model's temperature, thresholds and parity with fp32 on val
        (``scoring/precision.py``), unless it has them for its step. A checkpoint without a
        calibration has none to refit, and ``--precision auto`` keeps fp32 for it."""
        info = read_checkpoint_info(best)
        step = (self.progress.best or {}).get("step")
        recorded = (info.calibration or {}).get(INT8_KEY) or {}
        if not info.calibration or recorded.get("fitted_on", {}).get("step") == step:
            return
        model, info = load_checkpoint(best, self.device, inference=True)
        # refitted on the inference model's own val pass, as calibrate fits it: the training
        # model's logits differ in the last bits, and a threshold is one val face's score
        outputs = predict_outputs(model, self.face_source, self.splits.val, embeddings=True)
        refit = fit_calibration(
            outputs.logits,
            [s.label for s in outputs.samples],
            fitted_on=self._calibration_fitted_on(step),
        )
        int8 = fit_int8_calibration(
            model,
            self.face_source,
            outputs.samples,
            fp32_outputs=outputs if self.device.type == "cpu" else None,  # else bf16 logits
            fp32_fit=refit,
            fitted_on=self._fitted_on(step),
            ood=ood_of(info),  # fitted just before, as scans apply it
        )
        calibration = {**refit, INT8_KEY: int8}
        save_fitted(info, best, calibration=calibration, overwrite=True)
        self._log({"type": "int8", "step": self.progress.step, **int8["parity"]})

    def _fit_best_statistics(self, best: Path) -> None:
        info = read_checkpoint_info(best)
        if warning := temperature_warning(info.calibration):
            self.console.print(f"[bold yellow]warning:[/] best.safetensors: {warning}")
        step = (self.progress.best or {}).get("step")
        stale = [
            key
            for key in FITTED_NAMES
            if not getattr(info, key) or getattr(info, key)["fitted_on"].get("step") != step
        ]
        if not stale:
            return
        model, info = load_checkpoint(best, self.device, inference=True)
        outcome = fit_statistics(
            model,
            self.face_source,
            self.train_samples,
            self.splits.val,
            wanted=stale,
            fitted_on=self._fitted_on(step),
        )
        # train samples (val's were left out at validation), most met and stood in for already
        self._report_unreadable("train", list(outcome.unreadable.values()), "left out of the fits")
        for key, problem in outcome.refused.items():
            self.console.print(
                f"[bold yellow]warning:[/] best.safetensors has no {FITTED_NAMES[key]}: "
                f"{escape(problem)}",
                highlight=False,
            )
        if outcome.fitted:
            save_fitted(info, best, fitted=outcome.fitted, overwrite=True)
        for key, fitted in outcome.fitted.items():
            self._log({"type": key, "step": self.progress.step, **fitted.record})

    # -- the loop ---------------------------------------------------------------------------------
    def _loader(self, epoch: int, start: int) -> torch.utils.data.DataLoader:
        self.images.epoch = epoch
        batches = list(
            self.order.batches(epoch, start=start, rank=self.world.rank, world=self.world.size)
        )
        # its own generator: a loader drawn from torch's global one when iterated, and a resumed
        # run creates one where the killed run had drawn already, so every dropout mask after
        # the resume point differed (audit M F1)
        own = torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            self.images,
            batch_sampler=BatchList(batches),
            num_workers=self.settings.workers,
            collate_fn=collate_faces,
            pin_memory=self.device.type == "cuda",
            generator=own,
        )

    def _optimiser_step(
        self, micro_batches: list[tuple[torch.Tensor, list[int]]]
    ) -> tuple[dict[str, float], float]:
        """One optimiser step over ``micro_batches``: the mean losses, and the learning rate it
        was taken at (read before the scheduler moves on to the next step's)."""
        sums: torch.Tensor | None = None
        for position, (faces, indices) in enumerate(micro_batches):
            label_sets = [self.train_samples[i].label_set for i in indices]
            faces = faces.to(self.device, non_blocking=True)
            last = position == len(micro_batches) - 1
            sync = (
                self.step_module.no_sync()
                if (self.world.distributed and not last)
                else contextlib.nullcontext()
            )
            with (
                sync,
                torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"),
            ):
                total, *parts = self.step_module(faces, label_sets)
                (total / len(micro_batches)).backward()
            step = torch.stack([total.detach().float().cpu(), *(p.float().cpu() for p in parts)])
            sums = step if sums is None else sums + step
        assert sums is not None
        self._refuse_non_finite_gradients(sums)
        rate = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        means = (sums / len(micro_batches)).tolist()
        return dict(zip(self.loss_step.names, means)), rate

    def _refuse_non_finite_gradients(self, loss_sums: torch.Tensor) -> None:
        """Stop, before the optimiser takes them, at gradients that are not finite numbers: one
        such step turns every weight it touches into NaN, and the run would go on training, and
        selecting its best checkpoint, on NaN. Under torchrun the gradients are the ranks'
        all-reduced mean, the same on every rank, so every rank stops at the same step."""
        gradients = [p.grad for p in self.model.trainable_parameters() if p.grad is not None]
        # the largest magnitude (one fused pass, one sync): finite exactly when every entry is,
        # where a 2-norm's sum of squares would overflow on large but finite gradients
        if not gradients or bool(torch.isfinite(get_total_norm(gradients, math.inf))):
            return
        losses = ", ".join(
            f"{name} {value:.4g}" for name, value in zip(self.loss_step.names, loss_sums.tolist())
        )
        raise TrainingError(
            f"training stopped at step {self.progress.step + 1}: its gradients are not finite "
            f"(this process's {losses}), and the weights were not updated with them. Train "
            f"again with a lower --lr (this run's: {self.settings.lr:g}) or a larger "
            f"--batch-size / --accumulate."
        )

    def fit(self) -> dict[str, Any]:
        settings, progress = self.settings, self.progress
        self._trim_metrics()
        self.model.train()
        show = self.world.main and self.console.is_terminal
        bar = counting_bar("training", self.console, show=show, status=True)
        with bar:
            task = bar.add_task("train", total=self.total_steps, completed=progress.step, status="")
            while progress.epoch < settings.epochs:
                pending: list[tuple[torch.Tensor, list[int]]] = []
                remaining = self.order.batches_per_epoch - progress.next_batch
                tick = time.perf_counter()
                for faces, indices, unreadable in self._loader(progress.epoch, progress.next_batch):
                    self._report_unreadable(
                        "train", unreadable, "its place taken by the next readable one of its class"
                    )
                    pending.append((faces, indices))
                    remaining -= 1
                    if len(pending) < settings.accumulate and remaining > 0:
                        continue
                    losses, rate = self._optimiser_step(pending)
                    progress.step += 1
                    progress.next_batch += len(pending)
                    progress.samples_seen += len(pending) * settings.batch_size
                    elapsed = time.perf_counter() - tick
                    self._log(
                        {
                            "type": "step",
                            "step": progress.step,
                            "epoch": progress.epoch,
                            "lr": rate,
                            **losses,
                            "samples_seen": progress.samples_seen,
                            "faces_per_s": len(pending) * settings.batch_size / max(elapsed, 1e-9),
                        }
                    )
                    pending = []
                    bar.update(task, completed=progress.step, status=f"loss {losses['loss']:.4f}")
                    if settings.val_every and progress.step % settings.val_every == 0:
                        self.validate()
                        self._save_last()
                    elif (
                        settings.checkpoint_every and progress.step % settings.checkpoint_every == 0
                    ):
                        self._save_last()
                    tick = time.perf_counter()
                progress.epoch += 1
                progress.next_batch = 0
                if not settings.val_every:
                    self.validate()
                self._save_last()
        self.fit_statistics()
        # DDP's reducer holds the process group: dropped first, so the group is torn down here
        # and not at interpreter exit, beside gloo's threads (a two-process gloo stress script
        # that kept its DDP module aborted after its last step, "terminate called without an
        # active exception", in 1 run of 3)
        self.step_module = self.loss_step
        gc.collect()
        self.world.leave()
        return {
            "step": progress.step,
            "samples_seen": progress.samples_seen,
            "best": progress.best,
            "run": str(self.run),
            "unreadable": self._unreadable_by_split(),
            "main": self.world.main,  # under torchrun, the process that speaks for the run
        }


def train(
    settings: TrainSettings, *, resume: bool, device: str, console: Console
) -> dict[str, Any]:
    """Train a new run or continue the one in ``settings.out`` (``resume``: with the settings it
    saved, ``settings.resumed_settings``; others that change what it learns are refused, as a
    resumed run must reach the weights the uninterrupted one would)."""
    if resume and (differences := learning_differences(resumed_settings(settings.out), settings)):
        raise UsageError(
            f"cannot resume {settings.out} with other settings than it began with "
            f"({'; '.join(differences)})"
        )
    trainer = Trainer(settings, resume=resume, device=device, console=console)
    try:
        with sigterm_as_ctrl_c():  # a killed start is cleaned up as an interrupted one
            return trainer.fit()
    except BaseException:
        trainer.forget_unresumable_start()
        raise
    finally:
        trainer.release()
