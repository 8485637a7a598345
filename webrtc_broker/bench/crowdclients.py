"""The clients of ``bench crowd``, in worker processes of their own.

Run by :mod:`webrtc_broker.bench.crowd` as ``python -m
webrtc_broker.bench.crowdclients --plan JSON``. A worker holds whole topics
(every member of a topic is in the same worker), so it can tell how many
deliveries each message it published should have made, and so the loss,
without asking the other workers.

JSON lines with the orchestrator:

* stdout ``{"event": "up"}`` once the worker reads its commands (Python and
  aiortc imported), so the storm's clock starts only when every worker can
  keep it;
* stdin ``{"start": T0, "connect_rate": R, "deadline": T1}``: client ``i``
  (global index) is due to connect at ``T0 + i / R``, at most
  ``connect_concurrency`` of this worker's at once; one not started by T1 is
  reported as failed (``not started``) so that the storm ends in bounded
  time whatever the machine does;
* stdout ``{"event": "connect", ...}`` per client (:func:`connect_event`),
  then ``{"event": "ready", "connected": N}``;
* stdin a :class:`~webrtc_broker.bench.bots.Schedule`: every client
  publishes on its topic from T0 to T3 at the plan's rate and counts what
  it receives, exactly as the dense bench's bots do (the same publish and
  receive loops);
* stdout ``{"event": "result", ..., "expected": E}``: the merged
  :class:`~webrtc_broker.bench.bots.WorkerResult` and the deliveries the
  window's publishes should have made; then, when stdin closes, the worker
  closes its clients and exits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from webrtc_broker.bench.bots import (
    Bot,
    Schedule,
    WorkerResult,
    close_clients,
    emit,
    next_schedule,
    next_times,
    publish_loop,
    read_stdin,
    receive_loop,
    run_traffic,
    worker_plan,
)
from webrtc_broker.bench.bots import WorkerPlan as TopicPlan
from webrtc_broker.client import BrokerClient, Keepalive

NOT_STARTED = "not started (storm deadline)"
"""The error of a client whose connect was still waiting when the storm's time was up."""
DETAIL_CHARS = 200


@dataclass(frozen=True)
class CrowdPlan:
    clients: list[tuple[int, str]]
    """(global client index, its topic) of this worker's clients."""
    server: int | None
    """Alias of the comm server every client is pinned to (``None``: the coordinator's pick)."""
    keepalive_interval: float
    """Every client's :attr:`Keepalive.interval`: how often an idle one PINGs."""
    common: TopicPlan
    """What every client shares, as the dense bench's bots have it: the coordinator, the
    publish rate, size and channel, the connect bounds (its ``connect_concurrency`` is
    this worker's), ``total_bots`` (all workers' clients, for the publish phases).
    Its ``topic`` and ``bots`` are unused: each client has its topic in ``clients``."""

    @property
    def connect_concurrency(self) -> int:
        return self.common.connect_concurrency

    def to_argv(self) -> list[str]:
        return ["--plan", json.dumps(asdict(self))]

    @classmethod
    def from_json(cls, text: str) -> CrowdPlan:
        data = json.loads(text)
        return cls(
            clients=[(int(index), str(topic)) for index, topic in data["clients"]],
            server=data["server"],
            keepalive_interval=float(data["keepalive_interval"]),
            common=TopicPlan.from_json(json.dumps(data["common"])),
        )

    def topic_plan(self, topic: str) -> TopicPlan:
        """What the dense bench's publish loop needs to know, for one topic."""
        return replace(self.common, topic=topic)


@dataclass(frozen=True)
class Storm:
    start: float
    connect_rate: float
    deadline: float

    def due(self, index: int) -> float:
        """Wall-clock time client ``index`` is due to connect."""
        return self.start + index / self.connect_rate


