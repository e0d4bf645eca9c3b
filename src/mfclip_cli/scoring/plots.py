"""The figures of mfclip eval (ROC curves, reliability diagrams, robustness, t-SNE), drawn apart
from the numbers so that computing a metric never imports matplotlib."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mfclip_cli.files import atomic_writer
from mfclip_cli.scoring.metrics import (
    CALIBRATION_BINS,
    expected_calibration_error,
    reliability_bins,
)


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no pyplot, no GUI backend, no global state.

    matplotlib is imported here so that computing metrics never pays for it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure, path: str | Path, overwrite: bool) -> None:
    figure.tight_layout()
    with atomic_writer(path, overwrite=overwrite) as handle:
        figure.savefig(handle, format="png")


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]],
    path: str | Path,
    title: str,
    *,
    overwrite: bool = False,
) -> None:
    """Draw ROC curves ``{name: (fpr, tpr, auc)}`` with a chance diagonal to a PNG, written
    atomically; an existing ``path`` is replaced only with ``overwrite=True``."""
    figure = _figure(5, 5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (fpr, tpr, auc) in curves.items():
        shown = "n/a" if auc is None or math.isnan(auc) else f"{auc:.3f}"
        axes.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {shown})")
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
    )
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    _save_png(figure, path, overwrite)


def plot_reliability(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    path: str | Path,
    *,
    bins: int = CALIBRATION_BINS,
    overwrite: bool = False,
) -> None:
    """Reliability diagrams, one panel per ``{title: {curve: (prob, outcome)}}``, to a PNG.

    Each curve joins the filled ``reliability_bins`` at (mean prediction, observed frequency);
    the diagonal is perfect calibration, and the legend gives each curve's ECE.
    """
    figure = _figure(5 * len(panels), 5)
    for position, (title, curves) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(1, len(panels), position)
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        for name, (prob, outcome) in curves.items():
            count, mean, frequency = reliability_bins(prob, outcome, bins)
            filled = count > 0
            ece = expected_calibration_error(prob, outcome, bins)
            label = f"{name} (ECE {ece:.3f})"
            axes.plot(mean[filled], frequency[filled], marker="o", linewidth=1.5, label=label)
        axes.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="predicted probability",
            ylabel="observed frequency",
            title=title,
        )
        axes.set_aspect("equal")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
    _save_png(figure, path, overwrite)


def plot_robustness(
    curves: dict[str, tuple[Sequence[float], Sequence[float | None], str, bool]],
    reference: float | None,
    path: str | Path,
    *,
    overwrite: bool = False,
) -> None:
    """AUC against severity to a PNG, one panel per ``{name: (severities, aucs, axis label,
    milder when higher)}`` (severities differ in unit, so each has its own x axis, milder to the
    left), the clean AUC ``reference`` a dashed line in each; an undefined AUC is a gap."""
    figure = _figure(4 * len(curves), 4)
    first = None
    for position, (name, (severities, aucs, axis, milder_when_higher)) in enumerate(
        curves.items(), start=1
    ):
        axes = figure.add_subplot(1, len(curves), position, sharey=first)
        first = first or axes
        values = [math.nan if auc is None else auc for auc in aucs]
        axes.plot(severities, values, marker="o", linewidth=1.5, label=name)
        if reference is not None:
            label = f"clean (AUC {reference:.3f})"
            axes.axhline(reference, linestyle="--", color="grey", linewidth=1, label=label)
        if milder_when_higher:
            axes.invert_xaxis()
        axes.set(xlabel=axis, ylabel="AUC", title=name)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize="small")
    _save_png(figure, path, overwrite)


def plot_embeddings(
    points: np.ndarray,
    colourings: dict[str, Sequence[str]],
    path: str | Path,
    title: str,
    *,
    overwrite: bool = False,
) -> None:
    """2-D points [N, 2] drawn once per ``{name: a label per point}``, coloured by that label with
    a legend, side by side in one PNG."""
    figure = _figure(6 * len(colourings), 5.5)
    for position, (name, labels) in enumerate(colourings.items(), start=1):
        axes = figure.add_subplot(1, len(colourings), position)
        names = sorted(set(labels))
        colours = _colours(len(names))
        for colour, value in zip(colours, names):
            chosen = np.array([label == value for label in labels])
            axes.scatter(*points[chosen].T, s=12, color=colour, label=f"{value} ({chosen.sum()})")
        axes.set(title=f"{title}, by {name}", xticks=[], yticks=[])
        axes.legend(loc="best", fontsize="small", markerscale=1.5)
    _save_png(figure, path, overwrite)


def _colours(count: int) -> list:
    """Distinct colours: matplotlib's tab10, then tab20 for more labels."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def plot_confusion(
    confusion: dict, path: str | Path, title: str, *, overwrite: bool = False
) -> None:
    """A count matrix ``{"rows": [...], "columns": [...], "counts": [[...]]}`` as a heat map to a
    PNG, each cell labelled with its count; rows are normalised for the colour only."""
    counts = np.asarray(confusion["counts"], dtype=np.float64)
    rows, columns = confusion["rows"], confusion["columns"]
    figure = _figure(max(4.0, 1.0 + 0.9 * len(columns)), max(3.0, 1.2 + 0.6 * len(rows)))
    axes = figure.add_subplot()
    shares = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, j in np.ndindex(counts.shape):
        colour = "white" if shares[i, j] > 0.6 else "black"
        axes.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour)
    axes.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize="small")
    axes.set_yticks(range(len(rows)), rows, fontsize="small")
    axes.set(xlabel="attributed to", ylabel="true generator", title=title)
    _save_png(figure, path, overwrite)


def plot_inconclusive(
    curve: dict[str, list],
    stored: tuple[float, float | None, float | None] | None,
    path: str | Path,
    *,
    overwrite: bool = False,
) -> None:
    """Accuracy and AUC on the conclusive faces against the share marked inconclusive, as the
    uncertainty threshold sweeps (``inconclusive.band_curve``); ``stored`` (share, accuracy,
    AUC) marks the checkpoint's own threshold."""
    figure = _figure(5.5, 4.5)
    axes = figure.add_subplot()
    for key, name in (("acc", "accuracy"), ("auc", "AUC")):
        values = [math.nan if value is None else value for value in curve[key]]
        axes.plot(curve["share"], values, marker=".", linewidth=1.5, label=f"{name}, conclusive")
    if stored is not None:
        share, acc, auc = stored
        for value, name in ((acc, "accuracy"), (auc, "AUC")):
            if value is not None:
                axes.plot([share], [value], "k*", markersize=12)
        axes.axvline(share, color="grey", linestyle="--", linewidth=1, label="stored threshold")
    axes.set(
        xlim=(0, 1),
        xlabel="share of test faces inconclusive",
        ylabel="on the conclusive faces",
        title="the inconclusive band on test",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    _save_png(figure, path, overwrite)
