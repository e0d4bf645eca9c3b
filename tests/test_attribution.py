"""Open-set generator attribution: the stored label-set embeddings against the language encoder,
the probabilities against a direct computation, the open-set rule on a held-out generator, and
the fields through calibrate, eval, scan, JSON Lines and ``mfclip report``."""

import csv

import numpy as np
import pytest
import torch
from attribution_data import HELD_OUT, TRAINED, make_attribution_dataset, write_protocol
from media import astronaut
from PIL import Image
from report_schemas import check_json_file, check_scan_lines
from test_train import MFCLIP, run

from mfclip_cli.data import Sample
from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.model import load_checkpoint, read_checkpoint_info, save_checkpoint
from mfclip_cli.model.checkpoint import save_fitted
from mfclip_cli.model.prompts import LabelSet
from mfclip_cli.scoring.attribution import (
    KEEP_FRACTION,
    UNKNOWN,
    Attributor,
    attribution_metrics,
    attribution_problem,
    attributor_of,
    fit_attribution,
)

FAMILY = {name: "gan" if "-gan-" in name else "diffusion" for name in (*TRAINED, *HELD_OUT)}


def _fake(name: str, index: int) -> Sample:
    return Sample(f"{name}/{index}.png", FAMILY[name], "efs", name)


def _label_set(name: str) -> LabelSet:
    return LabelSet(FAMILY[name], "efs", name)


def _near(rng, centre: torch.Tensor, count: int, spread: float) -> np.ndarray:
    """``count`` embeddings scattered about ``centre`` (scaled: attribution reads directions)."""
    points = centre.numpy()[None, :] + spread * rng.normal(size=(count, centre.shape[0]))
    return points * rng.uniform(0.5, 3.0, size=(count, 1))


@pytest.fixture
def language(tiny_model):
    """The tiny model's text embedding of each generator's label set, trained or not."""
    with torch.no_grad():
        names = (*TRAINED, *HELD_OUT)
        return dict(zip(names, tiny_model.language([_label_set(name) for name in names])))


def _fitted(tiny_model, language, rng):
    """Attribution fitted on val embeddings near each trained generator's own text."""
    val = [_fake(name, i) for name in TRAINED for i in range(40)]
    embeddings = np.concatenate([_near(rng, language[name], 40, 0.02) for name in TRAINED])
    reals = [Sample(f"real/{i}.png", "real") for i in range(5)]
    train = [_label_set(name) for name in TRAINED for _ in range(3)] + [LabelSet("real")]
    attributor = fit_attribution(
        tiny_model, train, [*reals, *val], np.r_[np.ones((5, 64)), embeddings], fitted_on={}
    )
    return attributor, val, embeddings


def test_the_stored_embeddings_are_the_language_encoders(tiny_model, language, tmp_path):
    attributor, *_ = _fitted(tiny_model, language, np.random.default_rng(0))
    assert attributor.generators == sorted(TRAINED)  # by family, then name
    plain = save_checkpoint(tiny_model, tmp_path / "plain.safetensors")
    fitted = save_fitted(
        plain, tmp_path / "fitted.safetensors", fitted={"attribution": attributor.fitted()}
    )
    info = read_checkpoint_info(fitted.path)
    assert info.attribution == attributor.record and attributor_of(plain) is None
    stored = attributor_of(info)
    model, _ = load_checkpoint(fitted.path)  # with its language encoder
    label_sets = [LabelSet(**{k: s[k] for k in ("label", "forgery_type")}, generator=s["generator"])
                  for s in stored.label_sets]  # fmt: skip
    with torch.no_grad():
        expected = model.language(label_sets).numpy()
    np.testing.assert_allclose(stored.text, expected, rtol=0, atol=1e-6)
    assert stored.logit_scale == pytest.approx(float(model.criterion.logit_scale().detach().exp()))
    # the model loads as before: its tensors are not the embeddings
    for name, tensor in tiny_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)


