"""Each face's ``uncertainty``: the normalised entropy of its calibrated real-vs-fake call (or,
by a checkpoint calibrated before 2.10.0, of all three probabilities), and a fake face's
``family_uncertainty``, in every report."""

import csv
import math

import numpy as np
import pytest
from media import astronaut
from PIL import Image
from report_schemas import check_scan_lines
from test_scan_cli import run

from mfclip_cli.engines.scan.records import FaceRecord, FileRecord
from mfclip_cli.scoring.inconclusive import (
    BINARY,
    THREE_CLASS,
    family_uncertainties,
    uncertainties,
)


def normalised_entropy(probs: list[float], measure: str = BINARY) -> float:
    return float(uncertainties(np.array([probs]), measure)[0])


def entropy(*shares: float) -> float:
    """The hand computation: -sum p log p over log(len), 0 log 0 = 0."""
    return -sum(p * math.log(p) for p in shares if p > 0) / math.log(len(shares))


@pytest.mark.parametrize(
    "probs, binary, three_class",
    [
        ([1.0, 0.0, 0.0], 0.0, 0.0),
        ([1 / 3, 1 / 3, 1 / 3], entropy(1 / 3, 2 / 3), 1.0),
        ([0.5, 0.5, 0.0], 1.0, math.log(2) / math.log(3)),
        ([0.7, 0.2, 0.1], entropy(0.7, 0.3), entropy(0.7, 0.2, 0.1)),
        # sure to be fake, its family a coin flip: sure under binary, unsure under 3-class
        ([0.02, 0.49, 0.49], entropy(0.02, 0.98), entropy(0.02, 0.49, 0.49)),
    ],
)
def test_normalised_entropy_against_a_hand_computation(probs, binary, three_class):
    assert normalised_entropy(probs) == pytest.approx(binary, abs=1e-12)
    assert normalised_entropy(probs, THREE_CLASS) == pytest.approx(three_class, abs=1e-12)
    with pytest.raises(ValueError, match="no uncertainty measure"):
        normalised_entropy(probs, "ternary")


@pytest.mark.parametrize(
    "probs, expected",
    [
        ([0.02, 0.49, 0.49], 1.0),
        ([0.1, 0.9, 0.0], 0.0),
        ([0.4, 0.45, 0.15], entropy(0.75, 0.25)),  # renormalised within the fake mass
        ([1.0, 0.0, 0.0], 1.0),  # no fake mass: nothing says which family
    ],
)
def test_family_uncertainty_against_a_hand_computation(probs, expected):
    assert family_uncertainties(np.array([probs]))[0] == pytest.approx(expected, abs=1e-12)


def test_a_face_record_carries_its_uncertainty_through_a_round_trip():
    face = FaceRecord.create(
        0, [1, 2, 3, 4], [[0, 0]] * 5, 0.9, {"real": 0.7, "diffusion": 0.2, "gan": 0.1}, "real"
    )
    assert face.uncertainty == pytest.approx(normalised_entropy([0.7, 0.2, 0.1]), abs=1e-6)
    assert face.family_uncertainty is None  # a face labelled real has no family
    fake = FaceRecord.create(
        1, [1, 2, 3, 4], [[0, 0]] * 5, 0.9, {"real": 0.1, "diffusion": 0.6, "gan": 0.3}, "gan"
    )
    fake.family_uncertain = True
    assert fake.family_uncertainty == pytest.approx(entropy(2 / 3, 1 / 3), abs=1e-6)
    back = FileRecord.from_dict(FileRecord(path="b.jpg", faces=[fake]).to_dict()).faces[0]
    assert back == fake and back.to_dict()["family_uncertain"] is True
    document = FileRecord(path="a.jpg", faces=[face]).to_dict()
    assert FileRecord.from_dict(document).faces[0] == face
    # a report written before the field existed reads back without one, and writes none
    del document["faces"][0]["uncertainty"]
    old = FileRecord.from_dict(document).faces[0]
    assert old.uncertainty is None and "uncertainty" not in old.to_dict()


def test_scan_reports_the_uncertainty_of_the_probabilities_it_reports(weights, tmp_path):
    Image.fromarray(astronaut()).save(tmp_path / "astronaut.png")
    report, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    result = run(
        str(tmp_path / "astronaut.png"),
        "--weights",
        str(weights),
        "--jsonl",
        str(report),
        "--csv",
        str(table),
    )
    assert result.returncode == 0, result.stderr
    meta, record, *_ = check_scan_lines(report.read_text().splitlines())
    (face,) = record["faces"]
    assert meta["verdicts"]["measure"] == BINARY  # not calibrated: the measure records give
    assert 0 <= face["uncertainty"] <= 1
    assert face["uncertainty"] == pytest.approx(
        normalised_entropy(list(face["probs"].values())), abs=1e-5
    )
    (row,) = csv.DictReader(table.open())
    assert float(row["uncertainty"]) == face["uncertainty"]
