"""Eval's robustness protocol: the perturbations (docs/robustness.md), their parser, protocol files
that name them, and ``mfclip eval --perturb`` end to end on a tiny calibrated checkpoint."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from media import astronaut
from PIL import Image, JpegImagePlugin
from report_schemas import check_json_file
from rich.console import Console
from scipy.ndimage import gaussian_filter
from test_train import MFCLIP, make_dataset, run

from mfclip_cli.data import ProtocolError, load_protocol, parse_protocol, read_dataset, select
from mfclip_cli.data.faceset import FaceImages
from mfclip_cli.data.perturb import (
    Perturbation,
    combine,
    encode_jpeg,
    parse_perturbations,
)
from mfclip_cli.engines.evaluate.calibrate import calibrate
from mfclip_cli.engines.evaluate.requests import CalibrateRequest
from mfclip_cli.engines.inference import FaceSource, predict_outputs
from mfclip_cli.errors import UsageError
from mfclip_cli.model import load_checkpoint, read_checkpoint_info
from mfclip_cli.scoring.calibration import softmax
from mfclip_cli.scoring.metrics import calibration_metrics, detection_metrics

KINDS_AT = ["jpeg:50", "resize:0.5", "blur:1.5", "noise:8"]


@pytest.fixture(scope="module")
def face() -> Image.Image:
    """The astronaut's face, 128 px: a real photo's detail, at a prepared crop's size."""
    return Image.fromarray(astronaut()[40:200, 150:310]).resize(
        (128, 128), Image.Resampling.BICUBIC
    )


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _apply(text: str, image: Image.Image, key: str = "a.png", seed: int = 0) -> np.ndarray:
    (perturbation,) = parse_perturbations([text])
    return _pixels(perturbation.apply(image, key, seed))


def _high_frequency(pixels: np.ndarray) -> float:
    """Mean squared neighbour difference, across rows and columns."""
    return float(np.mean(np.diff(pixels, axis=0) ** 2) + np.mean(np.diff(pixels, axis=1) ** 2))


def test_jpeg_reencodes_at_the_requested_quality_with_4_2_0(face):
    sizes = {quality: len(encode_jpeg(face, quality)) for quality in (50, 90, 95)}
    assert sizes[50] < sizes[90] < sizes[95]
    with Image.open(io.BytesIO(encode_jpeg(face, 75))) as encoded:
        assert encoded.format == "JPEG" and JpegImagePlugin.get_sampling(encoded) == 2  # 4:2:0
    original = _pixels(face)
    error = {q: np.abs(_apply(f"jpeg:{q}", face) - original).mean() for q in (50, 95)}
    assert 0 < error[95] < error[50]


@pytest.mark.parametrize("text", KINDS_AT)
def test_each_perturbation_is_deterministic_keeps_the_size_and_changes_the_pixels(face, text):
    first = _apply(text, face, "real/camera/0001.png", seed=3)
    assert first.shape == _pixels(face).shape  # same size, RGB
    np.testing.assert_array_equal(first, _apply(text, face, "real/camera/0001.png", seed=3))
    assert np.abs(first - _pixels(face)).mean() > 0.1


def test_noise_is_drawn_from_seed_and_key_and_has_the_requested_std():
    grey = Image.new("RGB", (256, 256), (128, 128, 128))
    same = _apply("noise:10", grey, "x.png", 0)
    assert not np.array_equal(same, _apply("noise:10", grey, "y.png", 0))
    assert not np.array_equal(same, _apply("noise:10", grey, "x.png", 1))
    residual = same - 128
    assert abs(residual.mean()) < 0.2 and residual.std() == pytest.approx(10, rel=0.03)
    # one draw per sample, scaled by the std: severities differ only in strength
    np.testing.assert_allclose(_apply("noise:5", grey, "x.png", 0) - 128, residual / 2, atol=1)
    assert _apply("noise:100", grey, "x.png", 0).min() == 0  # clipped to 0-255


def test_blur_is_a_gaussian_with_a_3_sigma_reflected_kernel_and_removes_detail(face):
    original = _pixels(face)
    blurred = {sigma: _apply(f"blur:{sigma}", face) for sigma in (1, 2)}
    assert _high_frequency(blurred[2]) < _high_frequency(blurred[1]) < _high_frequency(original)
    # radius 3 sigma (6 px at sigma 2) and reflect-101 borders are scipy's truncate=3, "mirror"
    reference = gaussian_filter(original, sigma=(2, 2, 0), truncate=3.0, mode="mirror")
    assert np.abs(blurred[2] - np.rint(reference)).max() <= 1


def test_resize_goes_down_and_back_to_the_same_size(face):
    halved = _apply("resize:0.5", face)
    quartered = _apply("resize:0.25", face)
    assert halved.shape == quartered.shape == _pixels(face).shape
    assert _high_frequency(quartered) < _high_frequency(halved) < _high_frequency(_pixels(face))
    flat = Image.new("RGB", (100, 60), (30, 90, 200))
    np.testing.assert_array_equal(_apply("resize:0.3", flat), _pixels(flat))


