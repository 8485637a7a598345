"""A world worker process: its share of the avatars, walking, talking, coming and going.

Run by the world scenario (:mod:`webrtc_broker.bench.world`) as ``python -m
webrtc_broker.bench.worldbots --plan JSON``. It speaks the dense bots' line
protocol (:mod:`webrtc_broker.bench.bots`): ``connect`` events, ``ready``,
then the :class:`~webrtc_broker.bench.bots.Schedule` on stdin. At the end it
writes its :class:`WorldWorkerResult` to the plan's ``result_path`` (the
publish log is too large for a pipe line) and says ``result``.

Each avatar (one :class:`~webrtc_broker.client.BrokerClient`) runs four jobs:

* positions: every ``1 / rate`` s it walks (:class:`~.worldgrid.Walker`) and
  publishes its position to its cell's topic on the unreliable channel;
* chat: every ``1 / chat_rate`` s a message to the same topic, reliable;
* follow: when its cell changed, it replaces its subscriptions with the new
  neighbourhood through the SDK (:meth:`BrokerClient.subscribe`) and notes,
  per topic, when the subscription was confirmed and when it was dropped;
* receive: latency of every arrival in the window, and each message sent in
  the window queued for classification by the expectation rule
  (:func:`~.worldgrid.covered`) once :data:`~.worldgrid.GUARD` seconds have
  passed, so the subscription changes that decide it are known.

When traffic ends nothing is published any more, but chat arrivals are still
counted for ``chat_drain`` seconds: a reliable message held up in a backlog
is then told from one that was lost. Late positions are lost, as in the
dense scenario.

When there are more workers than cores left beside the servers, they run
niced (:data:`WORKER_NICENESS`): the servers under test must not be
time-sliced evenly with them. (With no more workers than those cores they
run at normal priority, as the dense scenario's bots do.)

Churn: ``churn`` times a second the worker sends a random avatar away (it
stops publishing, waits :data:`LEAVE_DRAIN` so its last messages leave,
then closes) and connects a new one at a random place, while the others
keep publishing: connects under load.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import random
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webrtc_broker.bench.bots import (
    CLOSE_TIMEOUT,
    Schedule,
    emit,
    next_schedule,
    read_stdin,
    ticks,
    worker_plan,
)
from webrtc_broker.bench.latency import LatencyHistogram
from webrtc_broker.bench.payload import decode_body, encode_body
from webrtc_broker.bench.worldgrid import (
    GUARD,
    Cell,
    Grid,
    Interval,
    Walker,
    covered,
    topic_of,
)
from webrtc_broker.client import BrokerClient, BrokerError, ClosedError

LEAVE_DRAIN = 1.0
"""Seconds a leaving avatar stays connected, silent, before it closes: what it
published last has left its buffers by then."""
CLASSIFY_EVERY = 0.25
WORKER_NICENESS = 10
"""Scheduling weight about a tenth of a normal process's (see :func:`main`)."""


@dataclass(frozen=True)
class WorldPlan:
    coordinator_url: str
    columns: int
    rows: int
    avatars: list[tuple[int, int | None]]
    """(avatar id, alias of the server to pin it to, or ``None`` for any)."""
    worker: int
    workers: int
    first_join_id: int
    """Ids of joining avatars start here (worker ``w`` takes every ``workers``-th)."""
    servers: list[int]
    rate: float
    chat_rate: float
    size: int
    speed: float
    churn: float
    """This worker's leaves (and as many joins) per second."""
    connect_concurrency: int
    connect_timeout: float
    result_path: str
    seed: int
    chat_drain: float
    niced: bool
    """Run at :data:`WORKER_NICENESS`: the workers outnumber the cores left to them."""
    """Seconds after traffic ends during which reliable chat may still arrive: nothing is
    published any more, so a backlog drains and a late message is told from a lost one."""

    @property
    def grid(self) -> Grid:
        return Grid(self.columns, self.rows)

    def to_argv(self) -> list[str]:
        return ["--plan", json.dumps(asdict(self))]

    @classmethod
    def from_json(cls, text: str) -> WorldPlan:
        data = json.loads(text)
        data["avatars"] = [(int(index), server) for index, server in data["avatars"]]
        return cls(**data)


