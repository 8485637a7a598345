"""The clients of ``bench coordinator-restart``, in worker processes of their own.

Run by :mod:`webrtc_broker.bench.rollingrestart` as ``python -m
webrtc_broker.bench.restartclients --plan JSON``: the clients' WebRTC set-ups
must not share an event loop with the orchestrator's timing, and one process
cannot set up 20 sessions a second. The witnesses get a worker of their own,
the stream one or more: a WebRTC set-up holds its event loop for tens of
milliseconds, and the witnesses' sessions must not wait behind the stream's.
Every client is given every coordinator URL and no reconnects: a session
that ends must show, not be replaced.

* **Witnesses** (long-lived) publish sequence-numbered reliable messages on
  :data:`WITNESS_TOPIC` and count, by sender, every other witness's message
  and every stream client's; before the run they probe until each one has
  heard every other, so that the counting starts on routes that work.
* **Stream clients** (short-lived) connect when due, subscribe to the
  witnesses' topic, publish on :data:`STREAM_TOPIC` for ``hold`` seconds,
  and close cleanly after a PING whose echo proves the server took every
  publish before it.

JSON lines with the orchestrator:

* stdout ``{"event": "ready"}`` once this worker's witnesses (if any) heard
  every other;
* stdin ``{"start": T0, "connect_rate": R, "stream_end": T1}``: connect ``i``
  of the stream is due at ``T0 + i / R`` (while before ``T1``); stream worker
  ``k`` of ``n`` takes the ``i`` with ``i mod n = k``; witnesses publish from T0;
* stdout ``connect`` (``ok``, the ``error`` kind, the coordinator URLs it
  gave up on in ``tried``) and ``closed`` (``lost``: why the session ended
  before its planned close, or null) per stream client, then
  ``stream-done``;
* stdin ``{"stop": true}`` once every worker's stream is done: witnesses stop
  publishing, keep receiving for :data:`DRAIN` seconds, and the worker
  answers ``{"event": "result", "witnesses": [...]}``, closes and exits.

Which connects needed a second coordinator URL is read from the SDK's own
log record for it ("no session through the coordinator at ...; trying the
next"), counted per connect through a context variable: the SDK's behaviour
is untouched; only its logger's level is lowered, and the records the
worker's WARNING level would not have shown are dropped again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import struct
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from webrtc_broker.bench.bots import emit, next_command, read_stdin
from webrtc_broker.client import BrokerClient, BrokerError, ClosedError

WITNESS_TOPIC = "ha/witness"
STREAM_TOPIC = "ha/stream"
BODY = struct.Struct("!BII")
"""Every message's body: kind, sender index, sequence."""
KIND_WITNESS, KIND_STREAM, KIND_PROBE = 1, 2, 3
BODY_SIZE = 64
PROBE_INTERVAL = 0.2
"""Seconds between a witness's probes while the witnesses find each other."""
DRAIN = 3.0
"""Seconds witnesses keep receiving after the last publish: a message later than
that on a reliable channel between processes of one machine counts as lost."""
CLOSE_PING_TIMEOUT = 20.0
"""Seconds a stream client waits for its last PING's echo: only a session that stalls
this long counts as lost (an overloaded machine answers late, not never)."""
CLOSE_BUDGET = 10.0
"""Seconds the worker gives its witnesses to close before it exits."""
SDK_LOGGER = "webrtc_broker.client.client"
NEXT_URL_RECORD = "no session through the coordinator at"
"""The start of the SDK's record for a connect moving on to the next coordinator URL."""


@dataclass(frozen=True)
class WorkerPlan:
    urls: list[str]
    stream_worker: int | None
    """This worker's index among the stream's workers; ``None``: it runs no stream."""
    stream_workers: int
    witnesses: list[int]
    """Global indexes of this worker's witnesses."""
    witness_total: int
    witness_rate: float
    stream_rate: float
    hold: float
    connect_timeout: float

    def to_argv(self) -> list[str]:
        return ["--plan", json.dumps(asdict(self))]

    @classmethod
    def from_json(cls, text: str) -> WorkerPlan:
        return cls(**json.loads(text))


_URLS_TRIED: ContextVar[list[str] | None] = ContextVar("coordinator_urls_tried", default=None)
"""The coordinator URLs the running connect gave up on, each with the SDK's reason
(set per stream client's task)."""


