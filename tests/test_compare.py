"""``mfclip eval`` with several ``--weights``: the checkpoints side by side on the same test
samples, each with the report a single-weights eval gives it, and DeLong's test of every pair's
AUC difference; run as subprocesses."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from report_schemas import check_json_file
from test_perturb import calibrated_copy
from test_train import MFCLIP, make_dataset, run

from mfclip_cli.data import load_protocol, read_dataset, select
from mfclip_cli.engines.inference import FaceSource, predict_outputs
from mfclip_cli.engines.weights.store import refuse_incomparable
from mfclip_cli.errors import UsageError
from mfclip_cli.model import (
    CLASS_NAMES,
    build_model,
    load_checkpoint,
    load_model_config,
    read_checkpoint_info,
    save_checkpoint,
)
from mfclip_cli.scoring.calibration import softmax, temperature_of
from mfclip_cli.scoring.significance import delong_test


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces") / "faces", per_class=12)


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "small.toml"
    path.write_text('description = "small splits"\nval_fraction = 0.3\ntest_fraction = 0.4\n')
    return path


@pytest.fixture(scope="module")
def calibrated(weights, dataset, protocol_file, tmp_path_factory):
    """The random tiny checkpoint (seed 0) with a temperature and thresholds fitted on val."""
    out = tmp_path_factory.mktemp("calibrated") / "calibrated.safetensors"
    return calibrated_copy(weights, dataset, protocol_file, out)


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another random tiny checkpoint (seed 1), uncalibrated."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    save_checkpoint(build_model(load_model_config("tiny")), path)
    return path


def _eval(dataset, protocol) -> list[str]:
    """eval of the fp32 models, whose scores the tests recompute."""
    command = [MFCLIP, "eval", "--data", str(dataset), "--protocol", str(protocol)]
    return command + ["--device", "cpu", "--precision", "fp32"]


def test_each_checkpoint_gets_its_single_eval_report_and_each_pair_delong(
    dataset, protocol_file, calibrated, other, tmp_path
):
    common = _eval(dataset, protocol_file) + ["--bootstrap", "50", "--perturb", "jpeg:50"]
    path = tmp_path / "compare.json"
    result = run(*common, "-w", str(calibrated), "--weights", str(other), "--json", str(path))
    report = check_json_file(path, "eval")
    assert report["type"] == "eval-comparison"
    comparison = report["comparison"]
    assert len(comparison["weights"]) == len(comparison["reports"]) == 2
    for position, checkpoint in enumerate((calibrated, other)):
        single_path = tmp_path / f"single-{position}.json"
        run(*common, "--weights", str(checkpoint), "--json", str(single_path))
        single = check_json_file(single_path, "eval")
        # the per-checkpoint report is the single eval's, figure for figure
        assert {**comparison["reports"][position], "started_utc": None} == {
            **single,
            "started_utc": None,
        }
        entry, info = comparison["weights"][position], read_checkpoint_info(checkpoint)
        assert (entry["path"], entry["sha256"]) == (str(checkpoint), info.sha256)
        metrics = entry["metrics"]
        for key in ("n", "auc", "ap", "eer", "acc"):
            assert metrics[key] == single["overall"][key]
        points = single["operating_points"]["points"]
        assert metrics["tpr_at_fpr"] == {key: point["test"]["tpr"] for key, point in points.items()}
        # beside each TPR, the test FPR its threshold gave (audit Y F5: a TPR "at FPR 1 %" was
        # shown without the 37.5 % test FPR it was reached at)
        assert metrics["test_fpr_at_fpr"] == {
            key: point["test"]["fpr"] for key, point in points.items()
        }
        for value in metrics["test_fpr_at_fpr"].values():
            assert f"(test FPR {value:.3f})" in result.stdout
        assert entry["calibration"] == {
            key: value for key, value in single["calibration"].items() if key != "test"
        }
        assert f"#{position} {checkpoint.stem}" in result.stdout
        assert info.sha256[:8] in result.stdout  # the table lists both
        rows = comparison["reports"][position]["robustness"]["rows"]
        assert [row["name"] for row in rows] == ["clean", "jpeg:50"]
    assert comparison["weights"][0]["calibration"]["calibrated"]
    assert not comparison["weights"][1]["calibration"]["calibrated"]
    assert "DeLong" in result.stdout and "AUC under perturbation" in result.stdout

    # DeLong recomputed here from the same samples' calibrated fake scores
    index = read_dataset(dataset)
    test = select(index, load_protocol(protocol_file), required=("test",)).test
    fake = [int(sample.label != "real") for sample in test]
    assert comparison["test"] == {"n": len(fake), "n_real": fake.count(0), "n_fake": sum(fake)}
    scores = []
    for checkpoint in (calibrated, other):
        model, info = load_checkpoint(checkpoint, inference=True)
        logits = predict_outputs(model, FaceSource(index.root, torch.device("cpu")), test).logits
        probs = softmax(logits, temperature_of(info.calibration))
        scores.append(1 - probs[:, CLASS_NAMES.index("real")])
    expected = delong_test(fake, *scores)
    (pair,) = comparison["pairs"]
    assert (pair["a"], pair["b"], pair["problem"]) == (0, 1, None)
    assert pair["difference"] != 0  # two different detectors, not a trivial pair
    for key in ("auc_a", "auc_b", "difference", "standard_error", "z", "p_value"):
        assert pair[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9)
    # one AUC per checkpoint, to the bit: the tables showed 0.517 and 0.518 for 0.5175
    assert pair["auc_a"] == comparison["weights"][0]["metrics"]["auc"]
    assert pair["auc_b"] == comparison["weights"][1]["metrics"]["auc"]


def test_one_network_under_two_calibrations_is_said_to_be_one(
    weights, dataset, protocol_file, calibrated, other, tmp_path
):
    """A checkpoint and its calibrated copy hold one network: the temperature alone reorders
    faces by fake score and can make DeLong's test call them different (audit N H2: p 0.001 for
    the demo and its copy). The pair says so; the reports give the AUC before and after."""
    path = tmp_path / "same.json"
    result = run(
        *_eval(dataset, protocol_file),
        "-w",
        str(weights),
        "-w",
        str(calibrated),
        "-w",
        str(other),
        "--bootstrap",
        "0",
        "--json",
        str(path),
    )
    comparison = check_json_file(path, "eval")["comparison"]
    digests = [entry["network_sha256"] for entry in comparison["weights"]]
    assert digests[0] == digests[1] != digests[2]
    assert comparison["weights"][0]["sha256"] != comparison["weights"][1]["sha256"]
    assert [(p["a"], p["b"], p["same_network"]) for p in comparison["pairs"]] == [
        (0, 1, True),
        (0, 2, False),
        (1, 2, False),
    ]
    assert "#0 and #1 hold the same network" in " ".join(result.stdout.split())
    assert "#0 and #2 hold" not in result.stdout
    plain, scaled = comparison["reports"][0], comparison["reports"][1]
    # the calibrated copy's AUC at T = 1 is the plain checkpoint's own, and after its T its own
    assert scaled["calibration"]["test"]["before"]["auc"] == plain["overall"]["auc"]
    assert scaled["calibration"]["test"]["after"]["auc"] == scaled["overall"]["auc"]
    assert plain["calibration"]["test"]["before"]["auc"] == plain["overall"]["auc"]
    assert plain["calibration"]["test"]["after"] is None


def test_the_tables_say_the_threshold_acc_is_taken_at_where_it_is_not_one_half(
    weights, dataset, protocol_file, other
):
    """ACC, real ACC and fake ACC at --threshold 0.7 were shown under the same headers as at
    0.5, nothing in the tables saying 0.7 (audit N L2)."""
    common = [*_eval(dataset, protocol_file), "--bootstrap", "0", "-w", str(weights)]
    single = run(*common, "--threshold", "0.7")
    several = run(*common, "-w", str(other), "--threshold", "0.7")
    for result in (single, several):
        assert "ACC at fake score >= 0.7" in " ".join(result.stdout.split())
    assert "ACC at fake score" not in run(*common).stdout


def test_a_test_split_delong_cannot_use_still_prints_the_table(
    dataset, calibrated, other, tmp_path
):
    fakes_only = tmp_path / "fakes.toml"
    fakes_only.write_text(
        'description = "no real test faces"\nval_fraction = 0.3\ntest_fraction = 0.4\n'
        '[test]\ninclude = { label = ["gan", "diffusion"] }\n'
    )
    path = tmp_path / "compare.json"
    both = ("-w", str(calibrated), "-w", str(other), "--json", str(path))
    refused = run(*_eval(dataset, fakes_only), *both, check=False)
    assert refused.returncode == 2 and "the test split has no real faces" in refused.stderr
    assert not path.exists()
    result = run(*_eval(dataset, fakes_only), *both, "--allow-one-class")
    (pair,) = check_json_file(path, "eval")["comparison"]["pairs"]
    assert "at least two fake and two real" in pair["problem"]
    assert pair["auc_a"] is pair["p_value"] is pair["z"] is None
    assert "#1 other" in result.stdout and "0 real" in result.stdout


def test_the_same_checkpoint_twice_is_refused_and_nothing_written(dataset, calibrated, tmp_path):
    copy = tmp_path / "copy.safetensors"  # another path, the same SHA-256
    shutil.copy(calibrated, copy)
    report_path = tmp_path / "never.json"
    for second in (calibrated, copy):
        refused = run(
            *_eval(dataset, "in-domain"),
            "-w",
            str(calibrated),
            "-w",
            str(second),
            "--json",
            str(report_path),
            check=False,
        )
        assert refused.returncode == 2, refused.stderr
        assert "the same checkpoint" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [copy]


@pytest.mark.parametrize(
    "option, target",
    [("--predictions", "pred.csv"), ("--plots", "plots"), ("--embeddings", "tsne.png")],
)
def test_one_checkpoint_outputs_are_refused_with_several_weights(
    dataset, calibrated, other, tmp_path, option, target
):
    earlier = tmp_path / "earlier.json"  # an output that exists is not what to say first
    earlier.write_text("{}")
    refused = run(
        *_eval(dataset, "in-domain"),
        "-w",
        str(calibrated),
        "-w",
        str(other),
        option,
        str(tmp_path / target),
        "--json",
        str(earlier),
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"{option} writes one checkpoint's file" in refused.stderr
    assert list(tmp_path.iterdir()) == [earlier] and earlier.read_text() == "{}"


def test_checkpoints_with_different_classes_are_refused():
    def scoring(digest: str, classes: tuple[str, ...]) -> SimpleNamespace:
        return SimpleNamespace(
            info=SimpleNamespace(sha256=digest), model=SimpleNamespace(classes=classes)
        )

    three = scoring("a" * 64, CLASS_NAMES)
    refuse_incomparable(["A", "B"], [three, scoring("b" * 64, CLASS_NAMES)])
    with pytest.raises(UsageError, match="classes differ"):
        refuse_incomparable(["A", "B"], [three, scoring("b" * 64, ("real", "fake"))])


def test_a_zero_standard_error_gives_no_p_value_rather_than_zero():
    """Two checkpoints that each order every fake-real pair of 2 + 2 faces alike: DeLong's z is
    infinite and its p 0, which those four faces cannot show."""
    from mfclip_cli.engines.evaluate.compare import _pairs

    fake = np.array([0, 0, 1, 1])
    scores = [np.array([0.1, 0.2, 0.8, 0.9]), np.full(4, 0.5)]
    (pair,) = _pairs(fake, scores, [1.0, 0.5], "face")
    assert pair["z"] is None and pair["p_value"] is None
    assert pair["difference"] == 0.5 and "standard error of 0" in pair["problem"]


def test_delong_pairs_videos_not_their_frames():
    """Audit E F3: on video frames DeLong took every frame for an independent face and said
    p < 0.05 for half of the pairs of equal AUC (8 frames a video). Where frames carry video
    keys it pairs videos, each the mean of its frames' probabilities, as the video figures do."""
    from mfclip_cli.data import Sample
    from mfclip_cli.engines.evaluate.compare import _paired_units, _pairs
    from mfclip_cli.engines.evaluate.tables import pairs_table
    from mfclip_cli.engines.inference import score_samples

    rng = np.random.default_rng(0)
    frames = 4
    labels = ["real"] * 6 + ["gan"] * 3 + ["diffusion"] * 3
    test = [
        Sample(f"v{v}/{f}.png", label, video=f"v{v}")
        for v, label in enumerate(labels)
        for f in range(frames)
    ]
    probs = [rng.dirichlet(np.ones(3), size=len(test)) for _ in range(2)]
    reports = [{"overall": score_samples(test, one)} for one in probs]
    unit, fake, scores, aucs = _paired_units(test, probs, reports)
    assert unit == "video" and fake.tolist() == [0] * 6 + [1] * 6
    for one, score, auc, report in zip(probs, scores, aucs, reports):
        means = one.reshape(len(labels), frames, 3).mean(axis=1)  # the reference: by hand
        assert score == pytest.approx(1 - means[:, CLASS_NAMES.index("real")])
        assert auc == report["overall"]["video"]["auc"]
    (pair,) = _pairs(fake, scores, aucs, unit)
    expected = delong_test(fake, *scores)
    assert pair["standard_error"] == pytest.approx(expected["standard_error"])
    assert pair["p_value"] == pytest.approx(expected["p_value"])
    report = {
        "comparison": {
            "weights": [{"name": "a"}, {"name": "b"}],
            "pairs": [pair],
            "pairs_on": {"unit": unit, "n": len(fake), "n_real": 6, "n_fake": 6},
        }
    }
    assert "over 12 videos" in pairs_table(report).title
    # still images: every face is its own unit
    stills = [Sample(s.path, s.label) for s in test]
    unit, fake, _, aucs = _paired_units(stills, probs, reports)
    assert unit == "face" and len(fake) == len(test)
    assert aucs == [report["overall"]["auc"] for report in reports]
