"""The public command-line surface, frozen: every command, option name, short flag and default of
today must keep working. Additions are fine; a rename, a removal or a changed default fails here
until tests/snapshots/cli-surface.json is regenerated on purpose
(`python tests/test_surface.py --update`)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer.main
from cli import mfclip

from mfclip_cli.cli import app

SNAPSHOT = Path(__file__).parent / "snapshots" / "cli-surface.json"


def _default(param) -> object:
    value = param.default
    if callable(value):
        return "<callable>"
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def surface() -> dict[str, dict[str, dict]]:
    """command path -> parameter name -> its flags, default and kind, read through Click.

    The root group's own options (--version) are left out: they are the group's, not a command's.
    """
    root = typer.main.get_command(app)
    found: dict[str, dict[str, dict]] = {}

    def walk(command, path: str) -> None:
        if hasattr(command, "commands"):  # a group (typer vendors its own Click)
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
            return
        params = {}
        for param in command.params:
            params[param.name] = {
                "kind": param.param_type_name,
                "opts": sorted(param.opts),
                "secondary_opts": sorted(param.secondary_opts),
                "default": _default(param),
                "required": param.required,
                "multiple": bool(getattr(param, "multiple", False)),
                "is_flag": bool(getattr(param, "is_flag", False)),
            }
        found[path] = params

    walk(root, "")
    return found


def test_every_command_and_option_of_the_snapshot_still_works_the_same():
    frozen = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    now = surface()
    problems = []
    for command, params in frozen.items():
        if command not in now:
            problems.append(f"command '{command}' is gone")
            continue
        for name, spec in params.items():
            current = now[command].get(name)
            if current is None:
                problems.append(f"{command}: parameter '{name}' is gone")
                continue
            for key, value in spec.items():
                if key in ("opts", "secondary_opts"):
                    missing = set(value) - set(current[key])
                    if missing:
                        problems.append(f"{command} {name}: {sorted(missing)} no longer accepted")
                elif current[key] != value:
                    problems.append(f"{command} {name}: {key} {value!r} -> {current[key]!r}")
    assert not problems, "\n".join(problems)


def test_the_snapshot_covers_every_command():
    """A new command or option is added to the snapshot in the same change that adds it."""
    frozen = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    now = surface()
    missing = [
        f"{command} {name}".strip()
        for command, params in now.items()
        for name in params
        if name not in frozen.get(command, {})
    ]
    assert not missing, f"not in {SNAPSHOT.name} (run with --update): {missing}"


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    SNAPSHOT.write_text(json.dumps(surface(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")


def test_help_shows_metavars_and_no_type_labels():
    # what a user reads: no "<bool>" on flags, no "<str>" or "<list[str]>" after a metavar
    for path in [[], *(name.split() for name in surface())]:
        shown = mfclip(*path, "--help", env={"COLUMNS": "100"}, check=True).stdout
        assert not re.search(r"<(bool|str|int|float|Path|path|list\[[^\]]*\])>", shown), path


def test_an_option_never_takes_another_option_for_its_value(tmp_path):
    # "--explain --jsonl out.jsonl": Click would hand "--jsonl" to --explain as its folder
    image = Path(__file__).parents[1] / "examples" / "no_face.jpg"
    result = mfclip("scan", image, "--explain", "--jsonl", "out.jsonl", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "'--jsonl', an option of this command" in result.stderr and "--explain" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named --jsonl, no report
    # a value that merely starts with a dash is still a value
    missing = mfclip("scan", "--jsonl", "-", "-not-an-option.jpg", cwd=tmp_path)
    assert "an option of this command" not in missing.stderr
