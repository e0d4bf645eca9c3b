"""Honest operating points: the exact binomial bound on a threshold's false-positive rate, the
reals a target needs, and a split too small for its targets (docs/calibration.md)."""

import math

import numpy as np
import pytest
from scipy.stats import beta, binom

from mfclip_cli.errors import UsageError
from mfclip_cli.scoring.calibration import (
    fit_calibration,
    operating_point,
    softmax,
    threshold_for_fpr,
)
from mfclip_cli.scoring.fpr_bounds import (
    exact_interval,
    fpr_support,
    fpr_upper_bound,
    reals_needed,
)
from mfclip_cli.scoring.inconclusive import fit_uncertainty_threshold


@pytest.mark.parametrize(
    "false_positives, n",
    [(0, 1), (0, 37), (1, 37), (3, 37), (5, 100), (10, 1000), (99, 100), (250, 50_000)],
)
def test_clopper_pearson_upper_bound_matches_scipy(false_positives, n):
    bound = fpr_upper_bound(false_positives, n)
    assert bound == pytest.approx(beta.ppf(0.95, false_positives + 1, n - false_positives), 1e-9)
    # its definition: seeing at most k false positives is a 5 % event at that rate
    assert binom.cdf(false_positives, n, bound) == pytest.approx(0.05, rel=1e-6)


def test_clopper_pearson_by_hand():
    # zero false positives: (1 - p) ** n = 0.05, the "rule of three" (about 3 / n)
    assert fpr_upper_bound(0, 37) == pytest.approx(1 - 0.05 ** (1 / 37), rel=1e-12)
    assert fpr_upper_bound(0, 37) == pytest.approx(0.0778, abs=5e-5)  # the "about 8 %"
    # one false positive in 2: P(X <= 1) = 1 - p^2 = 0.05, so p = sqrt(0.95)
    assert fpr_upper_bound(1, 2) == pytest.approx(math.sqrt(0.95), rel=1e-12)
    assert fpr_upper_bound(4, 4) == 1.0
    assert math.isnan(fpr_upper_bound(0, 0))
    with pytest.raises(ValueError):
        fpr_upper_bound(5, 4)


@pytest.mark.parametrize("hits, n", [(0, 30), (0, 300), (0, 1000), (3, 37), (37, 37), (1, 2)])
def test_the_two_sided_exact_interval_by_its_definition(hits, n):
    """Each end is where seeing ``hits`` (or fewer, or more) becomes a 2.5 % event: with 0 of
    300 reals called fake the FPR is bounded at 0.0122, where a bootstrap said [0, 0]."""
    low, high = exact_interval(hits, n)
    assert low == (0.0 if hits == 0 else pytest.approx(beta.ppf(0.025, hits, n - hits + 1)))
    if hits < n:
        assert binom.cdf(hits, n, high) == pytest.approx(0.025, rel=1e-6)
    else:
        assert high == 1.0
    if hits:
        assert binom.sf(hits - 1, n, low) == pytest.approx(0.025, rel=1e-6)
    assert exact_interval(0, 0) is None


@pytest.mark.parametrize("target, needed", [(0.01, 299), (0.001, 2995), (0.05, 59)])
def test_reals_needed_is_the_smallest_split_that_can_show_the_target(target, needed):
    assert reals_needed(target) == needed
    assert fpr_upper_bound(0, needed) <= target < fpr_upper_bound(0, needed - 1)


