"""What every engine needs from its surroundings: the device, the clock, exit codes, usage errors.

Importing it does not import torch (commands such as ``weights list`` never need it): the
functions that do import it when called.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from mfclip_cli.errors import UsageError

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from rich.progress import Progress

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_UNREADABLE, EXIT_FAKE = 0, 1, 2, 3, 4
EXIT_INCONCLUSIVE = 5  # scan --fail-on-inconclusive: no conclusive fake, some face inconclusive
EXIT_INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C
EXIT_READER_GONE = 141  # the shell's code for a writer ended by SIGPIPE (its reader left: | head)


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``, checked against the
    machine."""
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise UsageError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return device


def available_cores() -> int:
    """CPU cores for this process: those it may run on, shared out among the ranks torchrun
    started on this node."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def available_memory() -> int | None:
    """Bytes of memory this process's new work may take without swapping: Linux's MemAvailable,
    or a container's room under its cgroup limit where that is less (elsewhere half the physical
    memory), shared out among the ranks torchrun started on this node, as the cores are; None
    where nothing is known."""
    known = [room for room in (_meminfo_available(), _cgroup_room()) if room is not None]
    if not known:
        try:
            known = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2]
        except (OSError, ValueError, AttributeError):
            return None
    return min(known) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (a container's, a Slurm job's), or None."""
    try:
        with (
            open("/sys/fs/cgroup/memory.max") as limit,
            open("/sys/fs/cgroup/memory.current") as current,
        ):
            text = limit.read().strip()
            return None if text == "max" else max(0, int(text) - int(current.read()))
    except (OSError, ValueError):
        return None


def reuse_freed_buffers() -> None:
    """Ask glibc to recycle freed buffers of up to 32 MiB instead of handing them back to the
    kernel.

    Every pyramid level and activation of a 1024 px photo is a fresh tensor of a few megabytes. By
    default glibc maps each with mmap and unmaps it when freed, so the next one page-faults on every
    page again: on the 2-core CPU this cost 15-30 % of detection time. With the buffers kept in the
    heap, memory stays at the high-water mark of one batch, which is flat in the number of files.
    A no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 1024 * 1024 * 1024)


def counting_bar(label: str, console: Console, *, show: bool, status: bool = False) -> Progress:
    """The progress bar of a job that counts its steps (prepare's files, training's steps,
    verify's images): on ``console`` (stderr) where ``show``, gone when done; with ``status``, a
    text field ``status`` after the times."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *([TextColumn("{task.fields[status]}")] if status else []),
        console=console,
        disable=not show,
        transient=True,
    )


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Import a command's engine with the garbage collector paused, then freeze what the imports
    made out of its passes.

    torch and the model stack leave a few hundred thousand objects that live until the process
    ends and make no garbage; yet the collector walks them on its full passes while they load,
    again on every later full pass, and once more as the interpreter exits. On the 2-core CPU
    this was 0.5-0.7 s of a one-image scan (2.6-2.9 s -> 2.1-2.2 s of wall time). Garbage the
    run makes later is collected as before.

    A Ctrl-C (or SIGTERM) during the imports waits for their end: torch imports NumPy from C++
    and swallows the KeyboardInterrupt, leaving NumPy half made (every file then failed with an
    AttributeError, and the run ended in a traceback).
    """
    gc.disable()
    try:
        with signals_held((signal.SIGINT, signal.SIGTERM)):
            yield
    finally:
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def signal_handlers(
    handler: Callable | int, numbers: Sequence[int], restore: Callable[[], bool] = lambda: True
) -> Iterator[None]:
    """``handler`` for the signals ``numbers`` while the block runs, the previous handlers after
    it unless ``restore()`` says no; off the main thread, where Python installs no handler,
    signals are left alone."""
    try:
        previous = {number: signal.signal(number, handler) for number in numbers}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        if restore():
            for number, earlier in previous.items():
                signal.signal(number, earlier)


def _as_ctrl_c(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``timeout``, a batch system's pre-emption, a container stopping) ends the block
    as Ctrl-C does, through its clean-up, where Python's default would end the process at once."""
    with signal_handlers(_as_ctrl_c, (signal.SIGTERM,)):
        yield


@contextlib.contextmanager
def signals_held(numbers: Sequence[int]) -> Iterator[None]:
    """The signals ``numbers`` arriving while the block runs wait for its end, then arrive as
    they would have (the first of them, to the handlers of before)."""
    arrived: list[int] = []
    with signal_handlers(lambda signum, frame: arrived.append(signum), numbers):
        yield
    if arrived:
        signal.raise_signal(arrived[0])


@dataclass
class World:
    """This process's place among the processes torchrun started (one process when not under
    torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # a process group was joined: under torchrun, even of one process, so that one GPU runs the
    # collectives (NCCL, the gathered negatives, DDP) that many do
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def union(self, values: set[Any]) -> set[Any]:
        """The union of every process's ``values`` (picklable), on every process."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        gathered: list[set[Any] | None] = [None] * self.size
        dist.all_gather_object(gathered, values)
        return set().union(*(part for part in gathered if part))

    def leave(self) -> None:
        """Destroy the process group this process joined, if any."""
        if self.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def run_environment(world: World, device: torch.device) -> dict[str, Any]:
    """What a training run's bytes depend on beyond its settings and data: the processes
    (torchrun's: the batch is split across them, and each its own per-process loss terms), the
    device type, the CPU threads (float sums are ordered by them) and the library versions."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "processes": world.size,
        "device": device.type,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "open_clip_torch": installed("open_clip_torch"),
            "peft": installed("peft"),
        },
    }


def join_world(device_spec: str, backend: str | None = None) -> tuple[World, torch.device]:
    """The world and this process's device; under torchrun each rank takes its own GPU.

    Launched by torchrun (``RANK`` set), the process joins a process group even when it is the
    only one. ``backend`` None picks NCCL on GPUs and gloo on CPUs.
    """
    import torch
    import torch.distributed as dist

    device = resolve_device(device_spec)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and "RANK" not in os.environ:
        return World(), device
    world = World(
        int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")), distributed=True
    )
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return world, device
