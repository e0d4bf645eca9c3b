"""Calibration and operating points: hand computations, scikit-learn references and synthetic
truths (docs/calibration.md has the definitions)."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import norm
from sklearn import metrics as skm

from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.weights.store import BUNDLED_STORE, is_demo
from mfclip_cli.errors import UsageError
from mfclip_cli.model import read_checkpoint_info, save_checkpoint
from mfclip_cli.model.checkpoint import save_fitted, sidecar_path
from mfclip_cli.scoring.calibration import (
    CalibrationError,
    calibration_problem,
    fit_calibration,
    fit_temperature,
    nll,
    parse_fake_threshold,
    softmax,
    temperature_warning,
    threshold_for_fpr,
)
from mfclip_cli.scoring.metrics import (
    _area,
    _best_tpr,
    _crossing,
    _curve_counts,
    _rates,
    bootstrap_intervals,
    calibration_metrics,
    equal_error_rate,
    expected_calibration_error,
    rates_at_threshold,
    reliability_bins,
    roc_auc,
    threshold_at_fpr,
    tpr_at_fpr,
)
from mfclip_cli.scoring.plots import plot_reliability

# -- ECE and Brier by hand ------------------------------------------------------------------------
# Four faces; fake score 1 - p(real) and top-label confidence each land in a bin of their own
# (15 bins of width 1/15, right-closed), so each bin's gap is one face's |outcome - prediction|.
LABELS = ["real", "real", "gan", "diffusion"]
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # fake score 0.10, top 0.90 right
        [0.30, 0.62, 0.08],  # fake score 0.70, top 0.62 wrong
        [0.25, 0.05, 0.70],  # fake score 0.75, top 0.70 right
        [0.75, 0.20, 0.05],  # fake score 0.25, top 0.75 wrong
    ]
)


def test_ece_and_brier_match_a_hand_computation():
    result = calibration_metrics(LABELS, PROBS)
    assert result["ece_fake"] == pytest.approx((0.10 + 0.70 + 0.25 + 0.75) / 4)
    assert result["ece_top_label"] == pytest.approx((0.10 + 0.62 + 0.30 + 0.75) / 4)
    assert result["brier_fake"] == pytest.approx((0.01 + 0.49 + 0.0625 + 0.5625) / 4)
    per_face = [0.01 + 0.0025 + 0.0025, 0.49 + 0.3844 + 0.0064, 0.0625 + 0.0025 + 0.09]
    per_face.append(0.5625 + 0.64 + 0.0025)
    assert result["brier"] == pytest.approx(sum(per_face) / 4)
    assert (result["n"], result["bins"]) == (4, 15)
    fake, score = [0, 0, 1, 1], 1 - PROBS[:, 0]
    assert result["brier_fake"] == pytest.approx(skm.brier_score_loss(fake, score))


def test_ece_weights_bins_by_their_faces_and_bins_are_right_closed():
    # 0.10 and 0.12 share bin 1: mean prediction 0.11, observed 1/2; 0.90 is alone in bin 13.
    assert expected_calibration_error([0.10, 0.12, 0.90], [1, 0, 1]) == pytest.approx(
        (2 * 0.39 + 0.10) / 3
    )
    count, mean, frequency = reliability_bins([0.0, 1 / 15, 1.0], [0, 1, 1])
    assert count[0] == 2 and count[14] == 1 and count.sum() == 3
    assert mean[0] == pytest.approx(1 / 30) and frequency[0] == 0.5
    assert np.isnan(mean[5])  # an empty bin has no mean
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        reliability_bins([1.5], [1])


def test_a_certain_fit_has_an_nll_of_zero_not_minus_zero():
    """calibrate printed "val NLL 0.0034 -> -0.0000" at the lower temperature bound (audit N
    L3): every face certain gives -0.0."""
    logits = np.array([[800.0, 0.0, 0.0], [0.0, 800.0, 0.0]])
    value = nll(logits, np.array([0, 1]))
    assert value == 0 and math.copysign(1.0, value) == 1.0 and f"{value:.4f}" == "0.0000"


def test_nll_matches_sklearn_log_loss():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (50, 3))
    classes = rng.integers(0, 3, 50)
    for temperature in (0.5, 1.0, 3.0):
        expected = skm.log_loss(classes, softmax(logits, temperature), labels=[0, 1, 2])
        assert nll(logits, classes, temperature) == pytest.approx(expected, rel=1e-9)


# -- temperature ----------------------------------------------------------------------------------
@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_fit_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 3))
    probs = softmax(logits, true_temperature)
    classes = (rng.random(len(logits))[:, None] > probs.cumsum(axis=1)).sum(axis=1)
    fitted = fit_temperature(logits, classes)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(logits, classes) == fitted  # deterministic
    best = nll(logits, classes, fitted)
    assert best <= nll(logits, classes, true_temperature) and best < nll(logits, classes, 1.0)


def test_calibration_record_thresholds_are_on_calibrated_val_scores():
    rng = np.random.default_rng(1)
    labels = ["real"] * 300 + ["gan"] * 150 + ["diffusion"] * 150
    classes = np.array([0] * 300 + [2] * 150 + [1] * 150)
    logits = rng.normal(0, 1, (600, 3)) + 3 * np.eye(3)[classes]
    record = fit_calibration(logits, labels, fitted_on={"data": "D", "protocol": "in-domain"})
    assert record["fitted_on"] == {
        "data": "D",
        "protocol": "in-domain",
        "split": "val",
        "samples": 600,
        "n_real": 300,
        "n_fake": 300,
    }
    score = 1 - softmax(logits, record["temperature"])[:, 0]
    fake = (classes != 0).astype(int)
    assert set(record["thresholds"]) == {"fpr:0.01", "fpr:0.001"}
    for entry in record["thresholds"].values():
        assert entry["threshold"] == threshold_at_fpr(fake, score, entry["fpr"])
        assert entry["val_fpr"] <= entry["fpr"]
        assert (entry["val_fpr"], entry["val_tpr"]) == rates_at_threshold(
            fake, score, entry["threshold"]
        )
    assert record["nll"]["after"] <= record["nll"]["before"]
    json.dumps(record, allow_nan=False)


def test_a_temperature_at_a_bound_is_said_for_what_it_means():
    labels = ["real"] * 20 + ["gan"] * 20
    classes = np.array([0] * 20 + [2] * 20)
    separated = fit_calibration(20 * np.eye(3)[classes], labels, fitted_on={})
    inverted = fit_calibration(5 * np.eye(3)[2 - classes], labels, fitted_on={})
    healthy = np.random.default_rng(0).normal(0, 1, (40, 3)) + 2 * np.eye(3)[classes]
    assert separated["at_bound"] and inverted["at_bound"]
    assert "lower search bound" in temperature_warning(separated)
    said = temperature_warning(inverted)
    assert "upper search bound (T = 100)" in said and "near uniform" in said
    assert temperature_warning(fit_calibration(healthy, labels, fitted_on={})) is None
    assert temperature_warning(None) is None
    # logits that do not depend on the class (a flat head): the NLL is the same at every T;
    # the search ran to T = 0.01 and said "separated" of probabilities of exactly 1/3 (audit E
    # F12)
    flat = fit_calibration(np.full((40, 3), 0.7), labels, fitted_on={})
    assert flat["temperature"] == 1.0 and not flat["at_bound"]
    assert temperature_warning(flat) is None


def test_one_class_or_empty_validation_cannot_calibrate():
    logits = np.zeros((3, 3))
    with pytest.raises(CalibrationError, match="only real faces"):
        fit_calibration(logits, ["real"] * 3, fitted_on={})
    with pytest.raises(CalibrationError, match="only fake faces"):
        fit_calibration(logits, ["gan", "diffusion", "gan"], fitted_on={})
    assert "empty" in calibration_problem([])
    assert calibration_problem(["real", "gan"]) is None
    with pytest.raises(CalibrationError, match="needs samples"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


# -- operating points -----------------------------------------------------------------------------
def _cases():
    rng = np.random.default_rng(7)
    for n, rate, rounding in [(400, 0.5, None), (300, 0.2, 1), (1000, 0.7, 2)]:
        y = (rng.random(n) < rate).astype(int)
        y[:2] = [0, 1]
        score = rng.normal(size=n) + 1.5 * y
        yield y, (score if rounding is None else np.round(score, rounding))


@pytest.mark.parametrize("y, score", list(_cases()))
@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.3])
def test_tpr_at_fpr_and_its_threshold_match_sklearn_roc_curve(y, score, target):
    fpr, tpr, thresholds = skm.roc_curve(y, score, drop_intermediate=False)
    allowed = fpr <= target
    assert tpr_at_fpr(y, score, target) == tpr[allowed].max()
    lowest = thresholds[allowed][-1]
    if np.isfinite(lowest):
        assert threshold_at_fpr(y, score, target) == lowest
    assert rates_at_threshold(y, score, threshold_at_fpr(y, score, target))[0] <= target


def test_the_threshold_chosen_on_val_is_applied_to_test_as_it_is():
    val_y = np.array([0] * 100 + [1] * 6)
    # reals 0.00 .. 0.99; fakes 0.975, 0.985, 0.995 rank around the top real
    val_score = np.r_[np.arange(100) / 100, [0.2, 0.5, 0.975, 0.985, 0.995, 0.999]]
    # FPR <= 1 %: at most the top real (0.99) above; the lowest such ROC threshold is the fake
    # at 0.985 (0.98 would add a second real)
    threshold = threshold_at_fpr(val_y, val_score, 0.01)
    assert threshold == 0.985
    assert rates_at_threshold(val_y, val_score, threshold) == (0.01, 3 / 6)
    # test has its own, shifted scores: the val threshold is used as it is, never re-chosen
    test_y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    test_score = np.array([0.1, 0.986, 0.99, 0.5, 0.985, 0.9, 0.999, 0.97])
    assert rates_at_threshold(test_y, test_score, threshold) == (2 / 4, 2 / 4)
    assert tpr_at_fpr(test_y, test_score, 0.01) == 1 / 4  # the test's own oracle differs
    # the top val face is real: no data threshold reaches FPR 0.1 %, so it sits just above it
    top_real = np.r_[val_score, 1.0]
    strict = threshold_at_fpr(np.r_[val_y, 0], top_real, 0.001)
    assert 1.0 < strict < 1.0 + 1e-12
    assert rates_at_threshold(np.r_[val_y, 0], top_real, strict) == (0.0, 0.0)
    assert math.isnan(threshold_at_fpr([1, 1], [0.2, 0.3], 0.01))  # no real: no FPR
    with pytest.raises(ValueError, match="strictly between"):
        threshold_at_fpr(val_y, val_score, 0.0)


# -- bootstrap ------------------------------------------------------------------------------------
def test_weighted_curves_equal_the_curves_of_the_repeated_data():
    """A bootstrap replicate (draw counts per sample) scores exactly like the data it stands
    for."""
    rng = np.random.default_rng(2)
    y = np.r_[0, 1, (rng.random(60) < 0.4).astype(int)]
    score = np.round(rng.normal(size=62) + y, 1)  # ties included
    weights = rng.integers(0, 4, size=(5, 62))
    weights[:, :2] = 1
    tps, fps, distinct = _curve_counts(y, score, weights)
    fpr, tpr = _rates(tps, fps)
    for row, counts in enumerate(weights):
        ry, rs = np.repeat(y, counts), np.repeat(score, counts)
        assert _area(fpr, tpr)[row] == pytest.approx(roc_auc(ry, rs), abs=1e-12)
        assert _crossing(fpr, tpr)[row] == pytest.approx(equal_error_rate(ry, rs), abs=1e-12)
        assert _best_tpr(fpr, tpr, 0.1)[row] == pytest.approx(tpr_at_fpr(ry, rs, 0.1), abs=1e-12)
        column = int(np.count_nonzero(distinct >= 0.5))
        expected = rates_at_threshold(ry, rs, 0.5)
        assert (fpr[row, column], tpr[row, column]) == pytest.approx(expected, abs=1e-12)


def _coverage(draw, truth: dict, datasets: int, **options) -> dict:
    hits = dict.fromkeys(truth, 0)
    for seed in range(datasets):
        y, score, units = draw(np.random.default_rng(seed))
        result = bootstrap_intervals(y, score, units=units, seed=seed, **options)
        for name in truth:
            low, high = result[name]
            hits[name] += low <= truth[name] <= high
    return {name: count / datasets for name, count in hits.items()}


def test_bootstrap_intervals_cover_the_truth_at_their_level():
    d = 1.0  # reals N(0, 1), fakes N(1, 1)
    truth = {"auc": norm.cdf(d / math.sqrt(2)), "eer": norm.cdf(-d / 2)}

    def draw(rng):
        y = np.r_[np.zeros(150, int), np.ones(150, int)]
        return y, rng.normal(size=300) + d * y, None

    coverage = _coverage(draw, truth, datasets=150, replicates=300)
    for name, value in coverage.items():
        assert 0.88 <= value <= 0.995, (name, value)


def test_bootstrap_over_videos_covers_what_a_sample_bootstrap_misses():
    """Frames of a video share most of their score: only resampling whole videos gives intervals
    as wide as the truth's uncertainty."""
    d, frames = 1.0, 10
    truth = {"auc": norm.cdf(d / math.sqrt(2 * (1 + 0.1**2)))}

    def draw(rng):
        video_y = np.r_[np.zeros(30, int), np.ones(30, int)]
        effect = rng.normal(size=60) + d * video_y
        y = np.repeat(video_y, frames)
        score = np.repeat(effect, frames) + rng.normal(0, 0.1, size=y.size)
        return y, score, [f"clips/{i // frames}.mp4" for i in range(y.size)]

    by_video = _coverage(draw, truth, datasets=100, replicates=200)
    by_frame = _coverage(lambda rng: (*draw(rng)[:2], None), truth, datasets=100, replicates=200)
    assert by_video["auc"] >= 0.85 and by_frame["auc"] <= 0.7, (by_video, by_frame)


