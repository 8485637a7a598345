"""A live broker for fuzzers that attack it from outside: real processes, one event loop.

Starting a coordinator and comm servers takes a second or two, far too long
to repeat for every example hypothesis tries, and the well-behaved pair that
must lose nothing has to keep talking *across* examples, during the attacks
and between them. So :class:`World` lives for a whole test module: it runs
its own event loop in a thread, the processes and the pair live on that
loop, and each example (plain data drawn by hypothesis in the test's thread)
is handed to the loop with :meth:`World.run`.

The checks that every example must pass afterwards are here too:

* :meth:`World.check_servers`: every process runs, no ``internal_error`` or
  ``signalling_internal_error`` drop at any server or at the coordinator,
  and each server is still registered under its first alias on its first
  coordinator connection (a lost link re-registers under a new alias);
* :meth:`World.check_fresh_clients`: a new SDK client on each server, and
  they exchange messages across the mesh;
* :meth:`Pair.check`: everything the pair published so far has arrived, in
  order, on sessions it never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support import Cluster
from webrtc_broker.bench.payload import decode_body, encode_body
from webrtc_broker.bench.routes import Route, until_routed
from webrtc_broker.client import BrokerClient, ClosedError, ReceivedMessage
from webrtc_broker.client.errors import BrokerError

T = TypeVar("T")

SERVER_SECRET = "fuzz-secret-not-for-clients"
SERVERS = ("s1", "s2")
PAIR_INTERVAL = 0.02
"""Seconds between two messages of each pair member: 50 a second each way."""
CATCH_UP = 15.0
"""Seconds the pair may take to receive what was sent before a check."""
FRESH_TIMEOUT = 10.0
"""Seconds a fresh client may take to connect, and then to hear from the other one.
The SDK passes over a server that has not answered its CONNECT within half of its
connect timeout (20 s by default): a server slower than that loses new clients."""
RECOVERY = 90.0
"""Seconds to wait, after an example failed, for the broker to serve fresh clients again,
so that the next example (hypothesis shrinks by running more) starts from a working broker."""
BODY = 24
"""Pair message size: the bench's body header (send time, sender, sequence) and padding."""


class LoopThread:
    """An event loop running in a daemon thread, fed coroutines from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="live-world", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"the example did not finish within {timeout} s") from None

    def close(self) -> None:
        async def cancel_rest() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Direction:
    """One member's stream to the other: numbered messages, and what arrived of them."""

    topic: str
    sent: int = 0
    received: int = 0
    """Messages of the stream received in order; the next expected number."""
    foreign: int = 0
    """Messages on the topic from someone else (an attacker may publish there)."""
    broken: list[str] = field(default_factory=list)
    """Gaps, reorderings and send failures; empty while nothing is lost."""
    latencies: list[float] = field(default_factory=list)