def _split(n_real: int, n_fake: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = ["real"] * n_real + ["gan"] * n_fake
    classes = np.array([0] * n_real + [2] * n_fake)
    return rng.normal(0, 1, (len(labels), 3)) + 3 * np.eye(3)[classes], labels


def test_a_split_of_37_reals_cannot_support_one_percent_or_a_tenth_of_it():
    logits, labels = _split(37, 76)
    record = fit_calibration(logits, labels, fitted_on={"protocol": "in-domain"})
    for name, needed in (("fpr:0.01", 299), ("fpr:0.001", 2995)):
        entry = record["thresholds"][name]
        assert entry["n_real"] == 37 and entry["resolution"] == pytest.approx(1 / 37)
        assert entry["supported"] is False and entry["reals_needed"] == needed
        assert entry["false_positives"] == round(entry["val_fpr"] * 37) == 0
        assert entry["fpr_upper_95"] == pytest.approx(beta.ppf(0.95, 1, 37))
        with pytest.raises(UsageError, match=f"{name}.*unsupported.*{needed} validation reals"):
            threshold_for_fpr(record, entry["fpr"])
        accepted = threshold_for_fpr(record, entry["fpr"], accept_unsupported=True)
        assert accepted == entry["threshold"]


def test_a_large_split_supports_its_targets_and_counts_the_false_positives():
    logits, labels = _split(3000, 500, seed=1)
    record = fit_calibration(logits, labels, fitted_on={})
    reals = 1 - softmax(logits[:3000], record["temperature"])[:, 0]  # their fake scores
    for entry in record["thresholds"].values():
        seen = int((reals >= entry["threshold"]).sum())
        assert entry["false_positives"] == seen == round(entry["val_fpr"] * 3000)
        assert entry["supported"] is True
        assert entry["fpr_upper_95"] == pytest.approx(beta.ppf(0.95, seen + 1, 3000 - seen))
        assert threshold_for_fpr(record, entry["fpr"]) == entry["threshold"]


def test_a_record_written_before_support_was_kept_gets_it_from_its_counts():
    legacy = {
        "thresholds": {"fpr:0.01": {"fpr": 0.01, "threshold": 0.8, "val_fpr": 0.02, "val_tpr": 1}},
        "fitted_on": {"n_real": 50},
    }
    assert operating_point(legacy, 0.01) == {
        **legacy["thresholds"]["fpr:0.01"],
        **fpr_support(0.01, 50, 1),
    }
    with pytest.raises(UsageError, match="unsupported"):
        threshold_for_fpr(legacy, 0.01)


def test_the_inconclusive_band_keeps_the_lower_bound_of_its_conclusive_accuracy():
    # 20 val faces, sure to unsure: the 12 surest are right but the 11th, so the target 0.9 keeps
    # exactly those 12 (11 right) and the bound is Beta(11, 2)'s 5 % quantile
    sure = np.linspace(0.99, 0.60, 20)
    probs = np.stack([1 - sure, sure / 2, sure / 2], axis=1)  # every face said fake
    probs[0] = [sure[0], (1 - sure[0]) / 2, (1 - sure[0]) / 2]  # but the surest, said real:
    labels = ["gan"] * 20  # a band needs right faces of both classes (audit AK F1)
    labels[0] = labels[10] = "real"
    for i in range(12, 20):
        labels[i] = "real"
    band = fit_uncertainty_threshold(labels, probs, target=0.9)
    assert band["val_conclusive_faces"] == 12 and band["val_conclusive_accuracy"] == 11 / 12
    assert band["val_conclusive_accuracy_lower_95"] == pytest.approx(beta.ppf(0.05, 11, 2))
    # the same as one minus the upper bound on 1 error in 12
    assert band["val_conclusive_accuracy_lower_95"] == pytest.approx(1 - fpr_upper_bound(1, 12))


def test_the_tests_own_tpr_needs_the_reals_to_show_its_rate():
    """Audit E F1: with fewer than 1 / FPR test reals, "the test's own TPR at FPR <= 0.1 %" was
    the TPR at FPR 0 (the same figure at 1 % and 0.1 %), and its interval covered the truth
    5-24 % of the time: withheld, with the reason."""
    from mfclip_cli.engines.evaluate.evaluation import _oracle_problem

    for fpr, needed in ((0.01, 200), (0.001, 2000)):  # 2 / FPR: audit Q4
        assert _oracle_problem(fpr, needed) is None
        assert _oracle_problem(fpr, 10 * needed) is None
        problem = _oracle_problem(fpr, needed - 1)
        assert problem == (
            f"the test split has {needed - 1} real faces; an FPR of {fpr:g} needs at least "
            f"{needed} to be seen"
        )