@dataclass
class KindResult:
    """One channel kind's counts (positions: unreliable, chat: reliable)."""

    published: int = 0
    """Publishes inside the window."""
    received: int = 0
    """Messages received inside the window (their latency is sampled)."""
    arrived: int = 0
    """Messages sent inside the window, arrived before traffic ended, that the rule expected."""
    transitional: int = 0
    """Messages sent inside the window that arrived but the rule did not expect (sent
    while the receiver's subscription to the topic was changing)."""
    skipped: int = 0
    """Publishes a late worker skipped inside the window."""
    late: int = 0
    """Arrivals after traffic ended (chat only: it is waited for, see ``chat_drain``)."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    publishes: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Per topic, every publish in the window: (send time, sender)."""

    def record(self, topic: str, sent_at: float, sender: int) -> None:
        self.published += 1
        self.publishes.setdefault(topic, []).append((sent_at, sender))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindResult:
        return cls(
            published=int(data["published"]),
            received=int(data["received"]),
            arrived=int(data["arrived"]),
            transitional=int(data["transitional"]),
            skipped=int(data["skipped"]),
            late=int(data["late"]),
            latency=LatencyHistogram.from_json(data["latency"]),
            publishes={
                topic: [(float(t), int(s)) for t, s in sent]
                for topic, sent in data["publishes"].items()
            },
        )


@dataclass
class WorldWorkerResult:
    position: KindResult = field(default_factory=KindResult)
    chat: KindResult = field(default_factory=KindResult)
    intervals: list[tuple[int, str, float, float | None]] = field(default_factory=list)
    """Every subscription interval overlapping the window: (receiver, topic, start,
    end; ``None`` while it lasted to the end)."""
    subscription_changes: int = 0
    """Subscription replacements sent inside the window (confirmed or not)."""
    change_seconds: list[float] = field(default_factory=list)
    """From sending a replacement to the server's confirmation, for each one in the window."""
    change_failures: int = 0
    joins: int = 0
    """Avatars that connected during traffic (all of it, not only the window)."""
    join_failures: int = 0
    join_errors: dict[str, int] = field(default_factory=dict)
    join_seconds: list[float] = field(default_factory=list)
    leaves: int = 0
    """Avatars that left during traffic."""
    sessions_lost: int = 0
    """Avatars whose session ended without them leaving."""
    lost_because: dict[str, int] = field(default_factory=dict)
    """Why those sessions ended, as their clients tell it (``close_reason``)."""
    inbox_dropped: int = 0
    undecodable: int = 0
    live_at_end: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["position"] = self.position.to_json()
        data["chat"] = self.chat.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldWorkerResult:
        plain = {k: v for k, v in data.items() if k not in ("position", "chat", "intervals")}
        return cls(
            position=KindResult.from_json(data["position"]),
            chat=KindResult.from_json(data["chat"]),
            intervals=[
                (int(r), str(t), float(s), None if e is None else float(e))
                for r, t, s, e in data["intervals"]
            ],
            **plain,
        )


@dataclass(eq=False)
class Avatar:
    id: int
    client: BrokerClient
    walker: Walker
    cell: Cell
    held: dict[str, list[Interval]] = field(default_factory=dict)
    """Per topic, the stretches it was subscribed (the last one open while it lasts)."""
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    leaving: bool = False
    jobs: list[asyncio.Task[None]] = field(default_factory=list)

    def holding(self) -> set[str]:
        return {topic for topic, spans in self.held.items() if spans and spans[-1].end == math.inf}

    def drop_all(self, at: float) -> None:
        for spans in self.held.values():
            if spans and spans[-1].end == math.inf:
                spans[-1].end = at


@dataclass(frozen=True, slots=True)
class _Arrival:
    avatar: Avatar
    topic: str
    sent_at: float
    arrived_at: float
    kind: KindResult