def test_parser_expands_severities_and_names_round_trip():
    parsed = parse_perturbations(["jpeg:90,75", " Blur : 1.5 ", "resize:0.25", "noise:5"])
    assert [p.name for p in parsed] == ["jpeg:90", "jpeg:75", "blur:1.5", "resize:0.25", "noise:5"]
    assert parsed[0] == Perturbation("jpeg", 90) and parsed[2] == Perturbation("blur", 1.5)
    assert parse_perturbations([p.name for p in parsed]) == parsed
    assert parse_perturbations([]) == []


@pytest.mark.parametrize(
    ("texts", "said"),
    [
        (["gamma:1"], "unknown kind 'gamma'"),
        (["jpeg"], "names no severity"),
        (["jpeg:"], "names no severity"),
        (["jpeg:90,,75"], "empty severity"),
        (["jpeg:high"], "integer quality in 1-95, not 'high'"),
        (["jpeg:75.5"], "integer quality"),
        (["jpeg:0"], "integer quality"),
        (["jpeg:96"], "integer quality"),
        (["resize:1"], "a factor in (0, 1)"),
        (["resize:0"], "a factor in (0, 1)"),
        (["blur:0"], "a sigma > 0"),
        (["blur:-1"], "a sigma > 0"),
        (["noise:nan"], "a std > 0"),
        (["noise:inf"], "a std > 0"),
        (["jpeg:90", "jpeg:90"], "jpeg:90 is named twice"),
        (["blur:1,1.0"], "blur:1 is named twice"),
    ],
)
def test_parser_refuses_bad_perturbations(texts, said):
    with pytest.raises(UsageError) as caught:
        parse_perturbations(texts)
    assert said in str(caught.value)


def test_command_line_kinds_replace_the_protocols_and_rows_go_mild_to_strong():
    protocol = parse_perturbations(["jpeg:90", "noise:5"])
    chosen = combine(protocol, parse_perturbations(["jpeg:50", "blur:2"]))
    assert [p.name for p in chosen] == ["jpeg:50", "blur:2", "noise:5"]
    ordered = combine([], parse_perturbations(["blur:2,1", "resize:0.25,0.5", "jpeg:50,90"]))
    assert [p.name for p in ordered] == [
        "jpeg:90",
        "jpeg:50",
        "resize:0.5",
        "resize:0.25",
        "blur:1",
        "blur:2",
    ]


def test_protocol_files_name_perturbations_and_round_trip(tmp_path):
    path = tmp_path / "robust.toml"
    path.write_text('description = "with perturbations"\nperturb = ["jpeg:90,75", "blur:1"]\n')
    protocol = load_protocol(path)
    assert [p.name for p in protocol.perturb] == ["jpeg:90", "jpeg:75", "blur:1"]
    document = json.loads(json.dumps(protocol.to_dict()))
    assert document["perturb"] == ["jpeg:90", "jpeg:75", "blur:1"]
    assert parse_protocol(document) == protocol
    assert "perturb" not in load_protocol("in-domain").to_dict()  # run configs stay as they were
    path.write_text('perturb = ["jpeg:90", "sharpen:2"]\n')
    with pytest.raises(ProtocolError, match="robust.toml: perturb: .*unknown kind 'sharpen'"):
        load_protocol(path)
    with pytest.raises(ProtocolError, match="perturb must be a list"):
        parse_protocol({"name": "x", "perturb": "jpeg:90"})


def test_face_images_degrade_the_stored_crop_before_resizing_whatever_the_order(tmp_path, face):
    small = face.resize((96, 96), Image.Resampling.BICUBIC)  # not the model's 128 px
    for name in ("a.png", "b.png"):
        small.save(tmp_path / name)
    (noise,) = parse_perturbations(["noise:6"])
    forward = FaceImages(tmp_path, ["a.png", "b.png"], 128, perturbation=noise, perturbation_seed=4)
    backward = FaceImages(
        tmp_path, ["b.png", "a.png"], 128, perturbation=noise, perturbation_seed=4
    )
    torch.testing.assert_close(forward[0][0], backward[1][0], rtol=0, atol=0)
    assert not torch.equal(forward[0][0], forward[1][0])  # a.png and b.png: different noise
    expected = noise.apply(small, "a.png", 4).resize((128, 128), Image.Resampling.LANCZOS)
    as_tensor = torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(forward[0][0], as_tensor, rtol=0, atol=0)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces") / "faces", per_class=10)


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "robust.toml"
    path.write_text(
        'description = "tiny splits"\nval_fraction = 0.3\ntest_fraction = 0.3\n'
        'perturb = ["jpeg:90", "noise:5"]\n'
    )
    return path


