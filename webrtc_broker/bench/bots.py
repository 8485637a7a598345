"""A bot worker process: its share of the bots, on its own event loop.

Run by the bench as ``python -m webrtc_broker.bench.bots --plan JSON``. The
bots must not share a process with the comm server under test (they would
steal its core) nor with the orchestrator (its progress display and sampling
would disturb their timing), hence worker processes.

It speaks JSON lines with the orchestrator:

* stdout ``{"event": "connect", "ok": true, "seconds": 0.8, "started": T,
  "ended": T'}`` once per bot (``"ok": false, "error": "<exception type>"``
  for a failure; ``started`` and ``ended`` are wall-clock times, so the
  orchestrator can tell how long all workers' connects took together), then
  ``{"event": "ready"}`` when every bot is connected and subscribed;
* stdin ``{"start": T0, "window_start": T1, "window_end": T2, "traffic_end":
  T3}`` (wall-clock ``time.time()`` values): publish from T0 to T3, measure
  T1 to T2;
* stdout ``{"event": "result", ...}`` (:class:`WorkerResult`) after T3, then
  it closes its bots and exits.

Two counts come out of the window. ``received`` counts arrivals between T1
and T2: the throughput, and the latency samples. ``arrived`` counts the
messages *sent* between T1 and T2 that arrived before T3: compared with what
was published in the window it gives the loss, unaffected by a backlog that
drains into the window or out of it (counting arrivals alone can even yield a
negative loss). Traffic goes on until T3 so that those last messages travel
through a loaded broker like the others.

Each bot publishes on a fixed schedule, phase-shifted by its index so the
bots do not all fire in the same millisecond. A worker that falls more than a
period behind skips ticks (and counts them) rather than bursting to catch up,
so an overloaded load generator shows up as fewer publishes, not as a
distorted burst pattern.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from webrtc_broker.bench.latency import LatencyHistogram
from webrtc_broker.bench.payload import decode_body, encode_body
from webrtc_broker.client import BrokerClient, BrokerError, ClosedError

CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class WorkerPlan:
    coordinator_url: str
    topic: str
    bots: list[tuple[int, int | None]]
    """(global bot index, alias of the server to pin it to, or ``None`` for any)."""
    total_bots: int
    rate: float
    size: int
    reliable: bool
    connect_concurrency: int
    connect_timeout: float

    def to_argv(self) -> list[str]:
        return ["--plan", json.dumps(asdict(self))]

    @classmethod
    def from_json(cls, text: str) -> WorkerPlan:
        data = json.loads(text)
        data["bots"] = [(int(index), server) for index, server in data["bots"]]
        return cls(**data)


@dataclass(frozen=True)
class Schedule:
    start: float
    window_start: float
    window_end: float
    traffic_end: float
    """Publishing stops here; a message sent in the window and arriving later is lost."""

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class WorkerResult:
    published: int = 0
    """Publishes inside the window."""
    received: int = 0
    """Messages received inside the window."""
    arrived: int = 0
    """Messages sent inside the window that arrived before ``traffic_end``."""
    skipped: int = 0
    inbox_dropped: int = 0
    sessions_lost: int = 0
    undecodable: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerResult:
        counts = {k: int(v) for k, v in data.items() if k not in ("latency", "event")}
        return cls(**counts, latency=LatencyHistogram.from_json(data["latency"]))


@dataclass
class Bot:
    """One bot: its index among all bots (which staggers its publishes) and its client."""

    index: int
    client: BrokerClient


def emit(event: str, **fields: Any) -> None:
    """One JSON line to the orchestrator (a short write to a pipe it always reads)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _connect_all(plan: WorkerPlan) -> list[Bot]:
    gate = asyncio.Semaphore(plan.connect_concurrency)

    async def connect(index: int, server: int | None) -> Bot | None:
        async with gate:
            started = time.perf_counter()
            wall = time.time()

            def ended() -> dict[str, float]:
                return {"started": wall, "ended": wall + time.perf_counter() - started}

            try:
                # No reconnect: a lost session must show in ``sessions_lost``, not
                # silently move the bot to another server.
                client = await BrokerClient.connect(
                    plan.coordinator_url,
                    f"bot-{index}",
                    server=server,
                    timeout=plan.connect_timeout,
                    reconnect=None,
                )
            except (BrokerError, OSError) as exc:
                emit("connect", ok=False, error=type(exc).__name__, **ended())
                return None
            seconds = time.perf_counter() - started
            times = ended()
            try:
                client.subscribe([plan.topic])
                # The echo of a PING sent after SUBSCRIPTION proves the server applied it.
                await asyncio.wait_for(client.ping(), plan.connect_timeout)
            except (BrokerError, TimeoutError) as exc:
                await client.close()
                emit("connect", ok=False, error=f"subscribe:{type(exc).__name__}", **times)
                return None
            emit("connect", ok=True, seconds=seconds, **times)
            return Bot(index, client)

    bots = await asyncio.gather(*(connect(index, server) for index, server in plan.bots))
    return [bot for bot in bots if bot is not None]


