"""The orchestration of ``bench crowd`` (see :mod:`webrtc_broker.bench.crowd`): one run
per UDP mode, each on its own cluster, phase by phase, and the report.

Kept apart from the command so that ``webrtc-broker --help`` does not import
the bench, the SDK and aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from rich.console import Console
from rich.progress import Progress, TaskID

from webrtc_broker.bench.alternating import loadavg
from webrtc_broker.bench.bots import CLOSE_TIMEOUT, Schedule, WorkerResult
from webrtc_broker.bench.bots import WorkerPlan as TopicPlan
from webrtc_broker.bench.command import (
    cancel_on_sigterm,
    machine_info,
    now_iso,
    progress_display,
    stdout_console,
)
from webrtc_broker.bench.crowd import CrowdOptions
from webrtc_broker.bench.crowdclients import CrowdPlan, merge_results
from webrtc_broker.bench.crowdreport import (
    CrowdReport,
    CrowdRun,
    Descriptors,
    Footprint,
    ProcessPhases,
    SteadyResult,
    StormResult,
    limits,
    print_crowd,
    write_crowd,
)
from webrtc_broker.bench.latency import percentile
from webrtc_broker.bench.localcluster import ClusterError, ClusterHandle, local_cluster
from webrtc_broker.bench.options import UdpMode
from webrtc_broker.bench.results import ConnectSummary, LatencySummary
from webrtc_broker.bench.runner import (
    LATE_AFTER,
    LEAD_IN,
    SAMPLE_EVERY,
    environment,
    server_counters,
    server_sessions,
)
from webrtc_broker.bench.sampling import MB, Usage, Watched, WindowSampler, rss_bytes, udp_ports
from webrtc_broker.bench.workers import (
    ConnectLog,
    Worker,
    WorkerError,
    collect_events,
    start_traffic,
    start_workers,
    stop_workers,
    wait_ready,
)

CLIENTS_MODULE = "webrtc_broker.bench.crowdclients"
TOPIC_PREFIX = "crowd/"
UP_TIMEOUT = 60.0
"""Seconds a client worker has to start (import aiortc) under a loaded machine."""
COORDINATOR_CAP = "WEBRTC_BROKER_COORDINATOR_MAX_CLIENTS_PER_ADDRESS"
"""The coordinator's cap on client WebSockets from one address: every client of the
bench comes from 127.0.0.1 and holds its coordinator WebSocket as long as its session,
so the cap (1,000 by default) would measure the bench's single address, not the server."""

T = TypeVar("T")


class CrowdError(Exception):
    """The run could not be completed."""


# -- pure parts -----------------------------------------------------------------------


def topic_of(index: int, topic_size: int) -> str:
    return f"{TOPIC_PREFIX}{index // topic_size}"


