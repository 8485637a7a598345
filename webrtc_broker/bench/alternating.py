"""Runs of several settings in alternation, for comparisons on a shared machine.

A slow drift of the machine's load (other processes starting, the CPU
clocking down) would favour whichever setting ran first, so comparisons run
round after round, every setting once per round (A, B, C, A, B, C, ...), and
compare medians per setting. The commands that do (``--compare-udp-modes``,
``--batch-sweep``) share the loop, the progress display, the log folder and
the error handling here; what a run is and what is reported is theirs.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from rich.progress import Progress

from webrtc_broker.bench.command import cancel_on_sigterm, log_directory, progress_display
from webrtc_broker.bench.localcluster import ClusterError
from webrtc_broker.bench.options import BenchOptions
from webrtc_broker.bench.results import Machine
from webrtc_broker.bench.runner import BenchError
from webrtc_broker.bench.workers import WorkerError

LOADAVG = Path("/proc/loadavg")

Setting = TypeVar("Setting")


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [float(value) for value in LOADAVG.read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def load_text(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) or "unknown"


def machine_line(machine: Machine, before: list[float], after: list[float]) -> str:
    """The machine a comparison ran on and how busy it was, for the report's header."""
    return (
        f"machine: {machine.cpus} cores, Python {machine.python}, aiortc {machine.aiortc}; "
        f"load average before {load_text(before)}, after {load_text(after)}"
    )


def median(values: Iterable[float | None]) -> float | None:
    """The median of the known values; ``None`` when there are none."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


async def alternate(
    options: BenchOptions,
    settings: Sequence[Setting],
    *,
    title: str,
    run_one: Callable[[Setting, int, Path, Progress], Awaitable[str]],
    finish: Callable[[str | None], int],
) -> int:
    """``options.runs`` rounds of ``run_one(setting, round, log_dir, progress)`` per setting.

    ``run_one`` keeps its result and returns the line printed for it. ``finish(error)``
    reports whatever ran (``error``: why the rounds stopped early, else ``None``) and
    returns the command's exit code; it also runs when the command is interrupted.
    The log folder is removed after a clean run unless ``--log-dir`` named it.
    """
    log_dir = log_directory(options)
    progress = progress_display()
    cancel_on_sigterm()
    error = None
    try:
        with progress:
            overall = progress.add_task(title, total=options.runs * len(settings), unit=" runs")
            for number in range(1, options.runs + 1):
                for setting in settings:
                    progress.console.print(await run_one(setting, number, log_dir, progress))
                    progress.advance(overall)
    except (BenchError, ClusterError, WorkerError) as exc:
        error = f"{exc} (logs in {log_dir})"
    except asyncio.CancelledError:
        finish("interrupted")
        raise
    code = finish(error)
    if error is None and options.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code