class World:
    """One worker's avatars and their jobs; every task it starts is in :attr:`tasks`."""

    def __init__(self, plan: WorldPlan) -> None:
        self.plan = plan
        self.grid = plan.grid
        self.rng = random.Random(plan.seed * 1000 + plan.worker)
        self.gate = asyncio.Semaphore(plan.connect_concurrency)
        self.avatars: list[Avatar] = []
        """Every avatar this worker connected, the departed ones included."""
        self.result = WorldWorkerResult()
        self.pending: collections.deque[_Arrival] = collections.deque()
        """Arrivals waiting for :data:`GUARD` to pass; bounded by arrival rate x GUARD."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.schedule: Schedule | None = None
        self._joins = 0

    def spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- connecting -----------------------------------------------------------

    async def connect(self, avatar_id: int, server: int | None) -> Avatar:
        """Connect and subscribe one avatar at a random place; raises on failure."""
        plan = self.plan
        client = await BrokerClient.connect(
            plan.coordinator_url,
            f"avatar-{avatar_id}",
            server=server,
            timeout=plan.connect_timeout,
            reconnect=None,  # a lost session must show, not silently move the avatar
        )
        try:
            walker = Walker.at_random(self.grid, plan.speed, self.rng)
            cell = walker.cell(self.grid)
            topics = self.grid.neighbourhood_topics(cell)
            await asyncio.wait_for(client.subscribe(sorted(topics)), plan.connect_timeout)
        except (BrokerError, TimeoutError):
            await client.close()
            raise
        confirmed = time.time()
        avatar = Avatar(avatar_id, client, walker, cell)
        for topic in topics:
            avatar.held[topic] = [Interval(confirmed)]
        self.avatars.append(avatar)
        return avatar

    async def connect_initial(self) -> None:
        async def one(avatar_id: int, server: int | None) -> None:
            async with self.gate:
                started = time.perf_counter()
                wall = time.time()
                try:
                    await self.connect(avatar_id, server)
                except (BrokerError, OSError, TimeoutError) as exc:
                    ended = wall + time.perf_counter() - started
                    emit("connect", ok=False, error=type(exc).__name__, started=wall, ended=ended)
                    return
                seconds = time.perf_counter() - started
                emit("connect", ok=True, seconds=seconds, started=wall, ended=wall + seconds)

        await asyncio.gather(*(one(avatar_id, server) for avatar_id, server in self.plan.avatars))

    # -- traffic --------------------------------------------------------------

    def in_window(self, at: float) -> bool:
        assert self.schedule is not None
        return self.schedule.window_start <= at < self.schedule.window_end

    def start_avatar(self, avatar: Avatar, first_tick: float) -> None:
        avatar.jobs = [
            self.spawn(self.positions(avatar, first_tick)),
            self.spawn(self.chat(avatar)),
            self.spawn(self.follow(avatar)),
            self.spawn(self.receive(avatar)),
        ]

    async def positions(self, avatar: Avatar, first: float) -> None:
        last = max(first, time.time())

        def walk(now: float) -> str:
            nonlocal last
            avatar.walker.step(now - last, self.grid, self.rng)
            last = now
            cell = avatar.walker.cell(self.grid)
            if cell != avatar.cell:
                avatar.cell = cell
                avatar.moved.set()
            return topic_of(cell)

        period = 1.0 / self.plan.rate
        await self._publish(avatar, self.result.position, period, first, walk, reliable=False)

    async def chat(self, avatar: Avatar) -> None:
        if self.plan.chat_rate <= 0:
            return
        period = 1.0 / self.plan.chat_rate
        first = max(time.time(), self._start) + self.rng.uniform(0, period)
        await self._publish(
            avatar, self.result.chat, period, first, lambda _: topic_of(avatar.cell), reliable=True
        )

    async def _publish(
        self,
        avatar: Avatar,
        kind: KindResult,
        period: float,
        first: float,
        topic_at: Callable[[float], str],
        *,
        reliable: bool,
    ) -> None:
        """Publish on the tick schedule to the topic ``topic_at`` the send time says,
        until traffic ends or the avatar leaves; the window's publishes go in ``kind``."""
        sequence = 0
        assert self.schedule is not None
        async for _ in ticks(period, first, self.schedule, kind, lambda: not avatar.leaving):
            now = time.time()
            if now >= self._end or avatar.leaving:
                return
            topic = topic_at(now)
            body = encode_body(now, avatar.id, sequence, self.plan.size)
            try:
                avatar.client.publish(topic, body, reliable=reliable)
            except ClosedError:
                return
            sequence += 1
            if self.in_window(now):
                kind.record(topic, now, avatar.id)

    async def follow(self, avatar: Avatar) -> None:
        """Keep the subscriptions on the neighbourhood; one replacement in flight at a time."""
        result = self.result
        while not avatar.leaving:
            await avatar.moved.wait()
            avatar.moved.clear()
            wanted = self.grid.neighbourhood_topics(avatar.cell)
            holding = avatar.holding()
            if wanted == holding or avatar.leaving:
                continue
            asked = time.time()
            try:
                confirmation = avatar.client.subscribe(sorted(wanted))
            except ClosedError:
                return
            for topic in holding - wanted:
                avatar.held[topic][-1].end = asked
            if self.in_window(asked):
                result.subscription_changes += 1
            try:
                await asyncio.wait_for(confirmation, self.plan.connect_timeout)
            except (BrokerError, TimeoutError):
                # A leaving avatar closes its client under a pending change: not a failure.
                if self.in_window(asked) and not avatar.leaving:
                    result.change_failures += 1
                return
            confirmed = time.time()
            for topic in wanted - holding:
                avatar.held.setdefault(topic, []).append(Interval(confirmed))
            if self.in_window(asked):
                result.change_seconds.append(confirmed - asked)

    async def receive(self, avatar: Avatar) -> None:
        result = self.result
        with contextlib.suppress(ClosedError):
            while True:
                message = await avatar.client.receive()
                now = time.time()
                if now >= self._end and not message.reliable:
                    continue  # late positions are lost; only chat is waited for
                try:
                    sent_at = decode_body(message.body)[0]
                except struct.error:
                    result.undecodable += 1
                    continue
                kind = result.chat if message.reliable else result.position
                if now >= self._end and self.in_window(sent_at):
                    kind.late += 1
                if self.in_window(now):
                    kind.latency.add(now - sent_at)
                    kind.received += 1
                if self.in_window(sent_at):
                    self.pending.append(_Arrival(avatar, message.topic or "", sent_at, now, kind))

    def classify(self, until: float) -> None:
        """Judge the arrivals that came at least :data:`GUARD` before ``until``."""
        pending = self.pending
        while pending and pending[0].arrived_at + GUARD <= until:
            arrival = pending.popleft()
            if covered(arrival.avatar.held.get(arrival.topic, ()), arrival.sent_at):
                arrival.kind.arrived += 1
            else:
                arrival.kind.transitional += 1

    async def classifier(self) -> None:
        while True:
            await asyncio.sleep(CLASSIFY_EVERY)
            self.classify(time.time())

    # -- churn ----------------------------------------------------------------

    async def churn(self) -> None:
        plan = self.plan
        if plan.churn <= 0:
            return
        period = 1.0 / plan.churn
        next_at = self._start + self.rng.uniform(0, period)
        # Nobody leaves or joins in the last seconds: a leave must finish, a join settle.
        last = self._end - LEAVE_DRAIN - GUARD
        while next_at < last:
            await asyncio.sleep(max(0.0, next_at - time.time()))
            staying = [a for a in self.avatars if not a.leaving and not a.client.closed]
            if staying:
                self.spawn(self.leave(self.rng.choice(staying)))
            self.spawn(self.join())
            next_at += period

    async def leave(self, avatar: Avatar) -> None:
        avatar.leaving = True
        avatar.moved.set()  # wakes its follow job, which then ends
        await asyncio.sleep(LEAVE_DRAIN)
        avatar.drop_all(time.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await avatar.client.close()
        self.result.leaves += 1

    async def join(self) -> None:
        plan = self.plan
        avatar_id = plan.first_join_id + plan.worker + plan.workers * self._joins
        self._joins += 1
        server = plan.servers[avatar_id % len(plan.servers)] if plan.servers else None
        result = self.result
        async with self.gate:
            started = time.perf_counter()
            try:
                avatar = await self.connect(avatar_id, server)
            except (BrokerError, OSError, TimeoutError) as exc:
                result.join_failures += 1
                name = type(exc).__name__
                result.join_errors[name] = result.join_errors.get(name, 0) + 1
                return
        result.joins += 1
        result.join_seconds.append(time.perf_counter() - started)
        self.start_avatar(avatar, time.time() + self.rng.uniform(0, 1.0 / plan.rate))

    # -- the run --------------------------------------------------------------

    @property
    def _start(self) -> float:
        assert self.schedule is not None
        return self.schedule.start

    @property
    def _end(self) -> float:
        assert self.schedule is not None
        return self.schedule.traffic_end

    async def traffic(self, schedule: Schedule) -> WorldWorkerResult:
        self.schedule = schedule
        period = 1.0 / self.plan.rate
        for avatar in list(self.avatars):
            self.start_avatar(avatar, schedule.start + self.rng.uniform(0, period))
        classifier = self.spawn(self.classifier())
        self.spawn(self.churn())
        try:
            await asyncio.sleep(max(0.0, schedule.traffic_end - time.time()))
            # Silence: everything but the receivers and the classifier stops.
            keep = {avatar.jobs[-1] for avatar in self.avatars if avatar.jobs} | {classifier}
            await _cancel([task for task in self.tasks if task not in keep])
            self.classify(time.time())
            await asyncio.sleep(max(0.0, schedule.traffic_end + self.plan.chat_drain - time.time()))
        finally:
            await _cancel(list(self.tasks))
        self.classify(math.inf)
        return self._finish(schedule)

    def _finish(self, schedule: Schedule) -> WorldWorkerResult:
        result = self.result
        for avatar in self.avatars:
            for topic, spans in avatar.held.items():
                for span in spans:
                    if span.start < schedule.window_end and span.end > schedule.window_start:
                        end = None if span.end == math.inf else span.end
                        result.intervals.append((avatar.id, topic, span.start, end))
        result.inbox_dropped = sum(a.client.dropped for a in self.avatars)
        lost = [a.client.close_reason for a in self.avatars if a.client.closed and not a.leaving]
        result.sessions_lost = len(lost)
        result.lost_because = dict(collections.Counter(lost))
        result.live_at_end = sum(1 for a in self.avatars if not a.client.closed)
        return result

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.gather(
                    *(a.client.close() for a in self.avatars), return_exceptions=True
                )


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, but not forever: a peer connection torn down
    mid-handshake may take its time, and the result must still be written."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)


async def run_worker(plan: WorldPlan) -> None:
    commands = await read_stdin()
    world = World(plan)
    try:
        await world.connect_initial()
        emit("ready", connected=len(world.avatars))
        schedule = await next_schedule(commands)
        if schedule is None:
            return  # the orchestrator gave up
        result = await world.traffic(schedule)
        text = json.dumps(result.to_json())
        await asyncio.to_thread(Path(plan.result_path).write_text, text)
        emit("result", path=plan.result_path)
    finally:
        await world.close()


def main(argv: list[str] | None = None) -> None:
    text = worker_plan(argv, "A world bench worker (started by the bench).", "WorldPlan")
    plan = WorldPlan.from_json(text)
    if plan.niced:
        # More workers than cores: the kernel would share the cores evenly among all
        # runnable processes, and a comm server among ten busy workers gets a tenth of
        # a core. Niced, the workers take what the servers and the coordinator leave.
        os.nice(WORKER_NICENESS)
    asyncio.run(run_worker(plan))


if __name__ == "__main__":
    main()
