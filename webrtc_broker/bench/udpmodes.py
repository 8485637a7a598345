"""``webrtc-broker bench --compare-udp-modes``: single-port against per-connection sockets.

The comm server can put every peer connection's ICE traffic on one UDP port
(``--udp-port``) instead of a socket per connection; the budget for that mode
is to cost at most 10 % against per-connection sockets on connect time,
throughput and server CPU per delivery. This command measures the three.

Each run of a mode is two stages, each on a fresh cluster started in that
mode:

* connect: ``--connect-bots`` clients (200 by default) connect at the bench's
  usual bounded rate (``--connect-concurrency`` per worker) and leave without
  traffic; per-client connect time (p50, p99) and the time all of them took;
* dense: the dense scenario of ``webrtc-broker bench`` (``--bots``,
  ``--rate``, ``--size``, ...), for delivered messages/s and the servers'
  CPU per delivery under the same offered load.

Runs alternate between the modes (per-connection, single-port,
per-connection, ...), so a slow drift of the machine's load spreads over both
instead of favouring whichever ran first; the medians per mode are compared.
After the clients connected, each server's UDP sockets are read from /proc:
a single-port server whose sockets are not all on its port ignored the mode,
and the report says so instead of comparing per-connection with itself.

It prints and records numbers; it does not fail on a verdict (the exit code
is 1 only when a run could not be completed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from webrtc_broker.bench.alternating import alternate, loadavg, machine_line, median
from webrtc_broker.bench.command import machine_info, now_iso, options_json, stdout_console
from webrtc_broker.bench.options import BenchOptions, UdpMode
from webrtc_broker.bench.report import num
from webrtc_broker.bench.results import (
    Comparison,
    MetricSummary,
    ModeRun,
    RunResult,
    ServerUdp,
)
from webrtc_broker.bench.runner import Runner

BUDGET_PERCENT = 10.0
"""How much worse single-port may be than per-connection on a budgeted metric."""
MODES = (UdpMode.PER_CONNECTION, UdpMode.SINGLE_PORT)
"""Compared, in this order within each run number."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    better: str
    """``higher`` or ``lower``."""
    budgeted: bool
    """Part of the 10 % budget; the others are printed for context."""
    digits: int
    value: Callable[[ModeRun], float | None]


METRICS = (
    Metric("connect p50", "s", "lower", True, 3, lambda r: r.connect.p50_s),
    Metric("connect p99", "s", "lower", True, 3, lambda r: r.connect.p99_s),
    Metric("connect, all clients", "s", "lower", True, 2, lambda r: r.connect.total_s),
    Metric("delivered", "/s", "higher", True, 0, lambda r: r.dense.delivered_per_s),
    Metric(
        "server CPU per delivery",
        "µs",
        "lower",
        True,
        1,
        lambda r: r.dense.server.cpu_us_per_delivery,
    ),
    Metric(
        "server CPU per connect",
        "ms",
        "lower",
        False,
        2,
        lambda r: r.connect.server_cpu_ms_per_connect,
    ),
    Metric(
        "server CPU per server-counted delivery",
        "µs",
        "lower",
        False,
        1,
        lambda r: _per_server_delivery(r.dense),
    ),
    Metric("server CPU (dense)", "%", "lower", False, 0, lambda r: r.dense.server.cpu_percent),
    Metric("latency p50 (dense)", "ms", "lower", False, 1, lambda r: r.dense.latency_ms.p50),
    Metric("latency p99 (dense)", "ms", "lower", False, 1, lambda r: r.dense.latency_ms.p99),
    Metric("loss (dense)", "%", "lower", False, 2, lambda r: r.dense.loss_percent),
)


def _per_server_delivery(run: RunResult) -> float | None:
    """Server CPU µs per frame the servers handed to a client (their own counter).

    Unlike the budgeted "per delivery" (per message a bot received), messages the
    network or an overloaded bot lost after the server do not inflate it, so it
    separates the server's own cost from losses downstream of it.
    """
    server = run.server
    if server.cpu_percent is None or not server.deliveries_per_s:
        return None
    return server.cpu_percent / 100.0 / server.deliveries_per_s * 1e6


def verdict(better: str, ratio: float | None, budget_percent: float) -> str | None:
    """``PASS`` when single-port is at most ``budget_percent`` worse, else ``WARN``."""
    if ratio is None:
        return None
    budget = budget_percent / 100.0
    ok = ratio >= 1.0 - budget if better == "higher" else ratio <= 1.0 + budget
    return "PASS" if ok else "WARN"


