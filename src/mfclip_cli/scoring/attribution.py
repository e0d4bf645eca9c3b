"""Open-set generator attribution from MFCLIP's fine-grained prompts: which trained generator a
fake face most resembles, or "unknown".

Training aligns each fake face's embedding with the text embedding of its label set (the four
prompt levels, authenticity to generator name, combined by the language encoder's learnt level
weights). At the end of training, and in ``mfclip calibrate``, the trained language encoder
embeds once every fake label set that the training split holds with a generator name; those
embeddings [K, D] travel in the checkpoint (tensor ``attribution.text_embeddings``; the label
sets, the logit scale and the threshold in its ``attribution`` header record), so scanning needs
no text tower. For a face embedding x (the vision encoder's output, as the contrastive loss reads
it, unit-normalised):

* s_k = cos(x, t_k), its similarity to each stored label set k;
* p_k = softmax_k(scale * s_k), with ``scale`` the model's learnt contrastive logit scale
  (exp of ``criterion.log_logit_scale``); a generator's probability is the sum over its label
  sets, and so are a family's and a forgery type's;
* open set: the face is "unknown" when it is out of distribution (``ood.py``) or when
  max_k s_k is below the threshold, the 5th percentile of max_k s_k over the validation split's
  fakes of the trained generators (so 95 % of faces like those are attributed). A generator absent
  from training whose faces resemble no trained prompt is left unknown, not forced onto the
  nearest name.

Attribution is only ever among the generators the checkpoint was trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mfclip_cli.data.samples import Sample
from mfclip_cli.model.checkpoint import (
    ATTRIBUTION_TENSOR_PREFIX,
    CheckpointInfo,
    Fitted,
    read_fitted_tensors,
)
from mfclip_cli.model.config import MFCLIP_DETECTOR
from mfclip_cli.model.detectors import detector_of
from mfclip_cli.model.prompts import LabelSet
from mfclip_cli.scoring.metrics import json_safe, roc_auc
from mfclip_cli.timestamps import utc_now

TEXT = f"{ATTRIBUTION_TENSOR_PREFIX}text_embeddings"
KEEP_FRACTION = 0.95  # of the val fakes of trained generators that stay attributed
TOP_COUNT = 3  # generators listed per face
UNKNOWN = "unknown"
RULE = (
    "unknown when the face is out of distribution or its best similarity to a trained label set "
    f"is below the {1 - KEEP_FRACTION:.0%} quantile of the validation fakes' best similarities "
    f"(keeps {KEEP_FRACTION:.0%} of val fakes of trained generators attributed)"
)
OUT_OF_DISTRIBUTION, BELOW_THRESHOLD = "out of distribution", "below the similarity threshold"


def fakes_of(
    samples: Sequence[Sample], generators: Iterable[str], *, among: bool = True
) -> list[int]:
    """Positions of the fakes whose generator is (``among``) or is not one of ``generators``;
    fakes that name no generator are neither."""
    names = set(generators)
    return [
        i
        for i, sample in enumerate(samples)
        if sample.label != "real" and sample.generator and (sample.generator in names) == among
    ]


def known_label_sets(label_sets: Iterable[LabelSet]) -> list[LabelSet]:
    """The distinct fake label sets that name a generator, in a stable order."""
    fakes = {labels for labels in label_sets if not labels.is_real and labels.generator.strip()}
    return sorted(fakes, key=lambda s: (s.label, s.forgery_type, s.generator))


def attribution_problem(train_label_sets: Sequence[LabelSet], val: Sequence[Sample]) -> str | None:
    """Why these splits cannot give attribution, or None."""
    known = known_label_sets(train_label_sets)
    if not known:
        return "no fake in the training split names its generator"
    if not fakes_of(val, {labels.generator for labels in known}):
        return (
            "the validation split holds no fake of a trained generator: the open-set threshold "
            "is chosen on them"
        )
    return None


def unavailable_reason(info: CheckpointInfo) -> str:
    """Why a checkpoint without attribution has none, in words for the reports."""
    detector = detector_of(info.config)
    if detector != MFCLIP_DETECTOR:
        return f"the {detector} detector has no text prompts to attribute with"
    return (
        "this checkpoint stores no label-set embeddings (written before attribution existed, or "
        "its training named no generators); mfclip calibrate adds them"
    )


@dataclass
class Attributions:
    """What an ``Attributor`` makes of N faces, as arrays."""

    generators: list[str]  # the columns of ``probs``
    probs: np.ndarray  # [N, G] over the trained generators; rows sum to 1
    best_similarity: np.ndarray  # [N] max_k cos(face, label set k)
    unknown: np.ndarray  # [N] bool
    reasons: list[str | None]  # [N] why unknown (None when attributed)
    family: list[str]  # [N] the family (label) of highest summed probability
    forgery_type: list[str]  # [N] likewise

    def ranked(self, count: int = TOP_COUNT) -> list[list[str]]:
        """Each face's ``count`` most probable trained generators, best first (closed set)."""
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :count]
        return [[self.generators[j] for j in row] for row in order]

    def named(self) -> list[str]:
        """Each face's generator under the open-set rule: the top one, or ``unknown``."""
        return [
            UNKNOWN if unknown else top[0] for unknown, top in zip(self.unknown, self.ranked(1))
        ]

    def record(self, index: int) -> dict[str, Any]:
        """A face record's ``attribution``: its generator (or ``unknown`` and why), the family and
        forgery type of the trained label sets it resembles, its best similarity, and the closest
        trained generators with their probabilities (listed even when it is unknown)."""
        row = self.probs[index]
        order = np.argsort(-row, kind="stable")[:TOP_COUNT]
        unknown = bool(self.unknown[index])
        return {
            "generator": UNKNOWN if unknown else self.generators[order[0]],
            "probability": None if unknown else round(float(row[order[0]]), 6),
            "family": self.family[index],
            "forgery_type": self.forgery_type[index],
            "similarity": round(float(self.best_similarity[index]), 6),
            **({"reason": self.reasons[index]} if unknown else {}),
            "top": [
                {"generator": self.generators[j], "probability": round(float(row[j]), 6)}
                for j in order
            ],
        }