def connect_event(
    *,
    due: float,
    started: float,
    ended: float,
    session: float | None = None,
    subscribed: float | None = None,
    error: str | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """A ``connect`` event as :class:`webrtc_broker.bench.workers.ConnectLog` reads it.

    ``seconds`` (``session``) runs from the connect call to the session being
    established (coordinator, ICE, DTLS, SCTP, both data channels, AUTH
    confirmed by a PING echo); ``subscribed`` on to the echo of the PING after
    SUBSCRIBE, the client's first round trip through its topic's subscription.
    ``lag``: how late the connect started after it was due. A failure has the
    ``error`` kind (counted) and one ``detail`` (its message, shortened).
    """
    event: dict[str, Any] = {
        "ok": error is None,
        "started": started,
        "ended": ended,
        "lag": max(0.0, started - due),
    }
    if error is None:
        event.update(seconds=session, subscribed=subscribed)
    else:
        event.update(error=error, detail=(detail or error)[:DETAIL_CHARS])
    return event


@dataclass
class _Member:
    bot: Bot
    topic: str


async def _storm(plan: CrowdPlan, storm: Storm) -> list[_Member]:
    common = plan.common
    gate = asyncio.Semaphore(common.connect_concurrency)

    async def connect(index: int, topic: str) -> _Member | None:
        due = storm.due(index)
        await asyncio.sleep(max(0.0, due - time.time()))
        async with gate:
            started = time.time()
            if started >= storm.deadline:
                emit(
                    "connect",
                    **connect_event(due=due, started=started, ended=started, error=NOT_STARTED),
                )
                return None
            clock = time.perf_counter()
            client: BrokerClient | None = None
            try:
                # No reconnect: a lost session must show in ``sessions_lost``.
                client = await BrokerClient.connect(
                    common.coordinator_url,
                    f"crowd-{index}",
                    server=plan.server,
                    timeout=common.connect_timeout,
                    reconnect=None,
                    keepalive=Keepalive(interval=plan.keepalive_interval),
                )
                session = time.perf_counter() - clock
                await asyncio.wait_for(client.subscribe([topic]), common.connect_timeout)
            except Exception as exc:
                # Whatever the SDK raises is a failed connect, counted by its type (a
                # coordinator WebSocket closed mid-way escapes as the websockets library's).
                kind = type(exc).__name__ if client is None else f"subscribe:{type(exc).__name__}"
                if client is not None:
                    await client.close()
                emit(
                    "connect",
                    **connect_event(
                        due=due, started=started, ended=time.time(), error=kind, detail=str(exc)
                    ),
                )
                return None
            subscribed = time.perf_counter() - clock
            emit(
                "connect",
                **connect_event(
                    due=due,
                    started=started,
                    ended=time.time(),
                    session=session,
                    subscribed=subscribed,
                ),
            )
            return _Member(Bot(index, client), topic)

    members = await asyncio.gather(*(connect(index, topic) for index, topic in plan.clients))
    return [member for member in members if member is not None]


def merge_results(results: Iterable[WorkerResult]) -> WorkerResult:
    """One result of several (topics of a worker, or workers): counts add, histograms merge."""
    merged = WorkerResult()
    for result in results:
        merged.published += result.published
        merged.received += result.received
        merged.arrived += result.arrived
        merged.skipped += result.skipped
        merged.inbox_dropped += result.inbox_dropped
        merged.sessions_lost += result.sessions_lost
        merged.undecodable += result.undecodable
        merged.latency.merge(result.latency)
    return merged


def expected_deliveries(published: dict[str, int], members: dict[str, int]) -> int:
    """Deliveries the publishes should make: each reaches every other member of its topic."""
    return sum(count * max(0, members.get(topic, 0) - 1) for topic, count in published.items())


async def _traffic(
    members: list[_Member], plan: CrowdPlan, schedule: Schedule
) -> tuple[WorkerResult, int]:
    """The steady phase: the merged result and the deliveries its window should have made."""
    by_topic: dict[str, WorkerResult] = {}
    sizes: dict[str, int] = {}
    jobs = []
    for member in members:
        result = by_topic.setdefault(member.topic, WorkerResult())
        sizes[member.topic] = sizes.get(member.topic, 0) + 1
        topic_plan = plan.topic_plan(member.topic)
        jobs += [
            publish_loop(member.bot, topic_plan, schedule, result),
            receive_loop(member.bot, schedule, result),
        ]
    dropped, lost = await run_traffic(jobs, [member.bot for member in members], schedule)
    merged = replace(merge_results(by_topic.values()), inbox_dropped=dropped, sessions_lost=lost)
    published = {topic: result.published for topic, result in by_topic.items()}
    return merged, expected_deliveries(published, sizes)


async def run_worker(plan: CrowdPlan) -> None:
    commands = await read_stdin()
    emit("up")
    storm = await next_times(commands)
    if storm is None:
        return
    members = await _storm(plan, Storm(**storm))
    try:
        emit("ready", connected=len(members))
        schedule = await next_schedule(commands)
        if schedule is None:
            return
        result, expected = await _traffic(members, plan, schedule)
        emit("result", **result.to_json(), expected=expected)
        await commands.read()  # the orchestrator closes stdin once it has every result
    finally:
        await close_clients(member.bot.client for member in members)


def main(argv: list[str] | None = None) -> None:
    text = worker_plan(argv, "A crowd bench client worker (started by it).", "CrowdPlan")
    asyncio.run(run_worker(CrowdPlan.from_json(text)))


if __name__ == "__main__":
    main()
