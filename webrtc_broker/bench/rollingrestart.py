"""``webrtc-broker bench coordinator-restart``: a rolling restart of the coordinators under load.

Coordinator replicas share no store, so one that goes away should cost
nothing established (sessions do not go through a coordinator) and nothing
new (clients given every replica's URL move on to the next). This measures
that on a local cluster: ``--coordinators`` replicas in disjoint alias
spaces, ``--servers`` comm servers linked to all of them, and clients given
every coordinator URL (:mod:`.restartclients`, in worker processes): a
steady stream of short-lived ones, ``--connect-rate`` a second for
``--duration`` seconds, each holding its session ``--hold`` seconds, and
``--witnesses`` long-lived ones that count every message.

Once the stream is steady, each replica in turn is stopped (SIGTERM, or
SIGKILL with ``--kill``), started again on its port with its replica id,
waited for until every comm server is registered with it (its ``/status``),
and given ``--settle`` seconds. A line per interval shows the stream's
connects, a line per restart step its time; then the totals. The exit
status is 1 if a connect failed or an established session or a message was
lost.

The building blocks (:class:`ClientLoad`, :func:`restart_replica`, and
:mod:`.localcluster`'s replica control) are what the end-to-end tests use
at a smaller scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from webrtc_broker.bench.localcluster import (
    ClusterError,
    ClusterHandle,
    local_cluster,
    start_coordinator,
    stop_coordinator,
    wait_rejoined,
)
from webrtc_broker.bench.restartclients import CLOSE_BUDGET, DRAIN, WorkerPlan
from webrtc_broker.bench.runner import server_sessions
from webrtc_broker.bench.sampling import cpu_seconds, machine_busy_seconds
from webrtc_broker.cluster import spawn, stop

WORKER_MODULE = "webrtc_broker.bench.restartclients"
READY_BUDGET = 90.0
"""Seconds the workers have to connect their witnesses and hear every one."""
RESULT_BUDGET = DRAIN + 30.0
LATE_WARNING = 1.0
"""Seconds a connect may start after it was due before the report says the load
generator fell behind."""


class LoadError(Exception):
    """The load generator could not run (a worker died, witnesses never met)."""


# -- options -----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    """The clients: the stream of short-lived ones and the witnesses."""

    witnesses: int = 10
    witness_rate: float = 1.0
    """Messages per second each witness publishes."""
    stream_rate: float = 0.5
    """Messages per second each stream client publishes while it holds its session."""
    hold: float = 5.0
    """Seconds a stream client keeps its session before it closes it."""
    connect_timeout: float = 20.0
    """Each connect's budget (the SDK's default), every coordinator URL included."""
    workers: int = 2
    """Worker processes of the stream (the witnesses have one of their own)."""

    def __post_init__(self) -> None:
        if self.witnesses < 2 or self.witness_rate <= 0 or self.stream_rate < 0:
            raise ValueError("need --witnesses >= 2, --witness-rate > 0, --stream-rate >= 0")
        if self.hold <= 0 or self.connect_timeout <= 0 or self.workers < 1:
            raise ValueError("need --hold > 0, --connect-timeout > 0 and --workers >= 1")


@dataclass(frozen=True)
class RestartBenchOptions:
    coordinators: int = 2
    servers: int = 2
    connect_rate: float = 20.0
    duration: float = 60.0
    hold: float = 5.0
    witnesses: int = 10
    witness_rate: float = 1.0
    stream_rate: float = 0.5
    settle: float = 5.0
    kill: bool = False
    no_restart: bool = False
    """Only the load: what the machine sustains without restarts."""
    workers: int | None = None
    connect_timeout: float = 20.0
    interval: float = 5.0
    batch_window: float = 0.01
    json_path: Path | None = None
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.coordinators < 2 and not self.no_restart:
            raise ValueError("a rolling restart needs --coordinators >= 2")
        if self.servers < 1 or self.connect_rate <= 0 or self.duration <= 0:
            raise ValueError("need --servers >= 1, --connect-rate > 0 and --duration > 0")
        if self.settle < 0 or self.interval <= 0:
            raise ValueError("need --settle >= 0 and --interval > 0")
        self.load()  # its own checks

    def load(self) -> LoadOptions:
        return LoadOptions(
            witnesses=self.witnesses,
            witness_rate=self.witness_rate,
            stream_rate=self.stream_rate,
            hold=self.hold,
            connect_timeout=self.connect_timeout,
            workers=self.workers or default_workers(self.connect_rate),
        )


CONNECTS_PER_WORKER = 10.0
"""Stream connects a second one worker process is given (measured on 2 cores: one
Python process sets up about that many WebRTC sessions a second beside its others)."""


def default_workers(connect_rate: float) -> int:
    return max(1, math.ceil(connect_rate / CONNECTS_PER_WORKER))


# -- the orchestrator's side of the workers -----------------------------------------


_URL = re.compile(r"wss?://[^\s:/]+(:\d+)?/?")
_ADDRESS = re.compile(r"\s*\('[^']*', \d+\)")


def retry_reason(tried: str) -> str:
    """A "URL: reason" record of a connect moving on, without addresses, so alike ones
    count together."""
    reason = tried.split(": ", 1)[1] if ": " in tried else tried
    return _ADDRESS.sub("", _URL.sub("<coordinator>", reason))


@dataclass(frozen=True)
class FailedConnect:
    started: float
    ended: float
    error: str

    def in_flight(self, moments: list[float]) -> bool:
        """Whether it was under way at one of ``moments`` (a stop signal's wall time)."""
        return any(self.started <= moment <= self.ended for moment in moments)


@dataclass(frozen=True)
class Connect:
    started: float
    ended: float
    ok: bool
    retried: bool
    url: str | None
    """The coordinator that gave the session (``None``: it failed)."""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Tally:
    """The stream's outcomes so far, from every worker's events."""

    attempted: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failure_details: dict[str, str] = field(default_factory=dict)
    """One message per failure kind (the first seen)."""
    failures: list[FailedConnect] = field(default_factory=list)
    retried: int = 0
    """Connects that gave up on at least one coordinator URL (success or not)."""
    retried_ok: int = 0
    connect_seconds: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    """Seconds each connect started after it was due: the load generator falling behind."""
    closed: int = 0
    lost: Counter[str] = field(default_factory=Counter)
    published: int = 0
    received: int = 0
    deaf: int = 0
    """Stream clients that held a session and heard no witness message."""
    via: Counter[str] = field(default_factory=Counter)
    """Successful connects by the coordinator URL that gave the session."""
    retry_reasons: Counter[str] = field(default_factory=Counter)
    """Why a connect moved on to the next coordinator URL (the SDK's words)."""
    connects: list[Connect] = field(default_factory=list)
    """Every connect, for the per-interval lines."""

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def open(self) -> int:
        return self.succeeded - self.closed

    def add(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "connect":
            self._connect(event)
        elif kind == "closed":
            self.closed += 1
            self.published += int(event["published"])
            self.received += int(event["received"])
            if event.get("lost"):
                self.lost[str(event["lost"])] += 1
            elif int(event["received"]) == 0:
                self.deaf += 1

    def _connect(self, event: dict[str, Any]) -> None:
        self.attempted += 1
        tried = [str(entry) for entry in event.get("tried", [])]
        retried = bool(tried)
        self.retried += retried
        self.retry_reasons.update(retry_reason(entry) for entry in tried)
        started, ended = float(event["started"]), float(event["ended"])
        self.lag.append(max(0.0, started - float(event["due"])))
        if event["ok"]:
            self.succeeded += 1
            self.retried_ok += retried
            self.connect_seconds.append(ended - started)
            self.via[str(event["url"])] += 1
        else:
            error = str(event["error"])
            self.failed[error] += 1
            self.failure_details.setdefault(error, str(event.get("detail", "")))
            self.failures.append(FailedConnect(started, ended, error))
        url = str(event["url"]) if event["ok"] else None
        self.connects.append(Connect(started, ended, bool(event["ok"]), retried, url))


@dataclass
class _WorkerProcess:
    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stream_done: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[list[dict[str, Any]]] | None = None

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()


class ClientLoad:
    """The witnesses and the stream, in worker processes; see the module docstring."""

    def __init__(self, urls: list[str], options: LoadOptions) -> None:
        self.urls = urls
        self.options = options
        self.tally = Tally()
        self.started_at: float | None = None
        """Wall-clock start of the stream (T0)."""
        self._workers: list[_WorkerProcess] = []
        self._readers: list[asyncio.Task[None]] = []

    def plans(self) -> list[WorkerPlan]:
        """The witnesses' worker, then the stream's: the witnesses' sessions must not wait
        behind the CPU that WebRTC set-ups take in a stream worker's event loop."""
        options = self.options
        count = options.workers
        witnesses = list(range(options.witnesses))
        return [
            WorkerPlan(
                urls=self.urls,
                stream_worker=slot,
                stream_workers=count,
                witnesses=witnesses if slot is None else [],
                witness_total=options.witnesses,
                witness_rate=options.witness_rate,
                stream_rate=options.stream_rate,
                hold=options.hold,
                connect_timeout=options.connect_timeout,
            )
            for slot in [None, *range(count)]
        ]

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, urls: list[str], options: LoadOptions, log: IO[bytes]
    ) -> AsyncIterator[ClientLoad]:
        """Workers started and their witnesses connected and hearing each other; every
        worker stopped on exit."""
        load = cls(urls, options)
        try:
            for index, plan in enumerate(load.plans()):
                process = await spawn(
                    *plan.to_argv(),
                    module=WORKER_MODULE,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
                worker = _WorkerProcess(index, process)
                worker.result = asyncio.get_running_loop().create_future()
                load._workers.append(worker)
                load._readers.append(asyncio.create_task(load._follow(worker)))
            await load._wait_all("ready", READY_BUDGET)
            yield load
        finally:
            # Stopped first: a reader waits for its worker's exit once its stdout ends.
            await stop([worker.process for worker in load._workers])
            for reader in load._readers:
                reader.cancel()
            await asyncio.gather(*load._readers, return_exceptions=True)
            for worker in load._workers:
                if worker.result is not None and worker.result.done():
                    worker.result.exception()  # seen: a failure was raised already, or not

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [worker.process.pid for worker in self._workers]

    async def _follow(self, worker: _WorkerProcess) -> None:
        """Read the worker's events until it exits; its death fails whoever waits."""
        stdout = worker.process.stdout
        assert stdout is not None and worker.result is not None
        while line := await stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "ready":
                worker.ready.set()
            elif kind == "stream-done":
                worker.stream_done.set()
            elif kind == "result":
                worker.result.set_result(list(event["witnesses"]))
            else:
                self.tally.add(event)
        if not worker.result.done():
            code = await worker.process.wait()
            worker.result.set_exception(
                LoadError(f"client worker {worker.index} exited with code {code}")
            )

    async def _wait_all(self, what: str, budget: float) -> None:
        """Until every worker reached ``what`` (``ready``, ``stream_done``); a dead
        worker or the budget fails it."""

        async def one(worker: _WorkerProcess) -> None:
            assert worker.result is not None
            flag = worker.ready if what == "ready" else worker.stream_done
            waiting: asyncio.Future[Any] = asyncio.ensure_future(flag.wait())
            either: set[asyncio.Future[Any]] = {waiting, worker.result}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if not flag.is_set():
                worker.result.result()  # raises why it died
                raise LoadError(f"client worker {worker.index} answered before {what}")

        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(*(one(worker) for worker in self._workers))
        except TimeoutError as exc:
            raise LoadError(f"the client workers were not {what} within {budget:.0f} s") from exc

    async def begin(self, connect_rate: float, duration: float, lead_in: float = 1.0) -> float:
        """Start the witnesses' traffic and the stream ``lead_in`` s from now; return T0."""
        start = time.time() + lead_in
        command = {"start": start, "connect_rate": connect_rate, "stream_end": start + duration}
        await asyncio.gather(*(worker.send(command) for worker in self._workers))
        self.started_at = start
        return start

    async def finish(self, duration: float) -> LoadReport:
        """Wait for the stream to end, stop the witnesses, and count everything."""
        budget = duration + self.options.hold + self.options.connect_timeout + 30.0
        await self._wait_all("stream_done", budget)
        await asyncio.gather(*(worker.send({"stop": True}) for worker in self._workers))
        results = []
        async with asyncio.timeout(RESULT_BUDGET):
            for worker in self._workers:
                assert worker.result is not None
                results.extend(await worker.result)
        # They close their witnesses and exit by themselves; stopping them would cut that.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_BUDGET + 5):
                await asyncio.gather(*(worker.process.wait() for worker in self._workers))
        return LoadReport.from_results(self.tally, results, self.options.witnesses)


# -- counting -------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class LoadReport:
    """Everything the clients saw, counted."""

    attempted: int
    succeeded: int
    failed: dict[str, int]
    failure_details: dict[str, str]
    failures: list[FailedConnect]
    retried: int
    retried_ok: int
    connect_p50: float | None
    connect_p95: float | None
    connect_max: float | None
    lag_p95: float | None
    lag_max: float | None
    via: dict[str, int]
    retry_reasons: dict[str, int]
    stream_lost: dict[str, int]
    stream_published: int
    stream_expected: int
    stream_received: int
    stream_deaf: int
    witness_published: int
    witness_expected: int
    witness_received: int
    witness_duplicates: int
    witnesses_lost: dict[str, str]
    """Witness index -> why its session ended early."""

    @classmethod
    def from_results(cls, tally: Tally, witnesses: list[dict[str, Any]], count: int) -> LoadReport:
        published = {int(w["index"]): int(w["published"]) for w in witnesses}
        received = sum(int(n) for w in witnesses for n in w["received"].values())
        expected = sum(published.values()) * (count - 1)
        return cls(
            attempted=tally.attempted,
            succeeded=tally.succeeded,
            failed=dict(tally.failed),
            failure_details=dict(tally.failure_details),
            failures=list(tally.failures),
            retried=tally.retried,
            retried_ok=tally.retried_ok,
            connect_p50=percentile(tally.connect_seconds, 0.5),
            connect_p95=percentile(tally.connect_seconds, 0.95),
            connect_max=max(tally.connect_seconds, default=None),
            lag_p95=percentile(tally.lag, 0.95),
            lag_max=max(tally.lag, default=None),
            via=dict(tally.via),
            retry_reasons=dict(tally.retry_reasons),
            stream_lost=dict(tally.lost),
            stream_published=tally.published,
            stream_expected=tally.published * count,
            stream_received=sum(int(w["stream_received"]) for w in witnesses),
            stream_deaf=tally.deaf,
            witness_published=sum(published.values()),
            witness_expected=expected,
            witness_received=received,
            witness_duplicates=sum(int(w["duplicates"]) for w in witnesses),
            witnesses_lost={str(w["index"]): str(w["lost"]) for w in witnesses if w["lost"]},
        )

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def sessions_lost(self) -> int:
        return sum(self.stream_lost.values()) + len(self.witnesses_lost)

    @property
    def witness_lost(self) -> int:
        return self.witness_expected - self.witness_received

    @property
    def stream_messages_lost(self) -> int:
        return self.stream_expected - self.stream_received

    def problems(self) -> list[str]:
        """What makes the run fail: anything lost, any connect failed."""
        found = []
        if self.failed_total:
            found.append(f"{self.failed_total} connects failed")
        if self.sessions_lost:
            found.append(f"{self.sessions_lost} established sessions lost")
        if self.witness_lost:
            found.append(f"{self.witness_lost} witness messages lost")
        if self.stream_messages_lost:
            found.append(f"{self.stream_messages_lost} stream messages lost")
        return found

    def in_flight(self, signals: list[float]) -> list[FailedConnect]:
        """The failed connects that were under way when a coordinator was signalled."""
        return [failure for failure in self.failures if failure.in_flight(signals)]

    def lines(self, duration: float, connect_rate: float, signals: list[float]) -> list[str]:
        """The totals, for people; ``signals``: wall times of the stop signals."""
        failures = ", ".join(f"{kind} {n}" for kind, n in sorted(self.failed.items()))
        if self.failed_total:
            failures += f"; {len(self.in_flight(signals))} under way at a stop signal"
        via = ", ".join(f"{url} {n}" for url, n in sorted(self.via.items()))
        lines = [
            f"connects: attempted {self.attempted}, succeeded {self.succeeded}, "
            f"failed {self.failed_total}{f' ({failures})' if failures else ''}, "
            f"retried {self.retried} (needed more than one coordinator URL; "
            f"{self.retried_ok} of them succeeded)",
            f"connect rate: asked {connect_rate:g}/s, attempted {self.attempted / duration:.1f}/s, "
            f"succeeded {self.succeeded / duration:.1f}/s; connect s p50 {_s(self.connect_p50)} "
            f"p95 {_s(self.connect_p95)} max {_s(self.connect_max)}; started late by "
            f"p95 {_s(self.lag_p95)} max {_s(self.lag_max)} s",
            f"sessions by coordinator: {via or '-'}",
            f"established sessions lost: {self.sessions_lost} (stream "
            f"{sum(self.stream_lost.values())}, witnesses {len(self.witnesses_lost)})",
            f"witness messages: published {self.witness_published}, deliveries expected "
            f"{self.witness_expected}, received {self.witness_received}, lost {self.witness_lost}, "
            f"duplicates {self.witness_duplicates}",
            f"stream messages: published {self.stream_published}, deliveries to witnesses "
            f"expected {self.stream_expected}, received {self.stream_received}, lost "
            f"{self.stream_messages_lost}; stream clients that heard no witness: "
            f"{self.stream_deaf}",
        ]
        if (self.lag_max or 0.0) > LATE_WARNING:
            lines.append(
                f"warning: the client workers fell behind the schedule (up to "
                f"{self.lag_max:.1f} s): the machine does not sustain this rate with these "
                f"--workers"
            )
        lines += [f"  moved on {n}x: {why}" for why, n in self.retry_reasons.items()]
        lines += [f"  failed {kind}: {text}" for kind, text in sorted(self.failure_details.items())]
        lines += [f"  lost {kind}: {n}" for kind, n in sorted(self.stream_lost.items())]
        lines += [f"  witness {i} lost: {why}" for i, why in sorted(self.witnesses_lost.items())]
        return lines


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- the restarts ---------------------------------------------------------------------


@dataclass(frozen=True)
class RestartTiming:
    replica: int
    signal: str
    signalled_at: float
    """Wall-clock time of the signal."""
    exit_code: int
    stopped: float
    """Seconds from the signal to the process's exit."""
    ready: float
    """Seconds from the signal to ``/readyz`` answering again (the replica's outage)."""
    rejoined: float
    """Seconds from the signal to every comm server registered with it again."""


Clock = Callable[[], float]


async def restart_replica(
    cluster: ClusterHandle, index: int, *, kill: bool, out: Callable[[str], None], clock: Clock
) -> RestartTiming:
    """Stop replica ``index``, start it again alike, wait for every server to rejoin it;
    a line per step, stamped with ``clock()`` (seconds into the run)."""
    name = "SIGKILL" if kill else "SIGTERM"
    url = cluster.coordinators[index].url
    began = time.monotonic()
    signalled_at = time.time()
    out(f"{clock():7.1f}s  replica {index} ({url}): {name}")
    code = await stop_coordinator(cluster, index, kill=kill)
    stopped = time.monotonic() - began
    out(f"{clock():7.1f}s  replica {index}: exited with status {code} after {stopped:.2f} s")
    await start_coordinator(cluster, index)
    ready = time.monotonic() - began
    out(f"{clock():7.1f}s  replica {index}: started again, ready {ready:.2f} s after the {name}")
    await wait_rejoined(cluster, index)
    rejoined = time.monotonic() - began
    out(
        f"{clock():7.1f}s  replica {index}: every comm server registered again, "
        f"{rejoined:.2f} s after the {name}"
    )
    return RestartTiming(index, name, signalled_at, code, stopped, ready, rejoined)


async def rolling_restart(
    cluster: ClusterHandle,
    *,
    kill: bool,
    settle: float,
    out: Callable[[str], None],
    clock: Clock,
) -> list[RestartTiming]:
    """Each replica in turn, ``settle`` s after the previous one has rejoined."""
    timings = []
    for index in range(len(cluster.coordinators)):
        timings.append(await restart_replica(cluster, index, kill=kill, out=out, clock=clock))
        await asyncio.sleep(settle)
    return timings


# -- the command ----------------------------------------------------------------------


CENSUS_INTERVAL = 1.0
"""Seconds between CPU readings: a coordinator stopped meanwhile loses at most that."""


@dataclass
class CpuCensus:
    """CPU seconds each process spent during the stream, by role, read from /proc.

    Processes come and go (a restarted coordinator is a new process), so each is
    read every :data:`CENSUS_INTERVAL` from when it is first seen until it is gone.
    """

    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    machine_start: float = 0.0
    machine_end: float = 0.0

    def read(self, processes: dict[int, str]) -> None:
        for pid, role in processes.items():
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            self.first.setdefault(pid, seconds)
            self.last[pid] = seconds
            self.roles[pid] = role
        self.machine_end = machine_busy_seconds()

    async def follow(self, processes: Callable[[], dict[int, str]], end: float) -> None:
        self.machine_start = machine_busy_seconds()
        while True:
            self.read(processes())
            if time.time() >= end:
                return
            await asyncio.sleep(min(CENSUS_INTERVAL, max(0.0, end - time.time())))

    def percent(self, elapsed: float) -> dict[str, float]:
        """% of one core by role, and ``machine``: the whole machine's busy time."""
        used: dict[str, float] = {}
        for pid, role in self.roles.items():
            used[role] = used.get(role, 0.0) + self.last[pid] - self.first[pid]
        shares = {role: 100.0 * seconds / elapsed for role, seconds in sorted(used.items())}
        shares["machine"] = 100.0 * (self.machine_end - self.machine_start) / elapsed
        return shares


def cluster_processes(cluster: ClusterHandle, load: ClientLoad) -> dict[int, str]:
    """Every process of the run now, with its role."""
    found = {pid: "client workers" for pid in load.pids}  # the witnesses' and the stream's
    found.update({s.pid: "comm servers" for s in cluster.servers if s.pid is not None})
    found.update(
        {c.process.pid: "coordinators" for c in cluster.coordinators if c.process is not None}
    )
    return found


async def _report_intervals(
    tally: Tally, start: float, end: float, interval: float, out: Callable[[str], None]
) -> None:
    """One line per interval of the stream: its connects and the sessions open now."""
    out(f"{'time':>8}  attempted  succeeded  failed  retried  open  connect-p95-s")
    since = start
    while since < end:
        await asyncio.sleep(max(0.0, min(since + interval, end) - time.time()))
        until = time.time()
        window = [c for c in tally.connects if since <= c.ended < until]
        seconds = [c.seconds for c in window if c.ok]
        out(
            f"{until - start:7.1f}s  {len(window):9d}  {len(seconds):9d}  "
            f"{len(window) - len(seconds):6d}  {sum(c.retried for c in window):7d}  "
            f"{tally.open:4d}  {_s(percentile(seconds, 0.95)):>13}"
        )
        since = until


async def run_restart_bench(options: RestartBenchOptions, out: Callable[[str], None]) -> int:
    """The whole command; 0 when nothing was lost and every connect succeeded."""
    log_dir = options.log_dir or Path.cwd()
    log_path = log_dir / "bench-coordinator-restart.log"
    load_options = options.load()
    async with local_cluster(
        options.servers, options.batch_window, log_path, coordinators=options.coordinators
    ) as cluster:
        with log_path.open("ab") as log:
            async with ClientLoad.running(cluster.coordinator_urls, load_options, log) as load:
                out(
                    f"coordinator-restart: {options.coordinators} coordinators, "
                    f"{options.servers} comm servers, {options.connect_rate:g} connects/s for "
                    f"{options.duration:g} s holding {options.hold:g} s, {options.witnesses} "
                    f"witnesses at {options.witness_rate:g} msg/s, {load_options.workers} stream "
                    f"workers, restart by "
                    f"{'none' if options.no_restart else 'SIGKILL' if options.kill else 'SIGTERM'}"
                    f" (log: {log_path})"
                )
                start = await load.begin(options.connect_rate, options.duration)
                end = start + options.duration
                census = CpuCensus()
                watchers = [
                    asyncio.create_task(
                        _report_intervals(load.tally, start, end, options.interval, out)
                    ),
                    asyncio.create_task(
                        census.follow(lambda: cluster_processes(cluster, load), end)
                    ),
                ]
                try:
                    timings = await _restarts(cluster, options, start, out)
                    await asyncio.gather(*watchers)
                finally:
                    for watcher in watchers:
                        watcher.cancel()
                    await asyncio.gather(*watchers, return_exceptions=True)
                report = await load.finish(options.duration)
                sessions = await server_sessions(cluster)
                pids = [*load.pids, *(process.pid for process in cluster.processes)]
    cpu = census.percent(options.duration)
    return _conclude(
        options,
        report,
        timings=timings,
        start=start,
        pids=pids,
        cpu=cpu,
        sessions=sessions,
        out=out,
    )


async def _restarts(
    cluster: ClusterHandle,
    options: RestartBenchOptions,
    start: float,
    out: Callable[[str], None],
) -> list[RestartTiming]:
    """The rolling restart, once the stream has reached its steady state."""
    if options.no_restart:
        return []
    await asyncio.sleep(max(0.0, start + max(options.settle, options.hold) - time.time()))
    timings = await rolling_restart(
        cluster,
        kill=options.kill,
        settle=options.settle,
        out=out,
        clock=lambda: time.time() - start,
    )
    if time.time() > start + options.duration:
        out("warning: the restarts outlasted the stream (a longer --duration covers them)")
    return timings


def _conclude(
    options: RestartBenchOptions,
    report: LoadReport,
    *,
    timings: list[RestartTiming],
    start: float,
    pids: list[int],
    cpu: dict[str, float],
    sessions: dict[str, int],
    out: Callable[[str], None],
) -> int:
    signals = [t.signalled_at for t in timings]
    for line in report.lines(options.duration, options.connect_rate, signals):
        out(line)
    for t in timings:
        out(
            f"restart of replica {t.replica} ({t.signal}): exit status {t.exit_code} after "
            f"{t.stopped:.2f} s, ready again after {t.ready:.2f} s, every comm server "
            f"registered after {t.rejoined:.2f} s"
        )
    out(
        "CPU over the stream, % of one core: "
        + ", ".join(f"{role} {share:.0f}" for role, share in cpu.items())
    )
    out("comm servers' sessions: " + ", ".join(f"{key} {n}" for key, n in sessions.items()))
    problems = report.problems()
    out(f"result: {'FAIL: ' + '; '.join(problems) if problems else 'PASS'}")
    if options.json_path is not None:
        data = {
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "started": start,
            "clients": asdict(report),
            "restarts": [asdict(t) for t in timings],
            "failed_under_way_at_a_signal": len(report.in_flight(signals)),
            "problems": problems,
            "pids": pids,
            "cpu_percent": cpu,
            "server_sessions": sessions,
        }
        options.json_path.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if problems else 0


def restart_bench_main(options: RestartBenchOptions) -> int:
    """Run from the CLI; Ctrl-C stops it (every process it started is stopped)."""
    out: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    try:
        return asyncio.run(run_restart_bench(options, out))
    except KeyboardInterrupt:
        return 130
    except (ClusterError, LoadError) as exc:
        out(f"error: {exc}")
        return 1
