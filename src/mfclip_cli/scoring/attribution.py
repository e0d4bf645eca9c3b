"""Open-set generator attribution: which trained generator a fake face's fingerprint most
resembles, or "unknown".

A face's generator fingerprint is the power spectrum of its SRM noise residuals
(``fingerprints.py``). At the end of training, and in ``mfclip calibrate``, the fingerprints of
the training split's fakes are modelled per label set (family, forgery type, generator) as
Gaussians with one shared covariance: linear discriminant analysis, the covariance shrunk by
Ledoit and Wolf's rule, since a few hundred fakes cannot estimate 216 x 216 numbers. The class
means, the precision matrix and the feature scaling travel in the checkpoint (tensors
``attribution.*``; the label sets and the threshold in its ``attribution`` header record). For a
face's fingerprint x, standardised as the training fakes were:

* d_k, its Mahalanobis distance to each stored label set's mean;
* p_k = softmax_k(-d_k^2 / (2 T)): the model's posterior (equal priors: the training split's mix
  of generators says nothing about a case's) softened by a temperature T >= 1 fitted on the
  validation fakes of the trained generators (their negative log-likelihood), since a Gaussian
  model of 216 numbers is sure of itself far more often than it is right; a generator's
  probability is the sum over its label sets, and so are a family's and a forgery type's;
* open set: the face is "unknown" when it is out of distribution (``ood.py``) or when min_k d_k is
  above the threshold, the 95th percentile of min_k d_k over the validation split's fakes of the
  trained generators (so 95 % of faces like those are attributed). A generator absent from
  training whose faces resemble no trained one is left unknown, not forced onto the nearest name.

MFCLIP's generator-level prompt is not used here: scoring face embeddings against the trained
label sets' text embeddings was built and measured first, and stayed at the within-family chance
(docs/attribution.md). The fingerprints need no prompt, so every detector's checkpoint can carry
attribution. It is only ever among the generators the checkpoint was trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mfclip_cli.data.samples import Sample
from mfclip_cli.labels import LabelSet
from mfclip_cli.model.checkpoint import (
    ATTRIBUTION_TENSOR_PREFIX,
    CheckpointInfo,
    Fitted,
    read_fitted_tensors,
)
from mfclip_cli.scoring.fingerprints import DESCRIPTION, FEATURES, FINGERPRINT_NAME
from mfclip_cli.scoring.metrics import json_safe, roc_auc
from mfclip_cli.timestamps import utc_now

TENSORS = ("center", "scale", "means", "precision")  # each ATTRIBUTION_TENSOR_PREFIX + name
KEEP_FRACTION = 0.95  # of the val fakes of trained generators that stay attributed
MIN_SPREAD_FAKES = 2  # training fakes beyond one per label set, to estimate their spread
MAX_TEMPERATURE = 1e4  # the search's upper bound; the lower is 1, the model's own posterior
# Each fitting face also counts under these (data/perturb.py), as re-saved and shrunk copies of
# an image come to a case: measured in docs/attribution.md, "Under perturbation".
LAUNDERING = ("jpeg:90", "jpeg:75", "jpeg:50", "resize:0.75")
MAX_FAKES_PER_LABEL_SET = 2000  # a fit's sample: 216 numbers need hundreds, not a whole split
TOP_COUNT = 3  # generators listed per face
UNKNOWN = "unknown"
METHOD = (
    "linear discriminant analysis of generator fingerprints: one Gaussian per trained label set, "
    "a shared Ledoit-Wolf-shrunk covariance, equal priors"
)
RULE = (
    "unknown when the face is out of distribution or its Mahalanobis distance to the nearest "
    f"trained label set is above the {KEEP_FRACTION:.0%} quantile of the validation fakes' "
    f"distances, as stored and laundered (keeps {KEEP_FRACTION:.0%} of those attributed)"
)
OUT_OF_DISTRIBUTION, BEYOND_THRESHOLD = "out of distribution", "beyond the distance threshold"


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
    fakes = sum(1 for labels in train_label_sets if labels in set(known))
    if fakes < len(known) + MIN_SPREAD_FAKES:
        return (
            f"the training split holds {fakes} fake(s) of {len(known)} named label set(s): too "
            "few to estimate how their fingerprints spread"
        )
    if not fakes_of(val, {labels.generator for labels in known}):
        return (
            "the validation split holds no fake of a trained generator: the open-set threshold "
            "is chosen on them"
        )
    return None


def _readable(record: dict[str, Any]) -> bool:
    """Whether a checkpoint's attribution record is of the fingerprints this version reads (not
    the earlier text-prompt scoring's)."""
    return record.get("features", {}).get("name") == FINGERPRINT_NAME


