"""``mfclip bench`` runs every stage on CPU and reports the figures the docs quote."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

MFCLIP = str(Path(sys.executable).with_name("mfclip"))
GPU_CHECK = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
sys.path.insert(0, str(GPU_CHECK.parent))
import gpu_check  # noqa: E402  (scripts/ is no package)

KEYS = (
    "model_faces_per_s",
    "model_int8_faces_per_s",
    "end_to_end_int8_images_per_s",
    "model_explain_faces_per_s",
    "detect_images_per_s",
    "end_to_end_images_per_s",
    "end_to_end_explain_images_per_s",
    "end_to_end_no_provenance_images_per_s",
    "provenance_images_per_s",
    "end_to_end_stability_images_per_s",
    "train_faces_per_s",
    "naive_images_per_s",
)


def test_bench_measures_every_stage(tmp_path):
    report = tmp_path / "bench-tiny.json"  # as scripts/gpu-check.sh names it
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
    for key in KEYS:  # medians of the rounds
        rounds = figures["rounds"][key]
        assert len(rounds) == 2 and min(rounds) <= figures[key] <= max(rounds)
    assert figures["faces_found"] == 3  # one face per generated image, found by the scan path
    assert "random" in figures["weights"] and "naive" in result.stdout
    # scripts/gpu-check.sh's summary reads the report: each stage's figure and its ratio to naive
    steps = tmp_path / "steps.jsonl"
    steps.write_text('{"name": "bench-tiny", "status": "ok", "rc": 0, "seconds": 9, "limit": 120}')
    summary = subprocess.run(
        [sys.executable, str(GPU_CHECK), "summary", str(tmp_path), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    model = gpu_check.format_rate(figures["model_faces_per_s"], "faces/s")
    assert re.search(rf"model stage +{re.escape(model)}\n", summary)
    scan = figures["end_to_end_images_per_s"] / figures["naive_images_per_s"]
    assert f"({scan:.1f}x naive)" in summary and "bench-tiny       ok" in summary
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    assert written["bench"]["tiny"] == figures and written["targets"][0]["measured"] is None
    # the int8 model beside fp32: every Linear layer of the tiny model quantized
    quantized = figures["int8"]
    assert quantized["quantized_linear_layers"] == quantized["linear_layers"] > 0
    assert figures["int8_model_speedup"] == (
        figures["model_int8_faces_per_s"] / figures["model_faces_per_s"]
    )
    assert "int8 vs fp32" in result.stdout
