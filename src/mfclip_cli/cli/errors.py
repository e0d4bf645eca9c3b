"""Expected failures, mapped in one place to one readable line on stderr and their exit code."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape


def _without_worker_traceback(message: str) -> str:
    """An error raised again from a DataLoader worker carries the worker's traceback in its message;
    the user gets the original message (the traceback's last line, less the exception's name)."""
    if "\nOriginal Traceback" not in message:
        return message
    return message.rstrip().splitlines()[-1].split(": ", 1)[-1]


@contextlib.contextmanager
def errors_reported() -> Iterator[Console]:
    """Expected failures become one readable line on stderr and their exit code, never a
    traceback."""
    from mfclip_cli.engines.runtime import (
        EXIT_FATAL,
        EXIT_INTERRUPTED,
        EXIT_READER_GONE,
        EXIT_USAGE,
    )
    from mfclip_cli.errors import (
        BackboneError,
        CheckpointError,
        ConfigError,
        DataError,
        ProtocolError,
        ReaderGone,
        TrainingError,
        UnsafeFileError,
        UsageError,
        WeightsError,
    )

    error_console = Console(stderr=True, soft_wrap=True)
    code = None
    try:
        yield error_console
    except (
        WeightsError,
        CheckpointError,
        UnsafeFileError,
        DataError,
        TrainingError,
        FileNotFoundError,
    ) as error:
        message, code = _without_worker_traceback(str(error)), EXIT_FATAL
    except (FileExistsError, NotADirectoryError) as error:  # a path named where it cannot be
        message, code = _path_in_the_way(error), EXIT_USAGE
    except (UsageError, ConfigError, ProtocolError, BackboneError) as error:
        message, code = _without_worker_traceback(str(error)), EXIT_USAGE
    except KeyboardInterrupt:
        message, code = "interrupted", EXIT_INTERRUPTED
    except ReaderGone:  # stdout's reader left (| head): quiet, as SIGPIPE ends other programs
        _quiet_stdout()
        raise typer.Exit(EXIT_READER_GONE) from None
    except OSError as error:  # a full disk, a vanished folder: what failed and where, no traceback
        where = f" ({error.filename})" if error.filename else ""
        message, code = f"{error.strerror or error}{where}", EXIT_FATAL
    if code is not None:
        from mfclip_cli.files import readable  # a name that is not UTF-8 as \xNN, as reports do

        error_console.print(f"[bold red]error:[/] {escape(readable(message))}", highlight=False)
        raise typer.Exit(code)


def _path_in_the_way(error: OSError) -> str:
    """A folder to be made (``--plots``, ``-o``, ``$MFCLIP_HOME``) where a file is, or under one,
    said in words rather than as errno text; our own refusals ("already exists (use --force
    ...)") carry no errno and are kept as they are."""
    if error.errno is None or not error.filename:
        return _without_worker_traceback(str(error))
    where = str(error.filename)
    if isinstance(error, NotADirectoryError) and not Path(where).is_file():
        return f"{where}: a part of this path is a file, not a folder"
    if not Path(where).is_dir():
        return f"{where} is a file, not a folder (a folder is needed there)"
    return f"{where} already exists"


def _quiet_stdout() -> None:
    """stdout pointed at /dev/null: its buffer, flushed at exit into the closed pipe, would fail
    once more with Python's "Exception ignored" lines."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def exit_if_unreadable(count: int, fate: str, error_console: Console) -> None:
    """Exit code 3 where a command finished without ``count`` samples it could not read (each
    said on stderr as met, and listed in its outputs), as a scan does for files: a pipeline
    learns that its figures rest on fewer samples than the data holds."""
    if not count:
        return
    from mfclip_cli.engines.runtime import EXIT_UNREADABLE

    error_console.print(
        f"[bold yellow]finished without {count} sample(s) that could not be read:[/] "
        f"{escape(fate)}",
        highlight=False,
    )
    raise typer.Exit(EXIT_UNREADABLE)
