"""Evaluation metrics: the numpy implementations agree with scikit-learn, ties and thin subsets
included."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from mfclip_cli.model.config import CLASS_NAMES
from mfclip_cli.scoring.metrics import (
    average_precision,
    detection_metrics,
    equal_error_rate,
    roc_auc,
    roc_curve,
    video_level,
    video_metrics,
)
from mfclip_cli.scoring.plots import plot_roc


def _binary_cases():
    """(labels, scores) pairs: balanced, imbalanced both ways, heavily tied, all tied."""
    rng = np.random.default_rng(0)
    cases = []
    for n, fake_rate in [(50, 0.5), (200, 0.1), (200, 0.9), (37, 0.3)]:
        y = (rng.random(n) < fake_rate).astype(int)
        y[:2] = [0, 1]  # both classes always present
        noisy = rng.normal(size=n) + y
        cases += [
            (y, noisy),
            (y, np.round(rng.random(n) * 0.6 + 0.4 * y, 1)),
            (y, np.round(noisy, 0)),
        ]
    cases.append((np.array([0, 1, 0, 1, 1]), np.full(5, 0.5)))
    return cases


@pytest.mark.parametrize("y, score", _binary_cases())
def test_auc_ap_and_roc_match_sklearn(y, score):
    assert abs(roc_auc(y, score) - skm.roc_auc_score(y, score)) < 1e-12
    assert abs(average_precision(y, score) - skm.average_precision_score(y, score)) < 1e-12
    fpr, tpr, thresholds = roc_curve(y, score)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(thresholds[1:], sk_thresholds[1:])
    assert thresholds[0] == np.inf


def test_equal_error_rate_by_hand():
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    assert equal_error_rate(y, [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]) == 0.0
    assert equal_error_rate(y, [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]) == 1.0
    # One real (0.5) outranks one fake (0.4). Ranked: F F F R F R R R. After the fourth face the
    # threshold calls 3 of 4 fakes and 1 of 4 reals fake: FPR = 1/4, FNR = 1 - 3/4 = 1/4. That
    # ROC point lies exactly on FPR == FNR, so EER = 0.25 with no interpolation.
    assert equal_error_rate(y, [0.9, 0.8, 0.7, 0.4, 0.5, 0.3, 0.2, 0.1]) == pytest.approx(
        0.25, abs=1e-15
    )
    # Interpolated: fakes 0.9, 0.7, 0.6 and one real 0.8. ROC points (0, 0), (0, 1/3), (1, 1/3),
    # (1, 2/3), (1, 1). On the segment (0, 1/3) -> (1, 1/3), FNR stays 2/3 while FPR runs from 0
    # to 1, so the two meet at FPR = FNR = 2/3.
    assert equal_error_rate([1, 0, 1, 1], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(2 / 3, abs=1e-15)
    # A real and a fake tied: the ROC is the chance diagonal, EER = 1/2.
    assert equal_error_rate([0, 1], [0.5, 0.5]) == 0.5


@pytest.mark.parametrize("y, score", _binary_cases())
def test_equal_error_rate_is_where_fpr_meets_fnr(y, score):
    """Independent check: intersect FPR(t) and FNR(t) from sklearn's ROC points."""
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    fnr = 1 - tpr
    i = np.flatnonzero(fpr >= fnr)[0]
    a, b = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    expected = fpr[i - 1] + (fpr[i] - fpr[i - 1]) * (-a / (b - a))
    assert equal_error_rate(y, score) == pytest.approx(expected, abs=1e-12)


def test_one_class_is_undefined_not_an_error():
    for y in ([0, 0, 0], [1, 1, 1], []):
        assert math.isnan(roc_auc(y, np.linspace(0, 1, len(y))))
        assert math.isnan(average_precision(y, np.linspace(0, 1, len(y))))
        assert math.isnan(equal_error_rate(y, np.linspace(0, 1, len(y))))
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3]])
    result = detection_metrics(["real"] * 3, probs)
    assert result["auc"] is None and result["ap"] is None and result["eer"] is None
    assert result["fake_acc"] is None and result["real_acc"] == pytest.approx(2 / 3)
    assert (result["n"], result["n_real"], result["n_fake"]) == (3, 3, 0)
    json.dumps(result, allow_nan=False)  # no NaN leaks into the JSON


def test_scores_must_be_finite():
    """Two infinite scores differ by NaN, so they did not tie: roc_auc([1, 0], [inf, inf]) was
    0 or 1 by the order of its input. Scores are refused as NaN is."""
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match="NaN or an infinity"):
            roc_auc([1, 0], [bad, bad])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="0 \\(real\\) and 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        roc_curve([0, 1], [0.1])
    with pytest.raises(ValueError, match="unknown label"):
        detection_metrics(["real", "deepfake"], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="shape"):
        detection_metrics(["real"], np.ones((1, 2)))