def assign(clients: int, topic_size: int, workers: int) -> list[list[tuple[int, str]]]:
    """Each worker's (client index, topic): client ``i`` is in topic ``i // topic_size``,
    topic ``t`` in worker ``t mod workers`` (every member of a topic in one worker)."""
    shares: list[list[tuple[int, str]]] = [[] for _ in range(workers)]
    for index in range(clients):
        shares[(index // topic_size) % workers].append((index, topic_of(index, topic_size)))
    return shares


def storm_deadline(start: float, clients: int, connect_rate: float, timeout: float) -> float:
    """When connects not yet started give up: the last one's due time plus ``timeout``."""
    return start + (clients - 1) / connect_rate + timeout


def per_client(total: float | None, clients: int) -> float | None:
    return None if total is None or clients <= 0 else total / clients


@dataclass
class CrowdConnectLog(ConnectLog):
    """The storm's outcomes: the dense bench's connect log plus what the crowd adds."""

    subscribed: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    """The first message of each failure kind."""

    def add(self, event: dict[str, Any]) -> None:
        super().add(event)
        self.lags.append(float(event.get("lag", 0.0)))
        if event.get("ok"):
            self.subscribed.append(float(event["subscribed"]))
        else:
            self.details.setdefault(str(event.get("error")), str(event.get("detail", "")))


def storm_result(
    *,
    connects: CrowdConnectLog,
    clients: int,
    connected: int,
    usage: Phase,
) -> StormResult:
    def ms_per_connect(role: str) -> float | None:
        seconds = usage.cpu_seconds(role)
        return None if seconds is None or not connected else seconds * 1000.0 / connected

    total = connects.total_seconds
    session = ConnectSummary.of(connects.seconds, dict(connects.errors))
    return StormResult(
        clients=clients,
        connected=connected,
        failures=session.failures,
        errors=session.errors,
        error_details=dict(connects.details),
        seconds=total,
        connects_per_s=connected / total if total else None,
        session_p50_s=session.p50,
        session_p99_s=session.p99,
        session_max_s=session.max,
        subscribed_p50_s=percentile(connects.subscribed, 0.50),
        subscribed_p99_s=percentile(connects.subscribed, 0.99),
        lag_p99_s=percentile(connects.lags, 0.99),
        lag_max_s=max(connects.lags, default=None),
        server_cpu_ms_per_connect=ms_per_connect("commserver"),
        coordinator_cpu_ms_per_connect=ms_per_connect("coordinator"),
        machine_percent=usage.machine,
    )


def footprint(before: float | None, after: float | None, clients: int) -> Footprint:
    grown = None if before is None or after is None else (after - before) * 1024.0
    return Footprint(before, after, per_client(grown, clients))


def steady_result(
    *,
    options: CrowdOptions,
    connected: int,
    results: list[tuple[WorkerResult, int]],
    phases: tuple[Phase, Phase, Phase],
    server_drops: dict[str, int],
) -> SteadyResult:
    """``phases``: with no client, idle with all connected, steady traffic."""
    merged = merge_results(result for result, _ in results)
    expected = sum(count for _, count in results)
    duration = options.duration
    empty_cpu, idle_cpu, server_cpu = (p.cpu_percent("commserver") for p in phases)

    def us_per_client_s(cpu: float | None) -> float | None:
        """µs of server CPU per client-second beyond what the server spends with none."""
        if cpu is None:
            return None
        return per_client(max(0.0, cpu - (empty_cpu or 0.0)) / 100.0 * 1e6, connected)

    return SteadyResult(
        duration=duration,
        rate=options.rate,
        published=merged.published,
        expected=expected,
        arrived=merged.arrived,
        late_after_s=LATE_AFTER,
        offered_per_s=expected / duration,
        delivered_per_s=merged.received / duration,
        loss_percent=100.0 * (1.0 - merged.arrived / expected) if expected else None,
        latency_ms=LatencySummary.of(merged.latency),
        server_cpu_percent=server_cpu,
        server_us_per_client_s=us_per_client_s(server_cpu),
        server_us_per_delivery=(
            None
            if server_cpu is None or not merged.received
            else server_cpu / 100.0 * duration / merged.received * 1e6
        ),
        empty_server_cpu_percent=empty_cpu,
        idle_server_cpu_percent=idle_cpu,
        idle_server_us_per_client_s=us_per_client_s(idle_cpu),
        sessions_lost=merged.sessions_lost,
        inbox_dropped=merged.inbox_dropped,
        skipped_publishes=merged.skipped,
        server_drops=server_drops,
        machine_percent=phases[2].machine,
    )


# -- /proc ----------------------------------------------------------------------------


def cluster_watched(cluster: ClusterHandle) -> list[Watched]:
    """The server and the coordinator, as the samplers watch them."""
    watched = []
    if cluster.servers[0].pid is not None:
        watched.append(Watched("commserver", "comm server", cluster.servers[0].pid))
    if cluster.coordinator_pid is not None:
        watched.append(Watched("coordinator", "coordinator", cluster.coordinator_pid))
    return watched


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_limit(pid: int) -> int | None:
    """The soft limit on ``pid``'s open files; ``None`` if unreadable or unlimited."""
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return int(soft) if soft.isdigit() else None
    return None


@dataclass(frozen=True)
class Snapshot:
    """What /proc says of the server and the coordinator at one moment."""

    server_rss_mb: float | None
    coordinator_rss_mb: float | None
    fds: int | None
    udp: list[int] | None

    @classmethod
    def take(cls, server: int, coordinator: int | None) -> Snapshot:
        def mb(pid: int | None) -> float | None:
            size = None if pid is None else rss_bytes(pid)
            return None if size is None else size / MB

        return cls(mb(server), mb(coordinator), open_fds(server), udp_ports(server))


@dataclass
class Phase:
    """Every watched process's CPU and RSS over one phase."""

    usages: list[Usage]
    machine: float | None
    seconds: float

    def cpu_percent(self, role: str) -> float | None:
        known = [u.cpu_percent for u in self.usages if u.watched.role == role]
        values = [value for value in known if value is not None]
        return sum(values) if values else None

    def cpu_seconds(self, role: str) -> float | None:
        percent = self.cpu_percent(role)
        return None if percent is None else percent / 100.0 * self.seconds

    def of(self, pid: int) -> Usage | None:
        return next((u for u in self.usages if u.watched.pid == pid), None)


async def sampled(watched: list[Watched], work: Awaitable[T]) -> tuple[T, Phase]:
    """Await ``work`` while sampling ``watched``: its result, and the phase's usage."""
    sampler = WindowSampler(watched)
    sampler.start()
    started = time.monotonic()
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=SAMPLE_EVERY)
            sampler.sample()
        result = task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    usages, machine = sampler.stop()
    return result, Phase(usages, machine, time.monotonic() - started)


def phases_by_process(
    watched: list[Watched], storm: Phase, idle: Phase | None, steady: Phase | None
) -> list[ProcessPhases]:
    found = []
    for process in watched:
        usages = [p.of(process.pid) for p in (storm, idle, steady) if p is not None]
        peaks = [u.rss_mb_max for u in usages if u is not None and u.rss_mb_max is not None]

        def cpu(phase: Phase | None, pid: int = process.pid) -> float | None:
            usage = None if phase is None else phase.of(pid)
            return None if usage is None else usage.cpu_percent

        found.append(
            ProcessPhases(
                process.role,
                process.name,
                process.pid,
                cpu(storm),
                cpu(idle),
                cpu(steady),
                max(peaks, default=None),
            )
        )
    return found


# -- one run --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def crowd_cluster(
    options: CrowdOptions, mode: UdpMode, log: Path
) -> AsyncIterator[ClusterHandle]:
    with environment({COORDINATOR_CAP: "0"}):
        async with local_cluster(
            1, options.batch_window, log, mode, peers=options.clients
        ) as cluster:
            yield cluster


