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

* the face's family: the detector's label for it (its leaning label where it is inconclusive;
  eval: the test fake's true label). As MFCLIP's prompts are (real -> family -> generator), a
  generator is only ever chosen among the label sets of that family: a face labelled gan is never
  named after a diffusion generator;
* d_k, its Mahalanobis distance to each stored label set of that family;
* p_k = softmax_k(-d_k^2 / (2 T) + log pi_k) over those label sets: the model's posterior softened
  by a temperature T >= 1 fitted on the validation fakes of the trained generators (their
  negative log-likelihood, each conditioned on its true family), since a Gaussian model of 216
  numbers is sure of itself far more often than it is right. The prior pi_k is equal per
  generator (the training split's mix of generators says nothing about a case's), shared by a
  generator's label sets: one trained under two forgery types is not twice as likely. A
  generator's probability is the sum over its label sets; the face's forgery type is that of the
  named generator's most probable label set;
* open set: the face is "unknown" when its family has no trained label set, when it is out of
  distribution (``ood.py``), or when its distance to the nearest label set of its family is above
  the threshold, the 95th percentile of that distance over the validation split's fakes of the
  trained generators, each in its true family (so 95 % of faces like those are attributed). A
  generator absent from training whose faces resemble no trained one is left unknown, not forced
  onto the nearest name.

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
from mfclip_cli.errors import CheckpointError
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
    "a shared Ledoit-Wolf-shrunk covariance; a face's generator chosen among the label sets of "
    "its family, with equal priors per generator"
)
APPLIED_RULE = (
    "unknown when the face's family has no trained generator, when the face is out of "
    "distribution, or when its Mahalanobis distance to the nearest trained label set of its "
    "family is above the threshold"
)
RULE = (
    f"{APPLIED_RULE}: the {KEEP_FRACTION:.0%} quantile of the validation fakes' distances (each "
    f"in its true family), as stored and laundered (keeps {KEEP_FRACTION:.0%} of those attributed)"
)
# the threshold of a checkpoint fitted before attribution kept to the face's family
EARLIER_RULE = (
    f"{APPLIED_RULE}: the {KEEP_FRACTION:.0%} quantile of the validation fakes' distances to the "
    "nearest label set of any family, as this checkpoint was fitted (before attribution kept to "
    "a face's family); never larger than the distance within the family, so at most "
    f"{KEEP_FRACTION:.0%} of those stay attributed"
)
OUT_OF_DISTRIBUTION, BEYOND_THRESHOLD = "out of distribution", "beyond the distance threshold"
NO_GENERATOR_OF_FAMILY = "no trained generator of its family"


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


