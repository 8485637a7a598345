"""What ``bench crowd`` produces: the values behind its tables and ``--json``, the
tables, and the sentences that say what limited the run.

Every dataclass is written to the JSON file as-is (``dataclasses.asdict``),
so field names and docstrings are its schema; ``None`` means not measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from webrtc_broker.bench.alternating import machine_line
from webrtc_broker.bench.report import num
from webrtc_broker.bench.results import LatencySummary, Provenance

SATURATED_PERCENT = 90.0
"""A process at this much of one core (or the machine at this share of all cores)
had no more to give: what it limited is the report's finding."""
LATE_START_S = 1.0
"""Connects starting this much after they were due mean the load generator fell behind."""
LOSS_PERCENT = 1.0
GB_KB = 1024 * 1024


@dataclass(frozen=True)
class StormResult:
    """The connect storm: every client connects, paced at ``--connect-rate``."""

    clients: int
    connected: int
    failures: int
    errors: dict[str, int]
    """Failed connects by kind (exception type; ``subscribe:`` when the session came up
    but its subscription was not confirmed)."""
    error_details: dict[str, str]
    """One message per failure kind (the first seen)."""
    seconds: float | None
    """From the first connect's start to the last one's end."""
    connects_per_s: float | None
    session_p50_s: float | None
    """Connect call to session established (coordinator, ICE, DTLS, SCTP, data channels,
    AUTH confirmed by a PING echo)."""
    session_p99_s: float | None
    session_max_s: float | None
    subscribed_p50_s: float | None
    """Connect call to the echo of the PING sent after SUBSCRIBE: the first round trip."""
    subscribed_p99_s: float | None
    lag_p99_s: float | None
    """How late connects started after they were due (the pacing falling behind)."""
    lag_max_s: float | None
    server_cpu_ms_per_connect: float | None
    coordinator_cpu_ms_per_connect: float | None
    machine_percent: float | None
    """The whole machine's busy time during the storm, in % of one core."""


@dataclass(frozen=True)
class Footprint:
    """A process's resident memory (VmRSS) before the storm and once every client is in."""

    rss_mb_before: float | None
    rss_mb_after: float | None
    kb_per_client: float | None


@dataclass(frozen=True)
class Descriptors:
    """The comm server's file descriptors and UDP sockets, from /proc."""

    fds_before: int | None
    fds_after: int | None
    fd_limit: int | None
    """Its soft RLIMIT_NOFILE ("Max open files" of /proc/PID/limits)."""
    udp_sockets_before: int | None
    udp_sockets_after: int | None
    udp_ports_after: int | None
    """Distinct local ports of those sockets (1 in single-port mode)."""


@dataclass(frozen=True)
class SteadyResult:
    """Every connected client publishing on its topic at ``rate`` for ``duration`` s."""

    duration: float
    rate: float
    published: int
    expected: int
    """Deliveries the window's publishes should make (each to every other topic member)."""
    arrived: int
    """Of those, the ones that arrived by ``late_after_s`` after the window (traffic goes on
    until then): a later one counts as lost."""
    late_after_s: float
    offered_per_s: float
    delivered_per_s: float
    """Messages received during the window, per second."""
    loss_percent: float | None
    latency_ms: LatencySummary
    server_cpu_percent: float | None
    server_us_per_client_s: float | None
    """Server CPU µs per connected client per second of the window, beyond its CPU with no
    client (``empty_server_cpu_percent``)."""
    server_us_per_delivery: float | None
    empty_server_cpu_percent: float | None
    """The server's CPU with no client yet (while the client workers start)."""
    idle_server_cpu_percent: float | None
    """The server's CPU with every client connected and silent (keepalives only)."""
    idle_server_us_per_client_s: float | None
    sessions_lost: int
    inbox_dropped: int
    skipped_publishes: int
    server_drops: dict[str, int]
    machine_percent: float | None


@dataclass(frozen=True)
class ProcessPhases:
    """One process's CPU (% of one core) in each phase, and its peak RSS."""

    role: str
    """``commserver``, ``coordinator``, ``worker`` or ``bench``."""
    name: str
    pid: int
    storm_cpu_percent: float | None
    idle_cpu_percent: float | None
    steady_cpu_percent: float | None
    rss_mb_max: float | None