def calibrated_copy(weights: Path, dataset: Path, protocol: Path, out: Path) -> Path:
    """``weights`` with a temperature and thresholds fitted on ``protocol``'s val split, at
    ``out`` (the calibrate engine, in process)."""
    request = CalibrateRequest(
        weights=str(weights), data=str(dataset), out=str(out), protocol=str(protocol), device="cpu"
    )
    calibrate(request, Console(stderr=True, quiet=True))
    return out


@pytest.fixture(scope="module")
def calibrated(weights, dataset, protocol_file, tmp_path_factory):
    """The random tiny checkpoint with a temperature fitted on val (T != 1)."""
    out = tmp_path_factory.mktemp("calibrated") / "calibrated.safetensors"
    return calibrated_copy(weights, dataset, protocol_file, out)


def test_eval_scores_each_perturbation_beside_the_clean_row(
    dataset, protocol_file, calibrated, tmp_path
):
    report_path, plots = tmp_path / "report.json", tmp_path / "plots"
    common = [MFCLIP, "eval", "--data", str(dataset), "--protocol", str(protocol_file)]
    common += ["--weights", str(calibrated), "--device", "cpu", "--bootstrap", "0"]
    common += ["--precision", "fp32"]  # the fp32 model, recomputed below
    result = run(
        *common,
        "--perturb",
        "jpeg:50",
        "--perturb",
        "blur:2",
        "--json",
        str(report_path),
        "--plots",
        str(plots),
    )
    report = check_json_file(report_path, "eval")
    robustness = report["robustness"]
    rows = {row["name"]: row for row in robustness["rows"]}
    # the command line's jpeg replaces the protocol's jpeg:90; its noise:5 stays
    assert list(rows) == ["clean", "jpeg:50", "blur:2", "noise:5"]
    assert robustness["seed"] == 0 and robustness["definitions"] == "docs/robustness.md"
    test_size = report["protocol"]["sizes"]["test"]
    for row in rows.values():
        assert row["n"] == test_size
        assert all(row[key] is not None for key in ("auc", "ap", "acc", "ece"))
    clean, overall = rows["clean"], report["overall"]
    assert (clean["perturbation"], clean["severity"]) == (None, None)
    assert [clean[key] for key in ("auc", "ap", "acc")] == [
        overall[k] for k in ("auc", "ap", "acc")
    ]
    calibration = report["calibration"]
    assert calibration["calibrated"] and calibration["temperature"] != 1.0
    assert clean["ece"] == calibration["test"]["after"]["ece_fake"]
    assert (rows["blur:2"]["perturbation"], rows["blur:2"]["severity"]) == ("blur", 2.0)
    always = {"roc.png", "reliability.png", "robustness.png", "inconclusive.png"}
    written = {p.name for p in plots.iterdir()}
    assert always <= written <= always | {"attribution-confusion.png"}
    assert str(plots / "robustness.png") in report["plots"]
    with Image.open(plots / "robustness.png") as figure:
        assert figure.size[0] > 2 * figure.size[1]  # three panels: jpeg, blur, noise
    assert "robustness on test" in result.stdout and "jpeg" in result.stdout

    # the noise row again here, in batches of 3 over 2 loader workers: the same noise, calibration
    model, _ = load_checkpoint(calibrated, inference=True)
    index = read_dataset(dataset)
    test = select(index, load_protocol(protocol_file), required=("test",)).test
    (noise,) = parse_perturbations(["noise:5"])
    logits = predict_outputs(
        model,
        FaceSource(index.root, torch.device("cpu"), batch_size=3, workers=2),
        test,
        perturbation=noise,
        seed=0,
    ).logits
    probs = softmax(logits, read_checkpoint_info(calibrated).calibration["temperature"])
    labels = [sample.label for sample in test]
    expected = detection_metrics(labels, probs)
    for key in ("auc", "ap", "acc"):
        assert rows["noise:5"][key] == pytest.approx(expected[key], abs=1e-6)
    ece = calibration_metrics(labels, probs)["ece_fake"]
    assert rows["noise:5"]["ece"] == pytest.approx(ece, abs=1e-5)


def test_a_bad_perturbation_is_a_usage_error_before_anything_is_written(dataset, weights, tmp_path):
    report_path = tmp_path / "never.json"
    common = [MFCLIP, "eval", "--data", str(dataset), "--weights", str(weights), "--device", "cpu"]
    refused = run(*common, "--perturb", "jpeg:", "--json", str(report_path), check=False)
    assert refused.returncode == 2, refused.stderr
    assert "names no severity" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('perturb = ["blur:0"]\n')
    refused = run(*common, "--protocol", str(bad_file), "--json", str(report_path), check=False)
    assert refused.returncode == 2 and "a sigma > 0" in refused.stderr
    assert list(tmp_path.iterdir()) == [bad_file]
