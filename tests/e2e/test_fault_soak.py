"""Every fault at once, for a bounded time, while numbered reliable streams run.

Each fault has a test of its own; this one checks that they do not combine
into a loss none of them causes alone. A coordinator and three comm servers
(two reach the coordinator through a :class:`FaultProxy`, so that their
coordinator link can be cut while the coordinator lives on) carry several
streams: a publisher SDK client on one server sends numbered reliable
messages at a steady rate to a subscriber on another server (one pair shares
a server). Meanwhile, on a schedule, the coordinator is killed (``kill -9``)
and restarted on the same port, servers' coordinator links are cut, consumers
subscribed to every stream topic are frozen (``SIGSTOP`` of a
``webrtc-broker client`` process), and short-lived clients keep connecting,
subscribing to the stream topics, publishing into them and leaving.

The reliable channel promises in-order delivery without loss while a session
lives; so for every stream whose two sessions lived throughout, the
subscriber must have received exactly what was published: none lost, none
twice, in order. Streams whose publisher or subscriber lost its session are
reported with the reason and left out of that check (a moving client misses
what is published while it moves). Timing is printed, never asserted.

``WEBRTC_BROKER_SOAK_SECONDS`` sets how long the faults go on (36 s by
default); the same schedule repeats, so a longer run injects more of each.
``WEBRTC_BROKER_SOAK_FAULT_EVERY`` sets the seconds between two faults (4 by
default); below about 3, coordinator restarts and cuts overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.helpers import TIMEOUT, subscribe, until_routed
from tests.faultproxy import FaultProxy
from tests.support import Cluster, eventually, spawn_cli_client
from webrtc_broker.client import BrokerClient
from webrtc_broker.rtc import Session
from webrtc_broker.rtc.writer import SCTP_PACKET_PAYLOAD

SOAK_SECONDS = float(os.environ.get("WEBRTC_BROKER_SOAK_SECONDS", "36"))
"""How long the streams run and faults are injected."""
FAULT_EVERY = float(os.environ.get("WEBRTC_BROKER_SOAK_FAULT_EVERY", "4"))
"""Seconds between two faults of the schedule."""
OUTAGE = 1.0
"""Seconds the coordinator stays dead before it is started again."""
SERVERS = ("s1", "s2", "s3")
PROXIED = ("s1", "s2")
"""Servers whose coordinator link goes through a proxy that can cut it."""
REGISTER_WAIT = 15.0
"""How long a cut waits for its server to be registered (reconnects back off up to 10 s)."""
CLIENT_TIMEOUT = "30"
"""Seconds a silent client lives (10 by default): long enough for a frozen consumer's
reliable queue to overflow under the bulk stream, so that the server closes it as a
slow peer mid-stream, as well as for silence."""


@dataclass(frozen=True)
class Plan:
    """Where a stream runs and how much it sends."""

    name: str
    publishing: str
    """The publisher's server."""
    receiving: str
    """The subscriber's server."""
    rate: float
    """Messages per second."""
    size: int
    """Bytes per message body."""


PLANS = (
    Plan("a", "s1", "s2", 50, 40),
    Plan("b", "s2", "s3", 50, 40),
    Plan("c", "s3", "s1", 50, 40),
    Plan("d", "s1", "s1", 50, 40),
    Plan("bulk", "s2", "s1", 200, 2048),
)
"""Every server publishes and receives, both proxied servers publish across the mesh,
one pair shares a server. The bulk stream's messages are larger than a batch, one
data-channel message each: they fill a frozen consumer's buffers quickly."""
DRAIN_TIMEOUT = 20.0
"""How long the subscribers may take to catch up once publishing stops."""
SETTLE = 0.5
"""Seconds to wait after the last expected message, for duplicates still in flight."""
CHURN_PAUSE = 0.2
CHURN_MESSAGES = 3
"""Messages each short-lived client publishes into a stream's topic."""
CONSUMER_LINE = re.compile(rb"via server (\d+)")

