"""Verdicts an analyst can act on (docs/verdicts.md): the inconclusive band's threshold rule,
stability under re-encoding, and both end to end through calibrate, scan, report and eval."""

import csv
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli import mfclip
from media import astronaut, face_free, mosaic
from PIL import Image
from report_schemas import check_json_file, check_scan_lines
from test_train import make_dataset

from mfclip_cli.data.perturb import Perturbation
from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.model_stage import Scorer
from mfclip_cli.engines.scan.records import FaceRecord, FileRecord
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.stability import STABILITY_PERTURBATIONS, reencoded_crops
from mfclip_cli.faces.align import align_faces
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch
from mfclip_cli.model import build_model, load_model_config, read_checkpoint_info
from mfclip_cli.model.checkpoint import save_checkpoint, save_fitted
from mfclip_cli.model.detectors import Detector
from mfclip_cli.scoring.inconclusive import (
    THREE_CLASS,
    Band,
    called_real_leaning_fake,
    family_uncertainties,
    fit_uncertainty_threshold,
    inconclusive_mask,
    reasons,
    shown_threshold,
    stored_band,
    uncertainties,
)
from mfclip_cli.scoring.metrics import detection_metrics
from mfclip_cli.scoring.precision import calibration_at

CPU = torch.device("cpu")


def _reference_threshold(labels, probs, target):
    """The rule of scoring/inconclusive.py, spelled out face by face (at a record's 6 digits)."""
    spread = [round(float(u), 6) for u in uncertainties(probs)]
    right = [(label != "real") == (1 - row[0] >= 0.5) for label, row in zip(labels, probs)]
    return _best(spread, right, target, [label != "real" for label in labels])


def _best(spread, right, target, first_class):
    """The largest uncertainty whose faces at or below it are right ``target`` of the time and
    show, at 95 %, better than a coin (the exact binomial lower bound on their accuracy, from
    scipy's beta quantile: P(Binomial(n, p) >= k) = 0.05, above 0.5), faces of both classes
    right among them (``first_class``: whether each face is of the first)."""
    from scipy.stats import beta

    best = None
    for u in sorted(set(spread)):
        kept = [(r, c) for r, c, s in zip(right, first_class, spread) if s <= u]
        k, n = sum(r for r, _ in kept), len(kept)
        classes_right = {c for r, c in kept if r}
        lower = beta.ppf(0.05, k, n - k + 1) if k else 0.0
        if k / n >= target and lower > 0.5 and len(classes_right) == 2:
            best = u
    return best


def test_a_threshold_its_few_val_faces_cannot_show_is_not_reached():
    """Audit X F3: a near-uniform model (temperature at its upper bound) "reached" the target on
    its single surest val face (lower bound 0.05) and then called real faces fake
    conclusively. Four right faces of four show no better than a coin at 95 % (0.47), five do
    (0.55); but not five fakes of five, all called fake, which a model calling every face fake
    gets right (audit AK F1: a near-uniform checkpoint's five surest val faces were fakes, and
    it labelled a real face "gan" conclusively)."""
    near_uniform = np.array([[0.3327 + 1e-5 * i, 0.3336, 0.3337 - 1e-5 * i] for i in range(9)])
    labels = ["gan"] + ["real"] * 8  # the surest face is right, the rest wrong
    band = fit_uncertainty_threshold(labels, near_uniform, 0.95)
    assert (
        band["reached"] is False
        and inconclusive_mask(near_uniform, stored_band({"inconclusive": band})).all()
    )
    fake, real = [0.05, 0.9, 0.05], [0.9, 0.05, 0.05]
    for labels, reached in (
        (["gan", "real"] * 2, False),
        (["gan", "real", "gan", "real", "gan"], True),
        (["gan"] * 5, False),
        (["gan"] * 30, False),
        (["gan"] * 29 + ["real"], True),
    ):
        probs = np.array([fake if label == "gan" else real for label in labels])
        assert fit_uncertainty_threshold(labels, probs)["reached"] is reached, labels


@pytest.mark.parametrize("seed", range(4))
def test_the_threshold_rule_against_a_face_by_face_reference(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.6, 0.6, 0.6], size=60)
    # the surer the model, the likelier it is right: accuracy falls with uncertainty
    said_fake = 1 - probs[:, 0] >= 0.5
    right = rng.random(len(probs)) > uncertainties(probs)
    truth = ["gan" if fake == ok else "real" for fake, ok in zip(said_fake, right)]
    for target in (0.7, 0.9):
        band = fit_uncertainty_threshold(truth, probs, target)
        expected = _reference_threshold(truth, probs, target)
        assert band["reached"] == (expected is not None)
        assert band["uncertainty_threshold"] == pytest.approx(expected or 0.0)
        kept = np.round(uncertainties(probs), 6) <= band["uncertainty_threshold"]
        assert band["val_conclusive_share"] == pytest.approx(kept.mean())
        assert not band["reached"] or band["val_conclusive_accuracy"] >= target
        # the faces the record counts conclusive are those the verdicts leave conclusive
        threshold = stored_band({"inconclusive": band}).threshold
        stored = stored_band({"inconclusive": band})
        np.testing.assert_array_equal(inconclusive_mask(probs, stored), ~kept)
        assert [bool(reasons(u, threshold)) for u in uncertainties(probs)] == list(~kept)


@pytest.mark.parametrize("seed", range(3))
def test_the_family_threshold_rule_against_a_face_by_face_reference(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.5, 1.0, 1.0], size=80)
    truth = []
    for row in probs:
        if rng.random() < 0.2:
            truth.append("real")
        else:  # the evener the family split, the likelier the family is wrong
            named = "diffusion" if row[1] >= row[2] else "gan"
            wrong = rng.random() < 0.5 * family_uncertainties(row[None])[0]
            truth.append({"diffusion": "gan", "gan": "diffusion"}[named] if wrong else named)
    family = fit_uncertainty_threshold(truth, probs, 0.8)["family"]
    chosen = [i for i, row in enumerate(probs) if truth[i] != "real" and 1 - row[0] >= 0.5]
    spread = [round(float(family_uncertainties(probs[i][None])[0]), 6) for i in chosen]
    right = [("diffusion" if probs[i][1] >= probs[i][2] else "gan") == truth[i] for i in chosen]
    expected = _best(spread, right, 0.8, [truth[i] == "diffusion" for i in chosen])
    assert family["reached"] == (expected is not None)
    assert family["uncertainty_threshold"] == pytest.approx(expected or 0.0)
    assert family["val_conclusive_faces"] == sum(u <= (expected or -1) for u in spread)
    band = stored_band({"inconclusive": {"uncertainty_threshold": 0.5, "family": family}})
    assert [band.family_uncertain(u) for u in spread] == [u > (expected or -1) for u in spread]
    # no val fake called fake: nothing to fit a family threshold on
    assert (
        fit_uncertainty_threshold(["real", "gan"], probs[:2] * 0 + [0.9, 0.05, 0.05])["family"]
        is None
    )


