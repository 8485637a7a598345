"""``webrtc-broker soak``: steady traffic for a chosen time, memory and delivery rate over time.

A bench run answers "how fast"; a soak answers "does it stay well": it runs
the bench's bots (same workers, same local cluster) at a steady rate and
prints one line per interval with each comm server's resident memory and the
delivery rate the servers report, then the totals: messages lost, memory
growth. It stops by itself after ``--duration`` seconds. Not part of CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from webrtc_broker.bench.bots import CLOSE_TIMEOUT, Schedule, WorkerResult
from webrtc_broker.bench.localcluster import ClusterHandle, fetch_json, local_cluster
from webrtc_broker.bench.options import DEFAULT_TOPIC, default_workers
from webrtc_broker.bench.sampling import MB, rss_bytes
from webrtc_broker.bench.workers import (
    ConnectLog,
    Worker,
    collect,
    make_plans,
    start_traffic,
    start_workers,
    stop_workers,
    wait_ready,
)

LEAD_IN = 1.0
LATE_AFTER = 2.0
"""Seconds at the end whose messages are not counted as lost if they arrive late."""
CONNECT_BUDGET = 120.0


@dataclass(frozen=True)
class SoakOptions:
    duration: float = 60.0
    bots: int = 20
    rate: float = 10.0
    size: int = 100
    reliable: bool = True
    servers: int = 2
    interval: float = 5.0
    batch_window: float = 0.01
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.duration < 2 * LATE_AFTER or self.interval <= 0:
            raise ValueError(f"--duration must be at least {2 * LATE_AFTER:.0f} s")
        if self.bots < 2 or self.rate <= 0 or self.servers < 1:
            raise ValueError("need --bots >= 2, --rate > 0 and --servers >= 1")


@dataclass
class Sample:
    elapsed: float
    rss_mb: list[float | None]
    deliveries: int
    drops: int
    clients: int


async def _server_totals(cluster: ClusterHandle) -> tuple[int, int, int]:
    """Deliveries to clients, drops, and established clients, summed over the servers."""
    deliveries = drops = clients = 0
    for server in cluster.servers:
        status = await fetch_json(server.status_url) if server.status_url else None
        stats = (status or {}).get("stats", {})
        deliveries += int(stats.get("deliveries", {}).get("client", 0))
        drops += sum(int(v) for v in stats.get("drops", {}).values())
        clients += int((status or {}).get("clients", 0))
    return deliveries, drops, clients


def _rss_mb(cluster: ClusterHandle) -> list[float | None]:
    sizes = [rss_bytes(s.pid) if s.pid is not None else None for s in cluster.servers]
    return [None if size is None else size / MB for size in sizes]


def _fmt(values: list[float | None]) -> str:
    return " ".join("   -" if v is None else f"{v:6.1f}" for v in values)


async def run_soak(options: SoakOptions, out: Callable[[str], None] = print) -> int:
    """Run the soak; 0 when every bot stayed connected and nothing reliable was lost."""
    log_dir = options.log_dir or Path.cwd()
    log_path = log_dir / "soak.log"
    async with local_cluster(options.servers, options.batch_window, log_path) as cluster:
        plans = make_plans(
            coordinator_url=cluster.coordinator_url,
            topic=DEFAULT_TOPIC,
            servers=[s.alias for s in cluster.servers],
            bots=options.bots,
            workers=min(options.bots, default_workers(options.servers)),
            rate=options.rate,
            size=options.size,
            reliable=options.reliable,
            connect_concurrency=8,
            connect_timeout=30.0,
        )
        workers: list[Worker] = []
        finished = False
        with log_path.open("ab") as log:
            try:
                workers = await start_workers(plans, log)
                connects = ConnectLog()
                async with asyncio.timeout(CONNECT_BUDGET):
                    await wait_ready(workers, connects, lambda: None)
                connected = sum(w.connected for w in workers)
                out(
                    f"soak: {connected}/{options.bots} bots on {options.servers} servers, "
                    f"{options.rate:g} msg/s each, {options.size} B, "
                    f"{'reliable' if options.reliable else 'unreliable'}, {options.duration:g} s "
                    f"(log: {log_path})"
                )
                start = time.time() + LEAD_IN
                end = start + options.duration
                schedule = Schedule(start, start, end - LATE_AFTER, end)
                await start_traffic(workers, schedule)
                samples = await _sample(cluster, options, schedule, out)
                async with asyncio.timeout(CLOSE_TIMEOUT + 20):
                    results = await collect(workers)
                finished = True
            finally:
                await stop_workers(workers, graceful=finished)
    return _summary(options, connected, samples, results, out)


async def _sample(
    cluster: ClusterHandle, options: SoakOptions, schedule: Schedule, out: Callable[[str], None]
) -> list[Sample]:
    started = time.monotonic()
    deliveries, drops, clients = await _server_totals(cluster)
    samples = [Sample(0.0, _rss_mb(cluster), deliveries, drops, clients)]
    width = 7 * len(cluster.servers)
    out(f"{'time':>6}  {'RSS MB/server':<{width}}  deliveries/s  drops  clients")
    out(f"{0:5.0f}s  {_fmt(samples[0].rss_mb):<{width}}  {'-':>12} {drops:6d} {clients:8d}")
    # A last interval shorter than half a normal one would report a noisy rate.
    while (left := schedule.traffic_end - time.time()) > options.interval / 2:
        await asyncio.sleep(min(options.interval, left))
        deliveries, drops, clients = await _server_totals(cluster)
        sample = Sample(time.monotonic() - started, _rss_mb(cluster), deliveries, drops, clients)
        previous = samples[-1]
        rate = (sample.deliveries - previous.deliveries) / max(
            sample.elapsed - previous.elapsed, 1e-9
        )
        out(
            f"{sample.elapsed:5.0f}s  {_fmt(sample.rss_mb):<{width}}  {rate:12.0f} "
            f"{sample.drops - previous.drops:6d} {sample.clients:8d}"
        )
        samples.append(sample)
    return samples


def _summary(
    options: SoakOptions,
    connected: int,
    samples: list[Sample],
    results: list[WorkerResult],
    out: Callable[[str], None],
) -> int:
    published = sum(r.published for r in results)
    arrived = sum(r.arrived for r in results)
    expected = published * (connected - 1)
    lost = expected - arrived
    sessions_lost = sum(r.sessions_lost for r in results)
    first, last = samples[0], samples[-1]
    growth = [
        None if a is None or b is None else b - a
        for a, b in zip(first.rss_mb, last.rss_mb, strict=True)
    ]
    peak = [max((s.rss_mb[i] or 0.0) for s in samples) for i in range(len(first.rss_mb))]
    out(
        f"published {published} messages, {expected} deliveries expected, {arrived} arrived "
        f"({lost} lost, {100.0 * lost / expected if expected else 0.0:.3f}%); "
        f"bot sessions lost {sessions_lost}; inbox drops {sum(r.inbox_dropped for r in results)}"
    )
    out(f"comm server RSS MB: growth {_fmt(growth)}, peak {_fmt(list(peak))}")
    ok = sessions_lost == 0 and (lost == 0 or not options.reliable)
    return 0 if ok else 1


def soak_main(options: SoakOptions) -> int:
    """Run from the CLI; Ctrl-C stops it (every process it started is stopped)."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_soak(options, lambda line: print(line, flush=True)))
    return 130
