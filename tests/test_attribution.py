"""Open-set generator attribution: the fingerprints against a NumPy/SciPy computation, the
generator model against Gaussian posteriors, the open-set rule on held-out generators of real
synthetic images, and the fields through calibrate, eval, scan, JSON Lines and
``mfclip report``."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from attribution_data import HELD_OUT, TRAINED, make_attribution_dataset, write_protocol
from media import astronaut
from PIL import Image
from report_schemas import check_json_file, check_part, check_scan_lines
from scipy import ndimage
from scipy.stats import multivariate_normal
from test_train import MFCLIP, run

from mfclip_cli.data import Sample, load_protocol, read_dataset, select
from mfclip_cli.data.faceset import FaceImages, collate_faces
from mfclip_cli.data.perturb import parse_perturbations
from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.model import read_checkpoint_info
from mfclip_cli.model.checkpoint import Fitted, save_fitted
from mfclip_cli.model.noise import SRM_KERNELS, SRM_NORMALISERS
from mfclip_cli.model.prompts import LabelSet
from mfclip_cli.scoring.attribution import (
    EARLIER_RULE,
    KEEP_FRACTION,
    LAUNDERING,
    RULE,
    UNKNOWN,
    Attributor,
    attribution_metrics,
    attribution_problem,
    attributor_of,
    fit_attribution,
    fit_sample,
    rule_of,
)
from mfclip_cli.scoring.fingerprints import FEATURES, GRID, GRID_ROWS, RINGS, face_fingerprints

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAMILY = {name: "gan" if "-gan-" in name else "diffusion" for name in (*TRAINED, *HELD_OUT)}


def _fake(name: str, index: int) -> Sample:
    return Sample(f"{name}/{index}.png", FAMILY[name], "efs", name)


# -- the fingerprint ----------------------------------------------------------------------------
def _reference_fingerprint(face: np.ndarray) -> np.ndarray:
    """One face [3, H, W] in [0, 1], computed plainly: BT.601 grey levels, SciPy's correlation
    with the SRM kernels (mirrored border), NumPy's Hann window and FFT, cell and ring means."""
    grey = np.round(np.tensordot([0.299, 0.587, 0.114], face.astype(np.float64) * 255, axes=1))
    height, width = grey.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    fy = (np.arange(height) - height // 2) / height
    fx = (np.arange(width) - width // 2) / width
    radius = np.hypot(fy[:, None], fx[None, :]) / np.hypot(0.5, 0.5)
    ring = np.minimum(np.floor(radius * RINGS + 1e-9).astype(int), RINGS - 1)
    features = []
    for kernel, normaliser in zip(SRM_KERNELS.numpy(), SRM_NORMALISERS):
        residual = ndimage.correlate(grey, kernel.astype(np.float64), mode="mirror") / normaliser
        residual -= residual.mean()
        power = np.fft.fftshift(np.abs(np.fft.fft2(residual * window)) ** 2)
        cells = power.reshape(GRID, height // GRID, GRID, width // GRID).mean(axis=(1, 3))
        features += [cells[:GRID_ROWS].ravel(), [power[ring == k].mean() for k in range(RINGS)]]
    return np.log(np.concatenate(features) + 1e-6)


def test_fingerprints_equal_a_direct_computation():
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fingerprints = face_fingerprints(faces).numpy()
    assert fingerprints.shape == (2, FEATURES) and fingerprints.dtype == np.float32
    for face, row in zip(faces.numpy(), fingerprints):
        # float32 FFT against float64: log power within 0.1 %
        np.testing.assert_allclose(row, _reference_fingerprint(face), atol=1e-3)


def test_a_periodic_trace_shows_where_its_period_says():
    """A 4-px period across the face adds power at 1/4 cycle/px: in the ring there, in the
    horizontal SRM residual (the 2-D ones cancel a trace constant down the columns)."""
    rng = np.random.default_rng(0)
    flat = np.clip(0.5 + rng.normal(0, 0.02, (1, 3, 128, 128)), 0, 1)
    x = np.arange(128)
    traced = np.clip(flat + 0.04 * np.cos(np.pi * x / 2), 0, 1)
    prints = face_fingerprints(torch.from_numpy(np.r_[flat, traced]).float()).numpy()
    rings = prints.reshape(2, 3, -1)[:, 2, GRID * GRID_ROWS :]  # the horizontal residual's
    quarter = int(0.25 / np.hypot(0.5, 0.5) * RINGS)
    gain = (rings[1] - rings[0])[1:]  # ring 0 (near zero frequency) holds next to no power
    assert gain[quarter - 1] > 2.0 and gain[quarter - 1] == gain.max()


# -- the generator model ------------------------------------------------------------------------
def _clouds(rng, count: int, centres: dict[str, np.ndarray], spread: float = 1.0) -> np.ndarray:
    return np.concatenate(
        [centres[name] + spread * rng.normal(size=(count, 8)) for name in centres]
    )


def _fit_on_clouds(rng):
    """A model fitted on 8-number fingerprints scattered about one centre per generator."""
    centres = {name: rng.normal(scale=4.0, size=8) for name in (*TRAINED, *HELD_OUT)}
    trained = {name: centres[name] for name in TRAINED}
    train = [_fake(name, i) for name in TRAINED for i in range(40)]
    val = [_fake(name, i) for name in TRAINED for i in range(20)]
    reals = [Sample(f"real/{i}.png", "real") for i in range(5)]
    attributor = fit_attribution(
        [*reals, *train],
        np.r_[rng.normal(size=(5, 8)), _clouds(rng, 40, trained)],
        val,
        _clouds(rng, 20, trained),
        fitted_on={},
    )
    return attributor, centres, val


def test_probabilities_are_the_gaussian_posteriors_of_the_stored_model_at_its_temperature():
    rng = np.random.default_rng(1)
    attributor, centres, _ = _fit_on_clouds(rng)
    assert attributor.generators == sorted(TRAINED)  # by family, then name
    assert [s["train_samples"] for s in attributor.label_sets] == [40] * 4
    prints = _clouds(rng, 3, centres)
    families = [FAMILY[name] for name in centres for _ in range(3)]
    result = attributor.attribute(prints, families)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-12)
    # the posterior of equal-prior Gaussians with the stored means and shared covariance among
    # the label sets of each face's family, its log-densities divided by the stored temperature
    standard = (prints - attributor.center) / attributor.scale
    covariance = np.linalg.inv(attributor.precision)
    densities = np.stack(
        [multivariate_normal(mean, covariance).logpdf(standard) for mean in attributor.means], 1
    )
    own = np.array([[s["label"] == family for s in attributor.label_sets] for family in families])
    densities = np.where(own, densities / attributor.temperature, -np.inf)
    expected = np.exp(densities - densities.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    order = [attributor.generators.index(s["generator"]) for s in attributor.label_sets]
    np.testing.assert_allclose(result.probs[:, order], expected, atol=1e-9)
    squared = [
        [(z - m) @ attributor.precision @ (z - m) for m in attributor.means] for z in standard
    ]
    nearest = np.where(own, np.sqrt(squared), np.inf).min(axis=1)
    np.testing.assert_allclose(result.distance, nearest, atol=1e-9)
    # the stored means are the training fakes' per-generator means, standardised
    assert attributor.record["fitted_on"]["train_fakes"] == 160


def test_a_held_out_generator_is_unknown_more_often_than_any_known_name():
    rng = np.random.default_rng(2)
    attributor, centres, val = _fit_on_clouds(rng)
    record = attributor.record
    assert record["val"]["attributed"] >= KEEP_FRACTION and record["val"]["fakes"] == len(val)
    test = [_fake(name, i) for name in (*TRAINED, *HELD_OUT) for i in range(30)]
    result = attributor.attribute(_clouds(rng, 30, centres), [s.label for s in test])
    named = result.named()
    for held_out in HELD_OUT:
        said = [name for name, sample in zip(named, test) if sample.generator == held_out]
        counts = {name: said.count(name) for name in set(said)}
        assert counts.get(UNKNOWN, 0) > max(
            [count for name, count in counts.items() if name != UNKNOWN], default=0
        ), counts
    metrics = attribution_metrics(attributor, test, result, val, result)
    assert metrics["seen"]["top1"] > 0.9 and metrics["seen"]["n"] == 30 * len(TRAINED)
    assert metrics["unseen"]["named_as_known"] < 0.5 and metrics["unseen"]["auroc_unknown"] > 0.8
    confusion = metrics["confusion"]
    assert np.sum(confusion["counts"]) == len(test) and confusion["columns"][-1] == UNKNOWN
    # an out-of-distribution face is unknown whatever its distance
    near = np.stack([centres[TRAINED[0]]] * 2)
    flagged = attributor.attribute(near, [FAMILY[TRAINED[0]]] * 2, [True, False])
    assert flagged.record(0)["generator"] == UNKNOWN
    assert flagged.record(0)["reason"] == "out of distribution"
    assert flagged.record(1)["generator"] == TRAINED[0] and "reason" not in flagged.record(1)
    # ``top`` still lists the closest trained generators, those of the face's family
    assert flagged.record(0)["probability"] is None and len(flagged.record(0)["top"]) == 2
    far = attributor.attribute(near + 100.0, [FAMILY[TRAINED[0]]] * 2).record(0)
    assert far["generator"] == UNKNOWN and far["reason"] == "beyond the distance threshold"


def test_the_temperature_softens_a_model_surer_than_it_is_right():
    """Generators whose fingerprints overlap: the model's posteriors are too sure, the fitted
    temperature (>= 1) lowers the val NLL, and the probabilities follow the stored value."""
    rng = np.random.default_rng(6)
    centres = {name: rng.normal(scale=0.2, size=8) for name in TRAINED}
    train = [_fake(name, i) for name in TRAINED for i in range(40)]
    val = [_fake(name, i) for name in TRAINED for i in range(40)]
    attributor = fit_attribution(
        train, _clouds(rng, 40, centres), val, _clouds(rng, 40, centres), fitted_on={}
    )
    record = attributor.record
    assert 1 < attributor.temperature < 1e4 and record["val"]["top1"] < 1
    assert record["val"]["nll"]["calibrated"] < record["val"]["nll"]["model"]
    prints = _clouds(rng, 2, centres)
    families = [FAMILY[name] for name in centres for _ in range(2)]
    own = np.array([[s["label"] == family for s in attributor.label_sets] for family in families])
    distances = attributor.distances(prints)
    for temperature in (1.0, attributor.temperature, 50.0):
        record["temperature"] = temperature
        logits = np.where(own, -0.5 * distances**2 / temperature, -np.inf)
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        order = [attributor.generators.index(s["generator"]) for s in attributor.label_sets]
        probs = attributor.attribute(prints, families).probs
        np.testing.assert_allclose(probs[:, order], expected)


def test_the_threshold_keeps_the_stated_share_of_val_fakes():
    rng = np.random.default_rng(3)
    centres = {name: rng.normal(scale=4.0, size=8) for name in TRAINED}
    val = [_fake(name, i) for name in TRAINED for i in range(20)]
    val_prints = _clouds(rng, 20, centres)
    train = [_fake(name, i) for name in TRAINED for i in range(40)]
    train_prints = _clouds(rng, 40, centres)
    refit = fit_attribution(train, train_prints, val, val_prints, fitted_on={})
    # the distance to the nearest label set of each fake's true family, as eval measures it
    distance = refit.attribute(val_prints, [s.label for s in val]).distance
    assert refit.threshold == pytest.approx(np.quantile(distance, KEEP_FRACTION))
    assert rule_of(refit.record) == RULE
    # a checkpoint fitted before: its threshold was of the distance to any family's nearest
    earlier = {key: value for key, value in refit.record.items() if key != "within_family"}
    assert rule_of(earlier) == EARLIER_RULE


def test_faces_alike_to_the_last_pixel_give_no_preference_rather_than_an_error():
    """Flat test images leave every fingerprint equal and the covariance singular: training
    ended with a LinAlgError after its last step; the model now names no generator over
    another."""
    train = [_fake(name, i) for name in TRAINED for i in range(10)]
    val = [_fake(name, i) for name in TRAINED for i in range(5)]
    same = np.ones((len(train) + len(val), 8))
    attributor = fit_attribution(train, same[: len(train)], val, same[len(train) :], fitted_on={})
    attributed = attributor.attribute(np.ones((3, 8)), ["gan", "diffusion", "gan"])
    # each of a family's two generators equally likely, the other family's not at all
    np.testing.assert_allclose(attributed.probs[attributed.eligible], 0.5)
    assert attributed.eligible.sum(axis=1).tolist() == [2, 2, 2]


def test_a_fit_reads_each_face_as_stored_and_laundered_and_caps_its_sample(monkeypatch):
    rng = np.random.default_rng(7)
    centres = {name: rng.normal(scale=4.0, size=8) for name in TRAINED}
    train = [_fake(name, i) for name in TRAINED for i in range(40)]
    val = [_fake(name, i) for name in TRAINED for i in range(20)]
    train_prints, val_prints = _clouds(rng, 40, centres), _clouds(rng, 20, centres)
    shifted = {"jpeg:50": (train_prints + 3.0, val_prints + 3.0)}
    attributor = fit_attribution(
        train, train_prints, val, val_prints, fitted_on={}, laundered=shifted
    )
    np.testing.assert_allclose(attributor.center, train_prints.mean(axis=0) + 1.5)
    assert attributor.record["views"] == ["as stored", "jpeg:50"]
    assert attributor.record["fitted_on"]["train_fakes"] == len(train)  # faces, not views
    # the sample: fakes naming a generator (of the given ones), at most the cap per label set
    monkeypatch.setattr("mfclip_cli.scoring.attribution.MAX_FAKES_PER_LABEL_SET", 3)
    mixed = [Sample("r.png", "real"), Sample("n.png", "gan", "efs"), *train]
    chosen = fit_sample(mixed)
    assert [mixed[i].generator for i in chosen] == [name for name in TRAINED for _ in range(3)]
    assert [mixed[i].generator for i in fit_sample(mixed, [TRAINED[1]])] == [TRAINED[1]] * 3


def _attributor(label_sets: list[tuple[str, str, str]], means: np.ndarray) -> Attributor:
    """A generator model of ``label_sets`` (family, forgery type, generator) whose fingerprints
    are their own standardised values, the covariance the identity: distances are Euclidean."""
    features = means.shape[1]
    record = {
        "label_sets": [
            {"label": label, "forgery_type": kind, "generator": name}
            for label, kind, name in label_sets
        ],
        "generators": list(dict.fromkeys(name for *_, name in label_sets)),
        "threshold": 100.0,
        "temperature": 1.0,
    }
    return Attributor(np.zeros(features), np.ones(features), means, np.eye(features), record)


def _mixed() -> Attributor:
    """Two GAN and two diffusion generators on orthogonal axes; for a face at the origin, at
    squared distances -2 log p, the posteriors over all four are .35, .13 (GAN), .31, .21
    (diffusion): the audit's case."""
    return _attributor(
        [
            ("gan", "efs", "gan-a"),
            ("gan", "efs", "gan-b"),
            ("diffusion", "efs", "diff-a"),
            ("diffusion", "efs", "diff-b"),
        ],
        np.diag(np.sqrt(-2 * np.log([0.35, 0.13, 0.31, 0.21]))),
    )


def test_a_face_is_attributed_only_among_the_generators_of_the_family_it_is_labelled():
    """Audit F1: a face labelled gan whose fingerprint lies nearest a diffusion generator was
    named after it ("gan, by synth-diff-lowpass"); it is attributed among the GAN sets, its
    distance the one to the nearest of them, and ``top`` lists GAN generators only."""
    mixed = _mixed()
    at_diffusion = np.array([[0.0, 0.0, mixed.means[2, 2], 0.0]])  # on diff-a's mean
    said = mixed.attribute(at_diffusion, ["gan"]).record(0)
    assert said["generator"] in ("gan-a", "gan-b") and said["family"] == "gan"
    assert [entry["generator"] for entry in said["top"]] == ["gan-a", "gan-b"]
    assert sum(entry["probability"] for entry in said["top"]) == pytest.approx(1.0)
    assert said["distance"] == pytest.approx(np.linalg.norm(at_diffusion - mixed.means[0]))
    labelled_diffusion = mixed.attribute(at_diffusion, ["diffusion"]).record(0)
    assert labelled_diffusion["generator"] == "diff-a" and labelled_diffusion["distance"] == 0
    # the open-set threshold applies to the distance within the face's family
    mixed.record["threshold"] = 1.0
    far = mixed.attribute(np.repeat(at_diffusion, 2, axis=0), ["gan", "diffusion"])
    assert far.named() == [UNKNOWN, "diff-a"] and far.reasons[0] == "beyond the distance threshold"


def test_a_record_names_the_family_and_forgery_type_of_its_generator():
    """Audit F2: the family was the argmax of probabilities summed per family (diffusion,
    .31 + .21) while the generator was the argmax per generator (gan-a, .35). Now the family is
    the one the face is attributed within, the generator's, within which probabilities sum to
    one: .35 / (.35 + .13) for gan-a."""
    for family, generator, probability in (
        ("gan", "gan-a", 0.35 / 0.48),
        ("diffusion", "diff-a", 0.31 / 0.52),
    ):
        said = _mixed().attribute(np.zeros((1, 4)), [family]).record(0)
        assert (said["generator"], said["family"], said["forgery_type"]) == (
            generator,
            family,
            "efs",
        )
        assert said["probability"] == pytest.approx(probability, abs=1e-6)


def test_each_generator_has_an_equal_prior_whatever_its_number_of_label_sets():
    """Audit F7: a face equally far from three label sets, two of them one generator's (under
    two forgery types), was that generator's at 2/3; the prior is equal per generator."""
    attributor = _attributor(
        [
            ("diffusion", "t2i", "sd"),
            ("diffusion", "i2i", "sd"),
            ("diffusion", "t2i", "midjourney"),
        ],
        np.eye(4)[:3],
    )
    result = attributor.attribute(np.array([[1 / 3, 1 / 3, 1 / 3, 0]]), ["diffusion"])
    np.testing.assert_allclose(result.probs, [[0.5, 0.5]])
    said = result.record(0)
    assert said["family"] == "diffusion" and said["forgery_type"] == "t2i"  # the first of equals
    # nearer sd's i2i set: sd, with the forgery type of its most probable set
    assert (
        attributor.attribute(np.array([[0, 1.0, 0, 0]]), ["diffusion"]).record(0)["forgery_type"]
        == "i2i"
    )


def test_a_family_with_no_trained_generator_names_none_and_says_why():
    gan_only = _attributor([("gan", "efs", "gan-a"), ("gan", "efs", "gan-b")], np.eye(3)[:2])
    said = gan_only.attribute(np.zeros((1, 3)), ["diffusion"]).record(0)
    assert said == {
        "generator": UNKNOWN,
        "probability": None,
        "family": "diffusion",
        "forgery_type": None,
        "distance": None,
        "reason": "no trained generator of its family",
        "top": [],
    }
    check_part(said, "scan", "face_attribution")


def test_splits_that_cannot_give_attribution_say_why():
    reals = [LabelSet("real")]
    assert "names its generator" in attribution_problem([*reals, LabelSet("gan", "efs")], [])
    val = [Sample("a.png", "gan", "efs", "other")]
    mine = LabelSet("gan", "efs", "mine")
    assert "no fake of a trained generator" in attribution_problem([mine] * 3, val)
    assert "too few" in attribution_problem([mine, mine], [Sample("b.png", "gan", "efs", "mine")])


# -- on images: the synthetic protocol ----------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("attribution")
    return make_attribution_dataset(root / "data", per_generator=16), write_protocol(
        root / "holdout.toml"
    )


def _fingerprints(root, samples, perturbation: str | None = None) -> np.ndarray:
    (degraded,) = parse_perturbations([perturbation]) if perturbation else (None,)
    images = FaceImages(root, [sample.path for sample in samples], 128, perturbation=degraded)
    faces = collate_faces([images[i] for i in range(len(samples))]).faces
    return face_fingerprints(faces).numpy()


def _fit_on_images(data):
    """The generator model of the protocol's train split, fitted here as calibrate fits it, the
    faces read as stored and laundered: (it, index, splits)."""
    dataset, protocol = data
    index = read_dataset(dataset)
    splits = select(index, load_protocol(str(protocol)), ("train", "val", "test"))
    train = [splits.train[i] for i in fit_sample(splits.train)]
    val = [splits.val[i] for i in fit_sample(splits.val, {s.generator for s in train})]
    attributor = fit_attribution(
        train,
        _fingerprints(index.root, train),
        val,
        _fingerprints(index.root, val),
        fitted_on={},
        laundered={
            name: (_fingerprints(index.root, train, name), _fingerprints(index.root, val, name))
            for name in LAUNDERING
        },
    )
    assert attributor.record["views"] == ["as stored", *LAUNDERING]
    return attributor, index, splits


def test_fingerprints_of_the_synthetic_generators_tell_same_family_ones_apart(data):
    """The acceptance's setting on its images: four trained generators, two per family, two
    held out; attribution among the trained ones is well above the within-family chance."""
    attributor, index, splits = _fit_on_images(data)
    result = attributor.attribute(
        _fingerprints(index.root, splits.test), [s.label for s in splits.test]
    )
    metrics = attribution_metrics(attributor, splits.test, result, splits.val, result)
    assert metrics["seen"]["n"] >= 15 and metrics["seen"]["top1"] >= 0.8, metrics["seen"]
    assert metrics["unseen"]["auroc_unknown"] > 0.6, metrics["unseen"]


# -- end to end: calibrate adds attribution, eval measures it, scan reports it ---------------------
@pytest.fixture(scope="module")
def calibrated(data, weights, tmp_path_factory):
    """The random tiny checkpoint calibrated on the protocol: its generator model added."""
    dataset, protocol = data
    out = tmp_path_factory.mktemp("calibrated") / "attributing.safetensors"
    result = run(
        MFCLIP, "calibrate", "--weights", str(weights), "--data", str(dataset),
        "--protocol", str(protocol), "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert "attribution among 4 trained generator(s)" in result.stdout
    # and how it did on its val fakes, and whether its temperature sits at a bound (audit Q L3)
    val = read_checkpoint_info(out).attribution["val"]
    said = " ".join(result.stdout.split())
    assert f"val top-1 {val['top1']:.3f} of {val['fakes']} fakes" in said
    assert ("WARNING: its temperature sits at a bound" in said) == val["temperature_at_bound"]
    return out


def test_calibrate_stores_the_generator_model_of_the_training_fakes(data, calibrated):
    info = read_checkpoint_info(calibrated)
    assert info.attribution["generators"] == sorted(TRAINED)
    assert info.attribution["fitted_on"]["protocol"] == "attribution-holdout"
    expected, *_ = _fit_on_images(data)
    stored = attributor_of(info)
    for name in ("center", "scale", "means"):
        np.testing.assert_allclose(getattr(stored, name), getattr(expected, name), rtol=1e-5)
    np.testing.assert_allclose(stored.precision, expected.precision, rtol=1e-4, atol=1e-4)
    assert stored.threshold == pytest.approx(expected.threshold, rel=1e-5)


def test_eval_attribution_equals_a_recomputation_from_its_predictions(data, calibrated, tmp_path):
    dataset, protocol = data
    report_path, predictions, plots = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "plots"
    result = run(
        MFCLIP, "eval", "--data", str(dataset), "--protocol", str(protocol),
        "--weights", str(calibrated), "--device", "cpu", "--json", str(report_path),
        "--predictions", str(predictions), "--plots", str(plots), "--bootstrap", "0",
        "--perturb", "jpeg:50",
    )  # fmt: skip
    report = check_json_file(report_path, "eval")
    attribution = report["attribution"]
    # the robustness rows: the clean one repeats the seen block, the perturbed one has its own
    clean, jpeg = report["robustness"]["rows"]
    seen_block = attribution["seen"]
    assert (
        clean["attribution_top1"],
        clean["attribution_attributed"],
        clean["attribution_open_set_top1"],
    ) == (seen_block["top1"], seen_block["attributed"], seen_block["open_set_top1"])
    assert jpeg["name"] == "jpeg:50" and 0 <= jpeg["attribution_top1"] <= 1
    rows = list(csv.DictReader(predictions.open()))
    seen = [row for row in rows if row["generator"] in TRAINED]
    unseen = [row for row in rows if row["generator"] in HELD_OUT]
    top = [row["generator_top3"].split(";") for row in seen]
    assert attribution["seen"]["n"] == len(seen) > 0
    assert attribution["seen"]["top1"] == pytest.approx(
        np.mean([t[0] == row["generator"] for t, row in zip(top, seen)])
    )
    assert attribution["seen"]["top1"] > 0.5  # the within-family chance
    # two trained generators a family: any fake is in its top 3, and chance says so (audit E F9)
    assert attribution["seen"]["chance_top1"] == pytest.approx(0.5)
    assert attribution["seen"]["chance_top3"] == 1.0 == attribution["seen"]["top3"]
    assert attribution["seen"]["top3"] == pytest.approx(
        np.mean([row["generator"] in t for t, row in zip(top, seen)])
    )
    assert attribution["unseen"]["n"] == len(unseen) > 0
    assert attribution["unseen"]["named_as_known"] == pytest.approx(
        np.mean([row["generator_unknown"] == "false" for row in unseen])
    )
    distances = [float(row["generator_distance"]) for row in seen + unseen]
    assert all(
        (row["generator_unknown"] == "true") == (d > attribution["threshold"])
        for row, d in zip(seen + unseen, distances)
        if row["ood"] != "true"
    )
    assert sorted(attribution["unseen"]["generators"]) == sorted(HELD_OUT)
    assert (plots / "attribution-confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "attribution of test fakes" in result.stdout


def _scan(*args):
    return run(MFCLIP, "scan", "--device", "cpu", *args, check=False)


def test_scan_records_round_trip_and_older_checkpoints_scan_as_before(
    calibrated, weights, tmp_path
):
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    # the plain checkpoint with calibrate's generator model and nothing else added, at a threshold
    # every face passes, so that a face is named
    attributor = attributor_of(read_checkpoint_info(calibrated))
    attributor.record["threshold"] = 1e9
    naming = save_fitted(
        read_checkpoint_info(weights),
        tmp_path / "naming.safetensors",
        fitted={"attribution": attributor.fitted()},
    )
    # a checkpoint with the earlier text-prompt attribution record: read as none, and said why
    text_record = {k: v for k, v in attributor.record.items() if k != "features"}
    text_era = save_fitted(
        read_checkpoint_info(weights),
        tmp_path / "text-era.safetensors",
        fitted={"attribution": Fitted(text_record, {})},
    )
    reports = {}
    for name, checkpoint, fake_threshold in (
        ("new", naming.path, "0"),  # every face labelled non-real: each is attributed
        ("old", weights, "0"),
        ("text", text_era.path, "0"),
        ("real", naming.path, "1"),  # every face labelled real: none is
    ):
        jsonl, table = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.csv"
        result = _scan(
            image, "--weights", str(checkpoint), "--jsonl", str(jsonl), "--csv", str(table),
            "--fake-threshold", fake_threshold,
        )  # fmt: skip
        assert result.returncode in (0, 4), result.stderr
        lines = check_scan_lines(jsonl.read_text().splitlines())
        reports[name] = (lines, next(csv.DictReader(table.open())), jsonl)
    (meta, record, *_), row, jsonl = reports["new"]
    assert meta["attribution"]["available"] and meta["attribution"]["generators"] == sorted(TRAINED)
    assert meta["attribution"]["val"] == read_checkpoint_info(calibrated).attribution["val"]
    face = record["faces"][0]
    attribution = face["attribution"]
    assert (
        attribution["generator"] in TRAINED
        and attribution["generator"] == row["attributed_generator"]
    )
    assert float(row["attribution_probability"]) == pytest.approx(attribution["probability"])
    assert sum(entry["probability"] for entry in attribution["top"]) <= 1 + 1e-6
    assert FileRecord.from_dict(record).to_dict() == record
    html = tmp_path / "report.html"
    run(MFCLIP, "report", str(jsonl), "--html", str(html))
    page = html.read_text()
    assert f"<strong>{attribution['generator']}</strong>" in page and "generators known" in page
    # the checkpoints without a usable generator model: the same verdict, no attribution, the
    # meta says why
    for name, reason in (("old", "no generator fingerprints"), ("text", "text-prompt")):
        (old_meta, old_record, *_), old_row, _ = reports[name]
        assert old_meta["attribution"]["available"] is False
        assert reason in old_meta["attribution"]["reason"]
        old_face = old_record["faces"][0]
        assert "attribution" not in old_face
        assert old_face == {key: value for key, value in face.items() if key != "attribution"}
        assert old_row["attributed_generator"] == "" and old_row["attribution_probability"] == ""
    (_, real_record, *_), real_row, _ = reports["real"]
    assert real_record["faces"][0]["label"] == "real"
    assert "attribution" not in real_record["faces"][0] and real_row["attributed_generator"] == ""


def test_a_blend_the_demo_labels_gan_is_named_after_a_gan_generator(tmp_path):
    """Audit F1 end to end: a 65/35 pixel blend of the bundled diffusion and GAN examples, which
    the demo checkpoint labels gan, was "gan, by synth-diff-lowpass 0.49"."""
    diffusion, gan = (
        np.asarray(Image.open(EXAMPLES / f"astronaut_synthetic_{name}.png").convert("RGB"), float)
        for name in ("diffusion", "gan")
    )
    blend, report = tmp_path / "blend.png", tmp_path / "blend.json"
    Image.fromarray(np.clip(0.65 * diffusion + 0.35 * gan, 0, 255).round().astype(np.uint8)).save(
        blend
    )
    result = _scan(blend, "--json", str(report))
    assert result.returncode in (0, 4), result.stderr
    document = check_json_file(report, "scan")
    (face,) = document["files"][0]["faces"]
    families = document["meta"]["attribution"]["families"]
    attribution = face["attribution"]
    assert attribution["family"] == (face.get("leaning") or face["label"]) == "gan"
    assert attribution["generator"] == UNKNOWN or families[attribution["generator"]] == "gan"
    assert {families[entry["generator"]] for entry in attribution["top"]} == {"gan"}


def test_the_scanner_attributes_each_face_from_its_fingerprint(tiny_model):
    faces = torch.rand(4, 3, tiny_model.crop_size, tiny_model.crop_size)
    prints = face_fingerprints(faces).numpy()
    # a generator model on these faces' own fingerprints, jittered
    train = [_fake(TRAINED[i % 4], i) for i in range(4)] * 3
    jitter = np.random.default_rng(5).normal(scale=0.1, size=(12, FEATURES))
    attributor = fit_attribution(
        train, np.tile(prints, (3, 1)) + jitter, train[:4], prints, fitted_on={}
    )
    scorer = Scorer(tiny_model, attribution=attributor)
    # every face labelled fake (threshold 0), then every one real (1)
    for fake_threshold, attributed in ((0.0, True), (1.0, False)):
        settings = ScanSettings(device="cpu", fake_threshold=fake_threshold)
        stage = Scanner([scorer], settings, torch.device("cpu")).model_stage
        found = stage.classify(faces)
        # each face among the generators of the family it is labelled; none for one labelled real
        labels = [stage.label(face.probs) for face in found]
        assert all((label != "real") == attributed for label in labels)
        expected = attributor.attribute(prints, labels)
        assert [face.attribution for face in found] == [
            None if label == "real" else expected.record(i) for i, label in enumerate(labels)
        ]