@dataclass
class Attributor:
    """A checkpoint's stored label-set embeddings and what attributing with them needs."""

    text: np.ndarray  # [K, D] unit-norm text embeddings, one row per record["label_sets"]
    record: dict[str, Any]

    def __post_init__(self) -> None:
        self.text = np.asarray(self.text, dtype=np.float64)

    @property
    def label_sets(self) -> list[dict[str, str]]:
        return self.record["label_sets"]

    @property
    def generators(self) -> list[str]:
        return list(self.record["generators"])

    @property
    def logit_scale(self) -> float:
        return float(self.record["logit_scale"])

    @property
    def threshold(self) -> float:
        return float(self.record["threshold"])

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """[N, K] cosine similarity of each face embedding [N, D] to each label set."""
        faces = np.asarray(embeddings, dtype=np.float64)
        if faces.ndim != 2 or faces.shape[1] != self.text.shape[1]:
            raise ValueError(
                f"embeddings of shape {faces.shape} do not match the checkpoint's "
                f"{self.text.shape[1]}-dimensional label-set embeddings"
            )
        norms = np.linalg.norm(faces, axis=1, keepdims=True)
        return (faces / np.clip(norms, 1e-12, None)) @ self.text.T

    def label_set_probabilities(self, similarities: np.ndarray) -> np.ndarray:
        """[N, K] softmax of the similarities at the stored logit scale."""
        logits = self.logit_scale * similarities
        logits = logits - logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def _summed(self, probs: np.ndarray, field: str) -> tuple[list[str], np.ndarray]:
        """The distinct values of a label-set field and each face's summed probability [N, V]."""
        values = list(dict.fromkeys(labels[field] for labels in self.label_sets))
        membership = np.array(
            [[labels[field] == value for value in values] for labels in self.label_sets],
            dtype=np.float64,
        )
        return values, probs @ membership

    def attribute(
        self, embeddings: np.ndarray, ood_flags: Sequence[bool | None] | None = None
    ) -> Attributions:
        """The attribution of each face embedding [N, D]; ``ood_flags`` (None where unknown)
        mark faces out of distribution."""
        similarities = self.similarities(embeddings)
        probs = self.label_set_probabilities(similarities)
        generators, by_generator = self._summed(probs, "generator")
        families, by_family = self._summed(probs, "label")
        types, by_type = self._summed(probs, "forgery_type")
        best = similarities.max(axis=1) if similarities.shape[1] else np.zeros(len(probs))
        flags = list(ood_flags) if ood_flags is not None else [None] * len(best)
        reasons = [
            OUT_OF_DISTRIBUTION if flag else BELOW_THRESHOLD if value < self.threshold else None
            for flag, value in zip(flags, best)
        ]
        return Attributions(
            generators,
            by_generator,
            best,
            np.array([reason is not None for reason in reasons], dtype=bool),
            reasons,
            [families[j] for j in by_family.argmax(axis=1)],
            [types[j] for j in by_type.argmax(axis=1)],
        )

    def fitted(self) -> Fitted:
        """What a checkpoint stores of it (``save_fitted``)."""
        return Fitted(self.record, {TEXT: torch.from_numpy(self.text.astype(np.float32))})