def test_probabilities_sum_to_one_and_follow_the_stored_temperature(tiny_model, language):
    attributor, _, _ = _fitted(tiny_model, language, np.random.default_rng(1))
    faces = torch.rand(6, 3, tiny_model.crop_size, tiny_model.crop_size)
    with torch.no_grad():
        embeddings = tiny_model.eval().embed(faces)
    result = attributor.attribute(embeddings.numpy())
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-12)
    text = torch.from_numpy(attributor.text)
    cosine = torch.nn.functional.normalize(embeddings.double(), dim=-1) @ text.T
    expected = torch.softmax(attributor.logit_scale * cosine, dim=-1).numpy()
    order = [attributor.generators.index(s["generator"]) for s in attributor.label_sets]
    np.testing.assert_allclose(result.probs[:, order], expected, atol=1e-9)
    np.testing.assert_allclose(result.best_similarity, cosine.max(dim=1).values, atol=1e-9)
    hotter = Attributor(attributor.text, {**attributor.record, "logit_scale": 1.0})
    flatter = hotter.attribute(embeddings.numpy()).probs
    assert flatter.max() < result.probs.max()
    np.testing.assert_allclose(flatter[:, order], torch.softmax(cosine, dim=-1).numpy(), atol=1e-9)


def test_a_held_out_generator_is_unknown_more_often_than_any_known_name(tiny_model, language):
    """Faces of each trained generator lie near its text embedding, as training draws them;
    those of a generator held out of training near a direction that no trained prompt was
    aligned with (a trace of a new kind)."""
    rng = np.random.default_rng(2)
    attributor, val, val_embeddings = _fitted(tiny_model, language, rng)
    for name in HELD_OUT:
        language[name] = torch.nn.functional.normalize(torch.randn(64), dim=0)
    record = attributor.record
    best = attributor.similarities(val_embeddings).max(axis=1)
    assert record["threshold"] == pytest.approx(np.quantile(best, 1 - KEEP_FRACTION))
    assert record["val"]["attributed"] >= KEEP_FRACTION and record["val"]["fakes"] == len(val)
    test = [_fake(name, i) for name in (*TRAINED, *HELD_OUT) for i in range(30)]
    test_embeddings = np.concatenate(
        [_near(rng, language[name], 30, 0.02) for name in (*TRAINED, *HELD_OUT)]
    )
    result = attributor.attribute(test_embeddings)
    named = result.named()
    for held_out in HELD_OUT:
        said = [name for name, sample in zip(named, test) if sample.generator == held_out]
        counts = {name: said.count(name) for name in set(said)}
        assert counts.get(UNKNOWN, 0) > max(
            [count for name, count in counts.items() if name != UNKNOWN], default=0
        ), counts
    metrics = attribution_metrics(
        attributor, test, result, val, attributor.attribute(val_embeddings)
    )
    assert metrics["seen"]["top1"] > 0.75 and metrics["seen"]["n"] == 30 * len(TRAINED)
    assert metrics["unseen"]["named_as_known"] < 0.5 and metrics["unseen"]["auroc_unknown"] > 0.8
    confusion = metrics["confusion"]
    assert np.sum(confusion["counts"]) == len(test) and confusion["columns"][-1] == UNKNOWN
    # an out-of-distribution face is unknown whatever its similarity
    flagged = attributor.attribute(test_embeddings[:2], [True, False])
    assert flagged.record(0)["generator"] == UNKNOWN
    assert flagged.record(0)["reason"] == "out of distribution"
    assert flagged.record(1)["generator"] == TRAINED[0] and "reason" not in flagged.record(1)
    assert flagged.record(0)["probability"] is None and len(flagged.record(0)["top"]) == 3


def test_splits_that_cannot_give_attribution_say_why():
    reals = [LabelSet("real")]
    assert "names its generator" in attribution_problem([*reals, LabelSet("gan", "efs")], [])
    val = [Sample("a.png", "gan", "efs", "other")]
    assert "no fake of a trained generator" in attribution_problem(
        [LabelSet("gan", "efs", "mine")], val
    )


# -- end to end: calibrate adds attribution, eval measures it, scan reports it ---------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("attribution")
    return make_attribution_dataset(root / "data", per_generator=12), write_protocol(
        root / "holdout.toml"
    )


