"""The terminal tables of mfclip eval, read from its report: one checkpoint's metrics,
calibration, operating points and robustness, and several checkpoints side by side; and the
lines mfclip calibrate prints of what it fitted."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from mfclip_cli.scoring.calibration import FPR_TARGETS, threshold_key
from mfclip_cli.scoring.fpr_bounds import unsupported_message

REPORTED = {
    "n": "n",
    "auc": "AUC",
    "ap": "AP",
    "eer": "EER",
    "acc": "ACC",
    "real_acc": "real\nACC",
    "fake_acc": "fake\nACC",
    "acc3": "3-way\nACC",
}  # the table; the JSON has every metric
CALIBRATION_REPORTED = {
    "ece_fake": "ECE, P(fake)",
    "ece_top_label": "ECE, top label",
    "brier_fake": "Brier, P(fake)",
    "brier": "Brier, 3 classes",
    "nll": "NLL",
    "auc": "AUC, P(fake)",
}
COMPARED = ("n", "auc", "ap", "eer", "acc")  # each checkpoint's overall figures, side by side
PAIR_FIGURES = ("auc_a", "auc_b", "difference", "standard_error", "z", "p_value")
SHA_SHOWN = 8  # hex digits of a SHA-256 in the tables


def _at_threshold(report: dict) -> str:
    """The ACC columns' threshold in a title, where it is not 0.5 (a figure copied from the
    table read as ACC at 0.5: audit N L2)."""
    threshold = report["threshold"]
    return "" if threshold == 0.5 else f"; ACC at fake score >= {threshold:g}"


def _thin_subsets(report: dict) -> str | None:
    """The subsets whose AUC, AP and EER rest on one face of a class: "n 17, AUC 0.062" read
    like any other row for 1 fake against 16 reals (audit N L3)."""
    thin = [
        f"{name} ({values['n_fake']} fake, {values['n_real']} real)"
        for name, values in report["subsets"].items()
        if min(values.get("n_fake", 2), values.get("n_real", 2)) == 1
    ]
    if not thin:
        return None
    return f"one face of a class, its AUC, AP and EER resting on it alone: {', '.join(thin)}"


def metrics_table(report: dict) -> Table:
    undefined = report.get("undefined")
    notes = [_thin_subsets(report)]
    if undefined:
        notes.insert(
            0,
            f"{', '.join(k.upper() for k in undefined['metrics'])} undefined: {undefined['why']}; "
            f"{undefined['defined']}",
        )
    table = Table(
        title=f"mfclip eval: protocol {report['protocol']['name']}, test split"
        + _at_threshold(report),
        caption="\n".join(note for note in notes if note) or None,
    )
    table.add_column("subset", overflow="fold", min_width=12)
    for header in REPORTED.values():
        table.add_column(header, justify="right", no_wrap=True)
    rows = [("overall", report["overall"]), *report["subsets"].items()]
    if report.get("subset_mean"):  # no count of its own: n is the subsets'
        mean = report["subset_mean"]
        rows.append((f"mean of {mean['subsets']} subsets", {**mean, "n": None}))
    if report["overall"].get("video"):
        rows.append(("overall (video)", report["overall"]["video"]))
    missing = set(undefined["metrics"]) if undefined else set()
    for name, values in rows:
        table.add_row(
            name,
            *(
                ("undefined" if k in missing else "-")
                if values.get(k) is None
                else (str(values[k]) if k == "n" else f"{values[k]:.3f}")
                for k in REPORTED
            ),
        )
    return table


def shown(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _bound_shown(val: dict | None) -> str:
    """A threshold's 95 % upper bound on its validation FPR, and whether val supports it."""
    if not val or val.get("fpr_upper_95") is None:
        return "-"
    bound = f"{val['fpr_upper_95']:.3f}"
    return bound if val["supported"] else f"{bound} (unsupported: < {val['reals_needed']} reals)"


def calibration_table(report: dict) -> Table:
    calibration = report["calibration"]
    applied = f"T = {calibration['temperature']:.3f}" if calibration["calibrated"] else "none"
    table = Table(title=f"probabilities on test (calibration: {applied})")
    table.add_column("metric")
    table.add_column("uncalibrated", justify="right")
    table.add_column("calibrated", justify="right")
    before, after = calibration["test"]["before"], calibration["test"]["after"] or {}
    for key, name in CALIBRATION_REPORTED.items():
        table.add_row(name, shown(before.get(key)), shown(after.get(key)))
    return table


