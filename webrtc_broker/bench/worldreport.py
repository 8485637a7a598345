"""What the world scenario produces (``--json``) and its rich tables.

The dataclasses are written as-is (``dataclasses.asdict``): their fields and
docstrings are the JSON schema, beside the dense scenario's
(:mod:`webrtc_broker.bench.results`, whose summaries they reuse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from webrtc_broker.bench.report import baseline_table, batching_text, cpu_table, num
from webrtc_broker.bench.results import (
    Baseline,
    ConnectSummary,
    CpuShare,
    LatencySummary,
    Machine,
    ProcessUsage,
    ReportHead,
    ServerSummary,
)
from webrtc_broker.bench.worldgrid import GUARD

WORLD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class KindSummary:
    """One kind of traffic: positions (unreliable) or chat (reliable)."""

    what: str
    reliable: bool
    rate: float
    """Messages per second per avatar."""
    offered_per_s: float
    """Connected avatars x rate x the grid's fan-out: deliveries asked of the broker."""
    published_per_s: float
    """Publishes the avatars actually made in the window, per second."""
    delivered_per_s: float
    """Messages received in the window (arrival time), per second."""
    expected: int
    """Deliveries of the window's publishes the expectation rule requires."""
    arrived: int
    """Of those, the ones that arrived before traffic ended."""
    transitional: int
    """Arrivals of the window's publishes that the rule did not require (the
    receiver's subscription to the topic was changing)."""
    loss_percent: float | None
    """100 * (1 - arrived / expected)."""
    expected_per_message: float | None
    """expected / published: the fan-out by the rule."""
    measured_per_message: float | None
    """(arrived + transitional) / published: the fan-out the receivers saw."""
    skipped: int
    """Publishes the workers skipped in the window (behind schedule)."""
    late: int
    """Of ``arrived``, those that came after traffic ended (chat, during its drain)."""
    latency_ms: LatencySummary


@dataclass(frozen=True)
class WorkerLoad:
    name: str
    pid: int
    avatars: int
    """Avatars it connected at the start."""
    cpu_percent: float | None
    """Average over the window, in % of one core."""
    saturated: bool
    """At or above the saturation threshold: its avatars' figures are capped by it."""
    skipped: int
    """Publishes it skipped in the window, being late."""
    behind: bool
    """It skipped more than 1 % of its publishes: it could not keep up (CPU-starved or
    saturated), whatever its CPU share says."""
    reported: bool = True
    """It reported its results in time (an overloaded machine may starve one)."""


@dataclass
class WorldRun:
    avatars: int
    avatars_connected: int
    """Connected at the start of traffic."""
    grid: str
    """COLUMNSxROWS."""
    servers: int
    workers: int
    speed: float
    """Cells per second."""
    size: int
    batch_window: float | None
    warmup: float
    duration: float
    grid_fanout: float
    """Receivers per message if the connected avatars stood uniformly on the grid."""
    position: KindSummary
    chat: KindSummary
    delivered_per_s: float
    """Both kinds together."""
    ceiling_ratio: float | None
    """delivered_per_s / the raw aiortc pair's messages/s."""
    subscription_changes_per_s: float
    subscription_change_ms: LatencySummary
    """From sending a subscription replacement to the server's confirmation."""
    subscription_change_failures: int
    connect_s: ConnectSummary
    """The initial connects (a bounded storm before traffic)."""
    join_connect_s: ConnectSummary
    """Connects of avatars joining during traffic (under load)."""
    joins: int
    leaves: int
    churn_seconds: float
    """Seconds of traffic during which avatars came and went."""
    sessions_lost: int
    lost_because: dict[str, int]
    """Why the lost sessions ended, as their clients tell it, by reason."""
    closed_by_servers: dict[str, int]
    """Sessions the comm servers ended themselves, by reason (``slow_peer``, ``peer_silent``,
    ...): why sessions were lost, seen from the servers."""
    inbox_dropped: int
    server: ServerSummary
    cpu: CpuShare
    worker_loads: list[WorkerLoad]
    processes: list[ProcessUsage]
    bots_limited: bool
    """The load generator, not the broker, capped this run."""
    warnings: list[str] = field(default_factory=list)


