"""Calibration end to end: ``train`` leaves a calibrated best.safetensors, ``mfclip calibrate``
writes a calibrated copy, ``eval`` and ``scan`` report and use it; run as subprocesses. With it
goes the int8 model's parity with fp32, which decides ``--precision auto``."""

import csv
import json

import numpy as np
import pytest
import torch
from media import astronaut, mosaic
from PIL import Image
from report_schemas import check_json_file, check_scan_lines
from scipy.stats import beta
from test_train import MFCLIP, make_dataset, metrics_lines, run, train_args

from mfclip_cli.data import load_protocol, read_dataset, select
from mfclip_cli.data.faceset import FaceImages, collate_faces
from mfclip_cli.engines.inference import FaceSource, predict_outputs
from mfclip_cli.model import load_checkpoint, read_checkpoint_info, save_checkpoint
from mfclip_cli.model.checkpoint import save_fitted, sidecar_path, timeless
from mfclip_cli.scoring.fingerprints import face_fingerprints
from mfclip_cli.scoring.fpr_bounds import OPERATING_POINT_FIELDS
from mfclip_cli.scoring.metrics import rates_at_threshold, roc_auc
from mfclip_cli.scoring.ood import ood_of
from mfclip_cli.scoring.precision import MAX_LABEL_CHANGE_SHARE, measure_parity, model_at


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("artifacts") / "artifacts", per_class=40)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    run(*train_args(dataset, out, "--epochs", "3"))
    return out


