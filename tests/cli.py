"""The one way the tests run a command: a subprocess, as a user runs ``mfclip`` from a shell.

Every run sees the same environment whatever the developer's shell holds: ``MFCLIP_WEIGHTS`` is
dropped (a scan without ``--weights`` must not pick up a checkpoint the shell names) and
``HF_HUB_OFFLINE=1`` (nothing reaches the network). ``env`` goes on top, for a test that sets a
variable on purpose. Tests of the process itself (signals, pipes, torchrun's ranks, a fresh
``python -c``) call ``subprocess`` directly.
"""

import os
import subprocess
import sys
from pathlib import Path

MFCLIP = str(Path(sys.executable).with_name("mfclip"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def command(*argv, cwd=None, env=None, stdin=None, check=False, timeout=600):
    """Run ``argv`` (the program first; each item ``str()``-ed) in the tests' environment, its
    output captured as text; ``stdin`` is text fed to it. With ``check``, assert it exited 0 and
    show the tail of its stderr if not."""
    environment = {key: value for key, value in os.environ.items() if key != "MFCLIP_WEIGHTS"}
    environment.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    result = subprocess.run(
        [str(arg) for arg in argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def mfclip(*args, **options):
    """``mfclip ARGS``, run by :func:`command` (same options)."""
    return command(MFCLIP, *args, **options)