def unavailable_reason(info: CheckpointInfo) -> str:
    """Why a checkpoint without usable attribution has none, in words for the reports."""
    if info.attribution and not _readable(info.attribution):
        return (
            "this checkpoint's attribution is the earlier text-prompt scoring, which measured at "
            "the within-family chance and is no longer read; mfclip calibrate fits generator "
            "fingerprints in its place"
        )
    return (
        "this checkpoint stores no generator fingerprints (written before attribution existed, "
        "or its training named no generators); mfclip calibrate adds them"
    )


@dataclass
class Attributions:
    """What an ``Attributor`` makes of N faces, as arrays."""

    generators: list[str]  # the columns of ``probs``
    probs: np.ndarray  # [N, G] over the trained generators; rows sum to 1
    distance: np.ndarray  # [N] min_k Mahalanobis distance to a trained label set
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
        forgery type of the trained label sets it resembles, its distance to the nearest, and the
        closest trained generators with their probabilities (listed even when it is unknown)."""
        row = self.probs[index]
        order = np.argsort(-row, kind="stable")[:TOP_COUNT]
        unknown = bool(self.unknown[index])
        return {
            "generator": UNKNOWN if unknown else self.generators[order[0]],
            "probability": None if unknown else round(float(row[order[0]]), 6),
            "family": self.family[index],
            "forgery_type": self.forgery_type[index],
            "distance": round(float(self.distance[index]), 6),
            **({"reason": self.reasons[index]} if unknown else {}),
            "top": [
                {"generator": self.generators[j], "probability": round(float(row[j]), 6)}
                for j in order
            ],
        }


@dataclass
class Attributor:
    """A checkpoint's generator model: the fingerprint scaling, each trained label set's mean
    and the shared precision matrix, in the standardised space."""

    center: np.ndarray  # [F] the training fakes' mean fingerprint
    scale: np.ndarray  # [F] their standard deviation (1 where constant)
    means: np.ndarray  # [K, F] each label set's mean, standardised; rows as record["label_sets"]
    precision: np.ndarray  # [F, F] inverse of the shared (shrunk) covariance
    record: dict[str, Any]

    def __post_init__(self) -> None:
        for name in TENSORS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def label_sets(self) -> list[dict[str, str]]:
        return self.record["label_sets"]

    @property
    def generators(self) -> list[str]:
        return list(self.record["generators"])

    @property
    def threshold(self) -> float:
        return float(self.record["threshold"])

    @property
    def temperature(self) -> float:
        # fitted before the temperature was: the model's own posterior, as they were read then
        return float(self.record.get("temperature", 1.0))

    def distances(self, fingerprints: np.ndarray) -> np.ndarray:
        """[N, K] Mahalanobis distance of each face's fingerprint [N, F] to each label set."""
        rows = np.asarray(fingerprints, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.center.shape[0]:
            raise ValueError(
                f"fingerprints of shape {rows.shape} do not match the checkpoint's "
                f"{self.center.shape[0]}-number generator fingerprints"
            )
        offsets = ((rows - self.center) / self.scale)[:, None, :] - self.means[None]
        squared = np.einsum("nkf,fg,nkg->nk", offsets, self.precision, offsets)
        return np.sqrt(np.clip(squared, 0.0, None))

    def label_set_probabilities(self, distances: np.ndarray) -> np.ndarray:
        """[N, K] the label sets' posterior probabilities, equal priors, at the temperature."""
        return _posteriors(distances, self.temperature)

    def _summed(self, probs: np.ndarray, field: str) -> tuple[list[str], np.ndarray]:
        """The distinct values of a label-set field and each face's summed probability [N, V]."""
        values = list(dict.fromkeys(labels[field] for labels in self.label_sets))
        membership = np.array(
            [[labels[field] == value for value in values] for labels in self.label_sets],
            dtype=np.float64,
        )
        return values, probs @ membership

    def attribute(
        self, fingerprints: np.ndarray, ood_flags: Sequence[bool | None] | None = None
    ) -> Attributions:
        """The attribution of each face by its fingerprint [N, F]; ``ood_flags`` (None where
        unknown) mark faces out of distribution."""
        distances = self.distances(fingerprints)
        probs = self.label_set_probabilities(distances)
        generators, by_generator = self._summed(probs, "generator")
        families, by_family = self._summed(probs, "label")
        types, by_type = self._summed(probs, "forgery_type")
        nearest = distances.min(axis=1) if distances.shape[1] else np.zeros(len(probs))
        flags = list(ood_flags) if ood_flags is not None else [None] * len(nearest)
        reasons = [
            OUT_OF_DISTRIBUTION if flag else BEYOND_THRESHOLD if value > self.threshold else None
            for flag, value in zip(flags, nearest)
        ]
        return Attributions(
            generators,
            by_generator,
            nearest,
            np.array([reason is not None for reason in reasons], dtype=bool),
            reasons,
            [families[j] for j in by_family.argmax(axis=1)],
            [types[j] for j in by_type.argmax(axis=1)],
        )

    def fitted(self) -> Fitted:
        """What a checkpoint stores of it (``save_fitted``)."""
        tensors = {
            f"{ATTRIBUTION_TENSOR_PREFIX}{name}": torch.from_numpy(
                getattr(self, name).astype(np.float32)
            )
            for name in TENSORS
        }
        return Fitted(self.record, tensors)


def _posteriors(distances: np.ndarray, temperature: float) -> np.ndarray:
    logits = -0.5 * np.square(distances) / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def _fit_temperature(
    attributor: Attributor, distances: np.ndarray, truth: Sequence[str]
) -> dict[str, Any]:
    """The temperature T in [1, MAX_TEMPERATURE] that minimises the negative log-likelihood of
    the true generators of faces at these ``distances`` [N, K], and that NLL before and after."""
    from scipy.optimize import minimize_scalar

    columns = [attributor.generators.index(name) for name in truth]

    def nll(log_temperature: float) -> float:
        _, by_generator = attributor._summed(
            _posteriors(distances, float(np.exp(log_temperature))), "generator"
        )
        chosen = by_generator[np.arange(len(columns)), columns]
        return float(-np.mean(np.log(np.clip(chosen, 1e-300, None))))

    found = minimize_scalar(nll, bounds=(0.0, np.log(MAX_TEMPERATURE)), method="bounded")
    temperature = float(np.exp(found.x)) if nll(found.x) < nll(0.0) else 1.0
    return {
        "temperature": temperature,
        "nll": {"model": nll(0.0), "calibrated": nll(np.log(temperature))},
        "at_bound": bool(np.isclose(temperature, MAX_TEMPERATURE, rtol=1e-3)),
    }


def fit_sample(samples: Sequence[Sample], generators: Iterable[str] | None = None) -> list[int]:
    """Positions of the fakes a fit reads, in order: those that name a generator (one of
    ``generators`` where given), at most ``MAX_FAKES_PER_LABEL_SET`` of each label set."""
    allowed = None if generators is None else set(generators)
    taken: Counter[LabelSet] = Counter()
    chosen = []
    for i, sample in enumerate(samples):
        if sample.label == "real" or not sample.generator.strip():
            continue
        if allowed is not None and sample.generator not in allowed:
            continue
        if taken[sample.label_set] < MAX_FAKES_PER_LABEL_SET:
            taken[sample.label_set] += 1
            chosen.append(i)
    return chosen


def fit_attribution(
    train: Sequence[Sample],
    train_fingerprints: np.ndarray,
    val: Sequence[Sample],
    val_fingerprints: np.ndarray,
    *,
    fitted_on: dict[str, Any],
    laundered: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Attributor:
    """The generator model of the training split's fakes that name a generator (their
    fingerprints: rows of ``train_fingerprints``, in the order of ``train``) and the open-set
    threshold and temperature from the validation fakes of those generators. ``laundered`` maps
    a perturbation's name to the same faces' fingerprints under it, (train rows, val rows): each
    counts as one more view of every face. Raises ValueError for splits ``attribution_problem``
    refuses."""
    from sklearn.covariance import ledoit_wolf  # scikit-learn is slow to import

    problem = attribution_problem([sample.label_set for sample in train], val)
    if problem:
        raise ValueError(problem)
    known = known_label_sets(sample.label_set for sample in train)
    row_of = {labels: k for k, labels in enumerate(known)}
    chosen = [i for i, sample in enumerate(train) if sample.label_set in row_of]
    views = [(train_fingerprints, val_fingerprints), *(laundered or {}).values()]
    classes = np.tile([row_of[train[i].label_set] for i in chosen], len(views))
    rows = np.concatenate([np.asarray(view, dtype=np.float64)[chosen] for view, _ in views])
    center, scale = rows.mean(axis=0), rows.std(axis=0)
    scale[scale < 1e-9] = 1.0
    standard = (rows - center) / scale
    means = np.stack([standard[classes == k].mean(axis=0) for k in range(len(known))])
    covariance, shrinkage = ledoit_wolf(standard - means[classes], assume_centered=True)
    counts = Counter(train[i].label_set for i in chosen)
    attributor = Attributor(
        center,
        scale,
        means,
        # a pseudo-inverse, as ood.py's: faces alike to the last pixel (flat test images) leave
        # no variation, and a singular covariance, not a LinAlgError after the whole training
        np.linalg.pinv(covariance, hermitian=True),
        {
            "method": METHOD,
            "features": {"name": FINGERPRINT_NAME, "count": FEATURES, "description": DESCRIPTION},
            "label_sets": [
                {
                    "label": labels.label,
                    "forgery_type": labels.forgery_type,
                    "generator": labels.generator,
                    "train_samples": counts[labels],
                }
                for labels in known
            ],
            "generators": list(dict.fromkeys(labels.generator for labels in known)),
            "shrinkage": float(shrinkage),
            "views": ["as stored", *(laundered or {})],
        },
    )
    val_chosen = fakes_of(val, attributor.generators)
    distances = np.concatenate(
        [attributor.distances(np.asarray(view)[val_chosen]) for _, view in views]
    )
    nearest = distances.min(axis=1)
    threshold = float(np.quantile(nearest, KEEP_FRACTION))
    truth = [val[i].generator for i in val_chosen] * len(views)
    calibration = _fit_temperature(attributor, distances, truth)
    attributor.record["temperature"] = calibration["temperature"]
    names, by_generator = attributor._summed(
        attributor.label_set_probabilities(distances), "generator"
    )
    top = [names[j] for j in by_generator.argmax(axis=1)]
    attributor.record.update(
        threshold=threshold,
        rule=RULE,
        keep_fraction=KEEP_FRACTION,
        val={
            "fakes": len(val_chosen),
            "attributed": float(np.mean(nearest <= threshold)),
            "top1": float(np.mean([a == b for a, b in zip(top, truth)])),
            "nll": calibration["nll"],
            "temperature_at_bound": calibration["at_bound"],
        },
        fitted_on={**fitted_on, "train_fakes": len(chosen), "val_fakes": len(val_chosen)},
        fitted_utc=utc_now(),
    )
    return attributor


def attributor_of(info: CheckpointInfo) -> Attributor | None:
    """A checkpoint's attribution, or None where it stores none this version reads."""
    record = info.attribution
    if not record or not _readable(record):
        return None
    tensors = read_fitted_tensors(info.path, ATTRIBUTION_TENSOR_PREFIX)
    return Attributor(
        *(tensors[f"{ATTRIBUTION_TENSOR_PREFIX}{name}"].double().numpy() for name in TENSORS),
        record,
    )


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
        "method": record["method"],
        "temperature": attributor.temperature,
        "threshold": record["threshold"],
        "rule": record["rule"],
        "fitted_on": record["fitted_on"],
    }


def _share(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def seen_figures(
    attributor: Attributor, samples: Sequence[Sample], result: Attributions
) -> dict[str, Any]:
    """Over the fakes of trained generators among ``samples`` (``result``: their attributions):
    how many, closed-set top-1 and top-3 accuracy, the share attributed and the open-set top-1
    (attributed and right); None where there is no such fake."""
    seen = fakes_of(samples, attributor.generators)
    ranked, named = result.ranked(), result.named()
    return {
        "n": len(seen),
        "top1": _share([ranked[i][0] == samples[i].generator for i in seen]),
        "top3": _share([samples[i].generator in ranked[i] for i in seen]),
        "attributed": _share([not result.unknown[i] for i in seen]),
        "open_set_top1": _share([named[i] == samples[i].generator for i in seen]),
    }


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
    share named as a trained generator, and the AUROC of the distance separating them from
    fakes of seen generators (test ones where the test split has them, else val's, as the
    cross-generator protocol holds seen generators out of test). The confusion matrix counts the
    open-set decision per true generator.
    """
    known = set(attributor.generators)
    named = test_result.named()
    seen = fakes_of(test, known)
    figures = seen_figures(attributor, test, test_result)
    unseen = [
        i
        for i, s in enumerate(test)
        if s.label != "real" and s.generator and s.generator not in known
    ]
    report: dict[str, Any] = {
        "available": True,
        "generators": attributor.generators,
        "method": attributor.record["method"],
        "threshold": attributor.threshold,
        "rule": attributor.record["rule"],
        "applies_to": "every test fake, whatever the 3-way head says of it",
        "seen": {"n": figures.pop("n"), "chance_top1": 1 / len(known), **figures},
    }
    if seen:
        reference, reference_scores = "test", test_result.distance[seen]
    else:
        reference, reference_scores = "val", val_result.distance[fakes_of(val, known)]
    unseen_scores = test_result.distance[unseen]
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