def _random_eval(seed, n=120):
    rng = np.random.default_rng(seed)
    labels = [CLASS_NAMES[i] for i in rng.integers(0, 3, size=n)]
    probs = rng.dirichlet(np.ones(3), size=n)
    return labels, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_detection_metrics_match_sklearn(seed, threshold):
    labels, probs = _random_eval(seed)
    result = detection_metrics(labels, probs, threshold=threshold)
    json.dumps(result, allow_nan=False)

    y3 = np.array([CLASS_NAMES.index(label) for label in labels])
    pred3 = probs.argmax(axis=1)
    y = (y3 != 0).astype(int)
    score = 1 - probs[:, 0]
    pred = (score >= threshold).astype(int)
    assert result["auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert result["ap"] == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)
    assert result["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert result["real_acc"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=1e-12)
    assert result["fake_acc"] == pytest.approx(skm.recall_score(y, pred, pos_label=1), abs=1e-12)
    assert result["acc3"] == pytest.approx(skm.accuracy_score(y3, pred3), abs=1e-12)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y3, pred3, average="macro"), abs=1e-12)
    assert result["confusion"] == skm.confusion_matrix(y3, pred3, labels=[0, 1, 2]).tolist()
    assert (result["n"], result["n_real"] + result["n_fake"]) == (len(labels), len(labels))


def test_macro_f1_averages_only_classes_seen():
    # No GAN in the labels or the predictions: the macro average runs over real and diffusion only.
    labels = ["real", "real", "diffusion", "diffusion"]
    probs = np.array([[0.8, 0.2, 0], [0.3, 0.7, 0], [0.1, 0.9, 0], [0.2, 0.8, 0]])
    y3, pred3 = [0, 0, 1, 1], probs.argmax(axis=1)
    result = detection_metrics(labels, probs)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y3, pred3, average="macro"), abs=1e-12)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # A GAN prediction with no GAN label brings the class in, with F1 = 0.
    probs[0] = [0.1, 0.1, 0.8]
    pred3 = probs.argmax(axis=1)
    result = detection_metrics(labels, probs)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y3, pred3, average="macro"), abs=1e-12)
    assert result["confusion"] == [[0, 1, 1], [0, 2, 0], [0, 0, 0]]


def test_video_level_groups_by_exact_key():
    keys = ["A/000_003", "B/000_003", "A/000_003", None, "B/000_003", None]
    labels = ["diffusion", "real", "diffusion", "gan", "real", "real"]
    probs = np.array(
        [
            [0.2, 0.6, 0.2],
            [0.9, 0.1, 0.0],
            [0.4, 0.4, 0.2],
            [0.1, 0.1, 0.8],
            [0.7, 0.3, 0.0],
            [0.5, 0.25, 0.25],
        ]
    )
    video_keys, video_labels, video_probs = video_level(keys, labels, probs)
    assert video_keys == ["A/000_003", "B/000_003", None, None]
    assert video_labels == ["diffusion", "real", "gan", "real"]
    np.testing.assert_allclose(
        video_probs, [[0.3, 0.5, 0.2], [0.8, 0.2, 0.0], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]]
    )

    result = video_metrics(keys, labels, probs)
    assert result == detection_metrics(video_labels, video_probs)
    assert result["n"] == 4


def test_video_level_rejects_mixed_labels_and_skips_keyless_sets():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="'v1'.*'real'.*'gan'"):
        video_level(["v1", "v1"], ["real", "gan"], probs)
    assert video_metrics([None, None], ["real", "gan"], probs) is None


def test_plot_roc_writes_png_and_refuses_to_overwrite(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    fpr, tpr, _ = roc_curve(y, score)
    curves = {
        "frames": (fpr, tpr, roc_auc(y, score)),
        "empty": (*roc_curve([0, 0], [0.1, 0.2])[:2], math.nan),
    }
    path = tmp_path / "roc.png"
    plot_roc(curves, path, "test ROC")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and 200 <= image.width <= 2000 and 200 <= image.height <= 2000

    with pytest.raises(FileExistsError):
        plot_roc(curves, path, "again")
    assert path.read_bytes() == data
    plot_roc({"frames": curves["frames"]}, path, "again", overwrite=True)
    assert path.read_bytes() != data
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]  # no temporary files left behind


