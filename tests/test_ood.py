"""The out-of-distribution flag: Mahalanobis statistics against a direct computation, their
refusals, and their round trip through a checkpoint and the scanner."""

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.model import load_checkpoint, read_checkpoint_info, save_checkpoint
from mfclip_cli.model.checkpoint import Fitted, save_fitted, sidecar_path
from mfclip_cli.scoring.ood import OOD_QUANTILE, OodStatistics, fit_ood, ood_of, ood_problem


def _clusters(seed: int, per_class: int, dim: int = 6):
    """Three Gaussian classes with one covariance that is far from isotropic."""
    mixing = np.random.default_rng(99).normal(size=(dim, dim)) * np.linspace(0.2, 3.0, dim)
    rng = np.random.default_rng(seed)
    centres = {"real": 0.0, "diffusion": 6.0, "gan": -6.0}
    labels = [name for name in centres for _ in range(per_class)]
    points = np.stack([centres[name] + rng.normal(size=dim) @ mixing for name in labels])
    return points, labels


def _reference_distances(train, labels, points):
    """Mahalanobis distance to the nearest class mean, written out point by point."""
    labels = np.asarray(labels)
    names = sorted(set(labels))
    means = {name: train[labels == name].mean(axis=0) for name in names}
    residuals = np.concatenate([train[labels == name] - means[name] for name in names])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(residuals).covariance_)
    return np.array(
        [min(float(np.sqrt((x - m) @ precision @ (x - m))) for m in means.values()) for x in points]
    )


def test_distances_and_threshold_match_a_direct_computation():
    train, labels = _clusters(0, 200)
    val, _ = _clusters(1, 300)
    statistics = fit_ood(train, labels, val, fitted_on={"data": "synthetic"})
    far = np.array([[40.0] * 6, [0.0, 0.0, 0.0, 0.0, 0.0, -50.0]])
    np.testing.assert_allclose(
        statistics.distances(far), _reference_distances(train, labels, far), rtol=1e-8
    )
    val_distances = statistics.distances(val)
    np.testing.assert_allclose(val_distances, _reference_distances(train, labels, val), rtol=1e-8)
    record = statistics.record
    assert record["threshold"] == pytest.approx(np.quantile(val_distances, OOD_QUANTILE))
    assert record["classes"] == ["real", "diffusion", "gan"] and record["dimensions"] == 6
    assert record["val_flagged"] == pytest.approx(0.01, abs=0.005)
    assert record["fitted_on"] == {"data": "synthetic", "train_samples": 600, "val_samples": 900}
    assert statistics.flags(statistics.distances(far)).all()
    # fresh points from the training distribution are flagged about 1 % of the time
    fresh, _ = _clusters(2, 2000)
    assert statistics.flags(statistics.distances(fresh)).mean() == pytest.approx(0.01, abs=0.006)


def test_the_shared_covariance_is_what_makes_a_direction_far():
    """Along the data's widest direction a point is nearer, in Mahalanobis terms, than the same
    Euclidean step along its narrowest: the flag is not a plain distance."""
    rng = np.random.default_rng(3)
    train = rng.normal(size=(400, 2)) * np.array([10.0, 0.5])
    statistics = fit_ood(train, ["real"] * 400, train[:50], fitted_on={})
    wide, narrow = statistics.distances(np.array([[8.0, 0.0], [0.0, 8.0]]))
    assert narrow > 10 * wide


def test_splits_that_cannot_give_statistics_say_why():
    assert "two" in ood_problem(["real"], 5)
    assert "no class has two" in ood_problem(["real", "gan", "diffusion"], 5)
    assert "validation split is empty" in ood_problem(["real", "real"], 0)
    assert ood_problem(["real", "real", "gan"], 1) is None
    with pytest.raises(ValueError, match="validation split is empty"):
        fit_ood(np.zeros((4, 3)), ["real"] * 4, np.zeros((0, 3)), fitted_on={})
    statistics = OodStatistics(np.zeros((1, 3)), np.eye(3), {"threshold": 1.0})
    with pytest.raises(ValueError, match="do not match"):
        statistics.distances(np.zeros((2, 4)))