def _ranked(probs: np.ndarray, eligible: np.ndarray, count: int) -> list[list[int]]:
    """Each row's ``count`` most probable eligible columns, best first (the first of equals)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return [[int(j) for j in row if mask[j]][:count] for row, mask in zip(order, eligible)]


def _why_unknown(distance: float, ood: bool | None, threshold: float) -> str | None:
    """The open-set rule for one face at ``distance`` from its family's nearest label set
    (infinite: the family has none); None where it is attributed."""
    if np.isinf(distance):
        return NO_GENERATOR_OF_FAMILY
    if ood:
        return OUT_OF_DISTRIBUTION
    return BEYOND_THRESHOLD if distance > threshold else None


@dataclass
class Attributions:
    """What an ``Attributor`` makes of N faces, as arrays."""

    generators: list[str]  # the columns of ``probs``
    # [N, G] among the trained generators of each face's family, 0 for the others: rows sum to
    # 1, or to 0 where the family has no trained generator
    probs: np.ndarray
    eligible: np.ndarray  # [N, G] bool: the generator is one of the face's family
    distance: np.ndarray  # [N] to the nearest trained label set of its family (nan: none)
    unknown: np.ndarray  # [N] bool
    reasons: list[str | None]  # [N] why unknown (None when attributed)
    family: list[str]  # [N] the family each face was attributed within
    # [N] the forgery type of the top generator's most probable label set (None: no generator)
    forgery_type: list[str | None]

    def ranked(self, count: int = TOP_COUNT) -> list[list[str]]:
        """Each face's ``count`` most probable trained generators of its family, best first
        (closed set; fewer where its family has fewer)."""
        top = _ranked(self.probs, self.eligible, count)
        return [[self.generators[j] for j in row] for row in top]

    def named(self) -> list[str]:
        """Each face's generator under the open-set rule: the top one, or ``unknown``."""
        return [
            UNKNOWN if unknown else top[0] for unknown, top in zip(self.unknown, self.ranked(1))
        ]

    def record(self, index: int) -> dict[str, Any]:
        """A face record's ``attribution``: its generator (or ``unknown`` and why), the family it
        was attributed within and the named generator's forgery type, its distance to the
        nearest trained label set of that family, and the family's closest trained generators
        with their probabilities (listed even when it is unknown)."""
        row = self.probs[index]
        top = _ranked(row[None], self.eligible[index][None], TOP_COUNT)[0]
        unknown = bool(self.unknown[index])
        distance = float(self.distance[index])
        return {
            "generator": UNKNOWN if unknown else self.generators[top[0]],
            "probability": None if unknown else round(float(row[top[0]]), 6),
            "family": self.family[index],
            "forgery_type": self.forgery_type[index],
            "distance": None if np.isnan(distance) else round(distance, 6),
            **({"reason": self.reasons[index]} if unknown else {}),
            "top": [
                {"generator": self.generators[j], "probability": round(float(row[j]), 6)}
                for j in top
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
            raise CheckpointError(  # the checkpoint's fault, not the face's: the scan stops
                f"fingerprints of shape {rows.shape} do not match the checkpoint's "
                f"{self.center.shape[0]}-number generator fingerprints"
            )
        offsets = ((rows - self.center) / self.scale)[:, None, :] - self.means[None]
        squared = np.einsum("nkf,fg,nkg->nk", offsets, self.precision, offsets)
        return np.sqrt(np.clip(squared, 0.0, None))

    def of_families(self, families: Sequence[str]) -> np.ndarray:
        """[N, K] bool: label set k is of face n's family, the only ones it is attributed among."""
        own = [labels["label"] for labels in self.label_sets]
        return np.array([[label == family for label in own] for family in families], dtype=bool)

    def membership(self) -> np.ndarray:
        """[K, G]: 1 where label set k is one of generator g's (columns as ``generators``)."""
        names = self.generators
        return np.array(
            [[labels["generator"] == name for name in names] for labels in self.label_sets],
            dtype=np.float64,
        ).reshape(len(self.label_sets), len(names))

    def log_priors(self) -> np.ndarray:
        """[K] each label set's log prior, up to a constant: equal per generator, shared by its
        label sets, so that one trained under two forgery types is not twice as likely."""
        keys = [(labels["label"], labels["generator"]) for labels in self.label_sets]
        counts = Counter(keys)
        return -np.log([counts[key] for key in keys])

    def label_set_probabilities(
        self, distances: np.ndarray, allowed: np.ndarray, temperature: float | None = None
    ) -> np.ndarray:
        """[N, K] the label sets' posterior probabilities among the ``allowed`` ones [N, K] (each
        face's family's; 0 elsewhere, a row of 0 where none is), at the stored temperature
        unless one is given."""
        temperature = self.temperature if temperature is None else temperature
        logits = -0.5 * np.square(distances) / temperature + self.log_priors()
        logits = np.where(allowed, logits, -np.inf)
        top = logits.max(axis=1, keepdims=True, initial=-np.inf)
        weights = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
        total = weights.sum(axis=1, keepdims=True)
        return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)

    def attribute(
        self,
        fingerprints: np.ndarray,
        families: Sequence[str],
        ood_flags: Sequence[bool | None] | None = None,
    ) -> Attributions:
        """The attribution of each face by its fingerprint [N, F] among the trained label sets
        of its family (``families``: the detector's label of each face, or eval's true label);
        ``ood_flags`` (None where unknown) mark faces out of distribution."""
        return self.from_distances(self.distances(fingerprints), families, ood_flags)

    def from_distances(
        self,
        distances: np.ndarray,
        families: Sequence[str],
        ood_flags: Sequence[bool | None] | None = None,
        threshold: float | None = None,
    ) -> Attributions:
        """``attribute`` of faces at these ``distances`` [N, K], at the stored threshold unless
        one is given."""
        if len(families) != len(distances):
            raise ValueError(f"{len(families)} families for {len(distances)} fingerprints")
        threshold = self.threshold if threshold is None else threshold
        allowed = self.of_families(families).reshape(distances.shape)
        by_set = self.label_set_probabilities(distances, allowed)
        membership = self.membership()
        by_generator = by_set @ membership
        eligible = allowed.astype(np.float64) @ membership > 0
        nearest = np.where(allowed, distances, np.inf).min(axis=1, initial=np.inf)
        flags = list(ood_flags) if ood_flags is not None else [None] * len(nearest)
        reasons = [_why_unknown(value, flag, threshold) for flag, value in zip(flags, nearest)]
        types: list[str | None] = []
        for sets, row, top in zip(allowed, by_set, _ranked(by_generator, eligible, 1)):
            # the named generator's most probable label set of the family gives the type
            own = np.flatnonzero(sets & (membership[:, top[0]] > 0)) if top else None
            chosen = None if own is None else self.label_sets[own[row[own].argmax()]]
            types.append(None if chosen is None else chosen["forgery_type"])
        return Attributions(
            self.generators,
            by_generator,
            eligible,
            np.where(np.isinf(nearest), np.nan, nearest),
            np.array([reason is not None for reason in reasons], dtype=bool),
            reasons,
            list(families),
            types,
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


def _fit_temperature(
    attributor: Attributor, distances: np.ndarray, allowed: np.ndarray, truth: Sequence[str]
) -> dict[str, Any]:
    """The temperature T in [1, MAX_TEMPERATURE] that minimises the negative log-likelihood of
    the true generators of faces at these ``distances`` [N, K], each among its ``allowed``
    label sets (its true family's), and that NLL before and after."""
    from scipy.optimize import minimize_scalar

    columns = [attributor.generators.index(name) for name in truth]
    membership = attributor.membership()

    def nll(log_temperature: float) -> float:
        by_set = attributor.label_set_probabilities(
            distances, allowed, float(np.exp(log_temperature))
        )
        chosen = (by_set @ membership)[np.arange(len(columns)), columns]
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
    # each val fake in its true family, as eval attributes test fakes; no threshold yet
    families = [val[i].label for i in val_chosen] * len(views)
    nearest = attributor.from_distances(distances, families, threshold=np.inf).distance
    threshold = float(np.quantile(nearest, KEEP_FRACTION))
    truth = [val[i].generator for i in val_chosen] * len(views)
    allowed = attributor.of_families(families).reshape(distances.shape)
    calibration = _fit_temperature(attributor, distances, allowed, truth)
    attributor.record["temperature"] = calibration["temperature"]
    top = attributor.from_distances(distances, families, threshold=threshold).ranked(1)
    attributor.record.update(
        threshold=threshold,
        rule=RULE,
        keep_fraction=KEEP_FRACTION,
        within_family=True,  # what ``rule_of`` tells apart from an earlier fit
        val={
            "fakes": len(val_chosen),
            "attributed": float(np.mean(nearest <= threshold)),
            "top1": float(np.mean([a == [b] for a, b in zip(top, truth)])),
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
    missing = [name for name in TENSORS if f"{ATTRIBUTION_TENSOR_PREFIX}{name}" not in tensors]
    if missing:
        raise CheckpointError(
            f"{info.path}: its attribution lacks the tensors {', '.join(missing)}: the file was "
            "altered"
        )
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
        "method": METHOD,
        "temperature": attributor.temperature,
        "threshold": record["threshold"],
        "rule": rule_of(record),
        "fitted_on": record["fitted_on"],
        # how far its probabilities can be trusted, beside them (audit Q L3: a temperature at
        # its bound, val top-1 below chance, named generators at p 0.34 of 3, said nowhere)
        **({"val": record["val"]} if record.get("val") else {}),
    }


def rule_of(record: dict[str, Any]) -> str:
    """The open-set rule as this version applies a checkpoint's stored threshold."""
    return RULE if record.get("within_family") else EARLIER_RULE


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
        "top1": _share([ranked[i][:1] == [samples[i].generator] for i in seen]),
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
    """Eval's attribution figures, on every test fake whatever the 3-way head says of it, each
    attributed within its true family (``test_result``, ``val_result``: so attributed).

    Seen generators (trained on): closed-set top-1 and top-3 accuracy (chance: one, or three,
    over the number of trained generators of the fake's family), the share attributed and the
    open-set top-1 (attributed and right). Unseen generators (named, not trained on): the
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
        "method": METHOD,
        "threshold": attributor.threshold,
        "rule": rule_of(attributor.record),
        "applies_to": "every test fake, within its true family, whatever the 3-way head says",
        "seen": {
            "n": figures.pop("n"),
            "chance_top1": _share([1 / max(1, test_result.eligible[i].sum()) for i in seen]),
            # a family of three or fewer trained generators is always in its top 3 (audit E F9)
            "chance_top3": _share(
                [min(3, n) / max(1, n) for n in (test_result.eligible[i].sum() for i in seen)]
            ),
            **figures,
        },
    }
    if seen:
        reference, reference_scores = "test", test_result.distance[seen]
    else:
        reference, reference_scores = "val", val_result.distance[fakes_of(val, known)]
    # a fake of a family with no trained generator (no distance) is farther than any
    unseen_scores = np.nan_to_num(test_result.distance[unseen], nan=np.finfo(np.float64).max)
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
