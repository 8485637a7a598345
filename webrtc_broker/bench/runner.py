"""One run of the dense scenario, start to finish, and the baseline before it.

A run: start (or find) the cluster, start the bot workers, wait until every
bot is connected and subscribed, note the servers' memory, then give all
workers the same wall-clock schedule: traffic from T0, warm-up until T1, the
measured window until T2. CPU and memory of every process are sampled over
the window and the servers' relay counters are read at both ends. Workers
report counts and latency histograms, which are merged here.

A connect stage (:meth:`Runner.connect_stage`) is the first half alone: a
fresh cluster, the bots connect and subscribe, their connect times and the
servers' cost of them are noted, and the bots leave without traffic.

Everything started is stopped on the way out, whatever the way out is (an
error, a timeout, Ctrl-C cancelling the task).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from rich.progress import Progress, TaskID

from webrtc_broker.bench.baseline import SETUP_TIMEOUT
from webrtc_broker.bench.bots import CLOSE_TIMEOUT, Schedule, WorkerPlan, WorkerResult
from webrtc_broker.bench.latency import LatencyHistogram, percentile
from webrtc_broker.bench.localcluster import (
    ClusterHandle,
    external_cluster,
    fetch_json,
    local_cluster,
    udp_census,
)
from webrtc_broker.bench.options import BenchOptions
from webrtc_broker.bench.results import (
    Baseline,
    ConnectStage,
    ConnectSummary,
    CpuShare,
    LatencySummary,
    ProcessUsage,
    RunResult,
    ServerSummary,
    ServerUdp,
)
from webrtc_broker.bench.sampling import (
    MB,
    Usage,
    Watched,
    WindowSampler,
    cpu_seconds,
    rss_bytes,
)
from webrtc_broker.bench.workers import (
    BOTS_MODULE,
    ConnectLog,
    Plan,
    Worker,
    collect,
    make_plans,
    start_traffic,
    start_workers,
    stop_workers,
    wait_ready,
)
from webrtc_broker.cluster import spawn, stop
from webrtc_broker.config import BatchMode

LEAD_IN = 0.5
"""Seconds between sending the schedule and T0, so every worker has it in time."""
SETTLE = 0.5
"""Seconds after the last connect before the servers' memory is read."""
LATE_AFTER = 2.0
"""Seconds after the window during which its messages may still arrive (traffic goes on)."""
SAMPLE_EVERY = 0.5
SATURATED_PERCENT = 90.0
NOISY_PERCENT = 25.0


R = TypeVar("R")
"""What a scenario's workers report at the end of a traffic phase."""


class BenchError(Exception):
    """The run could not be completed."""


BATCH_MODE_VARIABLE = "WEBRTC_BROKER_COMMSERVER_BATCH_MODE"


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment, where the cluster's processes started
    inside inherit them (every server setting can be given there); the previous values
    come back on the way out."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def servers_batch_mode(mode: BatchMode) -> contextlib.AbstractContextManager[None]:
    """Comm servers started inside get batch mode ``mode`` (the local cluster's command
    line gives them the window, not the mode)."""
    return environment({BATCH_MODE_VARIABLE: mode})


@contextlib.asynccontextmanager
async def bench_cluster(
    options: BenchOptions, log_path: Path, *, peers: int
) -> AsyncIterator[ClusterHandle]:
    """The cluster under test: the one at ``--coordinator-url``, or a local one started
    (and stopped) here, sized for ``peers`` peer connections at once."""
    if options.coordinator_url is not None:
        yield await external_cluster(options.coordinator_url, options.servers)
        return
    with servers_batch_mode(options.batch_mode):
        async with local_cluster(
            options.servers, options.batch_window, log_path, options.udp_mode, peers=peers
        ) as cluster:
            yield cluster


