"""The human output (rich tables) and the machine output (``--json``).

The broker's delivered rate is read against two yardsticks measured in the
same run: the aiortc pair (one Python connection, the broker's own stack) and
the Chromium pair (libwebrtc, the native stack), as "x aiortc pair" and
"x Chromium pair".
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from webrtc_broker.bench.results import (
    Baseline,
    CpuShare,
    ProcessUsage,
    Report,
    ReportHead,
    RunResult,
)


def num(value: float | None, digits: int = 0, unit: str = "") -> str:
    """A figure for the bench's tables: thousands separated, ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


PAIR_NAMES = {"aiortc": "aiortc pair", "chromium": "Chromium pair"}
"""How the report names each yardstick (by :attr:`Baseline.stack`)."""
STACK_NAMES = {"aiortc": "aiortc (Python)", "chromium": "Chromium (libwebrtc)"}


def ratio(value: float | None, yardstick: Baseline | None) -> float | None:
    """``value`` as a multiple of the yardstick's messages/s; ``None`` without either."""
    if value is None or yardstick is None or not yardstick.messages_per_s:
        return None
    return value / yardstick.messages_per_s


def ratios_text(value: float | None, *yardsticks: Baseline | None) -> str:
    """``value`` against each measured yardstick: ``0.52x aiortc pair, 0.07x Chromium pair``."""
    parts = []
    for yardstick in yardsticks:
        multiple = ratio(value, yardstick)
        if yardstick is not None and multiple is not None:
            parts.append(f"{multiple:.2f}x {PAIR_NAMES[yardstick.stack]}")
    return ", ".join(parts)


def baseline_table(baseline: Baseline, native: Baseline | None = None) -> Table:
    """The yardsticks: one peer-connection pair of each stack, same size and channel kind."""
    kind = "reliable" if baseline.reliable else "unreliable"
    table = Table(title=f"Yardsticks: one peer-connection pair, {baseline.size} B, {kind}")
    table.add_column("stack")
    for heading in ("messages/s", "MB/s", "sent", "received"):
        table.add_column(heading, justify="right")
    for pair in (baseline, native):
        if pair is not None:
            table.add_row(
                STACK_NAMES[pair.stack],
                num(pair.messages_per_s),
                num(pair.mb_per_s, 2),
                num(pair.sent),
                num(pair.received),
            )
    return table


def native_note_line(note: str) -> str:
    """The one line a report prints instead of the Chromium pair (``note`` as is: an
    install hint's ``[bench]`` is not markup)."""
    return f"[yellow]note:[/yellow] {escape(note)}; ratios are to the aiortc pair only"


def print_yardsticks(
    console: Console, baseline: Baseline | None, native: Baseline | None, note: str | None
) -> None:
    """The yardsticks' table (whichever was measured) and why the Chromium pair is missing."""
    first = baseline or native
    if first is not None:
        console.print(baseline_table(first, native if first is baseline else None))
    if note is not None:
        console.print(native_note_line(note))


def delivered_table(
    title: str,
    rows: list[tuple[str, float | None]],
    baseline: Baseline | None,
    native: Baseline | None,
) -> Table:
    """Delivered rates (label, messages/s) as multiples of both yardsticks."""
    table = Table(title=title)
    table.add_column("")
    for heading in ("delivered/s", "x aiortc pair", "x Chromium pair"):
        table.add_column(heading, justify="right")
    for label, delivered in rows:
        table.add_row(
            label,
            num(delivered),
            num(ratio(delivered, baseline), 2),
            num(ratio(delivered, native), 2),
        )
    return table


def batching_text(window: float | None, mode: str | None) -> str:
    """How the servers batched: ``window`` and ``mode`` as the bench set them."""
    if window is None:
        return "existing cluster"
    if window == 0:
        return "unbatched"
    if mode == "idle":
        return f"batching when idle (at most {window * 1000:g} ms)"
    return f"batch window {window * 1000:g} ms"


