"""``mfclip bench`` runs every stage on CPU and reports the figures the docs quote."""

import json
import os
import subprocess
import sys
from pathlib import Path

MFCLIP = str(Path(sys.executable).with_name("mfclip"))
KEYS = (
    "model_faces_per_s",
    "model_explain_faces_per_s",
    "detect_images_per_s",
    "end_to_end_images_per_s",
    "end_to_end_explain_images_per_s",
    "end_to_end_stability_images_per_s",
    "train_faces_per_s",
    "naive_images_per_s",
)


def test_bench_measures_every_stage(tmp_path):
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [
            MFCLIP,
            "bench",
            "--device",
            "cpu",
            "--config",
            "tiny",
            "--images",
            "3",
            "--size",
            "320",
            "--batch-size",
            "4",
            "--repeats",
            "2",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(report.read_text())
    assert figures["device"] == "cpu" and figures["config"] == "tiny"
    assert all(figures[key] > 0 for key in KEYS)
    for key in (
        "detect_images_per_s",
        "end_to_end_images_per_s",
        "end_to_end_explain_images_per_s",
        "end_to_end_stability_images_per_s",
        "naive_images_per_s",
    ):  # medians of the rounds
        rounds = figures["rounds"][key]
        assert len(rounds) == 2 and min(rounds) <= figures[key] <= max(rounds)
    assert figures["faces_found"] == 3  # one face per generated image, found by the scan path
    assert "random" in figures["weights"] and "naive" in result.stdout