@dataclass
class CrowdRun:
    udp_mode: str
    clients: int
    topic_size: int
    topics: int
    workers: int
    storm: StormResult | None = None
    steady: SteadyResult | None = None
    server: Footprint | None = None
    coordinator: Footprint | None = None
    descriptors: Descriptors | None = None
    server_sessions: dict[str, int] = field(default_factory=dict)
    """The server's own session counters at the end (``established:client``, ...)."""
    processes: list[ProcessPhases] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class CrowdReport(Provenance):
    loadavg_before: list[float]
    loadavg_after: list[float]
    options: dict[str, Any]
    runs: list[CrowdRun] = field(default_factory=list)


# -- what limited the run -------------------------------------------------------------


def _busy(
    processes: list[ProcessPhases], phase: Callable[[ProcessPhases], float | None], machine: float
) -> str:
    """``name N %`` for every process in ``phase``, busiest first, then the rest of the
    machine's busy time: other processes (other load on a shared machine)."""
    known = [(value, p.name) for p in processes if (value := phase(p)) is not None]
    ordered = sorted(known, key=lambda item: -item[0])
    other = max(0.0, machine - sum(value for value, _ in known))
    return ", ".join(
        [f"{name} {value:.0f} %" for value, name in ordered] + [f"other {other:.0f} %"]
    )


def _saturation(
    run: CrowdRun,
    phase_name: str,
    phase: Callable[[ProcessPhases], float | None],
    machine: float | None,
    cores: int,
) -> list[str]:
    found = []
    for process in run.processes:
        cpu = phase(process)
        if cpu is None or cpu < SATURATED_PERCENT:
            continue
        if process.role == "worker":
            found.append(
                f"{phase_name}: client worker {process.name} used {cpu:.0f} % of a core: the "
                "clients, not the server, were the bottleneck"
            )
        elif process.role in ("commserver", "coordinator"):
            found.append(f"{phase_name}: {process.name} used {cpu:.0f} % of a core: saturated")
    if machine is not None and machine >= SATURATED_PERCENT * cores:
        found.append(
            f"{phase_name}: the machine's {cores} cores were {machine:.0f} % busy "
            f"({_busy(run.processes, phase, machine)}): the processes competed for cores"
        )
    return found


def _detail(kind: str, detail: str) -> str:
    """`` (message)`` when the message says more than the kind."""
    return f" ({detail})" if detail and detail != kind else ""


def _storm_limits(run: CrowdRun, cores: int) -> list[str]:
    storm = run.storm
    if storm is None:
        return []
    found = []
    if storm.failures:
        kinds = ", ".join(
            f"{count} {kind}" + _detail(kind, storm.error_details.get(kind, ""))
            for kind, count in sorted(storm.errors.items(), key=lambda item: -item[1])
        )
        found.append(f"{storm.failures} of {storm.clients} clients did not connect: {kinds}")
    found += _saturation(run, "storm", lambda p: p.storm_cpu_percent, storm.machine_percent, cores)
    if storm.lag_max_s is not None and storm.lag_max_s >= LATE_START_S:
        found.append(
            f"storm: connects started up to {storm.lag_max_s:.1f} s after they were due "
            f"(p99 {num(storm.lag_p99_s, 1)} s): connects took so long (p99 "
            f"{num(storm.session_p99_s, 1)} s) that the ones under way filled the "
            "concurrency bound, and --connect-rate was not kept"
        )
    return found


def _steady_limits(run: CrowdRun, cores: int) -> list[str]:
    steady = run.steady
    if steady is None:
        return []
    found = _saturation(
        run, "steady", lambda p: p.steady_cpu_percent, steady.machine_percent, cores
    )
    if steady.loss_percent is not None and steady.loss_percent >= LOSS_PERCENT:
        drops = f"; the server dropped {steady.server_drops}" if steady.server_drops else ""
        found.append(
            f"steady: {steady.loss_percent:.1f} % of the deliveries did not arrive within "
            f"{steady.late_after_s:g} s of the window's end{drops}"
        )
    if steady.sessions_lost:
        found.append(f"steady: {steady.sessions_lost} sessions ended during traffic")
    if steady.skipped_publishes:
        found.append(
            f"steady: the clients skipped {steady.skipped_publishes} publishes (their worker "
            "fell behind its schedule)"
        )
    return found


def delivered_all(steady: SteadyResult) -> bool:
    """Whether the steady phase carried what it offered: no loss to speak of and no
    publish skipped by clients that fell behind."""
    loss = steady.loss_percent or 0.0
    return loss < LOSS_PERCENT and not steady.skipped_publishes