def _median(runs: list[ModeRun], mode: UdpMode, metric: Metric) -> float | None:
    return median(metric.value(r) for r in runs if r.mode == mode)


def summarise_modes(runs: list[ModeRun], budget_percent: float) -> list[MetricSummary]:
    """Each metric's median per mode, their ratio and (budgeted metrics) the verdict."""
    summary = []
    for metric in METRICS:
        per_connection = _median(runs, UdpMode.PER_CONNECTION, metric)
        single_port = _median(runs, UdpMode.SINGLE_PORT, metric)
        ratio = single_port / per_connection if single_port is not None and per_connection else None
        summary.append(
            MetricSummary(
                metric.name,
                metric.unit,
                metric.better,
                per_connection,
                single_port,
                ratio,
                verdict(metric.better, ratio, budget_percent) if metric.budgeted else None,
            )
        )
    return summary


def mode_warnings(runs: list[ModeRun]) -> list[str]:
    """Runs whose servers did not keep to their port mode, and the dense stages' warnings."""
    found = []
    for run in runs:
        label = f"{run.mode} run {run.number}"
        for stage, census in (
            ("connect", run.connect.servers_udp),
            ("dense", run.dense_servers_udp),
        ):
            for server in census:
                if server.in_mode is False:
                    found.append(
                        f"{label} ({stage}): {server.name} held {server.sockets} UDP sockets "
                        f"on {server.ports} ports ({server.lowest}-{server.highest}), not only "
                        f"on {_ports(server.expected)}: it ignored its port mode, so this run "
                        "measured something else"
                    )
        if run.connect.failures:
            found.append(
                f"{label}: {run.connect.failures} of {run.connect.bots} clients failed to "
                f"connect: {run.connect.errors}"
            )
        found += [f"{label} (dense): {warning}" for warning in run.dense.warnings]
    return found


def _ports(expected: tuple[int, int] | None) -> str:
    if expected is None:
        return "any port"
    low, high = expected
    return f"port {low}" if low == high else f"ports {low}-{high}"


def _sockets(census: list[ServerUdp]) -> str:
    """``sockets/ports`` summed over the servers."""
    if not census:
        return "-"
    return f"{sum(s.sockets for s in census)}/{sum(s.ports for s in census)}"


def runs_table(comparison: Comparison) -> Table:
    options = comparison.options
    table = Table(
        title=(
            f"Runs, in order: connect stage {options['connect_bots']} clients; dense stage "
            f"{options['bots']} bots x {options['rate']:g} Hz x {options['size']} B, "
            f"{options['duration']:g} s window"
        ),
        caption=(
            "connect: clients connected, p50/p99 per client, all = first start to last end, "
            "server CPU ms per connect, the servers' UDP sockets/ports once connected; "
            "dense: delivered/s, loss, frames and datagrams the servers dropped, server CPU "
            "µs per delivery and %, other load on the machine (% of a core)"
        ),
    )
    headings = (
        "run",
        "mode",
        "clients",
        "p50 s",
        "p99 s",
        "all s",
        "ms/conn",
        "UDP s/p",
        "deliv/s",
        "loss %",
        "drops",
        "µs/deliv",
        "CPU %",
        "other %",
    )
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "mode" else "right", no_wrap=True)
    for run in comparison.runs:
        connect, dense = run.connect, run.dense
        table.add_row(
            str(run.number),
            run.mode,
            f"{connect.connected}/{connect.bots}",
            num(connect.p50_s, 3),
            num(connect.p99_s, 3),
            num(connect.total_s, 2),
            num(connect.server_cpu_ms_per_connect, 2),
            _sockets(connect.servers_udp),
            num(dense.delivered_per_s),
            num(dense.loss_percent, 2),
            num(sum(dense.server.drops.values())),
            num(dense.server.cpu_us_per_delivery, 1),
            num(dense.server.cpu_percent),
            num(dense.cpu.other_percent),
        )
    return table


