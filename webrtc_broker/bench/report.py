"""The human output (rich tables) and the machine output (``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from webrtc_broker.bench.results import Baseline, Report, RunResult


def num(value: float | None, digits: int = 0, unit: str = "") -> str:
    """A figure for the bench's tables: thousands separated, ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _ratio(value: float | None, baseline: Baseline | None) -> str:
    """``value`` as a multiple of the baseline's messages/s."""
    if value is None or baseline is None or not baseline.messages_per_s:
        return ""
    return f"{value / baseline.messages_per_s:.2f}x ceiling"


def baseline_table(baseline: Baseline) -> Table:
    kind = "reliable" if baseline.reliable else "unreliable"
    table = Table(title=f"Raw aiortc ceiling: one pair, {baseline.size} B, {kind}")
    table.add_column("messages/s", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("received", justify="right")
    table.add_row(
        num(baseline.messages_per_s),
        num(baseline.mb_per_s, 2),
        num(baseline.sent),
        num(baseline.received),
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
) -> Table:
    """``udp_mode`` and ``batch_mode``: the servers' modes, when the bench started them."""
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
            _ratio(run.offered_per_s, baseline),
        ),
        ("published x receivers /s", num(run.published_per_s), ""),
        ("delivered/s", num(run.delivered_per_s), _ratio(run.delivered_per_s, baseline)),
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


def cpu_table(run: RunResult) -> Table:
    table = Table(
        title=(
            f"CPU during the window ({run.cpu.cores} cores = {run.cpu.cores * 100} %; "
            f"machine busy {run.cpu.machine_percent:.0f} %, "
            f"other load {num(run.cpu.other_percent, 0, ' %')})"
        )
    )
    table.add_column("process")
    table.add_column("pid", justify="right")
    table.add_column("CPU % of a core", justify="right")
    table.add_column("RSS MB (peak)", justify="right")
    for process in run.processes:
        table.add_row(
            process.name,
            str(process.pid),
            num(process.cpu_percent, 0),
            num(process.rss_mb_max, 1),
        )
    return table


def sweep_table(runs: list[RunResult], baseline: Baseline | None) -> Table:
    table = Table(title="Sweep")
    for heading in (
        "bots",
        "offered/s",
        "delivered/s",
        "x ceiling",
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
        ratio = run.ceiling_ratio
        table.add_row(
            str(run.bots),
            num(run.offered_per_s),
            num(run.delivered_per_s),
            "-" if ratio is None else f"{ratio:.2f}",
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
    if report.baseline is not None:
        console.print(baseline_table(report.baseline))
    udp_mode = report.options.get("udp_mode")
    batch_mode = report.options.get("batch_mode")
    for run in report.runs:
        console.print(
            run_table(
                run,
                report.baseline,
                None if udp_mode is None else str(udp_mode),
                None if batch_mode is None else str(batch_mode),
            )
        )
        console.print(cpu_table(run))
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    if len(report.runs) > 1:
        console.print(sweep_table(report.runs, report.baseline))
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")


def write_json(path: Path, report: Report) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
