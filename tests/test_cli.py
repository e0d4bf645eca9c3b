"""The command line, run as a user runs it: a subprocess."""

import sys
from pathlib import Path

from cli import MFCLIP, command, mfclip
from report_schemas import check_train_run

import mfclip_cli
from mfclip_cli import __version__


def test_help():
    result = mfclip("--help")
    assert result.returncode == 0, result.stderr
    assert (
        "Usage" in result.stdout
        and "GAN-generated" in result.stdout
        and "--version" in result.stdout
    )


def test_version_from_console_script_and_module():
    for argv in ([MFCLIP], [sys.executable, "-m", "mfclip_cli"]):
        result = command(*argv, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"mfclip {__version__}"


def test_unknown_command_is_a_usage_error():
    result = mfclip("frobnicate")
    assert result.returncode == 2


def test_eval_lists_the_shipped_protocols():
    result = mfclip("eval", "--list-protocols")
    assert result.returncode == 0, result.stderr
    for name in ("in-domain", "cross-generator", "cross-forgery", "cross-dataset"):
        assert name in result.stdout
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert "change the [train] and [val] forgery_type" in flat  # df40-fs's, not read as markup


def test_bad_train_and_eval_options_are_one_line_errors_not_tracebacks(tmp_path):
    from PIL import Image

    for label in ("real", "gan"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(tmp_path / "data" / label / f"{i}.png")
    data, out = str(tmp_path / "data"), str(tmp_path / "run")
    for label in ("real", "gan"):
        (tmp_path / "broken" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "broken" / label / f"{i}.png").write_text("not an image")
    cases = [
        (("train", "--out", out), 2, "--data is required"),
        (
            (
                "train",
                "--data",
                data,
                "--out",
                out,
                "--config",
                "tiny",
                "--batch-size",
                "2",
                "--clip-weights",
                "no-such-tag",
            ),
            2,
            "neither a local file nor an open_clip tag",
        ),
        (
            (
                "train",
                "--data",
                data,
                "--out",
                out,
                "--config",
                "no-such-config",
                "--batch-size",
                "2",
            ),
            2,
            "no-such-config",
        ),
        (  # a bad --set is reported before the data is read
            (
                "train",
                "--data",
                data,
                "--out",
                out,
                "--config",
                "tiny",
                "--set",
                "lora.txt=true",
            ),
            2,
            "unknown key lora.txt: lora has alpha, dropout, rank, text",
        ),
        (
            ("eval", "--data", data, "--protocol", "no-such-protocol"),
            2,
            "no-such-protocol",
        ),
        (("eval", "--data", data, "--bootstrap", "1"), 2, "at least 50 (fewer give no 95 %"),
        (("eval", "--data", str(tmp_path / "missing")), 1, "not found"),
        (("train", "--data", str(tmp_path / "missing"), "--out", out), 1, "not found"),
        (("prepare", str(tmp_path / "missing"), "--out", out), 1, "not found"),
        # a mistyped --label-map, like a mistyped --protocol, is a usage error before torch loads
        *(
            ((*command, "--label-map", str(tmp_path / "no.toml")), 2, "label map file not found")
            for command in (
                ("train", "--data", data, "--out", out),
                ("eval", "--data", data),
                ("prepare", data, "--out", out, "--dry-run"),
            )
        ),
        (
            (
                "train",
                "--data",
                str(tmp_path / "broken"),
                "--out",
                str(tmp_path / "run2"),
                "--config",
                "tiny",
                "--batch-size",
                "2",
                "--workers",
                "0",
            ),
            1,
            "not a recognised image format",
        ),
        (
            (
                "train",
                "--data",
                str(tmp_path / "broken"),
                "--out",
                str(tmp_path / "run2"),
                "--config",
                "tiny",
                "--batch-size",
                "2",
                "--workers",
                "1",
            ),
            1,
            "not a recognised image format",
        ),  # from a worker process
    ]
    for args, code, message in cases:
        result = mfclip(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
    # The failed runs left nothing in their folder, so the same --out trains once the data is fixed.
    assert not (tmp_path / "run2").exists()
    fixed = mfclip(
        "train",
        "--data",
        data,
        "--out",
        str(tmp_path / "run2"),
        "--config",
        "tiny",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--epochs",
        "1",
    )
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "run2" / "last.safetensors").is_file()
    check_train_run(tmp_path / "run2")


def test_errors_show_bracketed_names_as_they_are(tmp_path):
    """A message is text, not markup: a name with brackets is shown whole and never breaks the
    line it is in (``[/x]`` was a MarkupError traceback, ``[bold]`` vanished)."""
    for name in ("nope[/x]", "nope[bold]dir"):
        result = mfclip("data", "inspect", str(tmp_path / name))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"dataset folder not found: {tmp_path / name}" in result.stderr


def test_a_file_where_a_folder_is_needed_is_said_in_words(tmp_path):
    """Audit S F9: a folder to be made where a file is, or under one, was errno text ("[Errno 17]
    File exists: ...", "Not a directory (...)") with exit 1 or 2 by chance: now a usage error
    that says which path."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "weights").write_text("a file where the store's folder goes")
    demo = str(Path(mfclip_cli.__file__).parent / "weights" / "mfclip-demo-tiny.safetensors")
    env = {"MFCLIP_HOME": str(tmp_path / "home")}
    added = mfclip("weights", "add", demo, "--name", "copy", env=env)
    where = tmp_path / "home" / "weights"
    assert added.returncode == 2, added.stderr
    assert f"{where} is a file, not a folder (a folder is needed there)" in added.stderr
    env = {"MFCLIP_HOME": str(tmp_path / "home" / "weights" / "under")}
    under = mfclip("weights", "add", demo, "--name", "copy", env=env)
    assert under.returncode == 2, under.stderr
    assert "a part of this path is a file, not a folder" in under.stderr
    assert "Errno" not in added.stderr + under.stderr
