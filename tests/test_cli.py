"""The command line, run as a user runs it: a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from mfclip_cli import __version__

MFCLIP = Path(sys.executable).with_name("mfclip")


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def test_help():
    result = _run(str(MFCLIP), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "GAN-generated" in result.stdout and "--version" in result.stdout


def test_version_from_console_script_and_module():
    for command in ([str(MFCLIP)], [sys.executable, "-m", "mfclip_cli"]):
        result = _run(*command, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"mfclip {__version__}"


def test_unknown_command_is_a_usage_error():
    result = _run(str(MFCLIP), "frobnicate")
    assert result.returncode == 2