def _with_statistics(tiny_model, tmp_path, threshold=None):
    """A tiny checkpoint and a copy of it with OOD statistics of its own face embeddings."""
    plain = save_checkpoint(tiny_model, tmp_path / "plain.safetensors")
    faces = torch.rand(24, 3, tiny_model.crop_size, tiny_model.crop_size)
    with torch.no_grad():
        embeddings = tiny_model.eval().embed_and_classify(faces)[0].numpy()
    labels = ["real", "diffusion", "gan"] * 8
    statistics = fit_ood(embeddings[:18], labels[:18], embeddings[18:], fitted_on={"step": 1})
    if threshold is not None:
        statistics.record["threshold"] = threshold
    fitted = save_fitted(
        plain,
        tmp_path / "fitted.safetensors",
        fitted={"ood": statistics.fitted()},
    )
    return plain, fitted, statistics, faces


def test_statistics_round_trip_through_the_checkpoint(tiny_model, tmp_path):
    plain, fitted, statistics, _ = _with_statistics(tiny_model, tmp_path)
    assert fitted.sha256 != plain.sha256 and ood_of(plain) is None
    info = read_checkpoint_info(fitted.path)
    assert info.ood == statistics.record
    loaded = ood_of(info)
    np.testing.assert_array_equal(loaded.class_means, statistics.class_means)
    np.testing.assert_array_equal(loaded.precision, statistics.precision)
    # the model loads as before: its tensors are not the statistics
    model, _ = load_checkpoint(fitted.path)
    for name, tensor in tiny_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    # a later calibration keeps the statistics; new ones replace them
    calibrated = save_fitted(
        read_checkpoint_info(fitted.path),
        tmp_path / "calibrated.safetensors",
        calibration={"method": "temperature", "temperature": 2.0, "fitted_on": {}},
    )
    assert read_checkpoint_info(calibrated.path).ood == statistics.record
    assert ood_of(read_checkpoint_info(calibrated.path)).precision.shape == (64, 64)
    import json

    assert json.loads(sidecar_path(calibrated.path).read_text())["ood"] == statistics.record
    misnamed = Fitted(statistics.record, {"means": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"named ood\.\*"):
        save_fitted(plain, tmp_path / "misnamed.safetensors", fitted={"ood": misnamed})
    with pytest.raises(ValueError, match="unknown fitted"):
        save_fitted(plain, tmp_path / "other.safetensors", fitted={"other": statistics.fitted()})


def test_the_scanner_flags_faces_by_the_checkpoints_threshold(tiny_model, tmp_path):
    _, fitted, statistics, faces = _with_statistics(tiny_model, tmp_path)
    settings = ScanSettings(device="cpu", batch_size=5)
    device = torch.device("cpu")
    ood = ood_of(read_checkpoint_info(fitted.path))
    scanner = Scanner([Scorer(tiny_model, ood=ood)], settings, device)
    found = scanner.model_stage.classify(faces)
    with torch.no_grad():
        embeddings = tiny_model.embed_and_classify(faces)[0].numpy()
    expected = statistics.distances(embeddings)
    np.testing.assert_allclose([face.ood_distance for face in found], expected, rtol=1e-5)
    # --explain's forward pass gives the same distances
    explaining = Scanner(
        [Scorer(tiny_model, ood=ood)], ScanSettings(device="cpu", explain=True), device
    )
    explained = explaining.model_stage.classify_with_evidence(faces)
    np.testing.assert_allclose([face.ood_distance for face in explained], expected, rtol=1e-4)
    assert all(
        face.ood_distance is None
        for face in Scanner(tiny_model, settings, device).model_stage.classify(faces)
    )