pytestmark = pytest.mark.timeout(SOAK_SECONDS + 120)


@dataclass
class Stream:
    """One publisher-subscriber pair and what went through it."""

    plan: Plan
    publisher: BrokerClient
    subscriber: BrokerClient
    published_at: list[float] = field(default_factory=list)
    """Monotonic time of each message sent; its index is its sequence number."""
    received: list[int] = field(default_factory=list)
    foreign: list[bytes] = field(default_factory=list)
    """Other messages on the topic (the churn's) that reached the subscriber."""
    publish_errors: Counter[str] = field(default_factory=Counter)
    sessions: tuple[Session | None, Session | None] = (None, None)
    closed_at: dict[str, float] = field(default_factory=dict)
    """When the publisher's or subscriber's first session closed (seconds into the soak)."""

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def topic(self) -> str:
        return f"stream/{self.name}"

    def body(self, seq: int) -> bytes:
        return f"{self.name} {seq} ".encode().ljust(self.plan.size, b".")

    def lived(self) -> str:
        """Empty when both sessions lived throughout; otherwise why not."""
        reasons = []
        for role, client, session in zip(
            ("publisher", "subscriber"),
            (self.publisher, self.subscriber),
            self.sessions,
            strict=True,
        ):
            if client.session is not session or session is None or session.closed.is_set():
                why = session.close_reason if session is not None else "no session"
                at = self.closed_at.get(role)
                when = f" at {at:.1f} s" if at is not None else ""
                reasons.append(
                    f"{role} lost its session{when} ({why}; {client.reconnects} reconnects"
                    f"{reconnect_failure(client)})"
                )
        return "; ".join(reasons)


def reconnect_failure(client: BrokerClient) -> str:
    """How the client's reconnect loop ended, if it did (the SDK keeps the task private;
    read here only to say why a client that lost its session never came back)."""
    supervisor = client._supervisor
    if supervisor is None or not supervisor.done() or supervisor.cancelled():
        return ""
    failure = supervisor.exception()
    return f"; its reconnect loop died of {failure!r}" if failure is not None else ""


async def note_close(stream: Stream, role: str, session: Session | None, tally: Tally) -> None:
    """Record when ``session`` closes, for the report of a stream that lost one."""
    if session is not None:
        await session.closed.wait()
        stream.closed_at[role] = tally.now()


@dataclass
class Tally:
    """What the faults and the churn did, for the summary."""

    started: float = field(default_factory=time.monotonic)
    faults: list[tuple[float, str]] = field(default_factory=list)
    churn_sessions: int = 0
    churn_sent: dict[str, list[bytes]] = field(default_factory=dict)
    """By topic, the churn's messages whose publisher's PING echo proved the server had
    them: each must reach the stream's subscriber once."""
    churn_doubtful: set[bytes] = field(default_factory=set)
    """Published by churn sessions that broke before the echo: may or may not arrive."""
    churn_failures: Counter[str] = field(default_factory=Counter)
    churn_errors: dict[str, str] = field(default_factory=dict)
    """One message of each kind of churn failure."""
    aliases_kept = False
    """Whether every server registered again under the alias it started with."""

    def churn_failed(self, step: str, exc: Exception) -> None:
        kind = f"{step}: {type(exc).__name__}"
        self.churn_failures[kind] += 1
        self.churn_errors.setdefault(kind, str(exc)[:120])

    def now(self) -> float:
        return time.monotonic() - self.started


async def publish(stream: Stream, stop: asyncio.Event) -> None:
    """Send the plan's rate of numbered messages, catching up after a stalled loop."""
    started = time.monotonic()
    rate = stream.plan.rate
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) + 1
        while len(stream.published_at) < due:
            seq = len(stream.published_at)
            try:
                stream.publisher.publish(stream.topic, stream.body(seq))
            except Exception as exc:  # counted and reported; the stream goes on
                stream.publish_errors[type(exc).__name__] += 1
                break
            stream.published_at.append(time.monotonic())
        await asyncio.sleep(1 / rate)


