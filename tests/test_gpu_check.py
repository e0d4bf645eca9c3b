"""scripts/gpu-check.sh stays ready where no GPU is: its dry run prints the plan, checks the
carried wheels (here: wheels made by the test, as small as the check allows) and the payload the
device tool carries, and prints the summary with nothing measured."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (scripts/ is no package)

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git"
)
STEPS = ["install", "tests-core", "bench-vit-b-16", "tests-cli", "bench-tiny"]


def _wheel(folder: Path, name: str, version: str, named: str | None = None) -> None:
    """A wheel as far as the check reads one: a zip whose METADATA names ``named``."""
    stem = f"{gpu_check.normalise(name)}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as archive:
        archive.writestr(
            f"{stem}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {named or name}\nVersion: {version}\n",
        )


def _dry_run(wheels: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run"]
        + ["--wheels", str(wheels), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )


def test_dry_run_passes_with_the_listed_wheels_and_prints_the_plan(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, version in gpu_check.carried().items():
        _wheel(wheels, name, version)
    result = _dry_run(wheels, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(f"  {step} " in result.stdout for step in STEPS)
    assert (
        "pytest -m cuda" in result.stdout
        and "bench --device cuda --config vit-b-16" in result.stdout
    )
    payload = float(re.search(r"carried payload: ([\d.]+) MiB, within", result.stdout)[1])
    assert 0 < payload < gpu_check.PAYLOAD_LIMIT_MIB
    installed = result.stdout.split("keeping what the image has: ")[1].split()
    # the image's CUDA builds of torch are kept; what the carried wheels need is installed
    assert not any(re.match(r"torch(vision)?\b", requirement) for requirement in installed)
    carried = gpu_check.carried()
    assert {"facenet-pytorch==2.5.3", "open_clip_torch>=3.3", "typer>=0.29.2,<0.30"} <= set(
        installed
    )  # pyproject's own lines
    assert {f"ftfy>={carried['ftfy']}", f"pydantic>={carried['pydantic']}"} <= set(installed)
    assert not any(requirement.startswith("setuptools") for requirement in installed)
    assert "model stage >= 8,000 faces/s" in result.stdout and "dry run passed" in result.stdout
    summary = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert [step["name"] for step in summary["steps"]] == STEPS
    assert {step["status"] for step in summary["steps"]} == {"planned"}
    assert [target["measured"] for target in summary["targets"]] == [None] * 3


def test_dry_run_names_each_missing_stale_or_broken_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (missing, _), (stale, version), (misnamed, misnamed_version), *rest = (
        gpu_check.carried().items()
    )
    _wheel(wheels, stale, version + ".1")
    _wheel(wheels, misnamed, misnamed_version, named="something-else")
    for name, good in rest:
        _wheel(wheels, name, good)
    (wheels / f"{rest[0][0]}-0.0.1-py3-none-any.whl").write_bytes(b"not a zip")
    result = _dry_run(wheels, tmp_path / "out")
    assert result.returncode == 1 and "dry run FAILED" in result.stdout
    problems = [line for line in result.stdout.splitlines() if "carried wheels:" in line]
    assert any(f"no wheel of {missing}==" in line for line in problems)
    assert any(f"{stale}-{version}.1" in line for line in problems)
    assert any(misnamed in line and "something-else" in line for line in problems)
    assert any(f"two wheels of {rest[0][0]}" in line for line in problems)
    assert len(problems) == 5