def test_a_band_stored_before_the_binary_measure_keeps_its_three_class_measure():
    old = {"uncertainty_threshold": 0.5, "reached": True}  # a 2.9.0 record: no measure
    split = np.array([[0.02, 0.49, 0.49]])  # sure to be fake, its family a coin flip
    assert stored_band({"inconclusive": old}) == Band(0.5, THREE_CLASS, None)
    assert inconclusive_mask(split, stored_band({"inconclusive": old})).all()
    assert not inconclusive_mask(split, stored_band({"inconclusive": {**old, "measure": "binary"}}))
    assert stored_band(None) == Band() and Band().measure == "binary"


def test_a_target_no_faces_reach_makes_every_face_inconclusive():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.4, 0.4]])
    band = fit_uncertainty_threshold(["gan", "real"], probs, 0.95)  # both wrong
    assert band["reached"] is False and band["uncertainty_threshold"] == 0.0
    assert inconclusive_mask(probs, Band(band["uncertainty_threshold"])).all()
    assert band["val_conclusive_accuracy"] is None and band["val_accuracy"] == 0.0
    # the surest faces too: a model sure to the last digit has uncertainty 0, not above 0
    sure = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    band = fit_uncertainty_threshold(["gan", "real"], sure, 0.95)
    threshold = stored_band({"inconclusive": band}).threshold
    assert band["reached"] is False and inconclusive_mask(sure, Band(threshold)).all()
    assert reasons(0.0, threshold) == ["uncertain"] and shown_threshold(threshold) == 0.0


def test_a_reencoded_crop_is_the_crop_of_the_whole_picture_reencoded():
    config = load_model_config("tiny")
    size, margin = config.preprocess.crop_size, config.preprocess.margin
    cropper = FaceCropper(FaceSearch(size, margin), CPU)
    picture = mosaic()
    landmarks = [d.landmarks for d in cropper([picture])[0].detections]
    assert len(landmarks) == 4
    variants = reencoded_crops(picture, landmarks, size, margin, CPU)
    count = len(STABILITY_PERTURBATIONS)
    for v, perturbation in enumerate(STABILITY_PERTURBATIONS):
        # the whole picture re-saved, aligned at the original landmarks
        whole = np.array(perturbation.apply(Image.fromarray(picture), "", 0))
        aligned = align_faces(
            torch.from_numpy(whole).permute(2, 0, 1), np.stack(landmarks), size, margin
        )
        # the same pixels, up to float rounding of the sampling grid, which can tip a value on
        # the 8-bit grid by one grey level (1 / 255) in rare places
        differ = (variants[v::count] - aligned).abs()
        assert differ.max().item() <= 1 / 255 + 1e-6
        assert (differ > 1e-6).float().mean().item() < 1e-2


class ArtifactDetector(Detector):
    """Calls a crop GAN when its finest-scale energy (a 3x3 second-difference filter) is above
    ``level``: a detector of an artifact that JPEG removes."""

    def __init__(self, level: float):
        super().__init__()
        self.config = load_model_config("tiny")
        self.level = level
        self.head = torch.nn.Identity()

    @staticmethod
    def energy(faces: torch.Tensor) -> torch.Tensor:
        kernel = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]]).view(1, 1, 3, 3)
        response = torch.nn.functional.conv2d(faces, kernel.repeat(3, 1, 1, 1), groups=3)
        return response.abs().mean(dim=(1, 2, 3))[:, None]

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        return self.energy(faces)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        margin = (self.embed(faces) - self.level) * 2000
        return torch.cat([-margin, torch.full_like(margin, -50.0), margin], dim=1)

    def embed_and_classify(self, faces):
        return self.embed(faces), self.forward(faces)


def _with_artifact(amplitude: int) -> np.ndarray:
    """The astronaut, smoothed, plus a +-``amplitude`` pixel checkerboard: a fine trace that
    JPEG's quantisation removes."""
    smooth = cv2.GaussianBlur(astronaut(), (0, 0), 2.0).astype(np.int16)
    rows, columns = np.mgrid[: smooth.shape[0], : smooth.shape[1]]
    checker = np.where((rows + columns) % 2 == 0, amplitude, -amplitude)[..., None]
    return np.clip(smooth + checker, 0, 255).astype(np.uint8)


def _scan(scanner: Scanner, paths) -> list[FileRecord]:
    return list(scanner.scan([InputItem(Path(path)) for path in paths]))


def test_a_face_whose_verdict_jpeg_removes_is_inconclusive_with_stability(tmp_path):
    marked, plain = tmp_path / "marked.png", tmp_path / "plain.png"
    Image.fromarray(_with_artifact(3)).save(marked)
    Image.fromarray(_with_artifact(0)).save(plain)
    # the crops' 8-bit grid adds its own fine energy (0.006 on the plain face): the level sits
    # between the marked crop's 0.032 and JPEG 75's 0.009
    detector = ArtifactDetector(level=0.018)
    # the premise, measured: the trace is there in the crop, and gone after JPEG 75
    cropper = FaceCropper(FaceSearch(detector.crop_size, detector.crop_margin), CPU)
    found = cropper([_with_artifact(3)])[0]
    jpeg75 = reencoded_crops(
        _with_artifact(3),
        [found.detections[0].landmarks],
        detector.crop_size,
        detector.crop_margin,
        CPU,
    )[:1]
    assert detector.energy(found.crops).item() > 1.5 * detector.level
    assert detector.energy(jpeg75).item() < 0.6 * detector.level
    assert Perturbation("jpeg", 75) == STABILITY_PERTURBATIONS[0]

    settings = ScanSettings(device="cpu", batch_size=3)
    before = _scan(Scanner(detector, settings, CPU), [marked, plain])
    assert [r.faces[0].label for r in before] == ["gan", "real"]
    assert all(r.faces[0].stability is None and r.faces[0].inconclusive is None for r in before)

    stable = _scan(Scanner(detector, replace(settings, stability=True), CPU), [marked, plain])
    face, other = stable[0].faces[0], stable[1].faces[0]
    assert face.label == "inconclusive" and face.leaning == "gan"
    assert face.inconclusive == ["unstable"]
    assert face.stability["labels"]["jpeg:75"] == "real" and face.stability["flips"] is True
    assert face.stability["spread"] == pytest.approx(
        max(1 - face.probs["real"], *face.stability["p_fake"].values())
        - min(1 - face.probs["real"], *face.stability["p_fake"].values()),
        abs=2e-6,
    )
    assert other.label == "real" and other.stability["flips"] is False
    assert other.inconclusive is None and set(other.stability["labels"].values()) == {"real"}
    # re-encodings ride along: the faces' own probabilities are those of the plain scan
    for a, b in zip(before, stable):
        assert a.faces[0].probs == b.faces[0].probs
    # a pipeline that wants plain labels can have them
    off = replace(settings, stability=True, inconclusive=False)
    assert _scan(Scanner(detector, off, CPU), [marked])[0].faces[0].label == "gan"