class Runner:
    def __init__(self, options: BenchOptions, progress: Progress, log_dir: Path) -> None:
        self.options = options
        self.progress = progress
        self.log_dir = log_dir
        self.frames_per_message: float | None = None
        """Of the last run, from before its traffic to after it: frames per data-channel
        message the servers' writers made (1 unbatched, more the fuller the batches);
        ``None`` when not readable."""

    # -- baseline ---------------------------------------------------------

    async def baseline(self) -> Baseline | None:
        """The raw aiortc pair, in its own process, before any cluster exists."""
        options = self.options
        if options.baseline_seconds == 0:
            return None
        task = self.progress.add_task("baseline: raw aiortc pair", total=None)
        args = ["--size", str(options.size), "--seconds", str(options.baseline_seconds)]
        if options.reliable:
            args.append("--reliable")
        with (self.log_dir / "baseline.log").open("ab") as log:
            process = await spawn(
                *args,
                module="webrtc_broker.bench.baseline",
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            try:
                async with asyncio.timeout(SETUP_TIMEOUT + options.baseline_seconds + 30):
                    output, _ = await process.communicate()
            except TimeoutError as exc:
                raise BenchError("the baseline measurement did not finish in time") from exc
            finally:
                await stop([process])
                self.progress.remove_task(task)
        if process.returncode != 0:
            raise BenchError(f"the baseline failed (exit {process.returncode}); see {log.name}")
        data: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
        return Baseline(**data)

    # -- one run ----------------------------------------------------------

    async def run(self, bots: int, baseline: Baseline | None) -> RunResult:
        return (await self.measure(bots, baseline))[0]

    async def measure(
        self, bots: int, baseline: Baseline | None
    ) -> tuple[RunResult, list[ServerUdp]]:
        """One run, and the servers' UDP sockets once the bots connected."""
        log_path = self.log_dir / f"run-{bots}-bots.log"
        task = self.progress.add_task(f"{bots} bots: starting the cluster", total=None)
        try:
            async with bench_cluster(self.options, log_path, peers=bots) as cluster:
                return await self._with_cluster(cluster, bots, baseline, log_path, task)
        finally:
            self.progress.remove_task(task)

    async def connect_stage(self, bots: int) -> ConnectStage:
        """``bots`` clients connect to a fresh cluster and leave again, without traffic."""
        log_path = self.log_dir / f"connect-{bots}-bots.log"
        task = self.progress.add_task(f"{bots} bots: starting the cluster", total=None)
        try:
            async with bench_cluster(self.options, log_path, peers=bots) as cluster:
                return await self._connect_only(cluster, bots, log_path, task)
        finally:
            self.progress.remove_task(task)

    def _plans(self, cluster: ClusterHandle, bots: int) -> list[WorkerPlan]:
        options = self.options
        return make_plans(
            coordinator_url=cluster.coordinator_url,
            topic=options.topic,
            servers=[server.alias for server in cluster.servers],
            bots=bots,
            workers=options.workers_for(bots),
            rate=options.rate,
            size=options.size,
            reliable=options.reliable,
            connect_concurrency=options.connect_concurrency,
            connect_timeout=options.connect_timeout,
        )

    async def _connect_only(
        self, cluster: ClusterHandle, bots: int, log_path: Path, task: TaskID
    ) -> ConnectStage:
        server_pids = [s.pid for s in cluster.servers if s.pid is not None]
        memory_before = _total_rss(server_pids)
        connects = ConnectLog()
        plans = self._plans(cluster, bots)
        phase = TrafficPhase(
            self.options, self.progress, task, cluster, Clients(bots, "bots", "bot")
        )
        async with phase.workers(plans, BOTS_MODULE, log_path) as workers:
            cpu_before = _total_cpu(server_pids)
            await phase.connect(workers, plans, connects)
            cpu_after = _total_cpu(server_pids)
            connected = sum(worker.connected for worker in workers)
            await asyncio.sleep(SETTLE)
            memory_after = _total_rss(server_pids)
            servers_udp = udp_census(cluster.servers)
        cpu_ms = (
            (cpu_after - cpu_before) * 1000.0 / connected
            if cpu_before is not None and cpu_after is not None and connected
            else None
        )
        memory = (
            (memory_after - memory_before) / connected
            if memory_before is not None and memory_after is not None and connected
            else None
        )
        return ConnectStage(
            bots=bots,
            connected=connected,
            p50_s=percentile(connects.seconds, 0.50),
            p99_s=percentile(connects.seconds, 0.99),
            max_s=max(connects.seconds, default=None),
            total_s=connects.total_seconds,
            failures=sum(connects.errors.values()),
            errors=dict(connects.errors),
            server_cpu_ms_per_connect=cpu_ms,
            memory_per_client_mb=memory,
            servers_udp=servers_udp,
        )

    async def _with_cluster(
        self,
        cluster: ClusterHandle,
        bots: int,
        baseline: Baseline | None,
        log_path: Path,
        task: TaskID,
    ) -> tuple[RunResult, list[ServerUdp]]:
        options = self.options
        phase = TrafficPhase(options, self.progress, task, cluster, Clients(bots, "bots", "bot"))
        traffic = await phase.run(
            self._plans(cluster, bots), BOTS_MODULE, log_path, _collect_bots, count_frames=True
        )
        writers = traffic.writers
        messages = writers["messages"] + writers["dropped"]
        self.frames_per_message = writers["frames"] / messages if messages else None
        run = summarise(
            options=options,
            cluster=cluster,
            bots=bots,
            connected=traffic.connected,
            workers=options.workers_for(bots),
            baseline=baseline,
            connects=traffic.connects,
            results=traffic.results,
            usages=traffic.usages,
            machine=traffic.machine,
            memory=traffic.memory,
            status_delta=traffic.counters,
        )
        return run, traffic.servers_udp


async def _collect_bots(workers: list[Worker]) -> list[WorkerResult]:
    async with asyncio.timeout(CLOSE_TIMEOUT + 20):
        return await collect(workers)


@dataclass(frozen=True)
class Clients:
    """Who a traffic phase connects, as its progress line and its errors name them."""

    count: int
    noun: str
    """Their plural: ``bots``, ``avatars``."""
    kind: str
    """What kind of worker processes carry them, for errors: ``bot``, ``world``."""

    @property
    def label(self) -> str:
        return f"{self.count} {self.noun}"


@dataclass
class Traffic(Generic[R]):
    """What one traffic phase saw; ``results`` are the scenario's own worker reports."""

    connects: ConnectLog
    connected: int
    """Clients connected when traffic began."""
    memory: tuple[float | None, float | None]
    """The servers' RSS in MB before the clients came and once they had settled."""
    servers_udp: list[ServerUdp]
    schedule: Schedule
    usages: list[Usage]
    machine: float
    counters: dict[str, Counter[str]]
    """The servers' delivery and drop counters over the window."""
    writers: Counter[str]
    """The servers' :data:`WRITER_METRICS` over the traffic (empty unless counted)."""
    results: R


class TrafficPhase:
    """The orchestration every traffic scenario shares: start the workers, connect
    their clients, settle, hand out one wall-clock schedule, sample the window,
    collect the workers' results, and stop the workers whatever happens.

    What differs between scenarios comes in as arguments: the plans and the module
    the workers run, and how their results are collected.
    """

    def __init__(
        self,
        options: BenchOptions,
        progress: Progress,
        task: TaskID,
        cluster: ClusterHandle,
        clients: Clients,
    ) -> None:
        self.options = options
        self.progress = progress
        self.task = task
        self.cluster = cluster
        self.clients = clients

    def show(self, doing: str) -> None:
        self.progress.update(self.task, description=f"{self.clients.label}: {doing}")

    async def run(
        self,
        plans: Sequence[Plan],
        module: str,
        log_path: Path,
        collect_results: Callable[[list[Worker]], Awaitable[R]],
        *,
        count_frames: bool = False,
    ) -> Traffic[R]:
        """The whole phase; ``count_frames`` also reads the servers' writer counters
        before and after the traffic (an HTTP scrape of every server)."""
        options, cluster, clients = self.options, self.cluster, self.clients
        server_pids = [s.pid for s in cluster.servers if s.pid is not None]
        memory_before = _total_rss(server_pids)
        connects = ConnectLog()
        async with self.workers(plans, module, log_path) as workers:
            await self.connect(workers, plans, connects)
            connected = sum(worker.connected for worker in workers)
            if connected < 2:
                raise BenchError(
                    f"only {connected} of {clients.label} connected: {dict(connects.errors)}"
                )
            await asyncio.sleep(SETTLE)
            memory_after = _total_rss(server_pids)
            servers_udp = udp_census(cluster.servers)
            watched = _watched(cluster, workers)
            start = time.time() + LEAD_IN
            window_end = start + options.warmup + options.duration
            schedule = Schedule(start, start + options.warmup, window_end, window_end + LATE_AFTER)
            # Frames per message are counted from before the traffic to after it
            # (below), when no writer holds a frame: counters read while traffic
            # flows see frames queued on one side of the read and sent on the other.
            writers_before = await _all_writer_counters(cluster) if count_frames else None
            await start_traffic(workers, schedule)
            usages, machine, counters = await self.window(watched, schedule)
            self.show("collecting results")
            results = await collect_results(workers)
            writers: Counter[str] = Counter()
            if writers_before is not None:
                writers = await _all_writer_counters(cluster)
                writers.subtract(writers_before)
        return Traffic(
            connects=connects,
            connected=connected,
            memory=(memory_before, memory_after),
            servers_udp=servers_udp,
            schedule=schedule,
            usages=usages,
            machine=machine,
            counters=counters,
            writers=writers,
            results=results,
        )

    @contextlib.asynccontextmanager
    async def workers(
        self, plans: Sequence[Plan], module: str, log_path: Path
    ) -> AsyncIterator[list[Worker]]:
        """The worker processes, one per plan, their stderr in ``log_path``. They are
        stopped on the way out: gently after a run that went through (they close their
        clients), at once after an error."""
        workers: list[Worker] = []
        finished = False
        with log_path.open("ab") as log:
            try:
                workers = await start_workers(plans, log, module)
                yield workers
                finished = True
            except TimeoutError as exc:
                raise BenchError(
                    f"the {self.clients.kind} workers did not answer in time (log: {log_path})"
                ) from exc
            finally:
                self.show("stopping")
                await stop_workers(workers, graceful=finished)

    async def connect(
        self, workers: list[Worker], plans: Sequence[Plan], connects: ConnectLog
    ) -> None:
        """Until every worker has connected its clients, in rounds of the plans'
        connects in flight, each given the connect timeout."""
        clients = self.clients
        self.progress.update(
            self.task,
            description=f"{clients.label}: connecting",
            total=clients.count,
            completed=0,
            unit=f" {clients.noun}",
        )
        in_flight = sum(plan.connect_concurrency for plan in plans)
        rounds = math.ceil(clients.count / in_flight)
        budget = 30.0 + self.options.connect_timeout * (rounds + 1)
        try:
            async with asyncio.timeout(budget):
                await wait_ready(
                    workers,
                    connects,
                    lambda: self.progress.update(self.task, completed=connects.done),
                )
        except TimeoutError as exc:
            raise BenchError(f"{clients.noun} still connecting after {budget:.0f} s") from exc

    async def window(
        self, watched: list[Watched], schedule: Schedule
    ) -> tuple[list[Usage], float, dict[str, Counter[str]]]:
        """Warm up, then sample the processes and the servers' counters over the window."""
        total = schedule.traffic_end - time.time()
        self.progress.update(self.task, total=total, completed=0, unit=" s")

        async def stage(
            name: str, until: float, every: float, sample: Callable[[], object] | None = None
        ) -> None:
            while time.time() < until:
                self.progress.update(
                    self.task,
                    description=f"{self.clients.label}: {name}",
                    completed=total - (schedule.traffic_end - time.time()),
                )
                await asyncio.sleep(min(every, max(0.0, until - time.time())))
                if sample is not None:
                    sample()

        await stage("warm-up", schedule.window_start, 0.25)
        sampler = WindowSampler(watched)
        sampler.start()
        before = await server_counters(self.cluster)
        measuring = f"measuring {self.options.duration:g} s"
        await stage(measuring, schedule.window_end, SAMPLE_EVERY, sampler.sample)
        usages, machine = sampler.stop()
        after = await server_counters(self.cluster)
        await stage("late arrivals", schedule.traffic_end, 0.25)
        return usages, machine, {key: after[key] - before[key] for key in after}


def _total_cpu(pids: list[int]) -> float | None:
    """CPU seconds of all ``pids`` together; ``None`` if one is gone."""
    times = [cpu_seconds(pid) for pid in pids]
    known = [t for t in times if t is not None]
    return sum(known) if known and len(known) == len(times) else None


def _total_rss(pids: list[int]) -> float | None:
    sizes = [rss_bytes(pid) for pid in pids]
    known = [size for size in sizes if size is not None]
    return sum(known) / MB if known and len(known) == len(sizes) else None


def _watched(cluster: ClusterHandle, workers: list[Worker]) -> list[Watched]:
    watched = [Watched("commserver", s.name, s.pid) for s in cluster.servers if s.pid is not None]
    if cluster.coordinator_pid is not None:
        watched.append(Watched("coordinator", "coordinator", cluster.coordinator_pid))
    watched += [Watched("worker", f"worker-{w.index + 1}", w.process.pid) for w in workers]
    watched.append(Watched("bench", "bench", os.getpid()))
    return watched


async def server_counters(cluster: ClusterHandle) -> dict[str, Counter[str]]:
    """The servers' delivery and drop counters, summed (empty for servers we cannot see)."""
    deliveries: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    for server in cluster.servers:
        if server.status_url is None:
            continue
        status = await fetch_json(server.status_url) or {}
        stats = status.get("stats", {})
        for source, target in ((stats.get("deliveries"), deliveries), (stats.get("drops"), drops)):
            if isinstance(source, dict):
                target.update({str(k): int(v) for k, v in source.items()})
        # A single-port server's shared socket drops datagrams of its own (a full send
        # queue, an unknown source): they count among the window's drops.
        mux = status.get("ice", {}).get("mux", {}) if isinstance(status.get("ice"), dict) else {}
        if isinstance(mux, dict):
            counted = {k: v for k, v in mux.items() if k.startswith(("dropped", "refused"))}
            drops.update({f"udp mux {k}": int(v) for k, v in counted.items()})
    return {"deliveries": deliveries, "drops": drops}


async def server_sessions(cluster: ClusterHandle) -> dict[str, int]:
    """The comm servers' session outcomes (``established:client``, ``failed:<reason>``,
    ...), summed: why the servers ended the sessions the clients saw end."""
    total: Counter[str] = Counter()
    for server in cluster.servers:
        status = await fetch_json(server.status_url) if server.status_url else None
        sessions = (status or {}).get("stats", {}).get("sessions", {})
        total.update({str(key): int(value) for key, value in sessions.items()})
    return dict(sorted(total.items()))


async def _all_writer_counters(cluster: ClusterHandle) -> Counter[str]:
    """Every server's :data:`WRITER_METRICS`, summed (servers we cannot see add nothing)."""
    writers: Counter[str] = Counter()
    for server in cluster.servers:
        if server.status_url is not None:
            writers.update(await _writer_counters(server.status_url.removesuffix("/status")))
    return writers


WRITER_METRICS = {
    "frames": "webrtc_broker_commserver_frames_sent_total",
    "messages": "webrtc_broker_commserver_writer_messages_sent_total",
    "dropped": "webrtc_broker_commserver_writer_messages_dropped_total",
}
"""Frames handed to writers, and the data-channel messages the writers made of them:
sent, or dropped from a full unreliable queue (an overloaded server drops many). The
ratio is how many frames a message held on average."""


async def _writer_counters(base: str) -> Counter[str]:
    """A server's :data:`WRITER_METRICS`, summed over their labels (empty when unreadable)."""
    found: Counter[str] = Counter()
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"{base}/metrics")
            response.raise_for_status()
    except httpx.HTTPError:
        return found
    for line in response.text.splitlines():
        name, _, rest = line.partition("{")
        for key, metric in WRITER_METRICS.items():
            if name == metric:
                with contextlib.suppress(ValueError):
                    found[key] += int(float(rest.rsplit(" ", 1)[-1]))
    return found