@torch.no_grad()
def label_set_embeddings(model: torch.nn.Module, label_sets: Sequence[LabelSet]) -> np.ndarray:
    """[K, D] the trained language encoder's unit-norm text embedding of each label set."""
    was_training = model.training
    model.eval()
    try:
        return model.language(list(label_sets)).float().cpu().numpy()
    finally:
        model.train(was_training)


def fit_attribution(
    model: torch.nn.Module,
    train_label_sets: Sequence[LabelSet],
    val: Sequence[Sample],
    val_embeddings: np.ndarray,
    *,
    fitted_on: dict[str, Any],
) -> Attributor:
    """The label-set embeddings of a trainable MFCLIP ``model`` (its language encoder and learnt
    logit scale) for every fake label set of the training split that names a generator, and the
    open-set threshold from the validation fakes of those generators (``val_embeddings``: the
    embeddings of ``val``, in order). Raises ValueError for splits ``attribution_problem``
    refuses."""
    problem = attribution_problem(train_label_sets, val)
    if problem:
        raise ValueError(problem)
    known = known_label_sets(train_label_sets)
    counts = Counter(train_label_sets)
    generators = list(dict.fromkeys(labels.generator for labels in known))
    attributor = Attributor(
        label_set_embeddings(model, known),
        {
            "method": "cosine similarity of the face embedding to each trained label set's text "
            "embedding, softmax at the model's learnt logit scale",
            "embedding": "vision encoder output, unit-normalised as the contrastive loss reads it",
            "label_sets": [
                {
                    "label": labels.label,
                    "forgery_type": labels.forgery_type,
                    "generator": labels.generator,
                    "train_samples": counts[labels],
                }
                for labels in known
            ],
            "generators": generators,
            "logit_scale": float(model.criterion.logit_scale().detach().exp()),
        },
    )
    chosen = [
        i
        for i, sample in enumerate(val)
        if sample.label != "real" and sample.generator in generators
    ]
    similarities = attributor.similarities(np.asarray(val_embeddings)[chosen])
    best = similarities.max(axis=1)
    threshold = float(np.quantile(best, 1 - KEEP_FRACTION))
    names, by_generator = attributor._summed(
        attributor.label_set_probabilities(similarities), "generator"
    )
    top = [names[j] for j in by_generator.argmax(axis=1)]
    attributor.record.update(
        threshold=threshold,
        rule=RULE,
        keep_fraction=KEEP_FRACTION,
        val={
            "fakes": len(chosen),
            "attributed": float(np.mean(best >= threshold)),
            "top1": float(np.mean([a == val[i].generator for a, i in zip(top, chosen)])),
        },
        fitted_on={**fitted_on, "val_fakes": len(chosen)},
        fitted_utc=utc_now(),
    )
    return attributor


