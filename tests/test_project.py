"""The README's set-up and test commands are exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_first_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    assert block, "README has no code block"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_them():
    commands = _readme_first_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_commands = [
        line.strip()
        for line in ci
        if line.strip()
        and not line.startswith("#")
        and not re.match(r"(set|cd|trap) ", line.strip())
    ]
    assert ci_commands == commands


def test_tests_run_offline():
    install, test = _readme_first_commands()
    assert "HF_HUB_OFFLINE=1" in test and "pytest" in test
    assert "[test]" in install


def test_the_wheel_carries_what_the_tool_needs_and_runs_without_the_checkout(tmp_path):
    """Built as pip builds it; unpacked where no checkout is, it finds its demo weights and
    configs."""
    import json
    import os
    import subprocess
    import sys
    import zipfile

    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("mfclip-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "mfclip_cli/weights/registry.json",
        "mfclip_cli/weights/mfclip-demo-tiny.safetensors",
        "mfclip_cli/model/configs/tiny.json",
        "mfclip_cli/model/configs/mc-lcr.json",
        "mfclip_cli/data/protocols/in-domain.toml",
        "mfclip_cli/engines/scan/writers/templates/report.html",
        "mfclip_cli/engines/scan/writers/templates/file.html",
        "mfclip_cli/schemas/scan.schema.json",
        "mfclip_cli/schemas/eval.schema.json",
        "mfclip_cli/schemas/prepare.schema.json",
        "mfclip_cli/schemas/inspect.schema.json",
        "mfclip_cli/schemas/bench.schema.json",
        "mfclip_cli/schemas/ablate.schema.json",
        "mfclip_cli/schemas/train.schema.json",
    ):
        assert needed in names, needed
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1"}
    environment.pop("MFCLIP_WEIGHTS", None)

    def unpacked_mfclip(*args: str) -> subprocess.CompletedProcess:
        """``mfclip ARGS`` from the unpacked wheel, run where no checkout is."""
        return subprocess.run(
            [sys.executable, "-m", "mfclip_cli", *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=elsewhere,
            env=environment,
        )

    scan = unpacked_mfclip("scan", str(ROOT / "examples" / "astronaut.jpg"), "--jsonl", "-")
    assert scan.returncode == 0, scan.stderr
    meta = json.loads(scan.stdout.splitlines()[0])
    assert meta["demo"] is True and "DEMO" in scan.stderr
    assert meta["weights"]["path"].startswith(str(installed))  # the unpacked wheel's own copy
    # the quick start's report validates, outside mfclip, against the schema the wheel prints
    printed = unpacked_mfclip("schema", "scan")
    assert printed.returncode == 0, printed.stderr
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(printed.stdout))
    for line in scan.stdout.splitlines():
        validator.validate(json.loads(line))


def test_the_code_is_ruff_clean():
    """Lint (pyflakes, pycodestyle, 100-character lines, sorted imports) and format."""
    import subprocess
    import sys

    ruff = Path(sys.executable).with_name("ruff")
    paths = ["src", "tests", "examples", "scripts"]
    for args in (["check", *paths], ["format", "--check", *paths]):
        result = subprocess.run(
            [str(ruff), *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
