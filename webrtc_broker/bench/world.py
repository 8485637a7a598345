"""``webrtc-broker bench --scenario world``: avatars walking on a grid of cells.

The world (:mod:`~webrtc_broker.bench.worldgrid`) is ``columns x rows`` cells,
one topic each. Every avatar is a broker client in a worker process
(:mod:`~webrtc_broker.bench.worldbots`): subscribed to its cell and the up to
8 around it, publishing its position at ``--rate`` Hz (unreliable) and chat at
``--chat-rate`` Hz (reliable) to its cell's topic, walking at ``--speed``
cells per second and re-subscribing through the SDK whenever it crosses a
cell boundary. ``--churn`` avatars a second leave and as many new ones
connect while traffic flows.

The run follows the dense scenario's (:mod:`~webrtc_broker.bench.runner`):
baseline, cluster, a bounded connect storm, one wall-clock schedule for every
worker (traffic from T0, warm-up until T1, the measured window until T2,
late arrivals until T3), CPU sampled over the window, the servers' counters
read at both ends.

Which deliveries are expected while subscriptions move: a message sent at
``t`` to topic ``T`` is expected at receiver ``R`` (not its sender) when
``R``'s subscription to ``T`` was confirmed by the server (the SDK's
confirming PING returned) at or before ``t``, and ``R`` did not ask to drop
``T`` (nor begin to leave) before ``t + GUARD`` (2 s,
:data:`~webrtc_broker.bench.worldgrid.GUARD`). Messages sent inside those
transitions may or may not arrive, legitimately; an arrival the rule did not
expect is counted apart ("arrivals while subscriptions changed") and never
counts against, or for, the loss. Loss is ``1 - arrived / expected`` over the
messages sent in the window; every arrival in the window gives a latency
sample, whatever the rule says, since a delivered message's latency is real.
A leaving avatar stops publishing a second before it closes, so its last
messages are not lost with its connection. After traffic, reliable chat gets
:data:`CHAT_DRAIN` seconds more to arrive (nothing is published then), so a
backlog is not taken for loss. Reliable chat must lose nothing: a reliable
message the rule expected and that did not come is a bug, and the report says
so in red, unless the run cannot tell late from lost (a worker behind
schedule, a session that died, or p99 latency above ``GUARD``, when an
unsubscription may overtake a message the rule expected); then it says that.

Bots that cannot keep up show as skipped publishes and as worker processes
near 100 % of a core; the report then says that the bots, not the broker,
were the limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from commserver.lifecycle import CloseReason
from webrtc_broker.bench.bots import CLOSE_TIMEOUT, Schedule
from webrtc_broker.bench.command import (
    cancel_on_sigterm,
    log_directory,
    machine_info,
    now_iso,
    progress_display,
    stdout_console,
)
from webrtc_broker.bench.latency import LatencyHistogram
from webrtc_broker.bench.localcluster import (
    ClusterError,
    ClusterHandle,
)
from webrtc_broker.bench.options import BenchOptions, default_workers
from webrtc_broker.bench.report import write_json
from webrtc_broker.bench.results import (
    Baseline,
    ConnectSummary,
    LatencySummary,
)
from webrtc_broker.bench.runner import (
    SATURATED_PERCENT,
    BenchError,
    Clients,
    Runner,
    Traffic,
    TrafficPhase,
    bench_cluster,
    cpu_share,
    process_usages,
    server_sessions,
    server_summary,
)
from webrtc_broker.bench.sampling import Usage
from webrtc_broker.bench.workers import (
    Worker,
    WorkerError,
    spread,
)
from webrtc_broker.bench.worldbots import LEAVE_DRAIN, KindResult, WorldPlan, WorldWorkerResult
from webrtc_broker.bench.worldgrid import GUARD, Interval, Publish, count_expected
from webrtc_broker.bench.worldreport import (
    KindSummary,
    WorkerLoad,
    WorldReport,
    WorldRun,
    beyond_guard,
    chat_loss_is_a_bug,
    lost_sessions_text,
    print_world_report,
)

WORLD_BOTS_MODULE = "webrtc_broker.bench.worldbots"
CONNECT_STORM = 32
"""Connects in flight across all workers at most (``--connect-concurrency`` is per
worker): a thousand avatars connect in a bounded storm, not all at once."""
CHAT_DRAIN = 5.0
"""Seconds after traffic ends that reliable chat may still arrive (publishing has
stopped, backlogs drain): what has not come by then is lost."""
BUSY_MACHINE = 0.9
"""Share of all cores busy above which the machine, not one process, is the limit."""
COLLECT_TIMEOUT = 60.0
"""Seconds beyond the chat drain and the close time a worker gets to report."""
SKIPPED_LIMIT = 0.01
"""Share of scheduled publishes skipped above which the bots count as the limit."""


async def run_world(options: BenchOptions, argv: list[str]) -> int:
    """The world scenario, start to finish; the exit code of the command."""
    report = WorldReport(argv, now_iso(), "", machine_info(), _options_json(options), None)
    log_dir = log_directory(options)
    progress = progress_display()
    cancel_on_sigterm()
    try:
        with progress:
            report.baseline = await Runner(options, progress, log_dir).baseline()
            report.run = await WorldBench(options, progress, log_dir).run(report.baseline)
    except (BenchError, ClusterError, WorkerError) as exc:
        report.error = f"{exc} (logs in {log_dir})"
    except asyncio.CancelledError:
        report.error = "interrupted"
        _finish(report, options)
        raise
    code = _finish(report, options)
    if report.error is None and options.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code


def _options_json(options: BenchOptions) -> dict[str, Any]:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    data["workers"] = options.world_worker_count
    grid = options.world_grid
    data["grid"] = f"{grid.columns}x{grid.rows}"
    return data


def _finish(report: WorldReport, options: BenchOptions) -> int:
    out = stdout_console()
    report.finished_at = now_iso()
    print_world_report(out, report)
    if options.json_path is not None:
        write_json(options.json_path, report)
        out.print(f"JSON written to {options.json_path}")
    return 0 if report.error is None else 1


class WorldBench:
    def __init__(self, options: BenchOptions, progress: Progress, log_dir: Path) -> None:
        self.options = options
        self.progress = progress
        self.log_dir = log_dir

    def plans(self, cluster: ClusterHandle) -> list[WorldPlan]:
        options = self.options
        workers = options.world_worker_count
        grid = options.world_grid
        servers = [server.alias for server in cluster.servers]
        concurrency = max(1, min(options.connect_concurrency, CONNECT_STORM // workers))
        seed = int(time.time())
        return [
            WorldPlan(
                coordinator_url=cluster.coordinator_url,
                columns=grid.columns,
                rows=grid.rows,
                avatars=share,
                worker=worker,
                workers=workers,
                first_join_id=options.avatars,
                servers=servers,
                rate=options.rate,
                chat_rate=options.chat_rate,
                size=options.size,
                speed=options.speed,
                churn=options.churn / workers,
                connect_concurrency=concurrency,
                connect_timeout=options.connect_timeout,
                result_path=str(self.log_dir / f"world-worker-{worker + 1}.json"),
                seed=seed,
                chat_drain=CHAT_DRAIN,
                niced=workers > default_workers(options.servers),
            )
            for worker, share in enumerate(spread(options.avatars, workers, servers))
        ]

    async def run(self, baseline: Baseline | None) -> WorldRun:
        options = self.options
        log_path = self.log_dir / f"world-{options.avatars}-avatars.log"
        task = self.progress.add_task(f"{options.avatars} avatars: starting", total=None)
        try:
            # The departed leave their ports behind a while.
            peers = options.avatars * 2
            async with bench_cluster(options, log_path, peers=peers) as cluster:
                return await self._with_cluster(cluster, baseline, log_path, task)
        finally:
            self.progress.remove_task(task)

    async def _with_cluster(
        self, cluster: ClusterHandle, baseline: Baseline | None, log_path: Path, task: TaskID
    ) -> WorldRun:
        options = self.options
        plans = self.plans(cluster)

        async def collect_answers(workers: list[Worker]) -> list[WorldWorkerResult | None]:
            answers = await _collect(workers, CHAT_DRAIN + CLOSE_TIMEOUT + COLLECT_TIMEOUT)
            if not any(answers):
                raise BenchError(f"no world worker reported its results (log: {log_path})")
            return answers

        clients = Clients(options.avatars, "avatars", "world")
        phase = TrafficPhase(options, self.progress, task, cluster, clients)
        traffic = await phase.run(plans, WORLD_BOTS_MODULE, log_path, collect_answers)
        ended = closed_by_servers(await server_sessions(cluster))
        return await asyncio.to_thread(
            summarise, options, cluster, plans, traffic, baseline, closed=ended
        )


def closed_by_servers(sessions: dict[str, int]) -> dict[str, int]:
    """Established sessions the comm servers ended for a reason of their own (a silent
    or slow avatar, a failed connection), by reason, from :func:`server_sessions`'
    outcomes. An avatar that leaves closes its session itself (``channel_closed``)."""
    return {
        key.removeprefix("closed:"): count
        for key, count in sessions.items()
        if key.startswith("closed:") and key != f"closed:{CloseReason.CHANNEL_CLOSED}"
    }


async def _collect(workers: list[Worker], timeout: float) -> list[WorldWorkerResult | None]:
    """Each worker's result, ``None`` for one that died or did not report within
    ``timeout``: a worker starved by an overloaded machine costs its share of the
    figures (and a warning), not the whole run."""

    async def result(worker: Worker) -> WorldWorkerResult | None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await worker.event()
                    if event["event"] == "result":
                        text = await asyncio.to_thread(Path(str(event["path"])).read_text)
                        return WorldWorkerResult.from_json(json.loads(text))
        except (TimeoutError, WorkerError, OSError, ValueError):
            return None

    return list(await asyncio.gather(*(result(worker) for worker in workers)))


def _kind(
    *,
    what: str,
    reliable: bool,
    rate: float,
    parts: list[KindResult],
    intervals: list[tuple[int, str, Interval]],
    schedule: Schedule,
    offered_per_s: float,
) -> KindSummary:
    """One kind's figures from every worker's part of it."""
    duration = schedule.window_end - schedule.window_start
    latency = LatencyHistogram()
    publishes: dict[str, list[Publish]] = {}
    for part in parts:
        latency.merge(part.latency)
        for topic, sent in part.publishes.items():
            publishes.setdefault(topic, []).extend(Publish(t, s) for t, s in sent)
    published = sum(p.published for p in parts)
    arrived = sum(p.arrived for p in parts)
    transitional = sum(p.transitional for p in parts)
    expected = count_expected(publishes, intervals, (schedule.window_start, schedule.window_end))
    return KindSummary(
        what=what,
        reliable=reliable,
        rate=rate,
        offered_per_s=offered_per_s,
        published_per_s=published / duration,
        delivered_per_s=sum(p.received for p in parts) / duration,
        expected=expected,
        arrived=arrived,
        transitional=transitional,
        loss_percent=100.0 * (1.0 - arrived / expected) if expected else None,
        expected_per_message=expected / published if published else None,
        measured_per_message=(arrived + transitional) / published if published else None,
        skipped=sum(p.skipped for p in parts),
        late=sum(p.late for p in parts),
        latency_ms=LatencySummary.of(latency),
    )


def summarise(
    options: BenchOptions,
    cluster: ClusterHandle,
    plans: list[WorldPlan],
    traffic: Traffic[list[WorldWorkerResult | None]],
    baseline: Baseline | None,
    *,
    closed: dict[str, int],
) -> WorldRun:
    answers, connected, usages = traffic.results, traffic.connected, traffic.usages
    schedule = traffic.schedule
    results = [answer for answer in answers if answer is not None]
    duration = options.duration
    grid = options.world_grid
    fanout = grid.expected_fanout(connected)
    intervals = [
        (receiver, topic, Interval(start, math.inf if end is None else end))
        for result in results
        for receiver, topic, start, end in result.intervals
    ]
    position = _kind(
        what="positions",
        reliable=False,
        rate=options.rate,
        parts=[r.position for r in results],
        intervals=intervals,
        schedule=schedule,
        offered_per_s=connected * options.rate * fanout,
    )
    chat = _kind(
        what="chat",
        reliable=True,
        rate=options.chat_rate,
        parts=[r.chat for r in results],
        intervals=intervals,
        schedule=schedule,
        offered_per_s=connected * options.chat_rate * fanout,
    )
    delivered_per_s = position.delivered_per_s + chat.delivered_per_s
    delivered = delivered_per_s * duration
    cpu = cpu_share(usages, traffic.machine, duration, round(delivered))
    server = server_summary(
        cluster=cluster,
        usages=usages,
        cpu=cpu,
        memory=traffic.memory,
        counters=traffic.counters,
        duration=duration,
        delivered=round(delivered),
        connected=connected,
    )
    loads = [
        _worker_load(usage, plans[index], answers[index])
        for index, usage in enumerate(u for u in usages if u.watched.role == "worker")
    ]
    join_errors: Counter[str] = Counter()
    lost_because: Counter[str] = Counter()
    for result in results:
        join_errors.update(result.join_errors)
        lost_because.update(result.lost_because)
    scheduled = (position.published_per_s + chat.published_per_s) * duration
    skipped = position.skipped + chat.skipped
    bots_limited = any(
        load.saturated or load.behind for load in loads
    ) or skipped > SKIPPED_LIMIT * (scheduled + skipped)
    run = WorldRun(
        avatars=options.avatars,
        avatars_connected=connected,
        grid=f"{grid.columns}x{grid.rows}",
        servers=len(cluster.servers),
        workers=len(plans),
        speed=options.speed,
        size=options.size,
        batch_window=cluster.batch_window,
        warmup=options.warmup,
        duration=duration,
        grid_fanout=fanout,
        position=position,
        chat=chat,
        delivered_per_s=delivered_per_s,
        ceiling_ratio=delivered_per_s / baseline.messages_per_s
        if baseline and baseline.messages_per_s
        else None,
        subscription_changes_per_s=sum(r.subscription_changes for r in results) / duration,
        subscription_change_ms=LatencySummary.of(_histogram(r.change_seconds for r in results)),
        subscription_change_failures=sum(r.change_failures for r in results),
        connect_s=ConnectSummary.of(traffic.connects.seconds, dict(traffic.connects.errors)),
        join_connect_s=ConnectSummary.of(
            [s for r in results for s in r.join_seconds], dict(join_errors)
        ),
        joins=sum(r.joins for r in results),
        leaves=sum(r.leaves for r in results),
        churn_seconds=round(schedule.traffic_end - LEAVE_DRAIN - GUARD - schedule.start, 1),
        sessions_lost=sum(r.sessions_lost for r in results),
        lost_because=dict(lost_because.most_common()),
        closed_by_servers=closed,
        inbox_dropped=sum(r.inbox_dropped for r in results),
        server=server,
        cpu=cpu,
        worker_loads=loads,
        processes=process_usages(usages),
        bots_limited=bots_limited,
    )
    run.warnings.extend(_warnings(run))
    return run


def _worker_load(usage: Usage, plan: WorldPlan, result: WorldWorkerResult | None) -> WorkerLoad:
    published = 0 if result is None else result.position.published + result.chat.published
    skipped = 0 if result is None else result.position.skipped + result.chat.skipped
    return WorkerLoad(
        name=usage.watched.name,
        pid=usage.watched.pid,
        avatars=len(plan.avatars),
        cpu_percent=usage.cpu_percent,
        saturated=usage.cpu_percent is not None and usage.cpu_percent >= SATURATED_PERCENT,
        skipped=skipped,
        behind=skipped > SKIPPED_LIMIT * (published + skipped),
        reported=result is not None,
    )


def _histogram(groups: Any) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for group in groups:
        for seconds in group:
            histogram.add(seconds)
    return histogram


def _warnings(run: WorldRun) -> list[str]:
    """What makes this run's numbers describe something other than the broker."""
    found = [
        f"{load.name} used {load.cpu_percent:.0f}% of a core: its {load.avatars} avatars "
        "were capped by the bot worker, not by the broker"
        for load in run.worker_loads
        if load.saturated and load.cpu_percent is not None
    ]
    found += [
        f"{load.name} did not report: its {load.avatars} avatars' traffic is missing from "
        "the figures (their deliveries to others are not)"
        for load in run.worker_loads
        if not load.reported
    ]
    found += [
        f"{p.name} used {p.cpu_percent:.0f}% of a core: it was saturated"
        for p in run.processes
        if p.role == "commserver"
        and p.cpu_percent is not None
        and p.cpu_percent >= SATURATED_PERCENT
    ]
    skipped = run.position.skipped + run.chat.skipped
    if skipped:
        found.append(
            f"the workers skipped {skipped:,} publishes: behind schedule, they could not "
            "publish at the rate asked"
        )
    if run.cpu.machine_percent >= BUSY_MACHINE * run.cpu.cores * 100.0:
        found.append(
            f"the machine was {run.cpu.machine_percent:.0f} % busy of {run.cpu.cores * 100} %: "
            "every process competed for the cores"
        )
    if run.cpu.other_percent is not None and run.cpu.other_percent >= 25.0:
        found.append(
            f"other processes used {run.cpu.other_percent:.0f}% of a core during the window: "
            "the machine was shared, numbers are noisy"
        )
    if run.connect_s.failures:
        found.append(f"{run.connect_s.failures} avatars failed to connect: {run.connect_s.errors}")
    if run.join_connect_s.failures:
        found.append(
            f"{run.join_connect_s.failures} joins under load failed: {run.join_connect_s.errors}"
        )
    if run.subscription_change_failures:
        found.append(f"{run.subscription_change_failures} subscription changes were not confirmed")
    if run.sessions_lost:
        found.append(
            f"{run.sessions_lost} avatar sessions ended without the avatar leaving: "
            + lost_sessions_text(run)
        )
    if run.inbox_dropped:
        found.append(f"avatars' inboxes dropped {run.inbox_dropped:,} messages (bots too slow)")
    if beyond_guard(run):
        found.append(
            f"latency p99 above the expectation rule's {GUARD:g} s margin: an unsubscription "
            "may overtake a message the rule expected, so loss is overstated"
        )
    missing = run.chat.expected - run.chat.arrived
    if missing > 0:
        found.append(
            f"reliable chat: {missing} expected message(s) had not arrived {CHAT_DRAIN:g} s "
            "after traffic ended"
            + (": a bug" if chat_loss_is_a_bug(run) else " (late or lost: see the warnings above)")
        )
    return found