class SkipCount(Protocol):
    skipped: int
    """Publish ticks skipped inside the window."""


async def ticks(
    period: float,
    first: float,
    schedule: Schedule,
    counts: SkipCount,
    going: Callable[[], bool] = lambda: True,
) -> AsyncIterator[float]:
    """The send times of a fixed schedule from ``first`` until traffic ends (or ``going``
    says to stop). Ticks more than a period late are skipped and counted in ``counts``
    when they fall in the window: an overloaded worker publishes less, it does not burst
    to catch up."""
    next_at = first
    while next_at < schedule.traffic_end and going():
        delay = next_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -period:
            missed = int(-delay / period)
            if schedule.window_start <= next_at < schedule.window_end:
                counts.skipped += missed
            next_at += missed * period
            continue
        yield next_at
        next_at += period


async def publish_loop(
    bot: Bot, plan: WorkerPlan, schedule: Schedule, result: WorkerResult
) -> None:
    period = 1.0 / plan.rate
    first = schedule.start + period * bot.index / plan.total_bots
    sequence = 0
    async for _ in ticks(period, first, schedule, result):
        now = time.time()
        if now >= schedule.traffic_end:
            return
        body = encode_body(now, bot.index, sequence, plan.size)
        try:
            bot.client.publish(plan.topic, body, reliable=plan.reliable)
        except ClosedError:
            return
        if schedule.window_start <= now < schedule.window_end:
            result.published += 1
        sequence += 1


async def receive_loop(bot: Bot, schedule: Schedule, result: WorkerResult) -> None:
    client = bot.client
    latency = result.latency
    with contextlib.suppress(ClosedError):
        while True:
            message = await client.receive()
            now = time.time()
            if now >= schedule.traffic_end:
                return
            try:
                sent_at = decode_body(message.body)[0]
            except struct.error:
                result.undecodable += 1
                continue
            if schedule.window_start <= sent_at < schedule.window_end:
                result.arrived += 1
            if schedule.window_start <= now < schedule.window_end:
                latency.add(now - sent_at)
                result.received += 1


async def run_traffic(
    jobs: list[Coroutine[Any, Any, None]], bots: list[Bot], schedule: Schedule
) -> tuple[int, int]:
    """Run the bots' publish and receive ``jobs`` until traffic ends; then the messages
    their inboxes dropped and the sessions that closed meanwhile."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        await asyncio.sleep(max(0.0, schedule.traffic_end - time.time()))
        # Receivers return at their first message after the window; idle ones wait here.
        await asyncio.wait(tasks, timeout=0.2)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dropped = sum(bot.client.dropped for bot in bots)
    return dropped, sum(1 for bot in bots if bot.client.closed)


async def _traffic(bots: list[Bot], plan: WorkerPlan, schedule: Schedule) -> WorkerResult:
    result = WorkerResult()
    jobs = [
        job
        for bot in bots
        for job in (publish_loop(bot, plan, schedule, result), receive_loop(bot, schedule, result))
    ]
    result.inbox_dropped, result.sessions_lost = await run_traffic(jobs, bots, schedule)
    return result


async def close_clients(clients: Iterable[BrokerClient]) -> None:
    """Close every client, giving up after :data:`CLOSE_TIMEOUT` (the process ends anyway)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def read_stdin() -> asyncio.StreamReader:
    """The orchestrator's commands: this process's stdin, read without blocking the loop."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def next_command(commands: asyncio.StreamReader) -> dict[str, Any] | None:
    """The orchestrator's next JSON command; ``None`` when it closed stdin instead."""
    line = await commands.readline()
    if not line:
        return None
    data = json.loads(line)
    return data if isinstance(data, dict) else None


async def next_times(commands: asyncio.StreamReader) -> dict[str, float] | None:
    """The next command, all of whose values are wall-clock times or rates."""
    command = await next_command(commands)
    return None if command is None else {k: float(v) for k, v in command.items()}


async def next_schedule(commands: asyncio.StreamReader) -> Schedule | None:
    """The schedule the orchestrator sends on stdin; ``None`` when it closed stdin instead."""
    times = await next_times(commands)
    return None if times is None else Schedule(**times)


async def run_worker(plan: WorkerPlan) -> None:
    commands = await read_stdin()
    bots = await _connect_all(plan)
    try:
        emit("ready", connected=len(bots))
        schedule = await next_schedule(commands)
        if schedule is None:
            return  # the orchestrator gave up
        result = await _traffic(bots, plan, schedule)
        emit("result", **result.to_json())
    finally:
        await close_clients(bot.client for bot in bots)


def worker_plan(argv: list[str] | None, description: str, plan: str) -> str:
    """The ``--plan`` JSON a worker process was started with, once the process is set up
    as every bench worker is: Ctrl-C ignored, warnings logged."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--plan", required=True, help=f"{plan} as JSON")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the orchestrator stops workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return str(args.plan)


def main(argv: list[str] | None = None) -> None:
    text = worker_plan(argv, "A bench bot worker (started by the bench).", "WorkerPlan")
    asyncio.run(run_worker(WorkerPlan.from_json(text)))


if __name__ == "__main__":
    main()
