"""``mfclip bench`` runs every stage on CPU and reports the figures the docs quote."""

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from cli import mfclip
from report_schemas import add_unknown, broken, check_json_file, drop, schema_errors, set_to

from mfclip_cli.schemas import SCHEMA_VERSION, load_schema

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


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One ``mfclip bench --json`` on CPU with the tiny config: the command's result, the folder
    and the report it wrote, validated."""
    tmp_path = tmp_path_factory.mktemp("bench")
    report = tmp_path / "bench-tiny.json"  # as scripts/gpu-check.sh names it
    result = mfclip(
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
    )
    assert result.returncode == 0, result.stderr
    return result, tmp_path, check_json_file(report, "bench")


def test_bench_measures_every_stage(bench_run):
    result, tmp_path, figures = bench_run
    assert figures["device"] == "cpu" and figures["config"] == "tiny"
    assert all(figures[key] > 0 for key in KEYS)
    for key in KEYS:  # medians of the rounds
        rounds = figures["rounds"][key]
        assert len(rounds) == 2 and min(rounds) <= figures[key] <= max(rounds)
    assert figures["faces_found"] == 3  # one face per generated image, found by the scan path
    assert figures["naive_faces_found"] == 3  # and by the naive pipeline it is compared with
    said = " ".join(result.stdout.split())
    assert "faces found in the 3 images: 3 by the scan, 3 by the naive pipeline" in said
    assert "not one face an image" not in said
    # audit E F13: a run that found no face printed its rates and ratios without a word
    from mfclip_cli.engines.bench import _table

    assert "not one face an image" in _table({**figures, "faces_found": 0}).caption
    # a stage whose rounds moved with the machine's load is said, not quoted (audit T6)
    assert figures["unsteady_stages"] == [
        key for key, values in figures["rounds"].items() if max(values) > 1.5 * min(values)
    ]
    unsteady = _table({**figures, "unsteady_stages": ["naive_images_per_s"]}).caption
    assert "the fastest round of naive_images_per_s was more than 1.5x its slowest" in unsteady
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
    rounds = figures["rounds"]
    scan = statistics.median(  # each round's paired ratio, as the bench pairs its own (T6)
        a / b for a, b in zip(rounds["end_to_end_images_per_s"], rounds["naive_images_per_s"])
    )
    assert figures["end_to_end_vs_naive"] == pytest.approx(scan, rel=1e-12)
    assert f"({scan:.1f}x naive)" in summary and "bench-tiny       ok" in summary
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    assert written["bench"]["tiny"] == figures and written["targets"][0]["measured"] is None
    # the int8 model beside fp32: every Linear layer of the tiny model quantized
    quantized = figures["int8"]
    assert quantized["quantized_linear_layers"] == quantized["linear_layers"] > 0
    assert figures["int8_model_speedup"] == pytest.approx(
        statistics.median(
            a / b for a, b in zip(rounds["model_int8_faces_per_s"], rounds["model_faces_per_s"])
        ),
        rel=1e-12,
    )
    assert "int8 vs fp32" in result.stdout
    # the provenance checks' cost from paired rounds, and their own share of the scan's time:
    # a ratio of medians of unequally loaded rounds printed -18 % (audit O L3)
    paired = [
        without / with_checks - 1
        for without, with_checks in zip(
            rounds["end_to_end_no_provenance_images_per_s"], rounds["end_to_end_images_per_s"]
        )
    ]
    assert figures["provenance_cost"] == pytest.approx(statistics.median(paired), rel=1e-12)
    scans, checks = rounds["end_to_end_images_per_s"], rounds["provenance_images_per_s"]
    shares = [scan / check for scan, check in zip(scans, checks)]
    # the scan runs the checks in its workers at once, the bench one after another (audit T8)
    workers = figures["scan_workers"]
    assert workers >= 1
    assert figures["provenance_share"] == pytest.approx(
        statistics.median(shares) / workers, rel=1e-12
    )
    assert f"their own time is {100 * figures['provenance_share']:.1f} %" in said


def test_the_bench_report_follows_its_schema(bench_run):
    """Every stage is in the schema; an unknown or missing figure fails, and the int8 figures
    belong to a CPU's report only."""
    figures = bench_run[2]
    assert figures["schema_version"] == SCHEMA_VERSION
    stages = load_schema("bench")["$defs"]["stage_rounds"]["properties"]
    assert set(stages) == set(KEYS) == set(figures["rounds"])
    for path, change in (
        (["gpu_memory"], add_unknown),
        (["int8", "bits"], add_unknown),
        (["rounds", "decode_images_per_s"], set_to([1.0])),
        (["schema_version"], drop),
        (["naive_images_per_s"], drop),
        (["rounds", "train_faces_per_s"], drop),
        (["int8"], drop),  # a CPU run times the int8 model
        (["model_explain_faces_per_s"], drop),  # and MFCLIP's heatmaps
        (["detect_images_per_s"], set_to(0)),
        (["rounds", "detect_images_per_s"], set_to([])),
        (["faces_found"], set_to(-1)),
    ):
        assert schema_errors(broken(figures, path, change), "bench") != [], path
    # a GPU run has no int8 figures (the int8 model runs on CPUs), and may not claim any
    gpu = {**figures, "device": "cuda:0", "rounds": dict(figures["rounds"])}
    for key in ("int8", "model_int8_faces_per_s", "end_to_end_int8_images_per_s"):
        gpu.pop(key)
        gpu["rounds"].pop(key, None)
    assert schema_errors(gpu, "bench") != []  # the int8 speedups are still there
    for key in ("int8_model_speedup", "int8_end_to_end_speedup"):
        gpu.pop(key)
    assert schema_errors(gpu, "bench") == []
    assert schema_errors({**gpu, "int8": figures["int8"]}, "bench") != []
    # another detector has no heatmap stages
    other = {**gpu, "detector": "clip-probe", "rounds": dict(gpu["rounds"])}
    assert schema_errors(other, "bench") != []
    for key in ("model_explain_faces_per_s", "end_to_end_explain_images_per_s"):
        other.pop(key)
        other["rounds"].pop(key)
    assert schema_errors(other, "bench") == []
