"""``webrtc-broker bench``: the yardsticks, one run per bot count, then table, JSON and plot.

The yardsticks are the aiortc pair and the Chromium pair, each in its own
process before any cluster starts; a missing or failing Chromium pair is a
note in the report, never the end of the run.

Progress goes to stderr and disappears when done; the tables go to stdout.
The JSON file is written even when a run fails or Ctrl-C stops the bench, with
the runs that finished and the reason in ``error``, so a long sweep is never
lost entirely.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from webrtc_broker.bench.localcluster import ClusterError
from webrtc_broker.bench.nativepair import measure_in_subprocess
from webrtc_broker.bench.options import BenchOptions
from webrtc_broker.bench.plot import PlotUnavailable, plot_sweep
from webrtc_broker.bench.report import print_report, ratio, write_json
from webrtc_broker.bench.results import Baseline, Machine, Report, ServerUdp
from webrtc_broker.bench.runner import BenchError, Runner
from webrtc_broker.bench.workers import WorkerError

DEFAULT_PLOT = Path("bench-sweep.png")


class _CountColumn(ProgressColumn):
    """``done/total`` plus the task's ``unit`` field; blank while the total is unknown."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = str(task.fields.get("unit", ""))
        return Text(f"{task.completed:.0f}/{task.total:.0f}{unit}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_info() -> Machine:
    return Machine(
        cpus=os.cpu_count() or 1,
        platform=platform.platform(),
        python=platform.python_version(),
        aiortc=version("aiortc"),
        loadavg_1m=os.getloadavg()[0],
    )


def describe_udp(server: ServerUdp) -> str:
    """One server's UDP sockets in a sentence."""
    if not server.sockets:
        return f"{server.name} held no UDP socket"
    where = (
        f"port {server.lowest}"
        if server.ports == 1
        else f"{server.ports} ports ({server.lowest}-{server.highest})"
    )
    text = f"{server.name} held {server.sockets} UDP socket(s) on {where}"
    if server.in_mode is True:
        text += ", all where its mode puts them"
    elif server.in_mode is False:
        text += ", NOT where its mode puts them"
    return text


def stdout_console() -> Console:
    """Where the tables go."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)  # a file or a pipe: do not squeeze the tables into 80 columns
    return out


def options_json(options: BenchOptions) -> dict[str, Any]:
    """``options`` as the JSON file records them (with the worker count actually used)."""
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    data["workers"] = options.worker_count
    return data


def log_directory(options: BenchOptions) -> Path:
    """``--log-dir``, or a new temporary folder (removed by the caller after a clean run)."""
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="webrtc-broker-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


def progress_display() -> Progress:
    """The transient progress lines on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@dataclass(frozen=True)
class Yardsticks:
    """What one connection moves on this machine now, on each stack."""

    aiortc: Baseline | None
    chromium: Baseline | None
    chromium_note: str | None
    """Why ``chromium`` is missing (not installed, failed); ``None`` when measured or skipped."""


async def measure_yardsticks(
    options: BenchOptions, progress: Progress, log_dir: Path
) -> Yardsticks:
    """The aiortc pair, then the Chromium pair (unless ``--no-native``), as long as
    ``--baseline-seconds`` each; ``--baseline-seconds 0`` skips both."""
    aiortc = await Runner(options, progress, log_dir).baseline()
    if not options.native or options.baseline_seconds == 0:
        return Yardsticks(aiortc, None, None)
    chromium, note = await measure_in_subprocess(
        options.size,
        options.reliable,
        options.baseline_seconds,
        progress,
        log_dir / "native-pair.log",
    )
    return Yardsticks(aiortc, chromium, note)


def cancel_on_sigterm() -> None:
    """SIGTERM stops the bench like Ctrl-C does: cancelled, so every process is stopped."""
    main = asyncio.current_task()
    if main is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)


async def run_bench(options: BenchOptions, argv: list[str]) -> int:
    """Run everything ``options`` asks for; the exit code of the command."""
    out = stdout_console()
    report = Report(argv, now_iso(), "", machine_info(), options_json(options), None, [])
    log_dir = log_directory(options)
    progress = progress_display()
    cancel_on_sigterm()
    sockets: list[list[ServerUdp]] = []
    try:
        with progress:
            yardsticks = await measure_yardsticks(options, progress, log_dir)
            report.baseline = yardsticks.aiortc
            report.native, report.native_note = yardsticks.chromium, yardsticks.chromium_note
            runner = Runner(options, progress, log_dir)
            for bots in options.bot_counts:
                run, servers_udp = await runner.measure(bots, report.baseline)
                native_ratio = ratio(run.delivered_per_s, report.native)
                report.runs.append(replace(run, native_ratio=native_ratio))
                sockets.append(servers_udp)
    except (BenchError, ClusterError, WorkerError) as exc:
        report.error = f"{exc} (logs in {log_dir})"
    except asyncio.CancelledError:
        report.error = "interrupted"
        _finish(report, options, out, sockets)
        raise
    code = _finish(report, options, out, sockets)
    if report.error is None and options.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code


def _finish(
    report: Report, options: BenchOptions, out: Console, sockets: list[list[ServerUdp]]
) -> int:
    report.finished_at = now_iso()
    print_report(out, report)
    # Which ports the servers' peer connections really used: the mode in effect.
    for run, census in zip(report.runs, sockets, strict=False):
        for server in census:
            out.print(f"{run.bots} bots, UDP {options.udp_mode}: {describe_udp(server)}")
    if options.json_path is not None:
        write_json(options.json_path, report)
        out.print(f"JSON written to {options.json_path}")
    plot_path = options.plot_path or (DEFAULT_PLOT if options.sweep else None)
    if plot_path is not None and report.runs:
        try:
            plot_sweep(report.runs, report.baseline, plot_path, options.batch_mode, report.native)
            out.print(f"plot written to {plot_path}")
        except PlotUnavailable as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0 if report.error is None else 1