def _headroom(run: CrowdRun) -> list[str]:
    """Where the measured per-client costs would run out on one server."""
    found = []
    steady, server, fds = run.steady, run.server, run.descriptors
    if steady is not None and steady.server_us_per_client_s:
        text = (
            f"server CPU: {steady.server_us_per_client_s:.0f} µs per client-second at "
            f"{steady.rate:g} Hz in topics of {run.topic_size}: one core carries about "
            f"{1e6 / steady.server_us_per_client_s:,.0f} such clients"
        )
        if not delivered_all(steady):
            text += (
                " (an overestimate: the server did not get the whole offered load "
                "through, so its CPU per client is understated)"
            )
        found.append(text)
    if server is not None and server.kb_per_client:
        found.append(
            f"server memory: {server.kb_per_client:.0f} KB per client, about "
            f"{GB_KB / server.kb_per_client:,.0f} clients per GB"
        )
    if fds is not None and None not in (fds.fds_before, fds.fds_after, fds.fd_limit):
        assert fds.fds_before is not None and fds.fds_after is not None
        assert fds.fd_limit is not None
        connected = run.storm.connected if run.storm is not None else 0
        per_client = (fds.fds_after - fds.fds_before) / connected if connected else 0.0
        text = (
            f"server descriptors: {fds.fds_after:,} of its limit {fds.fd_limit:,} "
            f"({per_client:.1f} per client, {num(fds.udp_sockets_after)} UDP sockets on "
            f"{num(fds.udp_ports_after)} ports)"
        )
        if per_client > 0:
            reach = (fds.fd_limit - fds.fds_before) / per_client
            text += f": the limit is reached at about {reach:,.0f} clients"
        found.append(text)
    return found


def limits(run: CrowdRun, cores: int) -> list[str]:
    """What limited ``run`` (failures, saturated processes, the pacing falling behind,
    loss), then how far the server's measured per-client costs would go."""
    found = _storm_limits(run, cores) + _steady_limits(run, cores)
    if not found and run.storm is not None and run.storm.connected == run.clients:
        found.append(
            "nothing saturated: every client connected and no process reached "
            f"{SATURATED_PERCENT:.0f} % of a core"
        )
    return found + _headroom(run)


# -- tables ---------------------------------------------------------------------------


Row = tuple[str, Callable[[CrowdRun], str]]


def _storm_rows() -> list[Row]:
    def storm(run: CrowdRun) -> StormResult:
        assert run.storm is not None
        return run.storm

    return [
        ("clients connected", lambda r: f"{storm(r).connected:,} of {storm(r).clients:,}"),
        ("connect failures", lambda r: f"{storm(r).failures:,}"),
        ("storm duration", lambda r: num(storm(r).seconds, 1, " s")),
        ("connects/s achieved", lambda r: num(storm(r).connects_per_s, 1)),
        (
            "session established p50 / p99",
            lambda r: f"{num(storm(r).session_p50_s, 2)} / {num(storm(r).session_p99_s, 2)} s",
        ),
        (
            "first round trip p50 / p99",
            lambda r: (
                f"{num(storm(r).subscribed_p50_s, 2)} / {num(storm(r).subscribed_p99_s, 2)} s"
            ),
        ),
        (
            "start lag p99 / max",
            lambda r: f"{num(storm(r).lag_p99_s, 2)} / {num(storm(r).lag_max_s, 2)} s",
        ),
        ("server CPU per connect", lambda r: num(storm(r).server_cpu_ms_per_connect, 1, " ms")),
        (
            "coordinator CPU per connect",
            lambda r: num(storm(r).coordinator_cpu_ms_per_connect, 1, " ms"),
        ),
    ]


def _footprint_rows(label: str, footprint: Callable[[CrowdRun], Footprint | None]) -> list[Row]:
    def text(run: CrowdRun) -> str:
        found = footprint(run)
        if found is None:
            return "-"
        return f"{num(found.rss_mb_before, 1)} -> {num(found.rss_mb_after, 1)} MB"

    def per_client(run: CrowdRun) -> str:
        found = footprint(run)
        return "-" if found is None else num(found.kb_per_client, 0, " KB")

    return [
        (f"{label} RSS before -> after storm", text),
        (f"{label} memory per client", per_client),
    ]


