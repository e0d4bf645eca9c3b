"""The README's set-up and test commands are exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_first_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    assert block, "README has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_them():
    commands = _readme_first_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_commands = [
        line.strip()
        for line in ci
        if line.strip() and not line.startswith("#") and not re.match(r"(set|cd) ", line.strip())
    ]
    assert ci_commands == commands


def test_tests_run_offline():
    install, test = _readme_first_commands()
    assert "HF_HUB_OFFLINE=1" in test and "pytest" in test
    assert "[test]" in install