async def read(stream: Stream) -> None:
    """Keep the stream's sequence numbers; other traffic on the topic (churn) is skipped."""
    prefix = f"{stream.name} ".encode()
    while True:
        body = (await stream.subscriber.receive()).body
        if body.startswith(prefix):
            stream.received.append(int(body[len(prefix) :].split(b" ", 1)[0]))
        else:
            stream.foreign.append(body)


async def churn(cluster: Cluster, topics: list[str], stop: asyncio.Event, tally: Tally) -> None:
    """Clients that connect, subscribe to a stream topic, publish into it and leave.

    Each one changes the topic sets the servers exchange twice and puts
    foreign messages on a stream's topic. Connecting fails while the
    coordinator is down or a server has not re-registered yet; that is
    expected and counted, and the next attempt follows.
    """
    for number in itertools.count():
        if stop.is_set():
            return
        topic = topics[number % len(topics)]
        try:
            client = await BrokerClient.connect(
                cluster.url, f"churn-{number}", timeout=5, reconnect=None
            )
        except Exception as exc:  # any refusal or outage counts the same
            tally.churn_failed("connect", exc)
            await asyncio.sleep(CHURN_PAUSE)
            continue
        published: list[bytes] = []
        try:
            await subscribe(client, [topic, "churn"])
            for index in range(CHURN_MESSAGES):
                body = f"churn {number} {index}".encode()
                client.publish(topic, body)
                published.append(body)
            await client.ping(timeout=5)
            tally.churn_sessions += 1
            tally.churn_sent.setdefault(topic, []).extend(published)
        except Exception as exc:  # a churn session that breaks is counted
            tally.churn_failed("session", exc)
            tally.churn_doubtful.update(published)
        finally:
            await client.close()
        await asyncio.sleep(CHURN_PAUSE)


def printed(output: Path) -> bytes:
    """What a client process has printed so far (a small file: read at once)."""
    return output.read_bytes()


@contextlib.asynccontextmanager
async def frozen_consumers(
    cluster: Cluster, workdir: Path, names: dict[int, str]
) -> AsyncIterator[Callable[[list[str]], Awaitable[str]]]:
    """A function that starts a ``webrtc-broker client`` on ``topics``, waits until it
    prints a stream message, freezes it (``SIGSTOP``) and names its server (``names``
    maps aliases to names); every one is killed on exit.

    Each call first thaws (``SIGCONT``) the consumer frozen before: one whose server
    has closed it by then comes back through the coordinator and subscribes again
    elsewhere, one still in session reads its whole backlog at once. The one thawed
    before that is killed (``SIGKILL``): a thawed consumer reads every stream, the
    bulk one too, and several of them would starve the machine, streams included.
    """
    processes: list[asyncio.subprocess.Process] = []
    counter = itertools.count()

    async def start_frozen(topics: list[str]) -> str:
        thawed = ""
        for process in processes[:-1]:
            if process.returncode is None:
                process.kill()
                thawed = "one killed, "
        if processes and processes[-1].returncode is None:
            processes[-1].send_signal(signal.SIGCONT)
            thawed += "previous one thawed, "
        for _attempt in range(5):
            output = workdir / f"frozen-{next(counter)}.out"
            process = await spawn_cli_client(cluster.url, topics, output)
            processes.append(process)

            async def reading(
                output: Path = output, process: asyncio.subprocess.Process = process
            ) -> bool:
                return process.returncode is not None or b"] " in printed(output)

            await eventually(reading, timeout=TIMEOUT * 2)
            if process.returncode is None:
                process.send_signal(signal.SIGSTOP)
                found = CONSUMER_LINE.search(printed(output))
                alias = int(found.group(1)) if found else 0
                return thawed + names.get(alias, f"an unknown server ({alias})")
            # It could not connect (no server registered yet, after a restart): again.
            await asyncio.sleep(0.5)
        raise AssertionError("no frozen consumer could be started")

    try:
        yield start_frozen
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            await process.wait()