@dataclass
class WorldReport(ReportHead):
    run: WorldRun | None = None
    error: str | None = None
    scenario: str = "world"
    schema_version: int = WORLD_SCHEMA_VERSION


def lost_sessions_text(run: WorldRun) -> str:
    """Why sessions were lost, from both ends: what the clients said, and what the
    servers closed themselves (none: the clients or the network ended them)."""

    def counts(reasons: dict[str, int]) -> str:
        return ", ".join(f"{reason} ({n:,})" for reason, n in reasons.items())

    servers = counts(run.closed_by_servers) or "none"
    return f"clients: {counts(run.lost_because) or '-'}; closed by the servers: {servers}"


def machine_text(machine: Machine) -> str:
    """The line that says where the numbers come from."""
    return (
        f"machine: {machine.cpus} cores, {machine.platform}, Python {machine.python}, "
        f"aiortc {machine.aiortc}, load average {machine.loadavg_1m:.2f} at the start"
    )


def world_table(run: WorldRun, batch_mode: str | None) -> Table:
    table = Table(
        title=(
            f"Virtual world: {run.avatars} avatars on {run.grid} cells, {run.speed:g} cells/s, "
            f"{run.size} B, {run.servers} server(s), "
            f"{batching_text(run.batch_window, batch_mode)}, {run.workers} worker(s), "
            f"{run.duration:g} s"
        )
    )
    table.add_column("metric")
    table.add_column(f"positions ({run.position.rate:g} Hz, unreliable)", justify="right")
    table.add_column(f"chat ({run.chat.rate:g} Hz, reliable)", justify="right")
    position, chat = run.position, run.chat

    def both(name: str, value: Any) -> None:
        table.add_row(name, value(position), value(chat))

    both("offered deliveries/s", lambda k: num(k.offered_per_s))
    both("published/s", lambda k: num(k.published_per_s, 1))
    both("delivered/s", lambda k: num(k.delivered_per_s))
    both("loss (expected by the rule)", lambda k: num(k.loss_percent, 2, " %"))
    both("arrived / expected", lambda k: f"{k.arrived:,} / {k.expected:,}")
    both("arrivals while subscriptions changed", lambda k: f"{k.transitional:,}")
    both(
        "deliveries per message: measured / rule",
        lambda k: f"{num(k.measured_per_message, 2)} / {num(k.expected_per_message, 2)}",
    )
    both("latency p50", lambda k: num(k.latency_ms.p50, 1, " ms"))
    both("latency p99", lambda k: num(k.latency_ms.p99, 1, " ms"))
    both("latency samples", lambda k: f"{k.latency_ms.samples:,}")
    both("publishes skipped (workers late)", lambda k: f"{k.skipped:,}")
    both("arrived after traffic ended", lambda k: f"{k.late:,}")
    return table


def totals_table(run: WorldRun, baseline: Baseline | None) -> Table:
    table = Table(title="Virtual world: the whole run")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    server, change = run.server, run.subscription_change_ms
    ratio = "" if run.ceiling_ratio is None else f"{run.ceiling_ratio:.2f}x ceiling"
    rows = [
        ("delivered/s, both kinds", num(run.delivered_per_s), ratio),
        (
            "grid fan-out (uniform avatars)",
            num(run.grid_fanout, 2),
            f"{run.avatars_connected} avatars on {run.grid}",
        ),
        (
            "subscription changes/s",
            num(run.subscription_changes_per_s, 1),
            f"confirmed p50 {num(change.p50, 1)} / p99 {num(change.p99, 1)} ms, "
            f"{run.subscription_change_failures} failed",
        ),
        (
            "joins / leaves",
            f"{run.joins} / {run.leaves}",
            f"over {run.churn_seconds:g} s of traffic, {run.join_connect_s.failures} joins failed",
        ),
        (
            "connect p50 / p99: start / under load",
            f"{num(run.connect_s.p50, 2)} / {num(run.connect_s.p99, 2)} s",
            f"{num(run.join_connect_s.p50, 2)} / {num(run.join_connect_s.p99, 2)} s under load",
        ),
        ("comm server CPU", num(server.cpu_percent, 0, " %"), "of one core, all servers"),
        (
            "server CPU per delivery",
            num(server.cpu_us_per_delivery, 1, " µs"),
            f"bot workers {num(run.cpu.workers_us_per_delivery, 1, ' µs')}",
        ),
        ("server deliveries/s", num(server.deliveries_per_s), "server's own counter"),
        ("comm server RSS", num(server.rss_mb_max, 1, " MB"), "peak, all servers"),
        ("sessions lost", str(run.sessions_lost), f"inboxes dropped {run.inbox_dropped:,}"),
    ]
    if run.sessions_lost:
        rows.append(("why sessions were lost", "", lost_sessions_text(run)))
    if server.drops:
        rows.append(("server drops", num(sum(server.drops.values())), str(server.drops)))
    for name, value, note in rows:
        table.add_row(name, value, note)
    return table