def attributor_of(info: CheckpointInfo) -> Attributor | None:
    """A checkpoint's attribution, or None where it stores none."""
    if not info.attribution:
        return None
    tensors = read_fitted_tensors(info.path, ATTRIBUTION_TENSOR_PREFIX)
    return Attributor(tensors[TEXT].double().numpy(), info.attribution)


def attribution_summary(info: CheckpointInfo, attributor: Attributor | None) -> dict[str, Any]:
    """What a report's meta says about attribution: the generators the checkpoint knows, or
    why it has none."""
    if attributor is None:
        return {"available": False, "reason": unavailable_reason(info)}
    record = attributor.record
    return {
        "available": True,
        "generators": attributor.generators,
        "families": {labels["generator"]: labels["label"] for labels in attributor.label_sets},
        "only_among": "the generators this checkpoint was trained on",
        "threshold": record["threshold"],
        "logit_scale": record["logit_scale"],
        "rule": record["rule"],
        "fitted_on": record["fitted_on"],
    }


def _share(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def attribution_metrics(
    attributor: Attributor,
    test: Sequence[Sample],
    test_result: Attributions,
    val: Sequence[Sample],
    val_result: Attributions,
) -> dict[str, Any]:
    """Eval's attribution figures, on every test fake whatever the 3-way head says of it.

    Seen generators (trained on): closed-set top-1 and top-3 accuracy, the share attributed and
    the open-set top-1 (attributed and right). Unseen generators (named, not trained on): the
    share named as a trained generator, and the AUROC of 1 - best similarity separating them from
    fakes of seen generators (test ones where the test split has them, else val's, as the
    cross-generator protocol holds seen generators out of test). The confusion matrix counts the
    open-set decision per true generator.
    """
    known = set(attributor.generators)
    ranked, named = test_result.ranked(), test_result.named()
    seen = [i for i, s in enumerate(test) if s.label != "real" and s.generator in known]
    unseen = [
        i
        for i, s in enumerate(test)
        if s.label != "real" and s.generator and s.generator not in known
    ]
    report: dict[str, Any] = {
        "available": True,
        "generators": attributor.generators,
        "threshold": attributor.threshold,
        "logit_scale": attributor.logit_scale,
        "rule": attributor.record["rule"],
        "applies_to": "every test fake, whatever the 3-way head says of it",
        "seen": {
            "n": len(seen),
            "chance_top1": 1 / len(known),
            "top1": _share([ranked[i][0] == test[i].generator for i in seen]),
            "top3": _share([test[i].generator in ranked[i] for i in seen]),
            "attributed": _share([not test_result.unknown[i] for i in seen]),
            "open_set_top1": _share([named[i] == test[i].generator for i in seen]),
        },
    }
    if seen:
        reference, reference_scores = "test", 1 - test_result.best_similarity[seen]
    else:
        reference, reference_scores = "val", 1 - val_result.best_similarity[fakes_of(val, known)]
    unseen_scores = 1 - test_result.best_similarity[unseen]
    auroc = (
        roc_auc(
            np.r_[np.ones(len(unseen)), np.zeros(len(reference_scores))],
            np.r_[unseen_scores, reference_scores],
        )
        if unseen
        else None
    )
    report["unseen"] = {
        "n": len(unseen),
        "generators": sorted({test[i].generator for i in unseen}),
        "named_as_known": _share([not test_result.unknown[i] for i in unseen]),
        "unknown": _share([bool(test_result.unknown[i]) for i in unseen]),
        "auroc_unknown": json_safe(auroc),
        "auroc_reference": {"split": reference, "n": len(reference_scores)},
    }
    rows = list(dict.fromkeys(sorted(test[i].generator for i in seen + unseen)))
    columns = [*attributor.generators, UNKNOWN]
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for i in seen + unseen:
        counts[rows.index(test[i].generator), columns.index(named[i])] += 1
    report["confusion"] = {"rows": rows, "columns": columns, "counts": counts.tolist()}
    return report