class Pair:
    """Two SDK clients on different servers, each publishing numbered reliable messages
    to the other, from before the first attack to after the last."""

    def __init__(self, a: BrokerClient, b: BrokerClient) -> None:
        self.clients = (a, b)
        self.aliases = (a.alias, b.alias)
        self.directions = (Direction("pair/to-b"), Direction("pair/to-a"))
        """``directions[0]``: a publishes, b receives; ``directions[1]`` the other way."""
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()
        """Set whenever a stream message arrives or a stream breaks."""

    @classmethod
    async def start(cls, url: str, servers: tuple[int, int]) -> Pair:
        a = await BrokerClient.connect(url, "pair-a", server=servers[0], reconnect=None)
        b = await BrokerClient.connect(url, "pair-b", server=servers[1], reconnect=None)
        pair = cls(a, b)
        a.subscribe([pair.directions[1].topic])
        b.subscribe([pair.directions[0].topic])
        await asyncio.gather(a.ping(), b.ping())
        # Subscriptions cross the mesh asynchronously; probes (bodies too short
        # to be stream messages, which the receivers skip) wait for them.
        routes = (
            Route(a, pair.directions[0].topic, b),
            Route(b, pair.directions[1].topic, a),
        )
        await until_routed(routes, probe=b"?", timeout=CATCH_UP)
        for index in (0, 1):
            pair._tasks.append(asyncio.create_task(pair._publish(index), name=f"pair-pub-{index}"))
            pair._tasks.append(asyncio.create_task(pair._receive(index), name=f"pair-recv-{index}"))
        return pair

    async def _publish(self, index: int) -> None:
        client, direction = self.clients[index], self.directions[index]
        while True:
            await asyncio.sleep(PAIR_INTERVAL)
            try:
                client.publish(
                    direction.topic, encode_body(time.time(), index, direction.sent, BODY)
                )
            except BrokerError as exc:
                direction.broken.append(f"publish {direction.sent} failed: {exc!r}")
                self._progress.set()
                return
            direction.sent += 1

    async def _receive(self, index: int) -> None:
        receiver, direction = self.clients[1 - index], self.directions[index]
        sender = self.aliases[index]
        while True:
            try:
                message: ReceivedMessage = await receiver.receive()
            except ClosedError as exc:
                direction.broken.append(f"receiver closed: {exc}")
                self._progress.set()
                return
            if message.sender != sender or message.topic != direction.topic:
                direction.foreign += 1
                continue
            if len(message.body) != BODY:
                continue  # a late route probe
            sent_at, _, number = decode_body(message.body)
            if number != direction.received:
                direction.broken.append(f"expected {direction.received}, got {number}")
                direction.received = number
            direction.received += 1
            direction.latencies.append(time.time() - sent_at)
            self._progress.set()

    async def check(self) -> None:
        """Everything published before this call arrived, in order, on the first sessions."""
        targets = [d.sent for d in self.directions]

        def behind() -> bool:
            return any(
                d.received < target and not d.broken
                for d, target in zip(self.directions, targets, strict=True)
            )

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CATCH_UP):
                while behind():
                    self._progress.clear()
                    await self._progress.wait()
        for name, direction, target in zip(("a->b", "b->a"), self.directions, targets, strict=True):
            assert not direction.broken, f"pair {name}: {direction.broken[:5]}"
            assert direction.received >= target, (
                f"pair {name}: {direction.received} of {target} arrived within {CATCH_UP} s"
            )
        for client, alias in zip(self.clients, self.aliases, strict=True):
            assert not client.closed and client.alias == alias, "a pair member lost its session"

    def summary(self) -> str:
        parts = []
        for name, d in zip(("a->b", "b->a"), self.directions, strict=True):
            worst = max(d.latencies, default=0.0) * 1000
            parts.append(
                f"{name} {d.received}/{d.sent} in order (max {worst:.0f} ms, {d.foreign} foreign)"
            )
        return "pair: " + ", ".join(parts)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()


_COORDINATOR_DROP = re.compile(
    r'^webrtc_broker_coordinator_frames_dropped_total\{reason="(\w+)"\} (\S+)$', re.M
)


def coordinator_drops(metrics: str) -> dict[str, int]:
    """The coordinator's dropped-frame counters, by reason, from its ``/metrics`` text."""
    return {reason: int(float(value)) for reason, value in _COORDINATOR_DROP.findall(metrics)}