def operating_table(report: dict) -> Table:
    intervals = report["intervals"]
    level = (
        f"{intervals['level']:.0%} CI by {intervals['unit']}, {intervals['replicates']} replicates"
        if intervals
        else "no CI"
    )
    overall = report["overall"]
    auc = shown(overall["auc"], intervals and intervals["auc"])
    eer = shown(overall["eer"], intervals and intervals["eer"])
    table = Table(
        title=f"operating points, thresholds chosen on val ({level}); AUC {auc}, EER {eer}"
    )
    columns = ("target FPR", "threshold", "val FPR <= (95 %)", "test FPR", "test TPR")
    for column in (*columns, "test's own TPR"):
        table.add_column(column, justify="right")
    for name, point in report["operating_points"]["points"].items():
        test = point["test"] or {}
        table.add_row(
            name,
            shown(point["threshold"]),
            _bound_shown(point["val"]),
            shown(test.get("fpr"), test.get("fpr_ci")),
            shown(test.get("tpr"), test.get("tpr_ci")),
            "too few reals"
            if point.get("test_oracle_problem")
            else shown(point["test_oracle_tpr"], point["test_oracle_tpr_ci"]),
        )
    return table


def robustness_table(report: dict) -> Table:
    robustness = report["robustness"]
    table = Table(title=f"robustness on test (seed {robustness['seed']}; ECE of P(fake))")
    table.add_column("perturbation")
    table.add_column("severity", justify="right")
    keys = ["auc", "ap", "acc", "ece"]
    headers = ["n", "AUC", "AP", "ACC", "ECE"]
    if "attribution" in robustness:  # the checkpoint attributes: its figures beside detection
        keys += ["attribution_top1", "attribution_attributed", "attribution_open_set_top1"]
        headers += ["attr.\ntop-1", "attr.\nnamed", "attr.\nright"]
        table.caption = (
            "attr.: attribution of the test fakes of trained generators: closed-set top-1, "
            "share named (not unknown), share named right"
        )
    for header in headers:
        table.add_column(header, justify="right")
    for row in robustness["rows"]:
        severity = "-" if row["severity"] is None else row["name"].partition(":")[2]
        table.add_row(
            row["perturbation"] or "clean",
            severity,
            str(row["n"]),
            *(shown(row[key]) for key in keys),
        )
    return table


def comparison_table(report: dict) -> Table:
    """Each checkpoint's figures in a row headed by its number; what each number names (path,
    config, SHA-256) in the caption below, which wraps, so the figures keep their columns on an
    80-column terminal or log."""
    comparison = report["comparison"]
    test = comparison["test"]
    legend = [
        f"#{position} {weights['name']}"
        + (" (DEMO)" if weights["demo"] else "")
        + f": config {weights['config']}, SHA-256 {weights['sha256'][:SHA_SHOWN]}"
        for position, weights in enumerate(comparison["weights"])
    ]
    table = Table(
        title=f"mfclip eval: {len(comparison['weights'])} checkpoints, protocol "
        f"{report['protocol']['name']}, the same {test['n']} test faces "
        f"({test['n_fake']} fake, {test['n_real']} real)" + _at_threshold(report),
        caption="\n".join(escape(line) for line in legend),
        caption_justify="left",
    )
    table.add_column("#", no_wrap=True)
    for key in COMPARED:
        table.add_column(REPORTED[key], justify="right", no_wrap=True)
    for fpr in FPR_TARGETS:
        table.add_column(f"TPR at\nFPR\n{fpr * 100:g}%", justify="right", no_wrap=True)
    for position, weights in enumerate(comparison["weights"]):
        metrics = weights["metrics"]
        table.add_row(
            f"#{position}",
            str(metrics["n"]),
            *(shown(metrics[key]) for key in COMPARED[1:]),
            *(
                shown(metrics["tpr_at_fpr"][threshold_key(fpr)])
                + _fpr_suffix(
                    (metrics.get("test_fpr_at_fpr") or {}).get(threshold_key(fpr)),
                    metrics["val_fpr_upper_95"][threshold_key(fpr)],
                )
                for fpr in FPR_TARGETS
            ),
        )
    return table


def _fpr_suffix(test_fpr: float | None, bound: float | None) -> str:
    """Under a TPR at FPR in the comparison: the test FPR its threshold gave (the TPRs of two
    checkpoints are compared at those) and the 95 % upper bound on its val FPR."""
    suffix = "" if test_fpr is None else f"\n(test FPR {test_fpr:.3f})"
    return suffix + ("" if bound is None else f"\n(val FPR<={bound:.3f})")