async def start_clients(
    cluster: ClusterHandle, options: CrowdOptions, log: IO[bytes], workers: list[Worker]
) -> None:
    """Start the client workers into ``workers`` (so that whoever passed it stops them
    should they not come up) and wait until each one reads its commands."""
    common = TopicPlan(
        coordinator_url=cluster.coordinator_url,
        topic="",
        bots=[],
        total_bots=options.clients,
        rate=options.rate,
        size=options.size,
        reliable=options.reliable,
        connect_concurrency=options.connect_concurrency,
        connect_timeout=options.connect_timeout,
    )
    shares = assign(options.clients, options.topic_size, options.worker_count)
    server = cluster.servers[0].alias
    plans = [CrowdPlan(share, server, options.keepalive_interval, common) for share in shares]
    workers += await start_workers(plans, log, CLIENTS_MODULE)
    try:
        async with asyncio.timeout(UP_TIMEOUT):
            for worker in workers:
                while (await worker.event())["event"] != "up":
                    pass
    except TimeoutError as exc:
        raise CrowdError(f"the client workers did not start within {UP_TIMEOUT:.0f} s") from exc


def crowd_result(event: dict[str, Any]) -> tuple[WorkerResult, int]:
    """A worker's steady-phase result and the deliveries it expected."""
    expected = int(event.pop("expected"))
    return WorkerResult.from_json(event), expected