def test_video_level_fields_follow_the_threshold():
    """Every video-level field at a non-default threshold, recomputed with scikit-learn
    (issue 19)."""
    from mfclip_cli.data import Sample
    from mfclip_cli.engines.inference import score_samples

    rng = np.random.default_rng(3)
    classes = list(CLASS_NAMES)
    samples, rows = [], []
    for video in range(40):
        label = classes[video % 3]
        centre = rng.dirichlet([4, 1, 1] if label == "real" else [1, 2, 2])
        for _ in range(int(rng.integers(1, 5))):
            samples.append(
                Sample(
                    path=f"v{video}/{len(samples)}.png", label=label, video=f"clips/v{video}.mp4"
                )
            )
            rows.append(rng.dirichlet(centre * 20 + 0.5))
    probs = np.array(rows)
    threshold = 0.8
    frame_level = score_samples(samples, probs, threshold)
    video = frame_level["video"]

    keys = [sample.video for sample in samples]
    order = list(dict.fromkeys(keys))
    video_probs = np.array(
        [probs[[i for i, key in enumerate(keys) if key == k]].mean(0) for k in order]
    )
    video_y = np.array(
        [classes.index(next(s.label for s in samples if s.video == k)) for k in order]
    )
    is_fake, score = (video_y != 0).astype(int), 1.0 - video_probs[:, 0]
    said_fake = (score >= threshold).astype(int)
    fpr, tpr, _ = skm.roc_curve(is_fake, score)
    eer_at = np.nanargmin(np.abs(fpr - (1 - tpr)))
    expected = {
        "n": len(order),
        "n_real": int((is_fake == 0).sum()),
        "n_fake": int(is_fake.sum()),
        "auc": skm.roc_auc_score(is_fake, score),
        "ap": skm.average_precision_score(is_fake, score),
        "acc": skm.accuracy_score(is_fake, said_fake),
        "real_acc": skm.accuracy_score(is_fake[is_fake == 0], said_fake[is_fake == 0]),
        "fake_acc": skm.accuracy_score(is_fake[is_fake == 1], said_fake[is_fake == 1]),
        "acc3": skm.accuracy_score(video_y, video_probs.argmax(1)),
        "macro_f1": skm.f1_score(video_y, video_probs.argmax(1), average="macro"),
        "confusion": skm.confusion_matrix(
            video_y, video_probs.argmax(1), labels=[0, 1, 2]
        ).tolist(),
    }
    assert set(video) == set(expected) | {"eer"}
    assert video.pop("confusion") == expected.pop("confusion")
    for key, value in expected.items():
        assert video[key] == pytest.approx(value, abs=1e-12), key
    assert video["eer"] == pytest.approx((fpr[eer_at] + 1 - tpr[eer_at]) / 2, abs=0.05)
    # The threshold matters here: at 0.5 the accuracy differs, so a default would have been caught.
    assert video["acc"] != score_samples(samples, probs, 0.5)["video"]["acc"]


def test_the_mean_over_subsets_weighs_each_alike_and_keeps_undefined_null():
    from mfclip_cli.scoring.metrics import MEANED_METRICS, subset_mean

    big = detection_metrics(
        ["real"] * 90 + ["gan"] * 10, [[0.9, 0, 0.1]] * 90 + [[0.2, 0, 0.8]] * 10
    )
    small = detection_metrics(["real", "gan"], [[0.4, 0, 0.6], [0.3, 0, 0.7]])
    mean = subset_mean([big, small])
    assert mean["subsets"] == 2 and set(mean) == {"subsets", *MEANED_METRICS}
    assert mean["acc"] == pytest.approx((1.0 + 0.5) / 2)  # pooled, 91 / 92
    one_class = detection_metrics(["gan", "gan"], [[0.1, 0, 0.9]] * 2)
    assert one_class["auc"] is None
    undefined = subset_mean([big, one_class])
    assert undefined["auc"] is None and undefined["fake_acc"] == pytest.approx(1.0)


def test_a_subset_resting_on_one_face_of_a_class_is_named_under_the_table():
    """ "n 17, AUC 0.062" read like any other row for 1 fake against 16 reals (audit N L3)."""
    from rich.console import Console

    from mfclip_cli.engines.evaluate.tables import metrics_table

    def row(n_fake: int, n_real: int) -> dict:
        return {"n": n_fake + n_real, "n_fake": n_fake, "n_real": n_real, "auc": 0.5}

    report = {
        "protocol": {"name": "in-domain"},
        "threshold": 0.5,
        "overall": row(9, 16),
        "subsets": {"checker4": row(1, 16), "blur": row(8, 16)},
    }
    console = Console(width=200, record=True)
    console.print(metrics_table(report))
    text = " ".join(console.export_text().split())
    assert "resting on it alone: checker4 (1 fake, 16 real)" in text and "blur (" not in text
    report["subsets"]["checker4"] = row(2, 16)
    assert metrics_table(report).caption is None
