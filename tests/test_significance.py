"""DeLong's test against scikit-learn's AUC, brute-force placement values, and its behaviour
under the null and under a real difference."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mfclip_cli.scoring.significance import delong_test, delong_variance


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _brute_components(labels, scores):
    """V10 and V01 by their definition: a double loop over positives and negatives."""
    positives = [s for s, label in zip(scores, labels) if label == 1]
    negatives = [s for s, label in zip(scores, labels) if label == 0]
    v10 = [sum(_psi(x, y) for y in negatives) / len(negatives) for x in positives]
    v01 = [sum(_psi(x, y) for x in positives) / len(positives) for y in negatives]
    return v10, v01


def _sample_covariance(a, b):
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    return sum((p - mean_a) * (q - mean_b) for p, q in zip(a, b)) / (len(a) - 1)


def _brute_covariance(labels, first, second):
    """S10_ab / m + S01_ab / n from loop-built placement values."""
    v10_a, v01_a = _brute_components(labels, first)
    v10_b, v01_b = _brute_components(labels, second)
    return _sample_covariance(v10_a, v10_b) / len(v10_a) + _sample_covariance(v01_a, v01_b) / len(
        v01_a
    )


def _problem(seed: int, count: int, noise: float = 1.0):
    """Labels and two independent noisy scorers of them, scores rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    a = np.round(labels + noise * rng.standard_normal(count), 1)
    b = np.round(labels + noise * rng.standard_normal(count), 1)
    return labels, a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_scikit_learn_ties_included(seed):
    labels, a, b = _problem(seed, 150)
    result = delong_test(labels, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(roc_auc_score(labels, b), abs=1e-12)
    assert result["difference"] == pytest.approx(result["auc_a"] - result["auc_b"], abs=1e-15)
    assert (result["positives"], result["negatives"]) == (labels.sum(), (1 - labels).sum())


def test_a_hand_computed_example():
    """Positives 0.9, 0.4 and negatives 0.5, 0.1: V10 = (1, 1/2), V01 = (1/2, 1), AUC 3/4 and
    variance 0.125 / 2 + 0.125 / 2."""
    auc, variance = delong_variance([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert auc == pytest.approx(0.75)
    assert variance == pytest.approx(0.125)


@pytest.mark.parametrize("seed", [3, 4])
def test_variance_equals_the_brute_force_definition(seed):
    labels, a, _ = _problem(seed, 90)
    auc, variance = delong_variance(labels, a)
    v10, v01 = _brute_components(labels.tolist(), a.tolist())
    assert auc == pytest.approx(sum(v10) / len(v10), abs=1e-12)
    assert auc == pytest.approx(sum(v01) / len(v01), abs=1e-12)
    assert variance == pytest.approx(_brute_covariance(labels.tolist(), a, a), rel=1e-10)


@pytest.mark.parametrize("seed", [5, 6])
def test_variance_of_the_difference_equals_the_brute_force_one(seed):
    labels, a, b = _problem(seed, 80, noise=0.8)
    result = delong_test(labels, a, b)
    y = labels.tolist()
    var_a, var_b = _brute_covariance(y, a, a), _brute_covariance(y, b, b)
    cov = _brute_covariance(y, a, b)
    assert result["variance_a"] == pytest.approx(var_a, rel=1e-10)
    assert result["variance_b"] == pytest.approx(var_b, rel=1e-10)
    assert result["covariance"] == pytest.approx(cov, rel=1e-9, abs=1e-15)
    error = math.sqrt(var_a + var_b - 2 * cov)
    assert result["standard_error"] == pytest.approx(error, rel=1e-9)
    z = (result["auc_a"] - result["auc_b"]) / error
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)


def test_identical_scores_give_p_one():
    labels, a, _ = _problem(7, 60)
    result = delong_test(labels, a, a.copy())
    assert result["difference"] == 0.0
    assert result["standard_error"] == 0.0
    assert result["z"] == 0.0
    assert result["p_value"] == 1.0


def test_no_spread_but_a_difference_gives_p_zero():
    """A perfect and a perfectly reversed scorer: every placement value differs by exactly 1,
    so the difference has no variance yet is as large as it gets."""
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    result = delong_test(labels, scores, -scores)
    assert result["difference"] == 1.0
    assert result["standard_error"] == 0.0
    assert result["z"] == math.inf
    assert result["p_value"] == 0.0


def test_a_much_worse_scorer_is_told_apart():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 2000)
    a = labels + rng.standard_normal(2000)
    b = a + 2.0 * rng.standard_normal(2000)
    result = delong_test(labels, a, b)
    assert result["difference"] > 0.05
    assert result["p_value"] < 0.01
    assert delong_test(labels, b, a)["p_value"] == pytest.approx(result["p_value"])


def test_rejection_rate_under_the_null_is_near_the_level():
    """Two independent, equally good scorers of the same truth: at level 0.05 the test should
    reject about 5% of the time (200 replicates: about 0.02 to 0.08 for a correct test)."""
    rejections = [delong_test(*_problem(seed, 200))["p_value"] < 0.05 for seed in range(200)]
    assert 0.01 <= np.mean(rejections) <= 0.12


@pytest.mark.parametrize(
    "labels,scores,message",
    [
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "two positive and two negative"),
        ([1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "got 1 positive and 3 negative"),
        ([1, 2, 0, 0], [0.1, 0.2, 0.3, 0.4], "0 \\(negative"),
        ([1, 1, 0, 0], [0.1, 0.2, 0.3], "do not match"),
        ([1, 1, 0, 0], [0.1, float("nan"), 0.3, 0.4], "finite"),
    ],
)
def test_bad_input_is_refused_clearly(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        delong_variance(labels, scores)
    with pytest.raises(ValueError, match=message):
        delong_test(labels, scores, scores)