def workers_table(run: WorldRun) -> Table:
    table = Table(title="Bot workers (a worker near 100 % caps the figures of its avatars)")
    table.add_column("worker")
    table.add_column("pid", justify="right")
    table.add_column("avatars", justify="right")
    table.add_column("CPU % of a core", justify="right")
    table.add_column("publishes skipped", justify="right")
    table.add_column("")
    for load in run.worker_loads:
        flags = (
            ("saturated", load.saturated),
            ("behind", load.behind),
            ("did not report", not load.reported),
        )
        state = [name for name, flag in flags if flag]
        table.add_row(
            load.name,
            str(load.pid),
            str(load.avatars),
            num(load.cpu_percent, 0),
            f"{load.skipped:,}",
            "[red]" + ", ".join(state) + "[/red]" if state else "",
        )
    return table


def chat_loss_is_a_bug(run: WorldRun) -> bool:
    """Whether missing reliable chat means the broker lost it. A bot worker behind
    schedule may not have read what waits in its sockets, and a session that died
    takes what was bound to it along: then missing chat proves nothing."""
    return not run.bots_limited and not run.sessions_lost and not beyond_guard(run)


def beyond_guard(run: WorldRun) -> bool:
    """Whether messages took longer than the rule's margin (:data:`GUARD`): then a
    receiver's unsubscription can overtake a message sent more than the margin before
    it, which the rule still expected, so loss is overstated."""
    worst = max(
        (k.latency_ms.p99 for k in (run.position, run.chat) if k.latency_ms.p99 is not None),
        default=0.0,
    )
    return worst > GUARD * 1000.0


def verdict(run: WorldRun) -> str:
    """One sentence: who limited the run, and whether reliable chat lost anything."""
    parts = []
    if run.bots_limited:
        parts.append(
            "[yellow]the bots were the limit[/yellow]: a saturated worker or skipped "
            "publishes show the load generator could not keep up, so the broker's figures "
            "are a lower bound"
        )
    else:
        parts.append("the bots kept up (no saturated worker, no skipped publishes)")
    missing = run.chat.expected - run.chat.arrived
    if missing > 0 and chat_loss_is_a_bug(run):
        parts.append(f"[red]RELIABLE CHAT LOST {missing} message(s): a bug[/red]")
    elif missing > 0:
        parts.append(
            f"[yellow]{missing} reliable chat message(s) had not arrived when the bench "
            "stopped waiting[/yellow]; this run cannot tell late from lost (the receivers "
            "were behind, sessions died or latency exceeded the rule's margin)"
        )
    else:
        parts.append("reliable chat lost nothing")
    return "; ".join(parts)


def print_world_report(console: Console, report: WorldReport) -> None:
    console.print(machine_text(report.machine))
    if report.baseline is not None:
        console.print(baseline_table(report.baseline))
    run = report.run
    if run is not None:
        batch_mode = report.options.get("batch_mode")
        console.print(world_table(run, None if batch_mode is None else str(batch_mode)))
        console.print(totals_table(run, report.baseline))
        console.print(workers_table(run))
        console.print(cpu_table(run.cpu, run.processes))
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        console.print(verdict(run))
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")
