"""The orchestrator's side of the bot workers: start, pace and collect them.

See :mod:`webrtc_broker.bench.bots` for the line protocol. Every wait here is
bounded, and :func:`stop_workers` ends whatever is still running, so a stuck
worker costs a timeout, never a hung bench.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, TypeVar

from webrtc_broker.bench.bots import CLOSE_TIMEOUT, Schedule, WorkerPlan, WorkerResult
from webrtc_broker.cluster import spawn, stop

BOTS_MODULE = "webrtc_broker.bench.bots"

T = TypeVar("T")


class WorkerError(Exception):
    """A worker died or broke the protocol."""


@dataclass
class ConnectLog:
    """Every bot's connect outcome, as the workers report them."""

    seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_started: float | None = None
    """Wall-clock time the first connect began (any worker)."""
    last_ended: float | None = None
    """Wall-clock time the last connect succeeded or failed."""

    @property
    def done(self) -> int:
        return len(self.seconds) + sum(self.errors.values())

    @property
    def total_seconds(self) -> float | None:
        """From the first connect's start to the last one's end: all bots' connect time."""
        if self.first_started is None or self.last_ended is None:
            return None
        return self.last_ended - self.first_started

    def add(self, event: dict[str, Any]) -> None:
        """One worker's ``connect`` event."""
        if event.get("ok"):
            self.seconds.append(float(event["seconds"]))
        else:
            self.errors[str(event.get("error", "unknown"))] += 1
        if "started" in event and "ended" in event:
            started, ended = float(event["started"]), float(event["ended"])
            self.first_started = min(started, self.first_started or started)
            self.last_ended = max(ended, self.last_ended or ended)


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process
    connected: int = 0

    async def event(self) -> dict[str, Any]:
        """The next JSON event from the worker's stdout (other lines are skipped)."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                code = await self.process.wait()
                raise WorkerError(f"bot worker {self.index} exited with code {code}")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                return event

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()


def make_plans(
    *,
    coordinator_url: str,
    topic: str,
    servers: list[int],
    bots: int,
    workers: int,
    rate: float,
    size: int,
    reliable: bool,
    connect_concurrency: int,
    connect_timeout: float,
) -> list[WorkerPlan]:
    """Bot ``i`` goes to server ``i mod servers`` (even spread) and worker ``i mod workers``."""
    return [
        WorkerPlan(
            coordinator_url=coordinator_url,
            topic=topic,
            bots=share,
            total_bots=bots,
            rate=rate,
            size=size,
            reliable=reliable,
            connect_concurrency=connect_concurrency,
            connect_timeout=connect_timeout,
        )
        for share in spread(bots, workers, servers)
    ]


def spread(clients: int, workers: int, servers: list[int]) -> list[list[tuple[int, int | None]]]:
    """Each worker's share of clients ``0 .. clients - 1``: client ``i`` goes to worker
    ``i mod workers``, pinned to server ``servers[i mod len(servers)]``."""
    shares: list[list[tuple[int, int | None]]] = [[] for _ in range(workers)]
    for index in range(clients):
        shares[index % workers].append((index, servers[index % len(servers)]))
    return shares


class Plan(Protocol):
    """What a worker process is started with: the dense bots' plan or another scenario's."""

    @property
    def connect_concurrency(self) -> int: ...

    def to_argv(self) -> list[str]: ...


async def start_workers(
    plans: Sequence[Plan], log: IO[bytes], module: str = BOTS_MODULE
) -> list[Worker]:
    """One worker process per plan, running ``module``; every one speaks the line protocol
    of :mod:`webrtc_broker.bench.bots`."""
    workers = []
    for index, plan in enumerate(plans):
        process = await spawn(
            *plan.to_argv(),
            module=module,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        workers.append(Worker(index, process))
    return workers


async def wait_ready(
    workers: list[Worker], connects: ConnectLog, on_connect: Callable[[], None]
) -> None:
    """Until every worker connected its bots; ``on_connect`` after each bot's outcome."""

    async def follow(worker: Worker) -> None:
        while True:
            event = await worker.event()
            if event["event"] == "connect":
                connects.add(event)
                on_connect()
            elif event["event"] == "ready":
                worker.connected = int(event["connected"])
                return

    await asyncio.gather(*(follow(worker) for worker in workers))


async def start_traffic(workers: list[Worker], schedule: Schedule) -> None:
    await asyncio.gather(*(worker.send(schedule.to_json()) for worker in workers))


async def collect(workers: list[Worker]) -> list[WorkerResult]:
    return await collect_events(workers, WorkerResult.from_json)


async def collect_events(workers: list[Worker], read: Callable[[dict[str, Any]], T]) -> list[T]:
    """Every worker's ``result`` event, as ``read`` makes it into the scenario's result."""

    async def result(worker: Worker) -> T:
        while True:
            event = await worker.event()
            if event["event"] == "result":
                return read(event)

    return list(await asyncio.gather(*(result(worker) for worker in workers)))


async def stop_workers(workers: list[Worker], *, graceful: bool) -> None:
    """Stop every worker: ``graceful`` lets them close their bots first (after a run).

    Without it (an error, Ctrl-C) they are terminated at once; their sessions
    die with them and the cluster is being stopped anyway.
    """
    processes = [worker.process for worker in workers]
    if graceful:
        for worker in workers:
            stdin = worker.process.stdin
            if stdin is not None and not stdin.is_closing():
                stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 5):
                await asyncio.gather(*(p.wait() for p in processes))
        except TimeoutError:
            pass
    await stop(processes)