def _us_per(cpu_percent: float | None, seconds: float, count: int) -> float | None:
    """Microseconds of CPU per item: ``cpu_percent`` of a core for ``seconds``, ``count`` items."""
    if cpu_percent is None or count == 0:
        return None
    return cpu_percent / 100.0 * seconds / count * 1e6


def cpu_share(usages: list[Usage], machine: float, duration: float, delivered: int) -> CpuShare:
    """Who used the CPU over the window: ``machine`` % busy in all, ``delivered`` messages."""

    def cpu_of(role: str) -> float | None:
        values = [u.cpu_percent for u in usages if u.watched.role == role]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    ours = sum(u.cpu_percent for u in usages if u.cpu_percent is not None)
    return CpuShare(
        cores=os.cpu_count() or 1,
        machine_percent=machine,
        commservers_percent=cpu_of("commserver"),
        workers_percent=cpu_of("worker"),
        coordinator_percent=cpu_of("coordinator"),
        workers_us_per_delivery=_us_per(cpu_of("worker"), duration, delivered),
        bench_percent=cpu_of("bench"),
        other_percent=max(0.0, machine - ours),
    )


def server_summary(
    *,
    cluster: ClusterHandle,
    usages: list[Usage],
    cpu: CpuShare,
    memory: tuple[float | None, float | None],
    counters: dict[str, Counter[str]],
    duration: float,
    delivered: int,
    connected: int,
) -> ServerSummary:
    """The comm servers' side of the window: CPU, memory, their own counters."""
    before, after = memory
    rss = [u.rss_mb_max for u in usages if u.watched.role == "commserver"]
    known_rss = [mb for mb in rss if mb is not None]
    deliveries = counters["deliveries"].get("client")
    return ServerSummary(
        cpu_percent=cpu.commservers_percent,
        rss_mb_max=sum(known_rss) if known_rss else None,
        rss_mb_before_clients=before,
        rss_mb_after_clients=after,
        memory_per_client_mb=(
            (after - before) / connected if before is not None and after is not None else None
        ),
        deliveries_per_s=(
            deliveries / duration
            if deliveries is not None and cluster.servers[0].status_url
            else None
        ),
        cpu_us_per_delivery=_us_per(cpu.commservers_percent, duration, delivered),
        drops={k: v for k, v in counters["drops"].items() if v},
    )


