"""Each face's ``uncertainty``: the normalised predictive entropy of its calibrated probabilities,
in every report."""

import csv
import math

import numpy as np
import pytest
from media import astronaut
from PIL import Image
from report_schemas import check_scan_lines
from test_scan_cli import run

from mfclip_cli.engines.scan.records import FaceRecord, FileRecord
from mfclip_cli.scoring.inconclusive import uncertainties


def normalised_entropy(probs: list[float]) -> float:
    return float(uncertainties(np.array([probs]))[0])


@pytest.mark.parametrize(
    "probs, expected",
    [
        ([1.0, 0.0, 0.0], 0.0),
        ([1 / 3, 1 / 3, 1 / 3], 1.0),
        ([0.5, 0.5, 0.0], math.log(2) / math.log(3)),
        (
            [0.7, 0.2, 0.1],
            -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3),
        ),
    ],
)
def test_normalised_entropy_against_a_hand_computation(probs, expected):
    assert normalised_entropy(probs) == pytest.approx(expected, abs=1e-12)


def test_a_face_record_carries_its_uncertainty_through_a_round_trip():
    face = FaceRecord.create(
        0, [1, 2, 3, 4], [[0, 0]] * 5, 0.9, {"real": 0.7, "diffusion": 0.2, "gan": 0.1}, "real"
    )
    assert face.uncertainty == pytest.approx(normalised_entropy([0.7, 0.2, 0.1]), abs=1e-6)
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
    (face,) = check_scan_lines(report.read_text().splitlines())[1]["faces"]
    assert 0 <= face["uncertainty"] <= 1
    assert face["uncertainty"] == pytest.approx(
        normalised_entropy(list(face["probs"].values())), abs=1e-5
    )
    (row,) = csv.DictReader(table.open())
    assert float(row["uncertainty"]) == face["uncertainty"]