def test_the_scanner_marks_inconclusive_exactly_above_the_stored_threshold(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_model_config("tiny"))
    path = tmp_path / "mosaic.png"
    Image.fromarray(mosaic()).save(path)
    settings = ScanSettings(device="cpu")
    plain = _scan(Scanner(model, settings, CPU), [path])[0].faces
    spread = sorted(face.uncertainty for face in plain)
    threshold = (spread[1] + spread[2]) / 2  # two faces above it, two at or below
    scorer = Scorer(model, band=Band(threshold))
    banded = _scan(Scanner([scorer], settings, CPU), [path])[0].faces
    for before, after in zip(plain, banded):
        assert after.probs == before.probs and after.uncertainty == before.uncertainty
        if before.uncertainty > threshold:
            assert (after.label, after.leaning) == ("inconclusive", before.label)
            assert after.inconclusive == ["uncertain"]
        else:
            assert after.label == before.label and after.leaning is None
    assert sum(face.label == "inconclusive" for face in banded) == 2


def test_a_face_an_operating_point_above_half_calls_real_while_it_leans_fake_is_inconclusive(
    tmp_path,
):
    """Audit V F8: the band vouches for the call at 0.5; under an fpr:0.01 threshold of 0.93 a
    face at p(fake) 0.90 leaned fake yet was a conclusive `real`. A threshold under 0.5 (a
    stricter gate, audit X F1) keeps the fakes it adds conclusive: they count for
    --fail-on-fake."""
    torch.manual_seed(0)
    model = build_model(load_model_config("tiny"))
    path = tmp_path / "mosaic.png"
    Image.fromarray(mosaic()).save(path)
    # a high temperature: every face near uniform, p(fake) about 2/3, fake at 0.5
    scorer = Scorer(model, temperature=50.0, band=Band(1.0))
    plain = _scan(Scanner([scorer], ScanSettings(device="cpu"), CPU), [path])[0].faces
    scores = [1 - face.probs["real"] for face in plain]
    assert len(plain) == 4 and all(0.5 <= score < 0.9 for score in scores)
    assert all(face.label != "inconclusive" for face in plain)

    def scanned(fake_threshold, band=Band(1.0)):
        settings = ScanSettings(device="cpu", fake_threshold=fake_threshold)
        chosen = replace(scorer, band=band)
        return _scan(Scanner([chosen], settings, CPU), [path])[0].faces

    # called real, leaning fake at 0.5: not a verdict to act on. It leans to its call at 0.5,
    # with that family's uncertainty (audit I H1: it said "leaning real", the threshold's call)
    for face, before in zip(scanned(0.9), plain, strict=True):
        assert (face.label, face.leaning, face.inconclusive) == (
            "inconclusive",
            before.label,
            ["operating_point"],
        )
        assert face.family_uncertainty == before.family_uncertainty is not None
    for face in scanned(0.1):  # fake at 0.1 and at 0.5 alike: conclusive
        assert face.label in ("diffusion", "gan") and face.inconclusive is None
    # beside a second checkpoint, the primary's `detectors` entry says what its face leans to,
    # not "real" (audit Q L1)
    torch.manual_seed(1)
    second = Scorer(build_model(load_model_config("tiny")), temperature=50.0)
    settings = ScanSettings(device="cpu", fake_threshold=0.9)
    both = _scan(Scanner([replace(scorer, band=Band(1.0)), second], settings, CPU), [path])[0]
    for face in both.faces:
        assert face.label == "inconclusive" and face.detectors[0]["label"] == face.leaning != "real"
    # without a stored threshold the band vouches for nothing, and marks nothing
    assert all(face.label == "real" for face in scanned(0.9, Band()))
    # eval's band counts the same faces
    probs = np.array(
        [[face.probs[name] for name in ("real", "diffusion", "gan")] for face in plain]
    )
    assert inconclusive_mask(probs, Band(1.0), None, 0.9).all()
    assert not inconclusive_mask(probs, Band(1.0), None, 0.1).any()
    assert not inconclusive_mask(probs, Band(1.0), None, 0.5).any()
    edges = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4], [0.9, 0.05, 0.05]])  # p(fake) .5 .8 .1
    assert called_real_leaning_fake(edges, 0.8).tolist() == [True, False, False]
    assert called_real_leaning_fake(edges, 0.05).tolist() == [False, False, False]


def run(*args, check=True, **options):
    return mfclip(*args, check=check, timeout=900, **options)


@pytest.fixture(scope="module")
def calibrated(weights, tmp_path_factory):
    """A random tiny checkpoint calibrated by ``mfclip calibrate`` on a small dataset."""
    root = tmp_path_factory.mktemp("verdicts")
    data = make_dataset(root / "data", per_class=12)
    out = root / "calibrated.safetensors"
    result = run(
        "calibrate", "-w", weights, "--data", data, "--out", out, "--device", "cpu",
        "--target-accuracy", "0.6",
    )  # fmt: skip
    assert "inconclusive above uncertainty" in result.stdout
    return data, out


