"""``mfclip scan`` under ``torchrun``: the inputs are split across processes, the report is one
and in order."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from media import astronaut, face_free, mosaic
from PIL import Image
from report_schemas import check_json_file, check_scan_lines

from mfclip_cli.model import build_model, save_checkpoint

BIN = Path(sys.executable).parent


def test_two_process_scan_gives_the_single_process_records(tmp_path, tiny_config):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for name, pixels in (
        ("a.png", astronaut()),
        ("b.png", mosaic()),
        ("c.png", face_free()),
        ("d.jpg", astronaut()[:, ::-1]),
        ("e.png", mosaic()[::-1]),
    ):
        Image.fromarray(pixels.copy()).save(evidence / name)
    (evidence / "f.jpg").write_bytes(b"")  # an error record must keep its place too
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model(tiny_config), weights)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MFCLIP_WEIGHTS", None)
    common = [str(evidence), "--weights", str(weights), "--device", "cpu", "--quiet"]

    single = subprocess.run(
        [str(BIN / "mfclip"), "scan", *common, "--jsonl", str(tmp_path / "one.jsonl")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )

    def two_processes(*options: str) -> subprocess.CompletedProcess:
        launch = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m"]
        return subprocess.run(
            [*launch, "mfclip_cli", "scan", *common, *options],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )

    double = two_processes("--jsonl", str(tmp_path / "two.jsonl"))
    assert single.returncode == 3, single.stderr  # the empty file
    # torchrun reports any non-zero exit of a rank as its own failure (exit 1), so the exit code
    # contract holds for single-process scans only; the report is what must agree.
    assert double.returncode == 1 and "exitcode  : 3" in double.stderr, double.stderr[-3000:]
    one = check_scan_lines((tmp_path / "one.jsonl").read_text().splitlines())
    two = check_scan_lines((tmp_path / "two.jsonl").read_text().splitlines())
    assert two[0]["processes"] == 2 and two[0]["inputs"] == one[0]["inputs"] == 6
    assert (
        one[-1]["type"] == two[-1]["type"] == "end"
        and two[-1]["complete"]
        and two[-1]["files_written"] == 6
    )
    assert [r["path"] for r in two[1:-1]] == sorted(str(p) for p in evidence.iterdir())
    for a, b in zip(one[1:-1], two[1:-1]):
        assert a.keys() == b.keys() and a["status"] == b["status"] and a["sha256"] == b["sha256"]
        assert len(a["faces"]) == len(b["faces"])
        for fa, fb in zip(a["faces"], b["faces"]):
            assert fa["box"] == fb["box"] and fa["label"] == fb["label"]
            assert all(abs(fa["probs"][k] - fb["probs"][k]) < 1e-5 for k in fa["probs"])
    assert not list(tmp_path.glob(".mfclip-scan-parts-*"))  # the part files are cleaned up
    # resumed: the JSON is written whole, each input skipped by its earlier record in its place
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join((tmp_path / "one.jsonl").read_text().splitlines(True)[:4]))
    resumed = two_processes("--jsonl", str(partial), "--resume", "--json", str(tmp_path / "r.json"))
    assert "exitcode  : 3" in resumed.stderr, resumed.stderr[-3000:]
    document = check_json_file(tmp_path / "r.json", "scan")
    assert [f["path"] for f in document["files"]] == [r["path"] for r in one[1:-1]]
    earlier = [{k: v for k, v in record.items() if k != "type"} for record in one[1:4]]
    assert document["files"][:3] == earlier