def run_table(
    run: RunResult,
    baseline: Baseline | None,
    udp_mode: str | None = None,
    batch_mode: str | None = None,
    native: Baseline | None = None,
) -> Table:
    """``udp_mode`` and ``batch_mode``: the servers' modes, when the bench started them;
    ``baseline`` and ``native``: the aiortc and Chromium pairs, when measured."""
    kind = "reliable" if run.reliable else "unreliable"
    batching = batching_text(run.batch_window, batch_mode)
    table = Table(
        title=(
            f"Dense scenario: {run.bots} bots x {run.rate:g} Hz x {run.size} B, {kind}, "
            f"{run.servers} server(s), {batching}"
            + ("" if run.batch_window is None or udp_mode is None else f", UDP {udp_mode}")
            + f", {run.workers} worker(s), {run.duration:g} s"
        )
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    latency, connect, server = run.latency_ms, run.connect_s, run.server
    rows = [
        (
            "offered deliveries/s",
            num(run.offered_per_s),
            ratios_text(run.offered_per_s, baseline, native),
        ),
        ("published x receivers /s", num(run.published_per_s), ""),
        (
            "delivered/s",
            num(run.delivered_per_s),
            ratios_text(run.delivered_per_s, baseline, native),
        ),
        (
            "loss",
            num(run.loss_percent, 2, " %"),
            f"{run.arrived:,} of {run.published * (run.bots_connected - 1):,} arrived "
            f"by {run.late_after_s:g} s after the window",
        ),
        ("latency p50", num(latency.p50, 1, " ms"), f"{latency.samples:,} samples"),
        ("latency p95", num(latency.p95, 1, " ms"), ""),
        (
            "latency p99",
            num(latency.p99, 1, " ms"),
            f"max {num(latency.max, 1, ' ms')}",
        ),
        (
            "connect p50 / p99",
            f"{num(connect.p50, 2)} / {num(connect.p99, 2)} s",
            f"{connect.count} ok, {connect.failures} failed",
        ),
        ("comm server CPU", num(server.cpu_percent, 0, " %"), "of one core, all servers"),
        ("comm server RSS", num(server.rss_mb_max, 1, " MB"), "peak, all servers"),
        (
            "memory per client",
            num(server.memory_per_client_mb, 3, " MB"),
            f"{num(server.rss_mb_before_clients, 1)} -> {num(server.rss_mb_after_clients, 1)} MB",
        ),
        ("server deliveries/s", num(server.deliveries_per_s), "server's own counter"),
        (
            "server CPU per delivery",
            num(server.cpu_us_per_delivery, 1, " µs"),
            f"bot workers {num(run.cpu.workers_us_per_delivery, 1, ' µs')}",
        ),
    ]
    if server.drops:
        rows.append(("server drops", num(sum(server.drops.values())), str(server.drops)))
    for name, value, note in rows:
        table.add_row(name, value, note)
    return table


def cpu_table(cpu: CpuShare, processes: list[ProcessUsage]) -> Table:
    """Every watched process's CPU and peak memory over the window (any scenario)."""
    table = Table(
        title=(
            f"CPU during the window ({cpu.cores} cores = {cpu.cores * 100} %; "
            f"machine busy {cpu.machine_percent:.0f} %, "
            f"other load {num(cpu.other_percent, 0, ' %')})"
        )
    )
    table.add_column("process")
    table.add_column("pid", justify="right")
    table.add_column("CPU % of a core", justify="right")
    table.add_column("RSS MB (peak)", justify="right")
    for process in processes:
        table.add_row(
            process.name,
            str(process.pid),
            num(process.cpu_percent, 0),
            num(process.rss_mb_max, 1),
        )
    return table


def sweep_table(runs: list[RunResult]) -> Table:
    table = Table(title="Sweep")
    for heading in (
        "bots",
        "offered/s",
        "delivered/s",
        "x aiortc pair",
        "x Chromium pair",
        "loss %",
        "p50 ms",
        "p99 ms",
        "server CPU %",
        "server µs/delivery",
        "workers CPU %",
        "MB/client",
    ):
        table.add_column(heading, justify="right")
    for run in runs:
        table.add_row(
            str(run.bots),
            num(run.offered_per_s),
            num(run.delivered_per_s),
            num(run.ceiling_ratio, 2),
            num(run.native_ratio, 2),
            num(run.loss_percent, 2),
            num(run.latency_ms.p50, 1),
            num(run.latency_ms.p99, 1),
            num(run.server.cpu_percent),
            num(run.server.cpu_us_per_delivery, 1),
            num(run.cpu.workers_percent),
            num(run.server.memory_per_client_mb, 3),
        )
    return table


def print_report(console: Console, report: Report) -> None:
    print_yardsticks(console, report.baseline, report.native, report.native_note)
    udp_mode = report.options.get("udp_mode")
    batch_mode = report.options.get("batch_mode")
    for run in report.runs:
        console.print(
            run_table(
                run,
                report.baseline,
                None if udp_mode is None else str(udp_mode),
                None if batch_mode is None else str(batch_mode),
                report.native,
            )
        )
        console.print(cpu_table(run.cpu, run.processes))
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    if len(report.runs) > 1:
        console.print(sweep_table(report.runs))
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")


def write_json(path: Path, report: ReportHead) -> None:
    """Any scenario's report, as its ``--json`` file."""
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
