"""What eval writes beside its report, each drawn from one checkpoint's scores on the test
split (``Scored``): the predictions CSV (every figure of the report can be recomputed from it),
ROC and reliability plots, the t-SNE of the embeddings, and the robustness and inconclusive plots.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mfclip_cli.data import Sample
from mfclip_cli.data.perturb import KINDS
from mfclip_cli.files import atomic_writer
from mfclip_cli.labels import CLASS_NAMES
from mfclip_cli.scoring.attribution import Attributions
from mfclip_cli.scoring.inconclusive import INCONCLUSIVE, band_curve
from mfclip_cli.scoring.metrics import fake_labels, fake_scores, roc_auc, roc_curve
from mfclip_cli.scoring.plots import (
    plot_embeddings,
    plot_inconclusive,
    plot_reliability,
    plot_robustness,
    plot_roc,
)


@dataclass
class Scored:
    """One checkpoint's report on the test split and what its optional outputs are drawn from."""

    report: dict
    logits: np.ndarray  # test, uncalibrated
    probs: np.ndarray  # test, calibrated
    embeddings: np.ndarray | None
    groups: dict[str, tuple[Sequence[Sample], np.ndarray]]  # overall and each subset: ROC curves
    inconclusive: np.ndarray  # [N] test faces the band marks (docs/verdicts.md)
    attributions: Attributions | None = None  # test, where the checkpoint can attribute
    ood: np.ndarray | None = None  # test faces' OOD flags, where the checkpoint has statistics


ATTRIBUTION_COLUMNS = ("generator_top3", "generator_unknown", "generator_distance")


def write_predictions(
    path: str,
    samples: Sequence[Sample],
    scored: Scored,
    classes: Sequence[str],
    force: bool,
) -> None:
    """Per test sample its probabilities, fields, and the inconclusive band's inputs and call
    (``ood`` empty where the checkpoint has no OOD statistics); where the checkpoint attributes,
    for a fake, its three closest trained generators of its true family (best first,
    ``;``-separated), whether the open-set rule left it unknown, and its distance to the nearest
    trained label set of that family (empty for a real, and where the family has none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    attributions = scored.attributions
    extra = ATTRIBUTION_COLUMNS if attributions is not None else ()
    writer.writerow(
        [
            "path",
            "label",
            *classes,
            "forgery_type",
            "generator",
            "dataset",
            "video",
            "ood",
            "inconclusive",
            *extra,
        ]
    )
    marked = scored.inconclusive
    ranked = attributions.ranked() if attributions is not None else []
    for position, (sample, row) in enumerate(zip(samples, scored.probs)):
        cells = [
            sample.path,
            sample.label,
            # each float64 whole (its shortest exact form): 8 decimals tied the faces whose p(real)
            # is below 5e-9, which the report still ordered (audit N L1)
            *(repr(float(value)) for value in row),
            sample.forgery_type,
            sample.generator,
            sample.dataset,
            sample.video or "",
            "" if scored.ood is None else str(bool(scored.ood[position])).lower(),
            str(bool(marked[position])).lower(),
        ]
        if attributions is not None and not sample.is_real:
            distance = attributions.distance[position]  # nan: no trained generator of its family
            cells += [
                ";".join(ranked[position]),
                str(bool(attributions.unknown[position])).lower(),
                "" if np.isnan(distance) else f"{distance:.8f}",
            ]
        elif attributions is not None:  # a generator is asked of fakes only
            cells += [""] * len(ATTRIBUTION_COLUMNS)
        writer.writerow(cells)
    with atomic_writer(path, overwrite=force) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def write_plots(
    folder: str,
    groups: dict[str, tuple[Sequence[Sample], np.ndarray]],
    reliability: dict[str, np.ndarray],
    force: bool,
) -> list[str]:
    """ROC curves of ``groups`` and reliability diagrams of the test split's probabilities
    ``{curve name: probs}`` (uncalibrated, calibrated)."""
    curves = {}
    for name, (samples, probs) in groups.items():
        fake = fake_labels(samples)
        if 0 < fake.sum() < len(fake):
            fpr, tpr, _ = roc_curve(fake, fake_scores(probs))
            curves[name] = (fpr, tpr, roc_auc(fake, fake_scores(probs)))
    written = []
    if curves:
        path = Path(folder) / "roc.png"
        plot_roc(curves, path, title="ROC, fake score = 1 - p(real)", overwrite=force)
        written.append(str(path))
    test = groups["overall"][0]
    if test:
        classes = np.array([CLASS_NAMES.index(sample.label) for sample in test])
        panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {
            "P(fake) = 1 - p(real)": {},
            "top label (3 classes)": {},
        }
        for name, probs in reliability.items():
            panels["P(fake) = 1 - p(real)"][name] = (fake_scores(probs), fake_labels(test))
            right = probs.argmax(axis=1) == classes
            panels["top label (3 classes)"][name] = (probs.max(axis=1), right)
        path = Path(folder) / "reliability.png"
        plot_reliability(panels, path, overwrite=force)
        written.append(str(path))
    return written


def write_embeddings(
    path: str, samples: Sequence[Sample], embeddings: np.ndarray, seed: int, force: bool
) -> dict:
    """A seeded t-SNE (scikit-learn) of the test split's face embeddings, drawn twice: coloured
    by class and by generator (real faces as "real")."""
    from sklearn.manifold import TSNE  # only here: a second of import for a plot

    count = len(embeddings)
    perplexity = min(30.0, (count - 1) / 3)
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(embeddings.astype(np.float64))
    plot_embeddings(
        points,
        {
            "class": [sample.label for sample in samples],
            "generator": [sample.generator or sample.label for sample in samples],
        },
        path,
        title=f"t-SNE of {count} test face embeddings",
        overwrite=force,
    )
    return {"path": path, "method": "t-SNE", "perplexity": perplexity, "seed": seed, "faces": count}


def write_robustness_plot(folder: str, robustness: dict, force: bool) -> str:
    """AUC against severity, a panel per perturbation kind, the clean AUC as reference."""
    clean, *rows = robustness["rows"]
    curves = {}
    for kind, spec in KINDS.items():
        mine = [row for row in rows if row["perturbation"] == kind]
        if mine:
            severities = [row["severity"] for row in mine]
            aucs = [row["auc"] for row in mine]
            curves[kind] = (severities, aucs, spec.axis, spec.milder_when_higher)
    path = Path(folder) / "robustness.png"
    plot_robustness(curves, clean["auc"], path, overwrite=force)
    return str(path)


def write_inconclusive_plot(
    folder: str, test: Sequence[Sample], scored: Scored, threshold: float, force: bool
) -> str:
    """The band's trade-off on test as its threshold sweeps, the stored threshold marked."""
    band = scored.report[INCONCLUSIVE]
    labels = [sample.label for sample in test]
    curve = band_curve(labels, scored.probs, scored.ood, threshold, band["measure"])
    stored = None
    if band["uncertainty_threshold"] is not None:
        stored = (band["share"], band["conclusive"]["acc"], band["conclusive"]["auc"])
    path = Path(folder) / "inconclusive.png"
    plot_inconclusive(curve, stored, path, overwrite=force)
    return str(path)