def process_usages(usages: list[Usage]) -> list[ProcessUsage]:
    return [
        ProcessUsage(
            u.watched.role,
            u.watched.name,
            u.watched.pid,
            u.cpu_percent,
            u.rss_mb_mean,
            u.rss_mb_max,
        )
        for u in usages
    ]


def summarise(
    *,
    options: BenchOptions,
    cluster: ClusterHandle,
    bots: int,
    connected: int,
    workers: int,
    baseline: Baseline | None,
    connects: ConnectLog,
    results: list[WorkerResult],
    usages: list[Usage],
    machine: float,
    memory: tuple[float | None, float | None],
    status_delta: dict[str, Counter[str]],
) -> RunResult:
    duration = options.duration
    latency = LatencyHistogram()
    for result in results:
        latency.merge(result.latency)
    published = sum(r.published for r in results)
    delivered = sum(r.received for r in results)
    arrived = sum(r.arrived for r in results)
    receivers = connected - 1
    offered_per_s = connected * options.rate * receivers
    delivered_per_s = delivered / duration
    expected = published * receivers
    loss = 100.0 * (1.0 - arrived / expected) if expected else 0.0

    share = cpu_share(usages, machine, duration, delivered)
    server = server_summary(
        cluster=cluster,
        usages=usages,
        cpu=share,
        memory=memory,
        counters=status_delta,
        duration=duration,
        delivered=delivered,
        connected=connected,
    )
    run = RunResult(
        bots=bots,
        bots_connected=connected,
        servers=len(cluster.servers),
        workers=workers,
        rate=options.rate,
        size=options.size,
        reliable=options.reliable,
        batch_window=cluster.batch_window,
        warmup=options.warmup,
        duration=duration,
        offered_per_s=offered_per_s,
        published_per_s=published * receivers / duration,
        delivered_per_s=delivered_per_s,
        loss_percent=loss,
        ceiling_ratio=delivered_per_s / baseline.messages_per_s
        if baseline and baseline.messages_per_s
        else None,
        published=published,
        delivered=delivered,
        arrived=arrived,
        late_after_s=LATE_AFTER,
        skipped_publishes=sum(r.skipped for r in results),
        inbox_dropped=sum(r.inbox_dropped for r in results),
        sessions_lost=sum(r.sessions_lost for r in results),
        latency_ms=LatencySummary.of(latency),
        connect_s=ConnectSummary.of(connects.seconds, dict(connects.errors)),
        server=server,
        cpu=share,
        processes=process_usages(usages),
    )
    run.warnings.extend(_warnings(run))
    return run