class World:
    """A coordinator, two comm servers and a well-behaved pair, for a whole test module."""

    def __init__(self, workdir: Path) -> None:
        self.thread = LoopThread()
        self.workdir = workdir
        self.cluster: Cluster | None = None
        self.aliases: dict[str, int] = {}
        self.pair: Pair | None = None
        self.fresh_count = 0
        self.fresh_slowest = 0.0
        self._log_seen: dict[str, int] = {}
        """Characters of each process log already checked for tracebacks."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return self.thread.run(coro, timeout)

    @property
    def url(self) -> str:
        assert self.cluster is not None
        return self.cluster.url

    @property
    def server_aliases(self) -> list[int]:
        return [self.aliases[name] for name in SERVERS]

    async def start(self) -> None:
        self.cluster = cluster = Cluster(self.workdir)
        await cluster.start_coordinator("--server-secret", SERVER_SECRET)
        for name in SERVERS:
            await cluster.start_server(name, "--server-secret", SERVER_SECRET)
        for name in SERVERS:
            await cluster.wait_mesh(name, len(SERVERS) - 1)
            self.aliases[name] = await cluster.alias_of(name)
        first, second = self.server_aliases
        self.pair = await Pair.start(cluster.url, (first, second))

    async def stop(self) -> None:
        if self.pair is not None:
            await self.pair.close()
        if self.cluster is not None:
            await self.cluster.close()

    def logs(self) -> str:
        return self.cluster.logs() if self.cluster is not None else ""

    # -- the properties ----------------------------------------------------

    async def check_servers(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        for proc in [cluster.coordinator, *cluster.servers.values()]:
            assert proc is not None and proc.running, f"{proc and proc.name} exited"
        for name in SERVERS:
            status = await cluster.server_status(name)
            drops = status["stats"]["drops"]
            assert drops.get("signalling_internal_error", 0) == 0, f"{name}: {drops}"
            assert drops.get("internal_error", 0) == 0, f"{name}: {drops}"
            assert status["alias"] == self.aliases[name], f"{name} re-registered"
            assert status["registered"], f"{name} is not registered"
            assert status["stats"]["coordinator_connects"] == 1, f"{name} lost its coordinator link"
        registered = {
            s["name"]: s["alias"] for s in (await cluster.coordinator_status())["servers"]
        }
        assert registered == self.aliases
        drops = await self.coordinator_drops()
        assert drops["internal_error"] == 0, f"coordinator: {drops}"
        self.check_logs()

    def check_logs(self) -> None:
        """No process logged a traceback since the last check: every exception that
        escapes to a log (a failed task, a close callback) is a bug, counted or not."""
        cluster = self.cluster
        assert cluster is not None
        for proc in [cluster.coordinator, *cluster.servers.values()]:
            assert proc is not None
            text = proc.log()
            new, self._log_seen[proc.name] = text[self._log_seen.get(proc.name, 0) :], len(text)
            at = new.find("Traceback")
            assert at < 0, f"{proc.name} logged:\n{new[max(0, at - 300) : at + 3000]}"

    async def coordinator_drops(self) -> dict[str, int]:
        assert self.cluster is not None
        response = await self.cluster.http.get(f"{self.cluster.http_url}/metrics")
        response.raise_for_status()
        return coordinator_drops(response.text)

    async def recover(self) -> None:
        """After a failed example: wait until fresh clients are served again (best effort)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RECOVERY):
                while True:
                    try:
                        await self.check_fresh_clients()
                        return
                    except (AssertionError, BrokerError):
                        await asyncio.sleep(1.0)

    async def check_fresh_clients(self) -> None:
        """A new client on each server; each hears the others across the mesh."""
        self.fresh_count += 1
        topic = f"fresh/{self.fresh_count}"
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            clients: list[BrokerClient] = []
            for index, alias in enumerate(self.server_aliases):
                try:
                    client = await BrokerClient.connect(
                        self.url,
                        f"fresh-{self.fresh_count}-{index}",
                        server=alias,
                        timeout=FRESH_TIMEOUT,
                        reconnect=None,
                    )
                except BrokerError as exc:
                    raise AssertionError(f"a fresh client on {SERVERS[index]}: {exc!r}") from exc
                stack.push_async_callback(client.close)
                assert client.server_alias == alias
                client.subscribe([topic])
                clients.append(client)
            await asyncio.gather(*(c.ping() for c in clients))
            await _within(_all_hear_each_other(clients, topic), FRESH_TIMEOUT, "fresh clients")
        self.fresh_slowest = max(self.fresh_slowest, time.monotonic() - started)


async def _all_hear_each_other(clients: list[BrokerClient], topic: str) -> None:
    """Each client publishes until every other one has heard it (routes take a moment)."""
    senders = [c.alias for c in clients]

    async def hears_all(client: BrokerClient) -> None:
        waiting = {alias for alias in senders if alias != client.alias}
        while waiting:
            waiting.discard((await client.receive()).sender)

    listeners = [asyncio.ensure_future(hears_all(c)) for c in clients]
    try:
        while not all(listener.done() for listener in listeners):
            for client in clients:
                client.publish(topic, b"hello")
            await asyncio.wait(listeners, timeout=0.1)
        for listener in listeners:
            listener.result()
    finally:
        for listener in listeners:
            listener.cancel()


async def _within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"{what}: not done within {timeout} s") from None


SUMMARY = pytest.StashKey[list[str]]()
"""Lines for the end of the pytest run (``tests/fuzz/conftest.py`` prints them)."""


def report_line(config: pytest.Config, line: str) -> None:
    """Show ``line`` in pytest's terminal summary, with or without ``-s``."""
    config.stash.setdefault(SUMMARY, []).append(line)