@pytest.fixture(scope="module")
def calibrated(dataset, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated") / "calibrated.safetensors"
    result = run(
        MFCLIP,
        "calibrate",
        "--weights",
        str(trained / "best.safetensors"),
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert "temperature" in result.stdout and "fpr:0.01" in result.stdout
    return out


def test_training_stores_temperature_and_val_thresholds_in_the_header(trained, tmp_path):
    info = read_checkpoint_info(trained / "best.safetensors")
    record = info.calibration
    assert record["temperature"] > 0 and record["method"] == "temperature scaling"
    assert record["fitted_on"]["split"] == "val" and record["fitted_on"]["protocol"] == "in-domain"
    sizes = json.loads((trained / "best.json").read_text())["training"]["protocol"]["sizes"]
    assert record["fitted_on"]["samples"] == sizes["val"]
    assert set(record["thresholds"]) == {"fpr:0.01", "fpr:0.001"}
    assert json.loads((trained / "best.json").read_text())["calibration"] == record
    # the tensor file alone carries it: a copy without its sidecar
    copy = tmp_path / "alone.safetensors"
    copy.write_bytes((trained / "best.safetensors").read_bytes())
    assert not sidecar_path(copy).exists()
    alone = read_checkpoint_info(copy).calibration
    assert alone == timeless(record) and "fitted_utc" not in alone  # its time: in the sidecar
    assert "fitted_utc" in record


def test_calibrate_writes_a_new_checkpoint_and_refuses_to_overwrite(
    dataset, trained, calibrated, tmp_path
):
    source = read_checkpoint_info(trained / "best.safetensors")
    info = read_checkpoint_info(calibrated)
    assert info.sha256 != source.sha256
    record = info.calibration
    assert record["source_sha256"] == record["base_sha256"] == source.sha256
    # the same model on the same val split: the training run's fit, up to float rounding
    assert record["temperature"] == pytest.approx(source.calibration["temperature"], rel=1e-3)
    before = calibrated.read_bytes()
    again = run(
        MFCLIP,
        "calibrate",
        "-w",
        str(trained / "best.safetensors"),
        "--data",
        str(dataset),
        "--out",
        str(calibrated),
        "--device",
        "cpu",
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    assert calibrated.read_bytes() == before

    no_reals = tmp_path / "no-reals.toml"
    no_reals.write_text(
        'description = "val without reals"\nval_fraction = 0.3\ntest_fraction = 0.2\n'
        '[val]\ninclude = { label = ["gan", "diffusion"] }\n'
    )
    out = tmp_path / "never.safetensors"
    refused = run(
        MFCLIP,
        "calibrate",
        "-w",
        str(trained / "best.safetensors"),
        "--data",
        str(dataset),
        "--protocol",
        str(no_reals),
        "--out",
        str(out),
        "--device",
        "cpu",
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    # refused when the protocol splits the data, before the checkpoint is loaded (issue 25)
    assert "the val split has no real faces" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists() and not sidecar_path(out).exists()
    assert list(tmp_path.iterdir()) == [no_reals]  # no temporary file left either


def test_eval_reports_calibration_operating_points_and_intervals(dataset, calibrated, tmp_path):
    report_path, predictions, plots = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "plots"
    result = run(
        MFCLIP,
        "eval",
        "--data",
        str(dataset),
        "--weights",
        str(calibrated),
        "--device",
        "cpu",
        "--json",
        str(report_path),
        "--predictions",
        str(predictions),
        "--plots",
        str(plots),
        "--bootstrap",
        "300",
        "--seed",
        "5",
        "--precision",
        "fp32",  # the checkpoint's own calibration (int8 has its own: a test below)
    )
    report = check_json_file(report_path, "eval")
    record = read_checkpoint_info(calibrated).calibration
    calibration = report["calibration"]
    assert calibration["calibrated"] and calibration["temperature"] == record["temperature"]
    assert calibration["fitted_on"] == record["fitted_on"]
    for key in ("ece_fake", "ece_top_label", "brier_fake", "brier", "nll"):
        assert calibration["test"]["before"][key] is not None
        assert calibration["test"]["after"][key] is not None

    intervals = report["intervals"]
    assert (intervals["replicates"], intervals["seed"], intervals["unit"]) == (300, 5, "sample")
    assert intervals["units"] == report["overall"]["n"]
    low, high = intervals["auc"]
    assert low <= report["overall"]["auc"] <= high

    # thresholds chosen on val (with the calibrated probabilities), applied to test as they are
    chosen = report["operating_points"]["chosen_on"]
    assert chosen["split"] == "val" and chosen["samples"] == report["protocol"]["sizes"]["val"]
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    fake = np.array([row["label"] != "real" for row in rows], dtype=int)
    score = np.array([1 - float(row["real"]) for row in rows])
    # each probability whole, not to 8 decimals (ties the report does not have: audit N L1)
    sums = [sum(float(row[name]) for name in ("real", "diffusion", "gan")) for row in rows]
    assert max(abs(total - 1) for total in sums) < 1e-12
    assert roc_auc(fake, score) == report["overall"]["auc"]
    for name, point in report["operating_points"]["points"].items():
        assert point["threshold"] == pytest.approx(record["thresholds"][name]["threshold"], 1e-4)
        expected = rates_at_threshold(fake, score, point["threshold"])
        assert (point["test"]["fpr"], point["test"]["tpr"]) == pytest.approx(expected, abs=1e-6)
        assert point["val"]["fpr"] <= point["target_fpr"]
        # the val split's word on it, as the checkpoint records it (the same split and model)
        stored = record["thresholds"][name]
        for key in ("n_real", "false_positives", "supported", "reals_needed"):
            assert point["val"][key] == stored[key]
        assert point["val"]["fpr_upper_95"] == pytest.approx(stored["fpr_upper_95"])
        assert f"{stored['fpr_upper_95']:.3f}" in result.stdout
        assert point["test"]["tpr_ci"] is not None
        # the test's own TPR only where its reals can show the rate (audit E F1)
        test_reals = int((fake == 0).sum())
        if test_reals * point["target_fpr"] >= 2:
            assert point["test_oracle_tpr"] is not None and not point["test_oracle_problem"]
        else:
            assert point["test_oracle_tpr"] is None and point["test_oracle_tpr_ci"] is None
            assert f"has {test_reals} real faces" in point["test_oracle_problem"]
        # never narrower than the exact binomial interval: a bootstrap cannot leave 0 or 1
        called = score >= point["threshold"]
        for rate, of in (("fpr", fake == 0), ("tpr", fake == 1)):
            hits, n = int((called & of).sum()), int(of.sum())
            low, high = point["test"][f"{rate}_ci"]
            assert low <= beta.ppf(0.025, hits, n - hits + 1) if hits else low == 0.0
            assert high >= beta.ppf(0.975, hits + 1, n - hits) if hits < n else high == 1.0
    written = {p.name for p in plots.iterdir()}
    # the inconclusive band's curve always; the attribution confusion where the checkpoint
    # attributes
    always = {"roc.png", "reliability.png", "inconclusive.png"}
    assert always <= written <= always | {"attribution-confusion.png"}
    assert "calibrated" in result.stdout and "fpr:0.01" in result.stdout


def test_eval_of_an_uncalibrated_checkpoint_says_so(dataset, trained, tmp_path):
    report_path = tmp_path / "r.json"
    run(
        MFCLIP,
        "eval",
        "--data",
        str(dataset),
        "--weights",
        str(trained / "last.safetensors"),  # last is never calibrated
        "--device",
        "cpu",
        "--json",
        str(report_path),
        "--bootstrap",
        "0",
    )
    report = check_json_file(report_path, "eval")
    assert report["calibration"]["calibrated"] is False
    assert report["calibration"]["temperature"] == 1.0
    assert report["calibration"]["test"]["after"] is None
    assert report["intervals"] is None
    assert report["operating_points"]["points"]["fpr:0.01"]["threshold"] is not None


def test_a_checkpoint_with_non_finite_outputs_is_named_not_a_traceback(dataset, tmp_path):
    """Audit E F6: a checkpoint whose outputs hold NaN (damaged or converted weights) stopped
    eval and calibrate with a 50-line traceback from the metrics. A NaN weight is refused at
    load (audit R F1); finite weights whose outputs overflow, by the outputs' check."""
    from mfclip_cli.model import build_model, load_model_config

    torch.manual_seed(0)
    model = build_model(load_model_config("tiny"))
    with torch.no_grad():
        model.head[3].bias[0] = float("nan")
    damaged = tmp_path / "damaged.safetensors"
    save_checkpoint(model, damaged)
    with torch.no_grad():
        model.head[3].bias[0] = 0.0
        model.head[3].weight.fill_(3e38)  # finite, its products are not
    overflowing = tmp_path / "overflowing.safetensors"
    save_checkpoint(model, overflowing)
    for weights, reason in (
        (damaged, "values that are not finite numbers (NaN or an infinity) in head.3.bias"),
        (overflowing, "overflowing gives outputs that are not finite numbers (NaN or an infinity)"),
    ):
        common = ("--data", str(dataset), "--weights", str(weights), "--device", "cpu")
        for command in (
            ("eval", *common, "--bootstrap", "0"),
            ("calibrate", *common, "-o", str(tmp_path / "out.safetensors")),
        ):
            result = run(MFCLIP, *command, check=False)
            said = " ".join(result.stderr.split())
            assert result.returncode == 1 and "Traceback" not in said, said
            assert reason in said and "damaged" in said, said
    assert not (tmp_path / "out.safetensors").exists()


def test_eval_draws_the_test_embeddings_from_the_metrics_forward_pass(dataset, trained, tmp_path):
    figure, report_path = tmp_path / "tsne.png", tmp_path / "r.json"
    common = [MFCLIP, "eval", "--data", str(dataset), "--device", "cpu", "--bootstrap", "0"]
    common += ["--weights", str(trained / "best.safetensors")]
    refused = run(*common, "--embeddings", str(tmp_path / "tsne.jpg"), check=False)
    assert refused.returncode == 2 and "PNG" in refused.stderr
    run(*common, "--embeddings", str(figure), "--json", str(report_path))
    report = check_json_file(report_path, "eval")
    embedded = report["embeddings"]
    assert embedded["faces"] == report["protocol"]["sizes"]["test"] and embedded["seed"] == 0
    width, height = Image.open(figure).size
    assert width > 2 * height  # two panels: by class, by generator
    again = run(*common, "--embeddings", str(figure), check=False)  # never overwritten unasked
    assert again.returncode == 2 and figure.stat().st_size > 0


def test_embeddings_and_logits_come_from_one_forward_pass(dataset, trained):
    model, _ = load_checkpoint(trained / "best.safetensors", inference=True)
    index = read_dataset(dataset)
    samples = index.samples[:6]
    source = FaceSource(index.root, torch.device("cpu"))
    logits, embeddings, fingerprints, scored, unreadable = predict_outputs(
        model, source, samples, embeddings=True, fingerprints=True
    )
    assert embeddings.shape[0] == len(samples) == logits.shape[0] == fingerprints.shape[0]
    assert scored == samples and unreadable == []
    with torch.no_grad():
        from_embeddings = model.head(torch.from_numpy(embeddings)).numpy()
    np.testing.assert_allclose(from_embeddings, logits, atol=1e-5)
    faces = collate_faces(
        [FaceImages(index.root, [s.path for s in samples], model.crop_size)[i] for i in range(6)]
    ).faces
    np.testing.assert_allclose(fingerprints, face_fingerprints(faces).numpy(), atol=1e-5)
    alone = predict_outputs(model, source, samples)
    assert alone.embeddings is None and alone.fingerprints is None
    np.testing.assert_allclose(alone.logits, logits, atol=1e-5)


def _scan(image, *args):
    return run(MFCLIP, "scan", str(image), "--device", "cpu", "--jsonl", "-", *args, check=False)


def test_scan_takes_the_checkpoints_threshold_for_a_false_positive_rate(
    trained, calibrated, tmp_path
):
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    stored = read_checkpoint_info(calibrated).calibration
    entry = stored["thresholds"]["fpr:0.01"]
    # a val split of a few dozen faces cannot show a 1 % false-positive rate: refused...
    assert entry["supported"] is False and entry["n_real"] == stored["fitted_on"]["n_real"] < 299
    refused = _scan(image, "--weights", str(calibrated), "--fake-threshold", "fpr:0.01")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "fpr:0.01: this threshold is unsupported" in refused.stderr
    assert "--accept-unsupported-fpr" in refused.stderr
    # ... unless accepted, and then the report says so
    accepted = ("--fake-threshold", "fpr:0.01", "--accept-unsupported-fpr")
    result = _scan(image, "--weights", str(calibrated), *accepted, "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    meta, record, *_ = check_scan_lines(result.stdout.splitlines())
    assert meta["thresholds"]["fake"] == entry["threshold"]
    assert meta["thresholds"]["fake_from"] == "fpr:0.01"
    assert meta["operating_point"] == {
        "target": "fpr:0.01",
        **{key: entry[key] for key in OPERATING_POINT_FIELDS},
        "accepted_unsupported": True,
    }
    warning = " ".join(result.stderr.split())  # for the table, in the HTML run block's words
    assert f"warning: fpr:0.01, from {entry['n_real']} validation reals" in warning
    assert "NOT SUPPORTED by them, used because --accept-unsupported-fpr was given" in warning
    assert meta["calibration"]["calibrated"] is True
    assert meta["calibration"]["temperature"] == stored["temperature"]
    assert meta["calibration"]["fitted_on"]["split"] == "val"
    face = record["faces"][0]
    fake_score = 1 - face["probs"]["real"]
    leaned = face.get("leaning", face["label"])  # an inconclusive face keeps what it leaned to
    if "operating_point" in face.get("inconclusive", []):  # called real, fake at 0.5: leans fake
        assert leaned != "real" and 0.5 <= fake_score < meta["thresholds"]["fake"]
    else:
        assert (leaned != "real") == (fake_score >= meta["thresholds"]["fake"])
    # the int8 model's own threshold, and what its val split says of it
    at_int8 = _scan(image, "--weights", str(calibrated), *accepted, "--precision", "int8")
    assert at_int8.returncode == 0, at_int8.stderr
    meta = check_scan_lines(at_int8.stdout.splitlines())[0]
    int8_entry = stored["int8"]["thresholds"]["fpr:0.01"]
    assert meta["thresholds"]["fake"] == int8_entry["threshold"]
    assert meta["operating_point"] == {
        "target": "fpr:0.01",
        **{key: int8_entry[key] for key in OPERATING_POINT_FIELDS},
        "accepted_unsupported": True,
    }

    unknown = _scan(
        image,
        "--weights",
        str(calibrated),
        "--fake-threshold",
        "fpr:0.05",
        "--accept-unsupported-fpr",
    )
    assert unknown.returncode == 2 and "fpr:0.01, fpr:0.001 only" in unknown.stderr
    assert unknown.stdout == ""  # nothing written
    plain = _scan(
        image, "--weights", str(trained / "last.safetensors"), "--fake-threshold", "fpr:0.01"
    )
    assert plain.returncode == 2 and "records no thresholds" in plain.stderr
    number = _scan(image, "--weights", str(trained / "last.safetensors"), "--fake-threshold", "0.3")
    assert number.returncode == 0, number.stderr
    meta = check_scan_lines(number.stdout.splitlines())[0]
    assert meta["thresholds"]["fake"] == 0.3 and "fake_from" not in meta["thresholds"]
    assert "operating_point" not in meta
    assert meta["calibration"] == {"calibrated": False, "temperature": 1.0}


def test_a_supported_threshold_whose_bound_exceeds_its_target_is_said(calibrated, tmp_path):
    """Audit V F5: 3 false positives among 300 reals support fpr:0.01 (299 reals could show
    it), yet bound it only at 2.6 %: the scan says so, where it said nothing."""
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    info = read_checkpoint_info(calibrated)
    entry = info.calibration["thresholds"]["fpr:0.01"]
    bound = float(beta.ppf(0.95, 4, 297))  # Clopper-Pearson, one-sided, 3 of 300
    entry = {**entry, "n_real": 300, "false_positives": 3, "fpr_upper_95": bound}
    entry["supported"] = True
    calibration = {**info.calibration, "thresholds": {"fpr:0.01": entry}}
    edited = save_fitted(info, tmp_path / "edited.safetensors", calibration=calibration)
    result = _scan(
        image, "--weights", str(edited.path), "--fake-threshold", "fpr:0.01", "--precision", "fp32"
    )
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert f"note: fpr:0.01, from 300 validation reals: its FPR is at most {bound:.2%}" in said
    assert "above the 1.00% asked for" in said and "warning: fpr" not in said


def test_training_and_calibrate_store_out_of_distribution_statistics(dataset, trained, calibrated):
    best = read_checkpoint_info(trained / "best.safetensors")
    record = best.ood
    sizes = json.loads((trained / "best.json").read_text())["training"]["protocol"]["sizes"]
    assert record["fitted_on"]["train_samples"] == sizes["train"]
    assert record["fitted_on"]["val_samples"] == sizes["val"]
    assert record["fitted_on"]["step"] == best.metadata["training"]["step"]
    assert record["quantile"] == 0.99 and record["threshold"] > 0
    logged = [line for line in metrics_lines(trained) if line["type"] == "ood"]
    assert len(logged) == 1 and logged[0]["threshold"] == record["threshold"]
    # the same model and splits: calibrate fits the same statistics
    again = read_checkpoint_info(calibrated).ood
    assert again["threshold"] == pytest.approx(record["threshold"], rel=1e-4)
    assert again["fitted_on"]["train_samples"] == sizes["train"]


def test_scan_reports_each_faces_distance_to_training(trained, calibrated, tmp_path):
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    table_csv = tmp_path / "faces.csv"
    result = _scan(image, "--weights", str(calibrated), "--csv", str(table_csv))
    assert result.returncode in (0, 4), result.stderr
    meta, record, *_ = check_scan_lines(result.stdout.splitlines())
    stored = read_checkpoint_info(calibrated).ood
    assert meta["ood"]["available"] is True and meta["ood"]["threshold"] == stored["threshold"]
    face = record["faces"][0]
    assert face["ood"] == (face["ood_distance"] > stored["threshold"])
    row = next(csv.DictReader(table_csv.open()))
    assert row["ood"] == str(face["ood"]).lower()
    assert float(row["ood_distance"]) == pytest.approx(face["ood_distance"])
    # a checkpoint without statistics says so and leaves the fields out
    plain = _scan(image, "--weights", str(trained / "last.safetensors"))
    meta, record, *_ = check_scan_lines(plain.stdout.splitlines())
    assert meta["ood"] == {"available": False}
    assert "ood" not in record["faces"][0] and "ood_distance" not in record["faces"][0]


def _val_split(dataset):
    index = read_dataset(dataset)
    return index, select(index, load_protocol("in-domain"), required=("val",)).val


def test_training_and_calibrate_record_the_int8_models_parity(dataset, trained, calibrated):
    best = read_checkpoint_info(trained / "best.safetensors")
    step = best.metadata["training"]["step"]
    assert best.calibration["int8"]["fitted_on"]["step"] == step
    logged = [line for line in metrics_lines(trained) if line["type"] == "int8"]
    assert (
        len(logged) == 1 and logged[0]["samples"] == best.calibration["int8"]["parity"]["samples"]
    )
    # training's end and calibrate fit the same checkpoint on the same val faces alike: both on
    # the inference model's pass (audit Y F2: training's thresholds were training-model scores,
    # a face 2.4e-8 under one, and int8 "changed" a verdict calibrate did not see change)
    again = read_checkpoint_info(calibrated).calibration
    for name, entry in best.calibration["thresholds"].items():
        assert entry["threshold"] == pytest.approx(
            again["thresholds"][name]["threshold"], abs=1e-12
        )
    assert (
        best.calibration["int8"]["parity"]["verdict_changes"]
        == (again["int8"]["parity"]["verdict_changes"])
    )
    record = read_checkpoint_info(calibrated).calibration
    int8 = record["int8"]
    parity = int8["parity"]
    quantization = int8["quantization"]
    assert quantization["quantized_linear_layers"] == quantization["linear_layers"] > 0
    assert set(int8["thresholds"]) == {"fpr:0.01", "fpr:0.001"} and int8["temperature"] > 0
    # the parity figures, computed again from both models' val logits (same batches)
    index, val = _val_split(dataset)
    model, _ = load_checkpoint(calibrated, inference=True)
    source = FaceSource(index.root, torch.device("cpu"))
    fp32 = predict_outputs(model, source, val, embeddings=True)
    int8_model = model_at(model, "int8")
    quantized = predict_outputs(int8_model, source, val, embeddings=True)
    labels = [sample.label for sample in val]
    # the OOD flags of both models' embeddings under the statistics the checkpoint carries
    ood = ood_of(read_checkpoint_info(calibrated))
    flags = tuple(ood.flags(ood.distances(out.embeddings)) for out in (fp32, quantized))
    expected = measure_parity(fp32.logits, quantized.logits, labels, record, int8, flags)
    assert parity["verdict_changes"]["ood"] == int((flags[0] != flags[1]).sum())
    assert parity["samples"] == len(val) and parity["split"] == "val"
    assert parity["label_changes"] == expected["label_changes"]
    assert parity["max_fake_change"] == pytest.approx(expected["max_fake_change"], abs=1e-6)
    assert parity["fp32"]["auc"] == pytest.approx(expected["fp32"]["auc"])
    assert parity["int8"]["ece_fake"] == pytest.approx(expected["int8"]["ece_fake"], abs=1e-6)
    assert parity["verdict_changes"] == expected["verdict_changes"]
    assert set(parity["verdict_changes"]["operating_points"]) == {"fpr:0.01", "fpr:0.001"}
    bound = parity["verdict_changes"]["share_upper_95"]
    assert parity["int8_allowed"] == (bound <= MAX_LABEL_CHANGE_SHARE)


def _faces(result) -> tuple[dict, list[dict]]:
    meta, *lines = check_scan_lines(result.stdout.splitlines())
    return meta, [face for line in lines if line["type"] == "file" for face in line["faces"]]


def test_scan_names_its_precision_and_int8_stays_within_the_recorded_bound(calibrated, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut()).save(photos / "astronaut.png")
    Image.fromarray(mosaic()).save(photos / "mosaic.png")
    int8 = read_checkpoint_info(calibrated).calibration["int8"]
    scans = {}
    for precision in ("fp32", "int8", "auto"):
        result = _scan(photos, "--weights", str(calibrated), "--precision", precision)
        assert result.returncode in (0, 4), result.stderr
        scans[precision] = _faces(result)
    allowed = int8["parity"]["int8_allowed"]
    for precision, used in (
        ("fp32", "fp32"),
        ("int8", "int8"),
        ("auto", "int8" if allowed else "fp32"),
    ):
        meta = scans[precision][0]
        assert meta["precision"]["requested"] == precision and meta["precision"]["used"] == used
    assert scans["int8"][0]["calibration"]["temperature"] == int8["temperature"]
    fp32_faces, int8_faces = scans["fp32"][1], scans["int8"][1]
    assert len(fp32_faces) == len(int8_faces) == 5
    bound = int8["parity"]["max_fake_change"]
    for ours, reference in zip(int8_faces, fp32_faces):
        assert abs(ours["probs"]["real"] - reference["probs"]["real"]) <= bound
        assert ours["label"] == reference["label"]
    # explanations run in fp32, and int8 cannot be asked for with them
    explained = _scan(photos, "--weights", str(calibrated), "--explain", str(tmp_path / "x"))
    assert _faces(explained)[0]["precision"]["used"] == "fp32"
    refused = _scan(
        photos, "-w", str(calibrated), "--explain", str(tmp_path / "y"), "--precision", "int8"
    )
    assert refused.returncode == 2 and "fp32" in refused.stderr


def test_eval_scores_at_the_precision_asked_with_its_calibration(dataset, calibrated, tmp_path):
    report_path = tmp_path / "r.json"
    common = [MFCLIP, "eval", "--data", str(dataset), "--weights", str(calibrated)]
    run(
        *common,
        "--device",
        "cpu",
        "--precision",
        "int8",
        "--bootstrap",
        "0",
        "--json",
        str(report_path),
    )
    report = check_json_file(report_path, "eval")
    int8 = read_checkpoint_info(calibrated).calibration["int8"]
    assert report["precision"]["used"] == "int8"
    assert report["calibration"]["temperature"] == int8["temperature"]
    assert report["calibration"]["thresholds"] == {
        name: entry["threshold"] for name, entry in int8["thresholds"].items()
    }


def test_auto_keeps_fp32_for_a_checkpoint_whose_int8_labels_change(dataset, trained, tmp_path):
    """A checkpoint built to fail parity: one hidden unit of the head gets a huge input weight
    and no output weight. fp32 ignores it, but int8's one scale per tensor, set by that weight,
    rounds the layer's other weights to zero."""
    model, _ = load_checkpoint(trained / "best.safetensors")
    with torch.no_grad():
        model.head[0].weight[0, 0] = 1e4
        model.head[3].weight[:, 0] = 0.0
    fragile = tmp_path / "fragile.safetensors"
    save_checkpoint(model, fragile)
    calibrated = tmp_path / "fragile-calibrated.safetensors"
    result = run(
        MFCLIP,
        "calibrate",
        "-w",
        str(fragile),
        "--data",
        str(dataset),
        "--out",
        str(calibrated),
        "--device",
        "cpu",
    )
    assert "auto keeps fp32" in result.stdout
    parity = read_checkpoint_info(calibrated).calibration["int8"]["parity"]
    assert parity["int8_allowed"] is False
    assert parity["label_change_share"] > MAX_LABEL_CHANGE_SHARE
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    meta, _ = _faces(_scan(image, "--weights", str(calibrated)))
    assert meta["precision"]["used"] == "fp32" and "verdicts" in meta["precision"]["reason"]
    forced = _scan(image, "--weights", str(calibrated), "--precision", "int8")
    assert _faces(forced)[0]["precision"]["used"] == "int8"
    assert "warning" in forced.stderr and "verdicts" in forced.stderr