class _NextUrlCounter(logging.Filter):
    """Counts the SDK's "trying the next coordinator" records into the running connect,
    and lets through only what the worker's WARNING level would have shown anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(NEXT_URL_RECORD):
            tried = _URLS_TRIED.get()
            if tried is not None and isinstance(record.args, tuple) and len(record.args) == 2:
                url, why = record.args
                tried.append(f"{url}: {why}")
        return record.levelno >= logging.WARNING


def watch_url_changes() -> None:
    """Make the SDK's records of moving to the next coordinator URL countable."""
    sdk = logging.getLogger(SDK_LOGGER)
    sdk.setLevel(logging.INFO)
    sdk.addFilter(_NextUrlCounter())


def _body(kind: int, sender: int, sequence: int) -> bytes:
    return BODY.pack(kind, sender, sequence).ljust(BODY_SIZE, b"\0")


async def _connect(urls: list[str], name: str, timeout: float) -> BrokerClient:
    """A client without reconnects: a session that ends must show, not be replaced."""
    return await BrokerClient.connect(urls, name, timeout=timeout, reconnect=None)


def why_ended(client: BrokerClient, exc: BaseException) -> str:
    """``ErrorType (the session's close reason)``: the SDK's errors say that the session
    ended, its session says why (a silent server, a closed channel, ...)."""
    session = client.session
    reason = session.close_reason if session is not None else ""
    return type(exc).__name__ + (f" ({reason})" if reason else f" ({exc})")