@pytest.fixture(scope="module")
def calibrated(data, weights, tmp_path_factory):
    """The random tiny checkpoint calibrated on the protocol: its label-set embeddings added."""
    dataset, protocol = data
    out = tmp_path_factory.mktemp("calibrated") / "attributing.safetensors"
    result = run(
        MFCLIP, "calibrate", "--weights", str(weights), "--data", str(dataset),
        "--protocol", str(protocol), "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert "attribution among 4 trained generator(s)" in result.stdout
    return out


def test_calibrate_stores_the_trained_generators(calibrated, weights):
    info = read_checkpoint_info(calibrated)
    assert info.attribution["generators"] == sorted(TRAINED)
    assert info.attribution["fitted_on"]["protocol"] == "attribution-holdout"
    model, _ = load_checkpoint(weights)
    label_sets = [_label_set(name) for name in info.attribution["generators"]]
    with torch.no_grad():
        expected = model.language(label_sets).numpy()
    np.testing.assert_allclose(attributor_of(info).text, expected, atol=1e-6)


def test_eval_attribution_equals_a_recomputation_from_its_predictions(data, calibrated, tmp_path):
    dataset, protocol = data
    report_path, predictions, plots = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "plots"
    result = run(
        MFCLIP, "eval", "--data", str(dataset), "--protocol", str(protocol),
        "--weights", str(calibrated), "--device", "cpu", "--json", str(report_path),
        "--predictions", str(predictions), "--plots", str(plots), "--bootstrap", "0",
    )  # fmt: skip
    attribution = check_json_file(report_path, "eval")["attribution"]
    rows = list(csv.DictReader(predictions.open()))
    seen = [row for row in rows if row["generator"] in TRAINED]
    unseen = [row for row in rows if row["generator"] in HELD_OUT]
    top = [row["generator_top3"].split(";") for row in seen]
    assert attribution["seen"]["n"] == len(seen) > 0
    assert attribution["seen"]["top1"] == pytest.approx(
        np.mean([t[0] == row["generator"] for t, row in zip(top, seen)])
    )
    assert attribution["seen"]["top3"] == pytest.approx(
        np.mean([row["generator"] in t for t, row in zip(top, seen)])
    )
    assert attribution["unseen"]["n"] == len(unseen) > 0
    assert attribution["unseen"]["named_as_known"] == pytest.approx(
        np.mean([row["generator_unknown"] == "false" for row in unseen])
    )
    assert sorted(attribution["unseen"]["generators"]) == sorted(HELD_OUT)
    assert (plots / "attribution-confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "attribution of test fakes" in result.stdout


def _scan(*args):
    return run(MFCLIP, "scan", "--device", "cpu", *args, check=False)


def test_scan_records_round_trip_and_an_old_checkpoint_scans_as_before(
    calibrated, weights, tmp_path
):
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    # the old checkpoint with calibrate's embeddings and nothing else added, at a threshold every
    # face passes, so that this random model names a generator
    attributor = attributor_of(read_checkpoint_info(calibrated))
    attributor.record["threshold"] = -1.0
    naming = save_fitted(
        read_checkpoint_info(weights),
        tmp_path / "naming.safetensors",
        fitted={"attribution": attributor.fitted()},
    )
    reports = {}
    for name, checkpoint, fake_threshold in (
        ("new", naming.path, "0"),  # every face labelled non-real: each is attributed
        ("old", weights, "0"),
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
    # the old checkpoint: the same verdict, no attribution anywhere, the meta says why
    (old_meta, old_record, *_), old_row, _ = reports["old"]
    assert old_meta["attribution"]["available"] is False
    assert "no label-set embeddings" in old_meta["attribution"]["reason"]
    old_face = old_record["faces"][0]
    assert "attribution" not in old_face
    assert old_face == {key: value for key, value in face.items() if key != "attribution"}
    assert old_row["attributed_generator"] == "" and old_row["attribution_probability"] == ""
    (_, real_record, *_), real_row, _ = reports["real"]
    assert real_record["faces"][0]["label"] == "real"
    assert "attribution" not in real_record["faces"][0] and real_row["attributed_generator"] == ""


def test_the_scanner_attributes_each_face_from_its_forward_pass(tiny_model, language):
    attributor, *_ = _fitted(tiny_model, language, np.random.default_rng(3))
    faces = torch.rand(4, 3, tiny_model.crop_size, tiny_model.crop_size)
    scanner = Scanner(
        tiny_model, ScanSettings(device="cpu"), torch.device("cpu"), attribution=attributor
    )
    found = scanner.model_stage.classify(faces)
    assert all(face.attribution is not None for face in found)
    with torch.no_grad():
        embeddings = tiny_model.embed(faces).numpy()
    expected = attributor.attribute(embeddings)
    assert [face.attribution for face in found] == [expected.record(i) for i in range(4)]