def pairs_table(report: dict) -> Table:
    """Every pair's test; why none ran (the test faces are the same for every pair) below it."""
    weights, pairs = report["comparison"]["weights"], report["comparison"]["pairs"]
    units = report["comparison"].get("pairs_on") or {"unit": "face"}
    over = ""
    if units["unit"] == "video":
        over = f" over {units['n']} videos (each the mean of its frames' probabilities)"
    notes = [pair["problem"] for pair in pairs if pair["problem"]]
    notes += [
        f"#{pair['a']} and #{pair['b']} hold the same network: they differ by calibration alone, "
        "whose temperature reorders faces by fake score (docs/calibration.md)"
        for pair in pairs
        if pair.get("same_network")
    ]
    table = Table(
        title=f"AUC differences{over}, DeLong's test (two-sided)",
        # the split's problem (every pair's), a pair's own (a zero standard error) or its
        # checkpoints' one network, once each
        caption="; ".join(dict.fromkeys(notes)) or None,
    )
    table.add_column("a")
    table.add_column("b")
    for column in ("AUC a", "AUC b", "a - b", "SE", "z", "p"):
        table.add_column(column, justify="right")
    for pair in pairs:
        p_value = pair["p_value"]
        table.add_row(
            f"#{pair['a']} {weights[pair['a']]['name']}",
            f"#{pair['b']} {weights[pair['b']]['name']}",
            *(shown(pair[key]) for key in ("auc_a", "auc_b", "difference", "standard_error")),
            "-" if pair["z"] is None else f"{pair['z']:.2f}",
            "-" if p_value is None else f"{p_value:.3g}",
        )
    return table


def robustness_comparison_table(report: dict) -> Table:
    """AUC under each perturbation, a column per checkpoint."""
    reports = report["comparison"]["reports"]
    seed = reports[0]["robustness"]["seed"]
    table = Table(title=f"AUC under perturbation (test, seed {seed})")
    table.add_column("perturbation")
    for position, single in enumerate(reports):
        table.add_column(f"#{position} {single['weights']['name']}", justify="right")
    for rows in zip(*(single["robustness"]["rows"] for single in reports)):
        table.add_row(rows[0]["name"], *(shown(row["auc"]) for row in rows))
    return table


def attribution_table(report: dict) -> Table | str:
    """Eval's attribution figures; a line saying why there are none otherwise."""
    attribution = report["attribution"]
    if not attribution["available"]:
        return f"attribution: unavailable ({attribution['reason']})"
    seen, unseen = attribution["seen"], attribution["unseen"]
    generators = attribution["generators"]
    table = Table(
        title=f"attribution of test fakes within their true family, only among the "
        f"{len(generators)} trained generators (by chance: top-1 {shown(seen['chance_top1'])}, "
        f"top-3 {shown(seen.get('chance_top3'))})"
    )
    table.add_column("test fakes of")
    table.add_column("n", justify="right")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, key in (
        ("top-1 accuracy", "top1"),
        ("top-3 accuracy", "top3"),
        ("attributed (not unknown)", "attributed"),
        ("attributed and right", "open_set_top1"),
    ):
        table.add_row("seen generators", str(seen["n"]), name, shown(seen[key]))
    reference = unseen["auroc_reference"]
    for name, key in (
        ("named as a trained generator", "named_as_known"),
        ("unknown", "unknown"),
        (f"AUROC unknown vs seen ({reference['split']} fakes)", "auroc_unknown"),
    ):
        table.add_row("unseen generators", str(unseen["n"]), name, shown(unseen[key]))
    return table


def inconclusive_table(report: dict) -> Table:
    """The inconclusive band on test: how many faces it marks, the metrics on the rest."""
    band = report["inconclusive"]
    threshold = band["uncertainty_threshold"]
    stored = "none stored" if threshold is None else f"{threshold:.4f}"
    family = band.get("family")
    table = Table(
        title=f"inconclusive band on test (uncertainty threshold {stored}, "
        f"{band.get('measure', 'binary')}{', OOD' if band['ood'] else ''}; docs/verdicts.md)",
        caption=None
        if family is None
        else f"of the {family['n']} conclusive faces called fake, {family['n_uncertain']} are "
        f"family-uncertain (above {family['uncertainty_threshold']:.4f}); family accuracy "
        f"{shown(family['accuracy_certain'])} on the rest, "
        f"{shown(family['accuracy_uncertain'])} on them",
    )
    for column in ("faces", "inconclusive", "share", *(REPORTED[k] for k in COMPARED[1:])):
        table.add_column(column, justify="right")
    conclusive = band["conclusive"]
    table.add_row(
        str(band["n"]),
        str(band["n_inconclusive"]),
        shown(band["share"]),
        *(shown(conclusive[key]) for key in COMPARED[1:]),
    )
    return table