def summary_table(comparison: Comparison) -> Table:
    per_mode = len(comparison.runs) // len(MODES) if comparison.runs else 0
    table = Table(
        title=(
            f"Medians of {per_mode} run(s) per mode; single-port / per-connection, "
            f"budget {comparison.budget_percent:g} %"
        )
    )
    for heading in ("metric", "per-connection", "single-port", "ratio", "verdict"):
        table.add_column(heading, justify="left" if heading == "metric" else "right")
    digits = {metric.name: metric.digits for metric in METRICS}
    for row in comparison.summary:
        places = digits.get(row.name, 2)
        unit = f" {row.unit}" if row.unit and row.unit != "/s" else row.unit
        verdict_text = row.verdict or ""
        if row.verdict == "PASS":
            verdict_text = "[green]PASS[/green]"
        elif row.verdict == "WARN":
            verdict_text = "[yellow]WARN[/yellow]"
        table.add_row(
            f"{row.name} ({row.better} is better)",
            num(row.per_connection, places) + (unit if row.per_connection is not None else ""),
            num(row.single_port, places) + (unit if row.single_port is not None else ""),
            "-" if row.ratio is None else f"{row.ratio:.3f}",
            verdict_text,
        )
    return table


def print_comparison(console: Console, comparison: Comparison) -> None:
    options = comparison.options
    console.print(
        f"UDP port modes: {' vs '.join(MODES)}, {options['runs']} run(s) each, alternating; "
        f"{options['servers']} server(s), batch window {options['batch_window'] * 1000:g} ms, "
        f"{options['connect_concurrency']} concurrent connects per worker"
    )
    console.print(
        machine_line(comparison.machine, comparison.loadavg_before, comparison.loadavg_after)
    )
    if comparison.runs:
        console.print(runs_table(comparison))
        console.print(summary_table(comparison))
    for warning in mode_warnings(comparison.runs):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if comparison.error:
        console.print(f"[red]error:[/red] {comparison.error}")


async def run_comparison(options: BenchOptions, argv: list[str]) -> int:
    """Alternate the modes ``options.runs`` times each; the command's exit code."""
    out = stdout_console()
    comparison = Comparison(
        command=argv,
        started_at=now_iso(),
        finished_at="",
        machine=machine_info(),
        loadavg_before=loadavg(),
        loadavg_after=[],
        options=options_json(options),
        budget_percent=BUDGET_PERCENT,
        runs=[],
        summary=[],
    )

    async def run_one(mode: UdpMode, number: int, log_dir: Path, progress: Progress) -> str:
        run = await _one_run(options, mode, number, log_dir, progress)
        comparison.runs.append(run)
        return _run_line(run)

    def finish(error: str | None) -> int:
        comparison.error = error
        return _finish(comparison, options, out)

    return await alternate(
        options, MODES, title="comparing UDP port modes", run_one=run_one, finish=finish
    )


async def _one_run(
    options: BenchOptions, mode: UdpMode, number: int, log_dir: Path, progress: Progress
) -> ModeRun:
    """One run of ``mode``: its connect stage, then its dense stage, each on a fresh cluster."""
    run_dir = log_dir / f"{number}-{mode}"
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(replace(options, udp_mode=mode), progress, run_dir)
    connect = await runner.connect_stage(options.connect_bots)
    dense, dense_udp = await runner.measure(options.bots, None)
    return ModeRun(str(mode), number, connect, dense, dense_udp)


def _run_line(run: ModeRun) -> str:
    connect, dense = run.connect, run.dense
    return (
        f"run {run.number} {run.mode}: {connect.connected}/{connect.bots} connected, "
        f"p50 {num(connect.p50_s, 3)} s, p99 {num(connect.p99_s, 3)} s, "
        f"all {num(connect.total_s, 2)} s, UDP sockets/ports {_sockets(connect.servers_udp)}; "
        f"dense {num(dense.delivered_per_s)}/s delivered, "
        f"{num(sum(dense.server.drops.values()))} dropped by the server, "
        f"{num(dense.server.cpu_us_per_delivery, 1)} µs server CPU per delivery"
    )


def _finish(comparison: Comparison, options: BenchOptions, out: Console) -> int:
    comparison.finished_at = now_iso()
    comparison.loadavg_after = loadavg()
    comparison.summary = summarise_modes(comparison.runs, comparison.budget_percent)
    print_comparison(out, comparison)
    if options.json_path is not None:
        write_comparison(options.json_path, comparison)
        out.print(f"JSON written to {options.json_path}")
    return 0 if comparison.error is None else 1


def write_comparison(path: Path, comparison: Comparison) -> None:
    path.write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