def test_calibrate_stores_the_threshold_that_scan_applies_and_every_field_round_trips(
    calibrated, tmp_path
):
    _, weights = calibrated
    calibration = read_checkpoint_info(weights).calibration
    for record in (calibration, calibration["int8"]):  # each precision has its own band
        band = record["inconclusive"]
        assert band["target_accuracy"] == 0.6 and band["uncertainty_threshold"] >= 0
    Image.fromarray(mosaic()).save(tmp_path / "mosaic.png")
    Image.fromarray(_with_artifact(3)).save(tmp_path / "marked.png")
    scanned = run(
        "scan", "mosaic.png", "marked.png", "-w", weights, "--device", "cpu", "--stability",
        "--jsonl", "scan.jsonl", "--csv", "scan.csv", "--fail-on-inconclusive", "-q",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    lines = check_scan_lines((tmp_path / "scan.jsonl").read_text().splitlines())
    meta, files = lines[0], [line for line in lines if line["type"] == "file"]
    # a random network: its temperature at the search's upper bound, which only train and
    # calibrate said; scan says it too (audit AK F1)
    assert calibration["at_bound"] and calibration["temperature"] > 99
    said = " ".join(scanned.stderr.split())
    assert "warning: calibrated: the temperature is at its upper search bound" in said
    stored = calibration_at(calibration, meta["precision"]["used"])["inconclusive"]
    threshold = stored["uncertainty_threshold"]
    family_threshold = stored["family"]["uncertainty_threshold"]  # 12 fakes a class: fitted
    assert meta["verdicts"] == {
        "inconclusive": True,
        "uncertainty_threshold": threshold,
        "uncertainty_threshold_reached": stored["reached"],
        "measure": "binary",
        "family_threshold": family_threshold,
        "family_threshold_reached": stored["family"]["reached"],
        "ood": True,
        "stability": ["jpeg:75", "jpeg:50", "resize:0.5"],
        "near_duplicate_bits": None,  # no --duplicates
    }
    faces = [face for line in files for face in line["faces"]]
    assert len(faces) == 5
    for face in faces:
        expected = [
            reason
            for reason, applies in (
                ("uncertain", face["uncertainty"] > threshold),
                ("ood", face["ood"]),
                ("unstable", face["stability"]["flips"]),
            )
            if applies
        ]
        assert face.get("inconclusive", []) == expected
        assert (face["label"] == "inconclusive") == bool(expected)
        probs = np.array([[face["probs"][name] for name in ("real", "diffusion", "gan")]])
        assert face["uncertainty"] == pytest.approx(uncertainties(probs)[0], abs=2e-6)
        if face.get("leaning", face["label"]) in ("diffusion", "gan"):
            family = face["family_uncertainty"]
            assert family == pytest.approx(family_uncertainties(probs)[0], abs=2e-6)
            assert face["family_uncertain"] == stored_band(
                {"inconclusive": stored}
            ).family_uncertain(family)
        else:
            assert "family_uncertainty" not in face and "family_uncertain" not in face
        assert set(face["stability"]) == {"p_fake", "labels", "spread", "flips"}
    any_inconclusive = any(face["label"] == "inconclusive" for face in faces)
    assert scanned.returncode == (5 if any_inconclusive else 0), scanned.stderr
    for line in files:  # JSON Lines -> record -> JSON Lines, unchanged
        assert FileRecord.from_dict(line).to_dict() == line
    rows = list(csv.DictReader((tmp_path / "scan.csv").open()))
    for row, face in zip(rows, faces):
        assert row["label"] == face["label"] and row["leaning"] == face.get("leaning", "")
        assert row["inconclusive"] == " ".join(face.get("inconclusive", []))
        assert row["family_uncertainty"] == str(face.get("family_uncertainty", ""))
        assert row["family_uncertain"] == str(face.get("family_uncertain", "")).lower()
        assert float(row["p_fake_spread"]) == face["stability"]["spread"]
        assert row["flips"] == str(face["stability"]["flips"]).lower()
    run("report", "scan.jsonl", "--html", "report.html", cwd=tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert html.count("re-encoded:") == 5 and "inconclusive band" in html
    for face in faces:
        if face.get("leaning"):
            assert f"leaning <strong>{face['leaning']}</strong>" in html


def test_fail_on_fake_counts_only_conclusive_fakes(calibrated, tmp_path):
    _, weights = calibrated
    info = read_checkpoint_info(weights)

    def unsure_band(record):  # every face inconclusive
        return {**record, "inconclusive": {**record["inconclusive"], "uncertainty_threshold": 0}}

    # at either precision the scan runs (the int8 model has its own fitted band)
    calibration = {**unsure_band(info.calibration), "int8": unsure_band(info.calibration["int8"])}
    unsure = save_fitted(info, tmp_path / "unsure.safetensors", calibration=calibration)
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    common = ["scan", "a.png", "-w", unsure.path, "--device", "cpu", "--jsonl", "-", "-q"]
    common += ["--fake-threshold", "0"]  # the face leans fake

    def scan(*extra):
        result = run(*common, *extra, cwd=tmp_path, check=False)
        return result.returncode, check_scan_lines(result.stdout.splitlines())[1]["faces"][0]

    # a threshold of 0 reached is told from one whose target was not reached (audit Q L2)
    for reached in (True, False):
        band = {**calibration["inconclusive"], "reached": reached}
        path = tmp_path / f"reached-{reached}.safetensors"
        weights = save_fitted(info, path, calibration={**calibration, "inconclusive": band}).path
        said = run(*common[:3], weights, *common[4:], "--precision", "fp32", cwd=tmp_path)
        verdicts = check_scan_lines(said.stdout.splitlines())[0]["verdicts"]
        assert verdicts["uncertainty_threshold"] == 0
        assert verdicts["uncertainty_threshold_reached"] is reached

    code, face = scan("--fail-on-fake")
    assert (code, face["label"], face["inconclusive"]) == (0, "inconclusive", ["uncertain"])
    assert face["leaning"] in ("diffusion", "gan")
    assert scan("--fail-on-fake", "--fail-on-inconclusive")[0] == 5
    assert scan("--fail-on-inconclusive")[0] == 5
    code, face = scan("--fail-on-fake", "--no-inconclusive")
    assert (code, face["label"]) == (4, face["label"]) and face["label"] != "real"
    # a gate on inconclusive faces with none marked could never fire: refused (audit Q M3)
    refused = run(*common, "--fail-on-inconclusive", "--no-inconclusive", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "would pass everything" in " ".join(refused.stderr.split())


def test_an_uncalibrated_checkpoint_says_no_face_can_be_inconclusive(tmp_path):
    """Audit V F6: a training run's last.safetensors stores no band and no OOD statistics; the
    meta said the band was on and --fail-on-inconclusive passed every face. The scan says so,
    and the gate is refused rather than let everything through."""
    weights = tmp_path / "last.safetensors"
    save_checkpoint(build_model(load_model_config("tiny")), weights)
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    common = ["scan", "a.png", "-w", weights, "--device", "cpu", "--jsonl", "-", "-q"]
    said = run(*common, cwd=tmp_path, check=False)
    assert said.returncode == 0, said.stderr
    assert "note: this checkpoint stores no uncertainty threshold and no OOD" in said.stderr
    gated = run(*common, "--fail-on-inconclusive", cwd=tmp_path, check=False)
    assert gated.returncode == 2 and "--fail-on-inconclusive: this checkpoint" in gated.stderr
    # the band off, or --stability (a re-encoding can flip a face), nothing is said
    for extra in (["--no-inconclusive"], ["--stability"]):
        quiet = run(*common, *extra, cwd=tmp_path, check=False)
        assert quiet.returncode == 0 and "no face can be inconclusive" not in quiet.stderr


def test_eval_reports_the_band_at_the_stored_threshold_as_its_predictions_recompute(
    calibrated, tmp_path
):
    data, weights = calibrated
    report_path, predictions, plots = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "plots"
    run(
        "eval", "--data", data, "-w", weights, "--device", "cpu", "--bootstrap", "0",
        "--json", report_path, "--predictions", predictions, "--plots", plots,
    )  # fmt: skip
    report = check_json_file(report_path, "eval")
    band = report["inconclusive"]
    # the band eval applies is the one fitted at the precision it ran (int8 has its own fit)
    calibration = calibration_at(
        read_checkpoint_info(weights).calibration, report["precision"]["used"]
    )
    stored = calibration["inconclusive"]
    assert band["uncertainty_threshold"] == stored["uncertainty_threshold"] and band["ood"]
    rows = list(csv.DictReader(predictions.open()))
    probs = np.array([[float(row[name]) for name in ("real", "diffusion", "gan")] for row in rows])
    ood = np.array([row["ood"] == "true" for row in rows])
    marked = inconclusive_mask(probs, stored_band(calibration), ood)
    assert [row["inconclusive"] == "true" for row in rows] == marked.tolist()
    assert band["n_inconclusive"] == marked.sum() and band["share"] == pytest.approx(marked.mean())
    kept = [row["label"] for row, mark in zip(rows, marked) if not mark]
    again = detection_metrics(kept, probs[~marked], 0.5)
    for key in ("n", "acc", "auc", "acc3"):
        assert band["conclusive"][key] == pytest.approx(again[key], abs=1e-6)
    # the family threshold on the conclusive fakes called fake, recomputed from the rows
    assert band["measure"] == "binary"
    chosen = [
        i
        for i, row in enumerate(rows)
        if not marked[i] and row["label"] != "real" and 1 - probs[i, 0] >= 0.5
    ]
    family_threshold = stored["family"]["uncertainty_threshold"]
    unsure = [i for i in chosen if family_uncertainties(probs[i][None])[0] > family_threshold]
    assert (band["family"]["n"], band["family"]["n_uncertain"]) == (len(chosen), len(unsure))
    assert (plots / "inconclusive.png").stat().st_size > 0


def test_a_family_that_wavers_under_re_encoding_is_no_flip():
    """Audit V F3: a face at p(fake) 0.93 whose re-encodings stayed fake but changed family once
    was `unstable`, hence inconclusive, and --stability turned exit 4 into exit 0. A flip is a
    change of the call, real or fake; the labels still show the family's."""
    from mfclip_cli.engines.scan.stability import stability_record

    classes = ("real", "diffusion", "gan")

    def label_of(row: np.ndarray) -> str:
        return classes[int(np.argmax(row))]

    face = np.array([0.07, 0.30, 0.63])
    wavering = [np.array([0.1, 0.6, 0.3]), np.array([0.05, 0.2, 0.75]), face]
    record = stability_record(face, wavering, label_of)
    assert record["labels"]["jpeg:75"] == "diffusion" and record["flips"] is False
    turned = [np.array([0.6, 0.2, 0.2]), face, face]
    assert stability_record(face, turned, label_of)["flips"] is True
    real = np.array([0.8, 0.1, 0.1])
    assert stability_record(real, [real, np.array([0.3, 0.3, 0.4]), real], label_of)["flips"]


def _face_at(frame: int, x: float, y: float = 50.0, side: float = 100.0) -> FaceRecord:
    """A face record at (x, y) of ``side`` px, landmarks where a frontal face has them."""
    landmarks = [[x + 0.3 * side, y + 0.4 * side], [x + 0.7 * side, y + 0.4 * side]]
    landmarks += [[x + 0.5 * side, y + 0.6 * side], [x + 0.35 * side, y + 0.8 * side]]
    landmarks += [[x + 0.65 * side, y + 0.8 * side]]
    return FaceRecord.create(
        index=0,
        box=[x, y, x + side, y + side],
        landmarks=landmarks,
        det_score=0.99,
        probs={"real": 0.8, "diffusion": 0.1, "gan": 0.1},
        label="real",
        frame=frame,
        timestamp=frame / 10,
    )


def test_gaps_and_single_frame_tracks_follow_the_stated_rules():
    from mfclip_cli.engines.scan.tracks import MAX_GAP_S, link_tracks, track_summaries

    def seen(fps: float, frames: list[int], x: float = 10.0) -> list[FaceRecord]:
        faces = [_face_at(frame, x + frame) for frame in frames]
        for face in faces:
            face.timestamp = face.frame / fps
        return faces

    # at 1 fps: seen at 0 and 1 s, back MAX_GAP_S later (4 s): one track; then gone for longer
    # and back at 8 s: a new track; a stranger once at 10 s
    assert MAX_GAP_S == 3.0
    faces = seen(1.0, [0, 1, 4, 8]) + seen(1.0, [10], x=400.0)
    link_tracks(faces)
    assert [face.track for face in faces] == [0, 0, 0, 1, 2]
    summaries = track_summaries(faces, ("real", "diffusion", "gan"), lambda p: "real")
    assert [s["faces"] for s in summaries] == [3, 1, 1]
    assert [s["single_frame"] for s in summaries] == [False, True, True]
    assert summaries[0]["frames"] == [0, 1, 4] and summaries[0]["first"] == 0.0
    assert summaries[0]["last"] == 4.0
    # the gap is time, not samples (audit W M5): at 10 fps a 0.4 s occlusion keeps the track...
    faces = seen(10.0, [0, 1, 5])
    link_tracks(faces)
    assert [face.track for face in faces] == [0, 0, 0]
    # ... and samples 2.5 s apart (--frames 4 of 10 s) do not bridge a 4 s absence
    faces = seen(0.4, [0, 1, 3])
    link_tracks(faces)
    assert [face.track for face in faces] == [0, 0, 1]
    # three samples of a 29.97 fps video are 3.003 s apart: one track, as at 30 fps (audit L M2)
    faces = [_face_at(60, 10.0), _face_at(150, 10.0)]  # the same face, still
    for face in faces:
        face.timestamp = face.frame * 1001 / 30000
    link_tracks(faces)
    assert faces[1].timestamp - faces[0].timestamp > MAX_GAP_S
    assert [face.track for face in faces] == [0, 0]


def test_a_face_hidden_behind_another_does_not_take_its_track_when_they_part():
    """Audit L M1: A walks right behind B, who walks left at the same height; unseen for two
    frames, A came back on B's side and the linker gave each the other's track. A track unseen
    under another face's box ends there: A comes back as a new track, B keeps its own."""
    from mfclip_cli.engines.scan.tracks import link_tracks

    a = {k: _face_at(k, 100.0 + 40 * k) for k in range(14) if k not in (7, 8)}
    b = {k: _face_at(k, 700.0 - 40 * k) for k in range(14)}
    faces = [face for k in range(14) for face in ([a[k]] if k in a else []) + [b[k]]]
    link_tracks(faces)
    assert len({face.track for face in b.values()}) == 1  # B followed throughout
    before, after = {a[k].track for k in range(7)}, {a[k].track for k in range(9, 14)}
    assert len(before) == len(after) == 1 and before != after
    assert not (before | after) & {b[0].track}  # no track holds both people
    # side by side, boxes touching (2 px), one missed for a frame: both keep their tracks
    left = {k: _face_at(k, 100.0) for k in range(6) if k != 3}
    right = {k: _face_at(k, 198.0) for k in range(6)}
    faces = [face for k in range(6) for face in ([left[k]] if k in left else []) + [right[k]]]
    link_tracks(faces)
    assert len({face.track for face in left.values()}) == 1
    assert len({face.track for face in right.values()}) == 1


def test_every_track_ends_at_a_cut_between_shots():
    """A shot and its reverse shot put two people at one place: linked by geometry alone, their
    faces were one track with one verdict (audit L). A cut ends every open track."""
    from mfclip_cli.engines.scan.tracks import link_tracks

    faces = [_face_at(frame, 100.0) for frame in range(10)]  # still, one place throughout
    link_tracks(faces, cuts=[5])
    assert [face.track for face in faces] == [0] * 5 + [1] * 5
    # a cut between two sampled frames (none sampled at it) ends them too; two people, two tracks
    pair = [face for frame in (0, 4, 8) for face in (_face_at(frame, 0.0), _face_at(frame, 300.0))]
    link_tracks(pair, cuts=[2, 3])
    assert [face.track for face in pair] == [0, 1, 2, 3, 2, 3]


def _shot(background: np.ndarray, head: np.ndarray, shift: int) -> np.ndarray:
    """A 512 x 384 frame: ``background`` filling it, panned by ``shift`` px, ``head`` at the
    centre."""
    wide = cv2.resize(background, (640, 384), interpolation=cv2.INTER_AREA)
    canvas = np.ascontiguousarray(wide[:, shift : shift + 512])
    canvas[100:280, 171:341] = head
    return canvas


def _cut_video(path: Path, fps: float = 25.0, frames: tuple[int, int] = (31, 29)) -> None:
    """An interview's shot and reverse shot: the astronaut before a cup of coffee, the camera
    panning slowly, then a cut (at frame 31, 1.24 s: between two probes) to its mirror image
    before a cat, at the same place."""
    from skimage.data import chelsea

    head = astronaut()[30:210, 140:310]
    shots = [(face_free(), head), (chelsea(), head[:, ::-1])]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (512, 384))
    assert writer.isOpened()
    for (background, face), count in zip(shots, frames):
        for i in range(count):
            writer.write(cv2.cvtColor(_shot(background, face, i), cv2.COLOR_RGB2BGR))
    writer.release()


def test_shot_cuts_are_found_from_probes_and_a_pan_or_a_flash_is_not_two(tmp_path):
    """The adaptive rule (faces.shots): one cut where the picture jumps, none along a pan or a
    shaking camera, one (not two) for a one-frame flash."""
    from skimage.data import chelsea

    from mfclip_cli.faces.shots import ShotFinder

    def cuts(frames: list[np.ndarray]) -> list[int]:
        finder = ShotFinder()
        for index, frame in enumerate(frames):
            finder.add(index, index / 10, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return [cut.frame for cut in finder.cuts()]

    head = astronaut()[30:210, 140:310]
    pan = [_shot(face_free(), head, 6 * i) for i in range(20)]  # 60 px a second
    assert cuts(pan) == []
    shake = np.random.default_rng(0).integers(0, 40, 20)  # up to 8 % of the width a tenth
    assert cuts([_shot(face_free(), head, int(s)) for s in shake]) == []
    assert cuts(pan[:10] + [_shot(chelsea(), head, 6 * i) for i in range(10)]) == [10]
    flash = [*pan[:10], np.full_like(pan[0], 255), *pan[11:]]
    assert cuts(flash) == [10]


def test_a_picture_held_then_another_is_a_cut():
    """An animation's slide is held for seconds and probed once: the adaptive rule had no
    probes around it to compare, so faces on unrelated slides became one track (audit AB M5).
    A picture held half a second or more, then another, is a cut; a moving camera probed ten
    times a second is still none, and nor is a slide followed by itself."""
    from skimage.data import chelsea, rocket

    from mfclip_cli.faces.shots import ShotFinder

    def cuts(frames: list[np.ndarray], times: list[float], animation=True) -> list[float]:
        finder = ShotFinder(held_pictures=animation)
        for index, (frame, time) in enumerate(zip(frames, times)):
            finder.add(index, time, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return [cut.time for cut in finder.cuts()]

    head = astronaut()[30:210, 140:310]
    slides = [_shot(picture, head, 0) for picture in (face_free(), chelsea(), rocket())]
    assert cuts(slides * 2, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert cuts([slides[0], slides[0], slides[1]], [0.0, 1.0, 1.4]) == []  # held 0.4 s
    pan = [_shot(face_free(), head, 6 * i) for i in range(20)]
    assert cuts(pan, [i / 10 for i in range(20)]) == []
    # a video's frames half a second apart are a camera's: a 2 fps pan was cut at every frame,
    # each face its own track (audit AC M1)
    fast_pan = [_shot(astronaut(), head, 10 * i) for i in range(12)]  # scores 14-17
    half_seconds = [i / 2 for i in range(12)]
    assert cuts(fast_pan, half_seconds, animation=False) == []
    assert len(cuts(fast_pan, half_seconds)) > 5  # an animation's slides of such a pan: cut
    assert cuts(slides * 2, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], animation=False) == []


def test_a_cut_between_shots_ends_the_videos_tracks(weights, tmp_path):
    """Audit L: the astronaut, then after a cut its mirror image on another background at the
    same place, was one 80-face track. Now two, the cut in the video's summary, found whichever
    the sampling (probes ten a second: audit Y L4), at the first frame read of the new shot: its
    first probe (1.32 s), or a sampled frame nearer to it than to the probe before (1.24 s)."""
    _cut_video(tmp_path / "cut.mp4")
    for sampling, cut in (
        (["--fps", "5"], {"frame": 33, "time": 1.32}),
        (["--frames", "6"], {"frame": 33, "time": 1.32}),
        (["--fps", "25"], {"frame": 31, "time": 1.24}),
    ):
        html = tmp_path / f"cut{sampling[0]}{sampling[1]}.html"
        result = run(
            "scan", "cut.mp4", "-w", weights, "--device", "cpu", *sampling, "--jsonl", "-",
            "--html", html, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        video = check_scan_lines(result.stdout.splitlines())[1]["video"]
        assert video["cuts"] == [cut], sampling
        tracks = video["tracks"]
        assert len(tracks) == 2 and tracks[0]["last"] < 1.24 <= tracks[1]["first"], sampling
        said = " ".join(html.read_text().split())
        assert f"1 cut(s) between shots, at {cut['time']:.2f} s: every track ends" in said
    _crossing_video(tmp_path / "still.mp4")  # no cut: two people in one shot
    result = run("scan", "still.mp4", "-w", weights, "--jsonl", "-", cwd=tmp_path)
    assert check_scan_lines(result.stdout.splitlines())[1]["video"]["cuts"] == []


def test_a_spliced_fake_segment_makes_its_track_fake():
    """Audit W M1: 3 conclusive GAN faces at p 0.99 among 7 real ones gave a `real` track (the
    mean of its faces), hiding the splice; F10: real, gan and diffusion faces averaged to `gan`
    without a word of the disagreement. Two conclusive fake faces make a track fake, with the
    fake label most of them hold, and `fake_faces` counts them."""
    from mfclip_cli.engines.scan.tracks import MIN_FAKE_FACES, track_summaries

    classes = ("real", "diffusion", "gan")

    def track(labels: list[str]) -> dict:
        faces = []
        for frame, label in enumerate(labels):
            face = _face_at(frame, 10.0)
            probs = {"real": 0.01, "diffusion": 0.01, "gan": 0.01, label: 0.98}
            face.probs, face.label, face.track = probs, label, 0
            faces.append(face)
        mean_rule = lambda p: classes[int(np.argmax(p))]  # noqa: E731
        return track_summaries(faces, classes, mean_rule)[0]

    assert MIN_FAKE_FACES == 2
    splice = track(["real"] * 3 + ["gan"] * 3 + ["real"] * 4)
    assert (splice["label"], splice["fake_faces"]) == ("gan", 3)
    mixed = track(["real", "gan", "real", "gan", "diffusion", "real"])
    assert (mixed["label"], mixed["fake_faces"]) == ("gan", 3)
    assert mixed["fake_labels"] == {"diffusion": 1, "gan": 2}  # the families it mixes
    assert splice["fake_labels"] == {"gan": 3}
    tie = track(["diffusion", "gan", "real"])  # two fakes, one each, equal sums: in name order
    assert (tie["label"], tie["fake_faces"]) == ("diffusion", 2)
    one = track(["real"] * 5 + ["gan"])  # a single fake face: the mean rule, and counted
    assert (one["label"], one["fake_faces"]) == ("real", 1)


def test_an_inconclusive_track_leans_as_its_faces_do():
    """Five faces, each inconclusive and leaning gan at the operating point (called real at a
    fake threshold of 0.64, gan at 0.5), made a track leaning "real": the track took the label
    at the threshold, its faces their call at 0.5 (audit Q M1)."""
    from mfclip_cli.engines.scan.tracks import track_summaries

    faces = []
    for frame in range(5):
        face = _face_at(frame, 10.0)
        face.probs = {"real": 0.42, "diffusion": 0.03, "gan": 0.55}
        face.label, face.leaning, face.track = "inconclusive", "gan", 0
        face.inconclusive = ["operating_point"]
        faces.append(face)
    classes = ("real", "diffusion", "gan")
    (summary,) = track_summaries(faces, classes, lambda p: "real", lambda p: "gan")
    assert (summary["label"], summary["leaning"]) == ("inconclusive", "gan")


def _crossing_video(path: Path, frames: int = 12) -> None:
    """Two people crossing: the astronaut's head walking right along the top, its mirror image
    walking left below it; their boxes overlap as they pass."""
    head = astronaut()[30:210, 140:310]  # about 180 x 170, the face inside
    mirrored = head[:, ::-1]
    width, height = 900, 420
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        canvas = np.full((height, width, 3), 90, np.uint8)
        a = int(20 + i * (width - 210) / (frames - 1))
        b = int(width - 190 - i * (width - 210) / (frames - 1))
        canvas[20:200, a : a + 170] = head
        canvas[150:330, b : b + 170] = mirrored
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()


def test_a_video_of_two_people_crossing_keeps_two_tracks(weights, tmp_path):
    _crossing_video(tmp_path / "crossing.mp4")
    run(
        "scan", "crossing.mp4", "-w", weights, "--device", "cpu", "--frames", "12",
        "--jsonl", "scan.jsonl", "--html", "report.html", "-q", cwd=tmp_path,
    )  # fmt: skip
    lines = check_scan_lines((tmp_path / "scan.jsonl").read_text().splitlines())
    record = lines[1]
    faces = record["faces"]
    assert len(faces) >= 20  # two faces in (nearly) every one of the 12 frames
    tracks = record["video"]["tracks"]
    assert [track["track"] for track in tracks] == [0, 1]
    for track in tracks:
        mine = [face for face in faces if face["track"] == track["track"]]
        xs = [face["box"][0] for face in mine]
        assert xs == sorted(xs) or xs == sorted(xs, reverse=True)  # each keeps its direction
        assert track["faces"] == len(mine) and track["frames"] == [f["frame"] for f in mine]
        assert track["first"] == mine[0]["timestamp"] and track["last"] == mine[-1]["timestamp"]
        for name in ("real", "diffusion", "gan"):
            values = [face["probs"][name] for face in mine]
            assert track["mean"][name] == pytest.approx(np.mean(values), abs=1e-6)
            assert track["max"][name] == pytest.approx(max(values), abs=1e-6)
        assert track["label"] in ("real", "diffusion", "gan") and not track["single_frame"]
    assert FileRecord.from_dict(record).to_dict() == record
    html = (tmp_path / "report.html").read_text()
    assert html.count('class="strip"') == 2 and html.count("<polyline") == 2
    run("report", "scan.jsonl", "--html", "again.html", cwd=tmp_path)
    assert (tmp_path / "again.html").read_text().count("<polyline") == 2


@pytest.mark.parametrize("kind", ["copies", "walks"])
def test_banded_grouping_finds_every_group_a_comparison_of_all_pairs_finds(kind):
    """The bands (pigeonhole over bits 0-62) against every pair compared: copies within 8 bits,
    some differing in the last bit, which no band holds (a tenth band of that bit alone made
    grouping quadratic: audit X M5), some equal; and bursts that drift (each picture a few bits
    from the one before, as a camera's burst or a video's frames), shuffled, whose parts are
    found apart and joined later (a bucket's components relabelled as they merge)."""
    from mfclip_cli.engines.scan.duplicates import MAX_DISTANCE, near_duplicate_groups

    rng = np.random.default_rng(3)
    values = [int(v) for v in rng.integers(0, 2**63, 300, dtype=np.uint64)]
    if kind == "copies":
        for base in values[:60] * 2:
            flips = rng.choice(64, int(rng.integers(0, MAX_DISTANCE + 2)), replace=False)
            values.append(base ^ sum(1 << int(bit) for bit in flips) ^ int(rng.integers(0, 2)))
    else:
        for value in values[:8]:
            for _ in range(150):
                flips = rng.choice(64, int(rng.integers(0, 4)), replace=False)
                value ^= sum(1 << int(bit) for bit in flips)
                values.append(value)
        rng.shuffle(values)
    files = [(f"f{i}", f"{value:016x}", "real") for i, value in enumerate(values)]
    parent = list(range(len(values)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(values)):
        for j in range(i):
            if (values[i] ^ values[j]).bit_count() <= MAX_DISTANCE:
                parent[root(i)] = root(j)
    expected: dict[int, set[str]] = {}
    for i in range(len(values)):
        expected.setdefault(root(i), set()).add(f"f{i}")
    groups = near_duplicate_groups(files)
    assert {frozenset(group["files"]) for group in groups} == {
        frozenset(names) for names in expected.values() if len(names) > 1
    }
    assert len(groups) > (30 if kind == "copies" else 4)
    for group in groups:
        hashes = [int(digest, 16) for digest in group["phash"]]
        assert group["max_distance"] == max((a ^ b).bit_count() for a in hashes for b in hashes)


def test_no_near_pair_is_left_out_whatever_the_order_and_copies_are_fast():
    """Grouping around seed files (tried against chains) left a fake copy 4 bits from a real
    file in no group, or the real one, by input order (audit AC H1): a near pair is always in
    one group, its verdicts compared. 20,000 copies of one picture, equal or a few bits apart,
    are one group (each compared with every other took minutes: audit AA H1)."""
    from mfclip_cli.engines.scan.duplicates import near_duplicate_groups

    a, b = 0, 0b11111  # 5 bits apart
    c = b ^ 0b1111_00000  # 4 bits from b, 9 from a
    named = {"a": (a, "real"), "b": (b, "real"), "c": (c, "fake")}
    for order in ("abc", "cba", "bca"):
        files = [(name, f"{named[name][0]:016x}", named[name][1]) for name in order]
        (group,) = near_duplicate_groups(files)
        assert sorted(group["files"]) == ["a", "b", "c"] and group["disagree"], order
        assert group["max_distance"] == 9
    rng = np.random.default_rng(4)
    centre = int(rng.integers(0, 2**63))
    copies = [
        centre ^ sum(1 << int(bit) for bit in rng.choice(64, int(rng.integers(0, 3)), False))
        for _ in range(20_000)
    ]
    files = [(f"p{i}", f"{value:016x}", "real") for i, value in enumerate(copies)]
    (group,) = near_duplicate_groups(files)
    assert len(group["files"]) == 20_000 and group["max_distance"] <= 4


def test_perceptual_hashes_group_re_encoded_copies_and_flag_disagreeing_verdicts():
    from mfclip_cli.engines.scan.duplicates import (
        MAX_DISTANCE,
        near_duplicate_groups,
        perceptual_hash,
    )

    def hamming(a: str, b: str) -> int:
        return (int(a, 16) ^ int(b, 16)).bit_count()

    picture = astronaut()
    copies = {
        "original": picture,
        "jpeg:50": np.array(Perturbation("jpeg", 50).apply(Image.fromarray(picture), "", 0)),
        "resize:0.5": np.array(Perturbation("resize", 0.5).apply(Image.fromarray(picture), "", 0)),
        "half size": cv2.resize(picture, (256, 256), interpolation=cv2.INTER_AREA),
    }
    hashes = {name: perceptual_hash(pixels) for name, pixels in copies.items()}
    others = {"coffee": perceptual_hash(face_free()), "mosaic": perceptual_hash(mosaic())}
    assert all(hamming(hashes["original"], h) <= MAX_DISTANCE for h in hashes.values())
    assert all(hamming(hashes["original"], h) > MAX_DISTANCE for h in others.values())
    # one colour, or a grey level of noise on black, is no picture to compare (audit X L4: blank
    # screenshots were grouped as copies); a gradient is
    flat = [np.zeros((90, 120, 3), np.uint8), np.full((64, 64, 3), (0, 0, 255), np.uint8)]
    flat.append(np.random.default_rng(0).integers(0, 3, (100, 100, 3)).astype(np.uint8))
    assert [perceptual_hash(pixels) for pixels in flat] == [None, None, None]
    ramp = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :, None], (100, 1, 3))
    assert perceptual_hash(ramp) is not None
    files = [(name, digest, "real") for name, digest in hashes.items()]
    files += [(name, digest, "real") for name, digest in others.items()]
    files[1] = (files[1][0], files[1][1], "fake")  # the JPEG copy got another answer
    (group,) = near_duplicate_groups(files)
    assert sorted(group["files"]) == sorted(hashes) and group["disagree"] is True
    assert group["max_distance"] <= MAX_DISTANCE
    agreeing = [(name, digest, "real") for name, digest, _ in files]
    assert near_duplicate_groups(agreeing)[0]["disagree"] is False
    assert "files_bytes" not in near_duplicate_groups(agreeing)[0]
    # audit Z4: a name not UTF-8 and one spelling its escape are written alike; the dict of
    # verdicts held one of them, and a real and a gan copy did not disagree
    raw, spelt = os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"
    digest = hashes["original"]
    (group,) = near_duplicate_groups([(raw, digest, "fake"), (spelt, digest, "real")])
    assert group["files"] == [spelt, spelt] and group["disagree"] is True
    assert group["files_bytes"] == [b"caf\xe9.jpg".hex(), None]


def test_scan_lists_re_encoded_copies_as_near_duplicates(weights, tmp_path):
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    Image.fromarray(astronaut()).save(tmp_path / "a75.jpg", quality=75)
    Image.fromarray(mosaic()).save(tmp_path / "other.png")
    run(
        "scan", ".", "-w", weights, "--device", "cpu", "--duplicates", "--jsonl", "scan.jsonl",
        "--html", "report.html", "-q", cwd=tmp_path,
    )  # fmt: skip
    lines = check_scan_lines((tmp_path / "scan.jsonl").read_text().splitlines())
    files = {line["path"]: line for line in lines if line["type"] == "file"}
    assert all(len(line["phash"]) == 16 for line in files.values())
    (group,) = lines[-1]["duplicates"]
    assert sorted(group["files"]) == ["a.png", "a75.jpg"] and group["disagree"] is False
    assert lines[0]["verdicts"]["near_duplicate_bits"] == 8
    for line in files.values():
        assert FileRecord.from_dict(line).to_dict() == line
    run("report", "scan.jsonl", "--html", "again.html", cwd=tmp_path)
    for page in ("report.html", "again.html"):
        assert "Near-duplicates" in (tmp_path / page).read_text()


def test_a_ctrl_c_while_near_duplicates_are_grouped_stops_the_run(weights, tmp_path, monkeypatch):
    """The groups were found in the reports' close, where signals are held off: many near
    hashes kept a scan deaf to Ctrl-C and SIGTERM for minutes (audits AA H1, AC M2). They are
    found before it: a Ctrl-C there stops the run as one during the scan does (exit 130, the
    report closed as partial, without groups)."""
    import io

    from rich.console import Console

    from mfclip_cli.engines.scan import duplicates
    from mfclip_cli.engines.scan.request import ScanRequest
    from mfclip_cli.engines.scan.run import run_scan

    def interrupted(files):
        raise KeyboardInterrupt

    monkeypatch.setattr(duplicates, "near_duplicate_groups", interrupted)
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    request = ScanRequest(
        inputs=[str(tmp_path / "a.png")],
        settings=ScanSettings(device="cpu", workers=1, duplicates=True),
        weights=(str(weights),),
        quiet=True,
        jsonl_path=str(tmp_path / "r.jsonl"),
        html_path=str(tmp_path / "r.html"),
    )
    quiet = Console(file=io.StringIO())
    try:
        code = run_scan(request, stdin=None, console=quiet, error_console=quiet)
    except KeyboardInterrupt:  # raised in the close: the reports left unclosed
        pytest.fail("the Ctrl-C came while the reports closed, not while the run went on")
    assert code == 130
    end = check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())[-1]
    assert end["complete"] is False and "duplicates" not in end
    assert "Not grouped: the run stopped before its files were compared" in (
        (tmp_path / "r.html").read_text()
    )


def test_a_resumed_scan_groups_its_files_with_the_earlier_runs(weights, tmp_path):
    """Audit X H1: a copy added before a --resume was grouped only with this run's files; the
    picture it copies, scanned by the earlier run, was left out, and the report said no two
    images were near-duplicates."""
    case = tmp_path / "case"
    case.mkdir()
    Image.fromarray(astronaut()).save(case / "a.png")
    scan = ("scan", "case", "-w", weights, "--device", "cpu", "--duplicates", "--jsonl", "r.jsonl")
    run(*scan, "-q", cwd=tmp_path)
    Image.fromarray(astronaut()).save(case / "z_copy.jpg", quality=75)
    run(*scan, "--resume", "--json", "r.json", "-q", cwd=tmp_path)
    for groups in (
        check_scan_lines((tmp_path / "r.jsonl").read_text().splitlines())[-1]["duplicates"],
        check_json_file(tmp_path / "r.json", "scan")["meta"]["duplicates"],
    ):
        assert [sorted(group["files"]) for group in groups] == [["case/a.png", "case/z_copy.jpg"]]