def registered(cluster: Cluster, name: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return bool((await cluster.server_status(name))["registered"])

    return probe


async def restart_coordinator(cluster: Cluster) -> None:
    assert cluster.coordinator is not None
    await cluster.stop(cluster.coordinator, kill=True)
    await asyncio.sleep(OUTAGE)
    await cluster.start_coordinator()


async def test_combined_faults_lose_no_reliable_message(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.start_coordinator()
    proxies = {
        name: await FaultProxy("127.0.0.1", cluster.coordinator_port).start() for name in PROXIED
    }
    streams: list[Stream] = []
    try:
        for name in SERVERS:
            extra = (
                ["--coordinator-url", f"ws://127.0.0.1:{proxies[name].port}"]
                if name in proxies
                else []
            )
            await cluster.start_server(name, "--client-timeout", CLIENT_TIMEOUT, *extra)
        for name in SERVERS:
            await cluster.wait_mesh(name, len(SERVERS) - 1)
        aliases = {name: await cluster.alias_of(name) for name in SERVERS}
        for plan in PLANS:
            publisher = await BrokerClient.connect(
                cluster.url, f"pub-{plan.name}", server=aliases[plan.publishing]
            )
            subscriber = await BrokerClient.connect(
                cluster.url, f"sub-{plan.name}", server=aliases[plan.receiving]
            )
            streams.append(Stream(plan, publisher, subscriber))
        for stream in streams:
            await subscribe(stream.subscriber, [stream.topic])
            await until_routed(stream.publisher, stream.subscriber, stream.topic)
            stream.sessions = (stream.publisher.session, stream.subscriber.session)

        tally = await soak(cluster, proxies, streams, aliases, tmp_path)
        after = {name: await cluster.alias_of(name) for name in SERVERS}
        tally.aliases_kept = after == aliases
        report(cluster, streams, tally, aliases, await server_counters(cluster))

        intact = [stream for stream in streams if not stream.lived()]
        assert intact, "every stream lost a session; nothing was checked"
        for stream in intact:
            sent = len(stream.published_at)
            assert not stream.publish_errors, (stream.name, stream.publish_errors)
            assert stream.subscriber.dropped == 0, f"{stream.name}: inbox overflowed"
            assert stream.received == list(range(sent)), describe_gaps(stream, tally)
            assert not churn_problems(stream, tally), churn_problems(stream, tally)
    finally:
        await asyncio.gather(
            *(client.close() for s in streams for client in (s.publisher, s.subscriber))
        )
        for proxy in proxies.values():
            await proxy.close()


async def soak(
    cluster: Cluster,
    proxies: dict[str, FaultProxy],
    streams: list[Stream],
    aliases: dict[str, int],
    workdir: Path,
) -> Tally:
    """Run the streams and the churn for ``SOAK_SECONDS`` under the fault schedule, then
    let the subscribers catch up."""
    tally = Tally()
    stop = asyncio.Event()
    readers = [asyncio.create_task(read(stream)) for stream in streams]
    readers += [
        asyncio.create_task(note_close(stream, role, session, tally))
        for stream in streams
        for role, session in zip(("publisher", "subscriber"), stream.sessions, strict=True)
    ]
    publishers = [asyncio.create_task(publish(stream, stop)) for stream in streams]
    # The churn stays off the bulk topic: a newcomer there would spend its short life
    # receiving, and the machine's cores with it.
    small = [s.topic for s in streams if s.plan.size < SCTP_PACKET_PAYLOAD]
    churner = asyncio.create_task(churn(cluster, small, stop, tally))
    topics = [stream.topic for stream in streams]

    def cut(*names: str) -> Callable[[], Awaitable[str]]:
        async def inject() -> str:
            # A cut while the server is still away (backing off after a coordinator
            # restart) would cut nothing: wait for its link to be up first.
            unregistered = []
            for name in names:
                try:
                    await eventually(registered(cluster, name), timeout=REGISTER_WAIT)
                except AssertionError:
                    unregistered.append(name)
            for name in names:
                proxies[name].cut()
            away = f", {'+'.join(unregistered)} not registered" if unregistered else ""
            return f"cut {'+'.join(names)} coordinator link{away}"

        return inject

    async def coordinator() -> str:
        await restart_coordinator(cluster)
        return f"coordinator kill -9, back after {OUTAGE:g} s"

    try:
        names = {alias: name for name, alias in aliases.items()}
        async with frozen_consumers(cluster, workdir, names) as start_frozen:

            async def freeze() -> str:
                return f"consumer frozen: {await start_frozen(topics)}"

            schedule = itertools.cycle(
                [cut("s1"), freeze, coordinator, cut("s2"), coordinator, cut("s1", "s2")]
            )
            at = FAULT_EVERY / 2
            while at < SOAK_SECONDS:
                await asyncio.sleep(max(0.0, at - tally.now()))
                started = tally.now()
                what = await next(schedule)()
                tally.faults.append((started, f"{what} ({tally.now() - started:.1f} s)"))
                at += FAULT_EVERY
            await asyncio.sleep(max(0.0, SOAK_SECONDS - tally.now()))
            stop.set()
            await asyncio.gather(*publishers)
            await churner
            await catch_up(streams, tally)
    finally:
        stop.set()
        for task in [*readers, *publishers, churner]:
            task.cancel()
        await asyncio.gather(*readers, *publishers, churner, return_exceptions=True)
    return tally


async def catch_up(streams: list[Stream], tally: Tally) -> None:
    """Wait until every live subscriber has as many messages as were published (the
    stream's and the churn's), then a moment more, so that a duplicate still on its way
    is counted too."""

    def done(stream: Stream) -> bool:
        churned = len(tally.churn_sent.get(stream.topic, []))
        complete = len(stream.received) >= len(stream.published_at)
        return bool(stream.lived()) or (complete and len(stream.foreign) >= churned)

    async def caught_up() -> bool:
        return all(done(stream) for stream in streams)

    with contextlib.suppress(AssertionError):
        await eventually(caught_up, timeout=DRAIN_TIMEOUT, interval=0.05)
    await asyncio.sleep(SETTLE)


async def server_counters(cluster: Cluster) -> dict[str, dict[str, object]]:
    """Per server: coordinator connections, server sessions made, client sessions closed."""
    result: dict[str, dict[str, object]] = {}
    for name in SERVERS:
        stats = (await cluster.server_status(name))["stats"]
        sessions: dict[str, int] = stats["sessions"]
        result[name] = {
            "coordinator_connects": stats["coordinator_connects"],
            "server_links": sessions.get("established:server", 0),
            "closed": {k: v for k, v in sessions.items() if k.startswith("closed:")},
            "drops": {k: v for k, v in stats["drops"].items() if v},
        }
    return result


def churn_problems(stream: Stream, tally: Tally) -> str:
    """What is wrong with the churn's messages on ``stream``'s topic: each confirmed one
    once, nothing unknown, each short-lived publisher's in its order; empty if nothing."""
    confirmed = set(tally.churn_sent.get(stream.topic, []))
    counts = Counter(stream.foreign)
    problems = []
    if missing := confirmed - counts.keys():
        problems.append(f"missing {sorted(missing)[:20]}")
    if twice := [body for body, n in counts.items() if n > 1]:
        problems.append(f"duplicated {twice[:20]}")
    if unknown := counts.keys() - confirmed - tally.churn_doubtful:
        problems.append(f"never published {sorted(unknown)[:20]}")
    last: dict[bytes, int] = {}
    for body in stream.foreign:
        _churn, number, index = body.split(b" ")
        if last.get(number, -1) >= int(index):
            problems.append(f"out of order: {body!r}")
        last[number] = int(index)
    return f"churn on {stream.topic}: {'; '.join(problems)}" if problems else ""


def describe_gaps(stream: Stream, tally: Tally) -> str:
    """Which sequence numbers went missing or came twice, when they were sent, and the
    faults just before: what a report of a loss needs."""
    sent = len(stream.published_at)
    counts = Counter(stream.received)
    missing = [seq for seq in range(sent) if seq not in counts]
    twice = sorted(seq for seq, n in counts.items() if n > 1)
    disorder = [(a, b) for a, b in itertools.pairwise(stream.received) if b <= a][:10]

    def when(seq: int) -> str:
        if seq >= sent:
            return f"{seq} (never sent)"
        return f"{seq} at {stream.published_at[seq] - tally.started:.2f} s"

    return (
        f"stream {stream.name}: {sent} sent, {len(stream.received)} received; "
        f"missing {len(missing)}: {[when(s) for s in missing[:20]]}; "
        f"duplicated {len(twice)}: {[when(s) for s in twice[:20]]}; "
        f"out of order (first 10): {disorder}; faults: {tally.faults}"
    )


def report(
    cluster: Cluster,
    streams: list[Stream],
    tally: Tally,
    aliases: dict[str, int],
    servers: dict[str, dict[str, object]],
) -> None:
    """The summary table: streams, messages, faults with their times, reconnects, servers."""
    lines = [
        "",
        f"fault soak: a fault every {FAULT_EVERY:g} s for {SOAK_SECONDS:g} s, "
        f"{len(streams)} reliable streams, "
        f"servers {aliases} (logs: {cluster.workdir})",
        f"{'stream':<7}{'path':<9}{'msg/s':>6}{'bytes':>6}{'sent':>7}{'received':>9}"
        f"{'lost':>5}{'dup':>4}{'order':>6}{'churn sent/got':>15}  sessions",
    ]
    for stream in streams:
        plan = stream.plan
        sent = len(stream.published_at)
        counts = Counter(stream.received)
        lost = sum(1 for seq in range(sent) if seq not in counts)
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        ordered = all(b > a for a, b in itertools.pairwise(stream.received))
        lines.append(
            f"{stream.name:<7}{plan.publishing + '->' + plan.receiving:<9}{plan.rate:>6g}"
            f"{plan.size:>6}{sent:>7}{len(stream.received):>9}{lost:>5}{duplicated:>4}"
            f"{'kept' if ordered else 'NO':>6}"
            f"{f'{len(tally.churn_sent.get(stream.topic, []))}/{len(stream.foreign)}':>15}  "
            f"{stream.lived() or 'lived throughout'}"
        )
    sent = sum(len(s.published_at) for s in streams)
    received = sum(len(s.received) for s in streams)
    lines.append(f"{'total':<28}{sent:>7}{received:>9}")
    lines.append("faults (seconds from the first message, what, how long it took to inject):")
    lines.extend(f"  {at:6.1f}  {what}" for at, what in tally.faults)
    kinds = Counter(what.split(" ", 1)[0] for _at, what in tally.faults)
    lines.append(
        f"faults: {len(tally.faults)}: {kinds['coordinator']} coordinator kill -9 and restart, "
        f"{kinds['cut']} coordinator link cuts, {kinds['consumer']} consumers frozen"
    )
    reconnects = sum(c.reconnects for s in streams for c in (s.publisher, s.subscriber))
    lines.append(
        f"stream client reconnects: {reconnects}; churn: {tally.churn_sessions} sessions "
        f"(connect, subscribe, publish 3, close), failed attempts: "
        f"{dict(tally.churn_failures)} e.g. {tally.churn_errors}"
    )
    lines.append(
        "servers (registrations, server sessions ever established, client sessions closed"
        f" by reason, drops); aliases kept: {'yes' if tally.aliases_kept else 'NO'}"
    )
    for name, counters in servers.items():
        lines.append(f"  {name}: {counters}")
    lines.append(f"duration: {tally.now():.1f} s from the first message to the last check")
    print("\n".join(lines))