def _warnings(run: RunResult) -> list[str]:
    """What makes this run's numbers describe something other than the broker."""
    found = []
    for process in run.processes:
        cpu = process.cpu_percent
        if process.role == "worker" and cpu is not None and cpu >= SATURATED_PERCENT:
            found.append(
                f"{process.name} used {cpu:.0f}% of a core: the load generator was saturated, "
                "so delivery and latency may understate the broker"
            )
        if process.role == "commserver" and cpu is not None and cpu >= SATURATED_PERCENT:
            found.append(f"{process.name} used {cpu:.0f}% of a core: it was saturated")
    if run.cpu.other_percent is not None and run.cpu.other_percent >= NOISY_PERCENT:
        found.append(
            f"other processes used {run.cpu.other_percent:.0f}% of a core during the window: "
            "the machine was shared, numbers are noisy"
        )
    if run.connect_s.failures:
        found.append(f"{run.connect_s.failures} bots failed to connect: {run.connect_s.errors}")
    if run.skipped_publishes:
        found.append(f"bots skipped {run.skipped_publishes} publishes (workers behind schedule)")
    if run.inbox_dropped:
        found.append(f"bots' inboxes dropped {run.inbox_dropped} messages (bots too slow)")
    if run.sessions_lost:
        found.append(f"{run.sessions_lost} bot sessions closed during traffic")
    return found