def _descriptor_rows() -> list[Row]:
    def fds(run: CrowdRun) -> Descriptors:
        return run.descriptors or Descriptors(None, None, None, None, None, None)

    return [
        (
            "server descriptors before -> after (limit)",
            lambda r: (
                f"{num(fds(r).fds_before)} -> {num(fds(r).fds_after)} ({num(fds(r).fd_limit)})"
            ),
        ),
        (
            "server UDP sockets before -> after (ports)",
            lambda r: (
                f"{num(fds(r).udp_sockets_before)} -> {num(fds(r).udp_sockets_after)} "
                f"({num(fds(r).udp_ports_after)})"
            ),
        ),
    ]


def _steady_rows() -> list[Row]:
    def steady(run: CrowdRun) -> SteadyResult:
        assert run.steady is not None
        return run.steady

    return [
        ("offered deliveries/s", lambda r: num(steady(r).offered_per_s)),
        ("delivered/s", lambda r: num(steady(r).delivered_per_s)),
        ("loss", lambda r: num(steady(r).loss_percent, 2, " %")),
        (
            "latency p50 / p99",
            lambda r: f"{num(steady(r).latency_ms.p50, 1)} / {num(steady(r).latency_ms.p99, 1)} ms",
        ),
        ("server CPU, steady", lambda r: num(steady(r).server_cpu_percent, 0, " %")),
        (
            "server CPU per client-second",
            lambda r: num(steady(r).server_us_per_client_s, 1, " µs"),
        ),
        ("server CPU per delivery", lambda r: num(steady(r).server_us_per_delivery, 1, " µs")),
        ("server CPU with no client", lambda r: num(steady(r).empty_server_cpu_percent, 1, " %")),
        (
            "server CPU idle (all connected)",
            lambda r: (
                f"{num(steady(r).idle_server_cpu_percent, 1, ' %')} = "
                f"{num(steady(r).idle_server_us_per_client_s, 1, ' µs')}/client-s"
            ),
        ),
        ("sessions lost", lambda r: num(steady(r).sessions_lost)),
    ]


def _cell(run: CrowdRun, value: Callable[[CrowdRun], str], needs: object) -> str:
    return "-" if needs is None else value(run)


def crowd_table(runs: list[CrowdRun], options: dict[str, Any]) -> Table:
    """Every figure of the runs, a column per run (UDP mode)."""
    first = runs[0]
    table = Table(
        title=(
            f"{first.clients:,} clients on one comm server: topics of {first.topic_size}, "
            f"{options['rate']:g} Hz x {options['size']} B, connects at "
            f"{options['connect_rate']:g}/s (at most {options['connect_concurrency']} at once "
            f"per worker), {first.workers} client worker(s), {options['duration']:g} s steady, "
            f"a client PINGs after {options['keepalive_interval']:g} s of silence"
        )
    )
    table.add_column("metric")
    for run in runs:
        table.add_column(f"UDP {run.udp_mode}", justify="right")
    sections: list[tuple[list[Row], Callable[[CrowdRun], object]]] = [
        (_storm_rows(), lambda r: r.storm),
        (_footprint_rows("server", lambda r: r.server), lambda r: r.server),
        (_footprint_rows("coordinator", lambda r: r.coordinator), lambda r: r.coordinator),
        (_descriptor_rows(), lambda r: r.descriptors),
        (_steady_rows(), lambda r: r.steady),
    ]
    for rows, needs in sections:
        for name, value in rows:
            table.add_row(name, *(_cell(run, value, needs(run)) for run in runs))
    return table


def process_table(run: CrowdRun) -> Table:
    table = Table(title=f"CPU by process, % of one core (UDP {run.udp_mode})")
    for heading in ("process", "pid", "storm", "idle", "steady", "RSS MB (peak)"):
        table.add_column(heading, justify="left" if heading == "process" else "right")
    for process in run.processes:
        table.add_row(
            process.name,
            str(process.pid),
            num(process.storm_cpu_percent),
            num(process.idle_cpu_percent),
            num(process.steady_cpu_percent),
            num(process.rss_mb_max, 1),
        )
    return table


def print_crowd(console: Console, report: CrowdReport) -> None:
    console.print(machine_line(report.machine, report.loadavg_before, report.loadavg_after))
    if report.runs:
        console.print(crowd_table(report.runs, report.options))
    for run in report.runs:
        if run.processes:
            console.print(process_table(run))
        console.print(f"What limits it (UDP {run.udp_mode}):")
        for line in run.limits:
            console.print(f"  - {line}")
        if run.error:
            console.print(f"[red]error:[/red] {run.error}")


def write_crowd(path: Path, report: CrowdReport) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