@dataclass(frozen=True)
class ProgressLine:
    """One run's line of the progress display."""

    progress: Progress
    task: TaskID
    label: str

    def show(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """``text``, with a bar of ``done`` clients of ``total`` when given."""
        self.progress.update(
            self.task,
            description=f"{self.label}: {text}",
            completed=done or 0,
            total=total,
            unit=" clients",
        )


class CrowdRunner:
    """One run of one UDP mode on its own cluster, filling in a :class:`CrowdRun`."""

    def __init__(self, options: CrowdOptions, run: CrowdRun, line: ProgressLine) -> None:
        self.options = options
        self.run = run
        self.show = line.show

    async def measure(self, log_dir: Path) -> None:
        log = log_dir / f"crowd-{self.run.udp_mode}.log"
        self.show("starting the cluster")
        async with crowd_cluster(self.options, UdpMode(self.run.udp_mode), log) as cluster:
            with log.open("ab") as output:
                workers: list[Worker] = []
                finished = False
                try:
                    # The server's CPU with no client yet: what the per-client costs exclude.
                    _, empty = await sampled(
                        cluster_watched(cluster),
                        start_clients(cluster, self.options, output, workers),
                    )
                    await self._phases(cluster, workers, empty)
                    finished = True
                finally:
                    self.show("stopping the clients")
                    await stop_workers(workers, graceful=finished)

    async def _phases(self, cluster: ClusterHandle, workers: list[Worker], empty: Phase) -> None:
        options, run = self.options, self.run
        server_pid = cluster.servers[0].pid
        if server_pid is None:
            raise CrowdError("the comm server's process is not known")
        coordinator_pid = cluster.coordinator_pid
        watched = cluster_watched(cluster)
        watched += [Watched("worker", f"worker-{w.index + 1}", w.process.pid) for w in workers]
        watched.append(Watched("bench", "bench", os.getpid()))

        before = Snapshot.take(server_pid, coordinator_pid)
        connects = CrowdConnectLog()
        _, storm = await sampled(watched, self._storm(workers, connects))
        connected = sum(worker.connected for worker in workers)
        run.storm = storm_result(
            connects=connects, clients=options.clients, connected=connected, usage=storm
        )
        run.processes = phases_by_process(watched, storm, None, None)
        if connected < 2:
            raise CrowdError(f"only {connected} of {options.clients} clients connected")

        self.show(f"idle {options.idle:g} s, {connected:,} connected")
        _, idle = await sampled(watched, asyncio.sleep(options.idle))
        after = Snapshot.take(server_pid, coordinator_pid)
        run.server = footprint(before.server_rss_mb, after.server_rss_mb, connected)
        run.coordinator = footprint(before.coordinator_rss_mb, after.coordinator_rss_mb, connected)
        run.descriptors = Descriptors(
            before.fds,
            after.fds,
            fd_limit(server_pid),
            None if before.udp is None else len(before.udp),
            None if after.udp is None else len(after.udp),
            None if after.udp is None else len(set(after.udp)),
        )
        run.processes = phases_by_process(watched, storm, idle, None)

        results, steady, drops = await self._steady(cluster, workers, watched)
        run.steady = steady_result(
            options=options,
            connected=connected,
            results=results,
            phases=(empty, idle, steady),
            server_drops=drops,
        )
        run.processes = phases_by_process(watched, storm, idle, steady)
        run.server_sessions = await server_sessions(cluster)

    async def _storm(self, workers: list[Worker], connects: CrowdConnectLog) -> None:
        options = self.options
        start = time.time() + LEAD_IN
        deadline = storm_deadline(
            start, options.clients, options.connect_rate, options.connect_timeout
        )
        command = {"start": start, "connect_rate": options.connect_rate, "deadline": deadline}
        await asyncio.gather(*(worker.send(command) for worker in workers))
        self.show("connecting", 0, options.clients)
        # A connect started by the deadline has its timeout to connect and one to subscribe.
        budget = deadline - time.time() + 2 * options.connect_timeout + 10.0
        try:
            async with asyncio.timeout(budget):
                await wait_ready(
                    workers,
                    connects,
                    lambda: self.show("connecting", connects.done, options.clients),
                )
        except TimeoutError as exc:
            raise CrowdError(f"clients still connecting after {budget:.0f} s") from exc

    async def _steady(
        self, cluster: ClusterHandle, workers: list[Worker], watched: list[Watched]
    ) -> tuple[list[tuple[WorkerResult, int]], Phase, dict[str, int]]:
        options = self.options
        start = time.time() + LEAD_IN
        window_end = start + options.warmup + options.duration
        schedule = Schedule(start, start + options.warmup, window_end, window_end + LATE_AFTER)
        await start_traffic(workers, schedule)
        self.show(f"steady: warm-up {options.warmup:g} s")
        await asyncio.sleep(max(0.0, schedule.window_start - time.time()))
        self.show(f"steady: measuring {options.duration:g} s")
        counters = await server_counters(cluster)
        _, steady = await sampled(
            watched, asyncio.sleep(max(0.0, schedule.window_end - time.time()))
        )
        drops = (await server_counters(cluster))["drops"] - counters["drops"]
        self.show("steady: late arrivals, results")
        try:
            async with asyncio.timeout(LATE_AFTER + CLOSE_TIMEOUT + 20):
                results = await collect_events(workers, crowd_result)
        except TimeoutError as exc:
            raise CrowdError("the client workers did not report their results in time") from exc
        return results, steady, {k: v for k, v in drops.items() if v}


# -- the command ----------------------------------------------------------------------


async def run_crowd(options: CrowdOptions, argv: list[str]) -> int:
    """Every ``--udp-mode`` in turn; the command's exit code."""
    out = stdout_console()
    report = CrowdReport(argv, now_iso(), "", machine_info(), loadavg(), [], options.to_json())
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="webrtc-broker-crowd-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cancel_on_sigterm()
    cores = os.cpu_count() or 1
    progress = progress_display()
    try:
        with progress:
            for mode in options.udp_modes:
                run = CrowdRun(
                    str(mode),
                    options.clients,
                    options.topic_size,
                    options.topics,
                    options.worker_count,
                )
                report.runs.append(run)
                line = ProgressLine(progress, progress.add_task(f"UDP {mode}"), f"UDP {mode}")
                try:
                    await CrowdRunner(options, run, line).measure(log_dir)
                except (CrowdError, ClusterError, WorkerError) as exc:
                    run.error = f"{exc} (logs in {log_dir})"
                finally:
                    run.limits = limits(run, cores)
                    progress.remove_task(line.task)
    except asyncio.CancelledError:
        if report.runs and report.runs[-1].error is None:
            report.runs[-1].error = "interrupted"
        _finish(report, options, out)
        raise
    code = _finish(report, options, out)
    if code == 0 and options.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code


def _finish(report: CrowdReport, options: CrowdOptions, out: Console) -> int:
    report.finished_at = now_iso()
    report.loadavg_after = loadavg()
    print_crowd(out, report)
    if options.json_path is not None:
        write_crowd(options.json_path, report)
        out.print(f"JSON written to {options.json_path}")
    return 0 if all(run.error is None for run in report.runs) else 1