def test_bootstrap_is_seeded_and_reports_its_design():
    rng = np.random.default_rng(0)
    y = np.r_[0, 1, (rng.random(200) < 0.5).astype(int)]
    score = rng.normal(size=202) + y
    options = dict(fprs=(0.01, 0.1), thresholds=(0.8,), replicates=400)
    first = bootstrap_intervals(y, score, seed=3, **options)
    assert first == bootstrap_intervals(y, score, seed=3, max_cells=1000, **options)  # chunking
    assert first != bootstrap_intervals(y, score, seed=4, **options)
    assert first["valid"] == 400 and first["units"] == 202 and first["level"] == 0.95
    assert first["auc"][0] < roc_auc(y, score) < first["auc"][1]
    assert len(first["tpr_at_fpr"]) == 2 and set(first["at_threshold"][0]) == {"fpr", "tpr"}
    empty = bootstrap_intervals([1, 1, 1], [0.1, 0.2, 0.3], replicates=50)
    assert empty["auc"] is None and empty["valid"] == 0  # one class: no curve, no interval


def test_reliability_diagram_is_a_png(tmp_path):
    prob = np.linspace(0, 1, 40)
    panels = {"P(fake)": {"before": (prob, prob > 0.5), "after": (prob**2, prob > 0.5)}}
    path = tmp_path / "reliability.png"
    plot_reliability(panels, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        plot_reliability(panels, path)


# -- where it is stored and used ------------------------------------------------------------------
RECORD = {
    "method": "temperature scaling",
    "temperature": 2.0,
    "at_bound": False,
    "thresholds": {
        "fpr:0.01": {"fpr": 0.01, "threshold": 0.9, "val_fpr": 0.01, "val_tpr": 0.5},
        "fpr:0.001": {"fpr": 0.001, "threshold": 0.99, "val_fpr": 0.0, "val_tpr": 0.2},
    },
    # written before thresholds kept their support: it is derived from n_real and val_fpr
    "fitted_on": {
        "data": {"name": "D", "samples": 8000, "index_sha256": "0" * 64},
        "protocol": "in-domain",
        "split": "val",
        "samples": 8000,
        "n_real": 5000,
        "n_fake": 3000,
    },
}


def test_calibration_lives_in_the_header_and_a_copy_gets_a_new_hash(tiny_model, tmp_path):
    plain = save_checkpoint(tiny_model, tmp_path / "plain.safetensors")
    assert read_checkpoint_info(plain.path).calibration is None
    calibrated = save_fitted(plain, tmp_path / "calibrated.safetensors", calibration=RECORD)
    assert calibrated.sha256 != plain.sha256
    source_tensors, copy_tensors = load_file(plain.path), load_file(calibrated.path)
    assert source_tensors.keys() == copy_tensors.keys()
    assert all(torch.equal(source_tensors[k], copy_tensors[k]) for k in source_tensors)
    sidecar = json.loads(sidecar_path(calibrated.path).read_text())
    assert sidecar["sha256"] == calibrated.sha256 and sidecar["calibration"] == RECORD
    sidecar_path(calibrated.path).unlink()  # the header alone carries it
    info = read_checkpoint_info(calibrated.path)
    assert info.calibration == RECORD and info.sha256 == calibrated.sha256
    with pytest.raises(FileExistsError):
        save_fitted(plain, calibrated.path, calibration=RECORD)
    direct = save_checkpoint(tiny_model, tmp_path / "direct.safetensors", calibration=RECORD)
    assert read_checkpoint_info(direct.path).calibration == RECORD


def test_a_calibrated_demo_stays_the_demo_without_its_sidecar(tmp_path):
    demo = read_checkpoint_info(BUNDLED_STORE / "mfclip-demo-tiny.safetensors")
    copy = save_fitted(
        demo, tmp_path / "demo-cal.safetensors", calibration={**RECORD, "base_sha256": demo.sha256}
    )
    sidecar_path(copy.path).unlink()
    assert is_demo(read_checkpoint_info(copy.path))


def test_fake_threshold_spellings_and_lookup():
    assert parse_fake_threshold("0.7") == (0.7, None)
    assert parse_fake_threshold("fpr:0.01") == (None, 0.01)
    assert parse_fake_threshold("FPR:1e-3") == (None, 0.001)
    for bad, reason in [("fpr:x", "takes a rate"), ("fpr:1", "strictly"), ("1.5", "not in")]:
        with pytest.raises(ValueError, match=reason):
            parse_fake_threshold(bad)
    assert threshold_for_fpr(RECORD, 0.001) == 0.99
    with pytest.raises(UsageError, match="fpr:0.01, fpr:0.001 only"):
        threshold_for_fpr(RECORD, 0.05)
    with pytest.raises(UsageError, match="no thresholds.*mfclip calibrate"):
        threshold_for_fpr(None, 0.01)


def test_scanner_reports_softmax_of_logits_over_temperature(tiny_model, faces):
    settings = ScanSettings(device="cpu", batch_size=4)
    device = torch.device("cpu")
    raw = np.stack(
        [face.probs for face in Scanner(tiny_model, settings, device).model_stage.classify(faces)]
    )
    scanner = Scanner([Scorer(tiny_model, temperature=2.5)], settings, device)
    calibrated = np.stack([face.probs for face in scanner.model_stage.classify(faces)])
    np.testing.assert_allclose(calibrated, softmax(np.log(raw), 2.5), atol=1e-5)
    assert not np.allclose(calibrated, raw, atol=1e-3)


def test_eval_says_where_fake_scores_round_to_0_or_1_and_tie():
    """At T = 0.01 (a calibration on a separable val split) a face's p(real) of 1e-20 leaves a
    fake score of exactly 1.0: such faces tie, and AUC and the low-FPR figures lose their order
    (the demo's AUC fell from 0.923 to 0.862 with no word why)."""
    from mfclip_cli.engines.evaluate.evaluation import saturation_warning

    logits = np.array([[0.0, 5, 0], [0, 6, 0], [3, 0, 0], [0.1, 0, 0]])
    at_bound = {"at_bound": True, "temperature": 0.01}
    warning = saturation_warning(softmax(logits, 0.01), at_bound)
    assert warning.startswith("3 of 4 test faces") and "lower bound" in warning
    assert saturation_warning(softmax(logits, 1.0), None) is None