def calibration_lines(result: dict) -> list[str]:
    """What ``mfclip calibrate`` says of the calibration it wrote: the temperature, each FPR
    threshold with its bound, the inconclusive band, int8's parity, attribution, the new file."""
    record = result["calibration"]
    fitted = record["fitted_on"]
    lines = [
        f"temperature {record['temperature']:.4f}: val NLL {record['nll']['before']:.4f} -> "
        f"{record['nll']['after']:.4f} ({fitted['samples']} samples, {fitted['n_real']} real, "
        f"protocol {fitted['protocol']})",
        *(
            f"{name}: threshold {entry['threshold']:.6f} (val FPR {entry['val_fpr']:.4f}, "
            f"TPR {entry['val_tpr']:.4f}; FPR <= {entry['fpr_upper_95']:.4f} at 95 %)"
            + ("" if entry["supported"] else f"; {unsupported_message('it', entry)}")
            for name, entry in record["thresholds"].items()
        ),
        _band_line(record["inconclusive"]),
        _parity_line(record["int8"]),
        f"wrote {result['weights']} (sha256 {result['sha256']})",
    ]
    attribution = result["attribution"]
    if attribution["available"]:
        lines.insert(
            -1,
            f"attribution among {len(attribution['generators'])} trained generator(s) "
            f"({', '.join(attribution['generators'])}): distance threshold "
            f"{attribution['threshold']:.2f}" + _attribution_fit(attribution.get("val")),
        )
    return lines


def _attribution_fit(val: dict | None) -> str:
    """How the attribution did on its val fakes, and a warning where its temperature sits at a
    bound (its probabilities near uniform: audit Q L3)."""
    if not val:
        return ""
    said = f"; val top-1 {val['top1']:.3f} of {val['fakes']} fakes"
    if val["temperature_at_bound"]:
        said += (
            "; WARNING: its temperature sits at a bound, its probabilities say little (more "
            "train and val fakes a generator would fit it)"
        )
    return said


def _band_line(band: dict) -> str:
    """What ``mfclip calibrate`` says about the inconclusive band it stored."""
    line = (
        f"inconclusive above uncertainty {band['uncertainty_threshold']:.6f} (target val "
        f"accuracy {band['target_accuracy']:g}"
    )
    if not band["reached"]:
        line += ": not reached on val, every face would be inconclusive)"
    else:
        line += f"; val: {_kept_words(band, 'conclusive')})"
    family = band.get("family")
    if family is None:
        return line + "\nno family threshold: no val fake was called fake"
    line += f"\nfamily uncertain above {family['uncertainty_threshold']:.6f}"
    if not family["reached"]:
        return line + " (not reached on val: every fake's family would be uncertain)"
    return line + f" (val fakes called fake: {_kept_words(family, 'family-certain')})"


def _kept_words(record: dict, kept: str) -> str:
    """What a fitted band threshold kept on val, in words."""
    return (
        f"{record['val_conclusive_share']:.1%} {kept}, accuracy "
        f"{record['val_conclusive_accuracy']:.4f} on them (95 % lower bound "
        f"{record['val_conclusive_accuracy_lower_95']:.4f} from the "
        f"{record['val_conclusive_faces']} faces that set the threshold: optimistic for new "
        f"faces), {record['val_accuracy']:.4f} on all"
    )


def _parity_line(int8: dict) -> str:
    """What calibrate measured of the int8 model against fp32 on val, in one line."""
    parity = int8["parity"]
    verdict = "auto runs int8 on a CPU" if parity["int8_allowed"] else "auto keeps fp32"
    figures = ", ".join(
        f"{name} fp32 {parity['fp32'][key]:.4f} int8 {parity['int8'][key]:.4f}"
        for name, key in (("AUC", "auc"), ("ECE", "ece_fake"))
        if parity["fp32"][key] is not None and parity["int8"][key] is not None
    )
    changed = parity["verdict_changes"]
    return (
        f"int8: temperature {int8['temperature']:.4f}; {changed['faces']} of "
        f"{parity['samples']} val verdicts changed ({parity['label_changes']} labels, "
        f"{changed['inconclusive']} inconclusive, {changed.get('ood', 0)} OOD flags, at the fpr "
        "thresholds "
        f"{sum(changed['operating_points'].values())}; up to {changed['share_upper_95']:.2%} "
        f"with 95 % confidence, at most {parity['max_label_change_share']:.0%} for auto), "
        f"p(fake) by at most {parity['max_fake_change']:.4f}; {figures}: {verdict}"
    )