def _error_kind(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, (str(exc) or type(exc).__name__)[:200]


@dataclass
class Witness:
    """A long-lived client: publishes numbered messages, counts everyone else's."""

    index: int
    client: BrokerClient
    total: int
    """Witnesses in the run, this one included."""
    published: int = 0
    heard: set[int] = field(default_factory=set)
    """Witnesses whose probes (or messages) arrived: their routes to us work."""
    met: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every other witness was heard."""
    seen: dict[int, set[int]] = field(default_factory=dict)
    """Witness messages received, by sender: their sequence numbers."""
    duplicates: int = 0
    stream_seen: set[tuple[int, int]] = field(default_factory=set)
    lost: str | None = None
    """Why its session ended before the run did, if it did."""

    async def receive(self) -> None:
        try:
            while True:
                message = await self.client.receive()
                try:
                    kind, sender, sequence = BODY.unpack_from(message.body)
                except struct.error:
                    continue
                if kind == KIND_STREAM:
                    self.stream_seen.add((sender, sequence))
                    continue
                if sender == self.index:
                    continue
                self.heard.add(sender)
                if len(self.heard) == self.total - 1:
                    self.met.set()
                if kind == KIND_WITNESS:
                    seen = self.seen.setdefault(sender, set())
                    if sequence in seen:
                        self.duplicates += 1
                    seen.add(sequence)
        except ClosedError as exc:
            if self.lost is None:
                self.lost = why_ended(self.client, exc)

    async def probe(self) -> None:
        """Until cancelled: tell the others this witness's messages reach them."""
        while True:
            with contextlib.suppress(ClosedError):
                self.client.publish(WITNESS_TOPIC, _body(KIND_PROBE, self.index, 0))
            await asyncio.sleep(PROBE_INTERVAL)

    async def publish(self, rate: float, start: float, total: int) -> None:
        """Until cancelled: one numbered message every ``1 / rate`` s, phase-shifted."""
        period = 1.0 / rate
        next_at = start + period * self.index / total
        while True:
            delay = next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self.client.publish(WITNESS_TOPIC, _body(KIND_WITNESS, self.index, self.published))
            except ClosedError as exc:
                self.lost = self.lost or why_ended(self.client, exc)
                return
            self.published += 1
            next_at = max(next_at + period, time.time())

    def result(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "published": self.published,
            "received": {str(sender): len(seqs) for sender, seqs in self.seen.items()},
            "duplicates": self.duplicates,
            "stream_received": len(self.stream_seen),
            "lost": self.lost or ("closed" if self.client.closed else None),
        }


async def _stream_client(plan: WorkerPlan, index: int, due: float) -> None:
    """Connect when due, hold the session while publishing and receiving, close it."""
    tried: list[str] = []
    _URLS_TRIED.set(tried)
    started = time.time()
    report: dict[str, Any] = {"index": index, "due": due, "started": started}
    try:
        client = await _connect(plan.urls, f"stream-{index}", plan.connect_timeout)
    except Exception as exc:
        # Whatever the SDK raises is a failed connect, counted by its type: a coordinator
        # WebSocket closed between WELCOME and CONNECT escapes it as the websockets
        # library's ConnectionClosedError, not as a BrokerError.
        kind, detail = _error_kind(exc)
        emit("connect", ok=False, error=kind, detail=detail, tried=tried, **report,
              ended=time.time())  # fmt: skip
        return
    emit("connect", ok=True, url=client.coordinator_url, tried=tried, server=client.server_alias,
          **report, ended=time.time())  # fmt: skip
    published = 0
    received = 0
    lost: str | None = None

    async def listen() -> None:
        nonlocal received
        with contextlib.suppress(ClosedError):
            while True:
                await client.receive()
                received += 1

    listener = asyncio.create_task(listen())
    try:
        client.subscribe([WITNESS_TOPIC])
        closes_at = time.time() + plan.hold
        period = 1.0 / plan.stream_rate if plan.stream_rate > 0 else None
        while (left := closes_at - time.time()) > 0:
            if period is None:
                await asyncio.sleep(left)
                continue
            client.publish(STREAM_TOPIC, _body(KIND_STREAM, index, published))
            published += 1
            await asyncio.sleep(min(period, left))
        # Its echo proves the server took every publish before it (same ordered channel).
        await client.ping(timeout=CLOSE_PING_TIMEOUT)
    except (BrokerError, TimeoutError) as exc:
        lost = why_ended(client, exc)
    finally:
        await client.close()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    emit("closed", index=index, lost=lost, published=published, received=received,
          ended=time.time())  # fmt: skip


async def _stream(plan: WorkerPlan, start: float, rate: float, end: float) -> None:
    """This worker's share of the stream: connect ``i`` at ``start + i / rate``."""
    tasks: set[asyncio.Task[None]] = set()
    assert plan.stream_worker is not None
    index = plan.stream_worker
    try:
        while (due := start + index / rate) < end:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_stream_client(plan, index, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += plan.stream_workers
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*list(tasks), return_exceptions=True)


async def _witnesses(plan: WorkerPlan) -> list[Witness]:
    async def one(index: int) -> Witness:
        client = await _connect(plan.urls, f"witness-{index}", plan.connect_timeout)
        client.subscribe([WITNESS_TOPIC, STREAM_TOPIC])
        await client.ping()  # the subscription is applied
        return Witness(index, client, plan.witness_total)

    return list(await asyncio.gather(*(one(index) for index in plan.witnesses)))


async def run_worker(plan: WorkerPlan) -> None:
    """Witnesses first, then the stream when told; see the module docstring."""
    commands = await read_stdin()
    witnesses = await _witnesses(plan)
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(w.receive()) for w in witnesses]
    probes = [asyncio.create_task(w.probe()) for w in witnesses]
    try:
        await asyncio.gather(*(w.met.wait() for w in witnesses))
        emit("ready")
        start = await next_command(commands)
        if start is None:
            return
        for probe in probes:
            probe.cancel()
        publishers = [
            asyncio.create_task(
                w.publish(plan.witness_rate, float(start["start"]), plan.witness_total)
            )
            for w in witnesses
        ]
        tasks += publishers
        if plan.stream_worker is not None:
            await _stream(
                plan,
                float(start["start"]),
                float(start["connect_rate"]),
                float(start["stream_end"]),
            )
        emit("stream-done")
        if await next_command(commands) is None:  # or the stop command
            return
        for publisher in publishers:
            publisher.cancel()
        await asyncio.sleep(DRAIN)
        emit("result", witnesses=[w.result() for w in witnesses])
    finally:
        for task in [*tasks, *probes]:
            task.cancel()
        await asyncio.gather(*tasks, *probes, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_BUDGET):
                await asyncio.gather(*(w.client.close() for w in witnesses))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A client worker of bench coordinator-restart.")
    parser.add_argument("--plan", required=True, help="WorkerPlan as JSON")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the orchestrator stops workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    watch_url_changes()
    asyncio.run(run_worker(WorkerPlan.from_json(args.plan)))


if __name__ == "__main__":
    main()
