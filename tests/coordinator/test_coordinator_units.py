"""The coordinator's parts on their own: selectors, topology, registry, outbox, session."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from coordinator import create_app
from coordinator.counters import CoordinatorCounters, DropReason
from coordinator.credentials import display_name, presented_token, server_role
from coordinator.outbox import Outbox, Overflow
from coordinator.redact import QueryStringRedactor
from coordinator.registry import (
    AliasAllocator,
    Delivery,
    Origin,
    RegisteredPeer,
    Registry,
    ServerInfo,
)
from coordinator.relay import SignalRelay
from coordinator.selector import (
    LeastClientsSelector,
    RandomSelector,
    RoundRobinSelector,
    make_selector,
)
from coordinator.session import CLOSE_POLICY_VIOLATION, SocketSession
from coordinator.topology import servers_for_client, servers_for_server
from tests.coordinator.harness import make_config, wait_until
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec


def info(alias: int, clients: int = 0, role: str = "server") -> ServerInfo:
    return ServerInfo(
        alias=alias, name=f"s{alias}", role="hub" if role == "hub" else "server", clients=clients
    )


class ListSink:
    """A FrameSink that records frames and can pretend to be full."""

    def __init__(self, accept: bool = True) -> None:
        self.frames: list[bytes] = []
        self.accept = accept

    def send(self, frame: bytes, origin: Origin) -> Delivery:
        if self.accept:
            self.frames.append(frame)
            return Delivery.QUEUED
        return Delivery.QUEUE_FULL


# --- selectors -------------------------------------------------------------------


def test_random_selector_returns_a_permutation_and_varies() -> None:
    servers = [info(a) for a in range(1, 9)]
    selector = RandomSelector(random.Random(7))
    orders = {tuple(selector.order(servers)) for _ in range(20)}
    assert all(sorted(order) == list(range(1, 9)) for order in orders)
    assert len(orders) > 1


def test_round_robin_rotates_in_alias_order() -> None:
    selector = RoundRobinSelector()
    servers = [info(30), info(10), info(20)]
    assert [selector.order(servers) for _ in range(4)] == [
        [10, 20, 30],
        [20, 30, 10],
        [30, 10, 20],
        [10, 20, 30],
    ]
    assert selector.order([]) == []


def test_least_clients_sorts_by_count_and_shuffles_ties() -> None:
    selector = LeastClientsSelector(random.Random(1))
    assert selector.order([info(1, 5), info(2, 0), info(3, 2)]) == [2, 3, 1]
    tied = [info(1, 1), info(2, 1), info(3, 1), info(4, 0)]
    firsts_after_idle = {tuple(selector.order(tied)[1:]) for _ in range(30)}
    assert all(sorted(rest) == [1, 2, 3] for rest in firsts_after_idle)
    assert len(firsts_after_idle) > 1  # ties are spread, not always the same server
    assert all(selector.order(tied)[0] == 4 for _ in range(5))


def test_make_selector_by_config_name() -> None:
    assert isinstance(make_selector("random"), RandomSelector)
    assert isinstance(make_selector("round-robin"), RoundRobinSelector)
    assert isinstance(make_selector("least-clients"), LeastClientsSelector)
    with pytest.raises(ValueError, match="unknown selector"):
        make_selector("fastest")  # type: ignore[arg-type]


# --- topology --------------------------------------------------------------------


def test_clients_avoid_hubs_unless_only_hubs() -> None:
    selector = RoundRobinSelector()
    mixed = [info(1, role="hub"), info(2), info(3)]
    assert sorted(servers_for_client(mixed, selector)) == [2, 3]
    assert servers_for_client([info(1, role="hub")], selector) == [1]
    assert servers_for_client([], selector) == []


def test_servers_form_mesh_or_star() -> None:
    plain = [info(1), info(2)]
    with_hub = [info(1), info(5, role="hub"), info(2)]
    assert servers_for_server("server", plain) == [1, 2]
    assert servers_for_server("server", with_hub) == [5]
    assert servers_for_server("hub", with_hub) == [1, 5, 2]
    assert servers_for_server("server", []) == []


# --- registry and aliases -----------------------------------------------------------


def test_alias_allocator_starts_at_milliseconds_times_1000() -> None:
    before = time.time_ns() // 1_000_000 * 1000
    allocator = AliasAllocator()
    after = time.time_ns() // 1_000_000 * 1000
    first = allocator.allocate()
    assert before <= first <= after
    assert first % 1000 == 0
    assert [allocator.allocate() for _ in range(3)] == [first + 1, first + 2, first + 3]
    assert AliasAllocator(start=7).allocate() == 7
    with pytest.raises(ValueError, match="positive"):
        AliasAllocator(start=0)


def test_registry_counts_clients_per_server() -> None:
    registry = Registry(AliasAllocator(start=1).allocate)
    a = RegisteredPeer(alias=registry.allocate_alias(), role="server", sink=ListSink(), name="a")
    b = RegisteredPeer(alias=registry.allocate_alias(), role="hub", sink=ListSink(), name="b")
    c1 = RegisteredPeer(alias=registry.allocate_alias(), role="client", sink=ListSink())
    c2 = RegisteredPeer(alias=registry.allocate_alias(), role="client", sink=ListSink())
    for peer in (a, b, c1, c2):
        registry.add(peer)
    with pytest.raises(ValueError, match="already registered"):
        registry.add(a)

    def counts() -> dict[int, int]:
        return {s.alias: s.clients for s in registry.servers()}

    registry.note_connect(c1, a.alias)
    registry.note_connect(c1, a.alias)  # a retry is not a second client
    registry.note_connect(c2, a.alias)
    assert counts() == {a.alias: 2, b.alias: 0}
    registry.note_connect(c2, b.alias)  # moving counts at the new server only
    assert counts() == {a.alias: 1, b.alias: 1}
    assert [s.role for s in registry.servers()] == ["server", "hub"]
    assert registry.client_count == 2

    registry.remove(b.alias)
    assert counts() == {a.alias: 1}
    registry.remove(c2.alias)  # its server is gone: nothing to decrement, no error
    registry.remove(c1.alias)
    assert counts() == {a.alias: 0}
    assert registry.client_count == 0
    assert registry.remove(c1.alias) is None


# --- relay rules ---------------------------------------------------------------


def make_relay() -> tuple[Registry, SignalRelay, CoordinatorCounters]:
    registry = Registry(AliasAllocator(start=100).allocate)
    counters = CoordinatorCounters()
    return registry, SignalRelay(registry, counters), counters


def test_relay_routes_and_refusals() -> None:
    registry, relay, counters = make_relay()
    server = RegisteredPeer(alias=1, role="server", sink=ListSink())
    client = RegisteredPeer(alias=2, role="client", sink=ListSink())
    other = RegisteredPeer(alias=3, role="client", sink=ListSink())
    full = RegisteredPeer(alias=4, role="server", sink=ListSink(accept=False))
    for peer in (server, client, other, full):
        registry.add(peer)

    def connect(to: int, spoof: int = 999) -> bytes:
        return codec.encode(pb.ConnectMessage(type=pb.CONNECT, from_alias=spoof, to_alias=to))

    relay.handle(client, connect(1))
    relay.handle(client, connect(3))  # client -> client
    relay.handle(server, connect(1))  # to itself
    relay.handle(client, connect(77))  # nobody
    relay.handle(client, connect(4))  # receiver's queue is full
    assert isinstance(server.sink, ListSink)
    assert len(server.sink.frames) == 1
    forwarded = codec.decode(server.sink.frames[0])
    assert isinstance(forwarded, pb.ConnectMessage)
    assert (forwarded.from_alias, forwarded.to_alias) == (2, 1)
    assert counters.frames_relayed["CONNECT"] == 1
    assert counters.frames_dropped[DropReason.FORBIDDEN_ROUTE] == 2
    assert counters.frames_dropped[DropReason.UNKNOWN_ALIAS] == 1
    assert counters.frames_dropped[DropReason.QUEUE_FULL] == 1
    assert client.server == 1  # a CONNECT that was not delivered does not move the client


def test_counters_have_every_key_from_the_start() -> None:
    counters = CoordinatorCounters()
    assert set(counters.frames_relayed) == {
        "CONNECT",
        "WEBRTC_OFFER",
        "WEBRTC_ANSWER",
        "WEBRTC_ICE_CANDIDATE",
        "CONNECTION_REFUSED",
    }
    assert set(counters.frames_dropped) == {reason.value for reason in DropReason}
    assert counters.connections == {"client": 0, "server": 0, "hub": 0}
    assert all(value == 0 for value in counters.connections_refused.values())


# --- outbox and session -------------------------------------------------------------


class StalledSocket:
    """A WebSocket whose peer stopped reading: every send blocks, receive waits for a queue."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.closed_with: int | None = None
        self.unblock = asyncio.Event()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        await self.unblock.wait()

    async def receive(self) -> Mapping[str, Any]:
        return await self.incoming.get()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


async def test_outbox_overflow_closes_it_without_waiting() -> None:
    socket = StalledSocket()
    outbox = Outbox(limit=2)
    writer = outbox.start(socket)
    assert outbox.send(b"1", Origin.SERVER) is Delivery.QUEUED
    await wait_until(lambda: socket.sent == [b"1"])  # the writer is now stuck on it
    assert outbox.send(b"2", Origin.SERVER) is Delivery.QUEUED
    assert outbox.send(b"3", Origin.SERVER) is Delivery.QUEUED
    assert not outbox.overflowed
    # Returns at once, never blocks the caller.
    assert outbox.send(b"4", Origin.SERVER) is Delivery.QUEUE_FULL
    assert outbox.overflowed
    assert outbox.closed
    assert outbox.send(b"5", Origin.SERVER) is Delivery.QUEUE_FULL
    await asyncio.wait_for(asyncio.gather(writer, return_exceptions=True), 1)
    assert writer.cancelled()


async def test_server_outbox_gives_clients_a_share_and_never_closes() -> None:
    socket = StalledSocket()
    outbox = Outbox(limit=4, overflow=Overflow.DROP, client_share=0.5)
    writer = outbox.start(socket)
    assert outbox.send(b"c0", Origin.CLIENT) is Delivery.QUEUED
    await wait_until(lambda: socket.sent == [b"c0"])  # stuck: the queue is empty again
    assert [outbox.send(b"c", Origin.CLIENT) for _ in range(3)] == [
        Delivery.QUEUED,
        Delivery.QUEUED,
        Delivery.TARGET_BUSY,  # clients have filled their half
    ]
    # Other servers still get through, up to the whole queue; beyond it frames
    # are dropped and the server's connection is kept.
    assert outbox.send(b"s", Origin.SERVER) is Delivery.QUEUED
    assert outbox.send(b"s", Origin.SERVER) is Delivery.QUEUED
    assert outbox.send(b"s", Origin.SERVER) is Delivery.QUEUE_FULL
    assert outbox.send(b"c", Origin.CLIENT) is Delivery.TARGET_BUSY
    assert not outbox.closed and not outbox.overflowed
    socket.unblock.set()
    await wait_until(lambda: len(outbox) == 0)
    assert socket.sent == [b"c0", b"c", b"c", b"s", b"s"]
    assert outbox.send(b"c", Origin.CLIENT) is Delivery.QUEUED  # room again
    outbox.close()
    await asyncio.gather(writer, return_exceptions=True)
    with pytest.raises(ValueError, match="share"):
        Outbox(limit=4, client_share=0)


async def test_outbox_writer_preserves_order() -> None:
    socket = StalledSocket()
    socket.unblock.set()
    outbox = Outbox(limit=8)
    writer = outbox.start(socket)
    for i in range(5):
        assert outbox.send(bytes([i]), Origin.SERVER) is Delivery.QUEUED
    await wait_until(lambda: len(socket.sent) == 5)
    assert socket.sent == [bytes([i]) for i in range(5)]
    outbox.close()
    await asyncio.gather(writer, return_exceptions=True)


async def test_slow_peer_is_closed_with_1008_and_unregistered() -> None:
    registry, relay, counters = make_relay()
    socket = StalledSocket()
    outbox = Outbox(limit=1)
    slow = RegisteredPeer(alias=1, role="client", sink=outbox)
    fast = RegisteredPeer(alias=2, role="server", sink=ListSink())
    registry.add(slow)
    registry.add(fast)
    session = SocketSession(
        socket, peer=slow, outbox=outbox, registry=registry, relay=relay, counters=counters
    )
    task = asyncio.create_task(session.run())
    offer = codec.encode(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=1))
    relay.handle(fast, offer)
    await wait_until(lambda: len(socket.sent) == 1)  # writer stuck in send
    relay.handle(fast, offer)  # queued
    relay.handle(fast, offer)  # overflow
    await asyncio.wait_for(task, 2)
    assert socket.closed_with == CLOSE_POLICY_VIOLATION
    assert registry.get(1) is None
    assert counters.slow_connections_closed == 1
    assert counters.frames_dropped[DropReason.QUEUE_FULL] == 1
    assert counters.frames_relayed["WEBRTC_OFFER"] == 2
    relay.handle(fast, offer)  # the slow peer is gone for everyone now
    assert counters.frames_dropped[DropReason.UNKNOWN_ALIAS] == 1


async def test_session_survives_a_relay_bug_and_ends_on_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _, counters = make_relay()
    socket = StalledSocket()
    socket.unblock.set()
    outbox = Outbox(limit=4)
    server = RegisteredPeer(alias=1, role="server", sink=outbox)
    client_sink = ListSink()
    client = RegisteredPeer(alias=2, role="client", sink=client_sink)
    registry.add(server)
    registry.add(client)
    calls: list[bytes] = []

    class BuggyRelay(SignalRelay):
        def handle(self, sender: RegisteredPeer, frame: bytes) -> None:
            calls.append(frame)
            if len(calls) == 1:
                raise RuntimeError("bug")
            super().handle(sender, frame)

    session = SocketSession(
        socket,
        peer=server,
        outbox=outbox,
        registry=registry,
        relay=BuggyRelay(registry, counters),
        counters=counters,
    )
    task = asyncio.create_task(session.run())
    connect = codec.encode(pb.ConnectMessage(type=pb.CONNECT, to_alias=2))
    with caplog.at_level(logging.ERROR, logger="coordinator.session"):
        await socket.incoming.put({"type": "websocket.receive", "bytes": connect})
        await socket.incoming.put({"type": "websocket.receive", "text": "hi"})
        await socket.incoming.put({"type": "websocket.receive", "bytes": connect})
        await wait_until(lambda: len(client_sink.frames) == 1)
    assert counters.frames_dropped[DropReason.INTERNAL_ERROR] == 1
    assert counters.frames_dropped[DropReason.TEXT_FRAME] == 1
    assert "relay failed" in caplog.text
    await socket.incoming.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 2)
    assert socket.closed_with is None  # the peer closed; nothing to close back
    assert registry.get(1) is None


async def test_session_stop_closes_with_going_away() -> None:
    registry, relay, counters = make_relay()
    socket = StalledSocket()
    outbox = Outbox(limit=4)
    peer = RegisteredPeer(alias=1, role="server", sink=outbox)
    registry.add(peer)
    session = SocketSession(
        socket, peer=peer, outbox=outbox, registry=registry, relay=relay, counters=counters
    )
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0)  # let it start its tasks
    session.stop()
    await asyncio.wait_for(task, 2)
    assert socket.closed_with == 1001
    assert session.finished.is_set()
    assert registry.get(1) is None


# --- credentials and log redaction ---------------------------------------------------


def test_presented_token_prefers_bearer_header() -> None:
    assert presented_token({"authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert presented_token({"authorization": "bearer  abc "}, {}) == "abc"
    assert presented_token({"authorization": "Basic xyz"}, {"token": "q"}) == "q"
    assert presented_token({}, {"token": "q"}) == "q"
    assert presented_token({}, {}) is None


def test_server_role_and_name_parsing() -> None:
    assert server_role("COMMUNICATION_SERVER") == "server"
    assert server_role("COMMUNICATION_SERVER_HUB") == "hub"
    assert server_role("CLIENT") is None
    assert server_role(None) is None
    assert display_name(None) == ""
    assert len(display_name("x" * 10_000)) == 128


def test_redactor_strips_query_strings_from_websocket_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("1.2.3.4:5", "/connect?token=secret"),
        None,
    )
    assert QueryStringRedactor().filter(record)
    assert "secret" not in record.getMessage()
    assert "/connect?<redacted>" in record.getMessage()
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("a?b",), None)
    QueryStringRedactor().filter(other)
    assert other.getMessage() == "plain a?b"


# --- readiness follows the lifespan ----------------------------------------------------


async def test_readyz_is_ready_only_inside_the_lifespan() -> None:
    app = create_app(make_config())
    transport = httpx.ASGITransport(app=app)  # does not run the lifespan by itself
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as http:
        assert (await http.get("/readyz")).status_code == 503  # not started yet
        async with app.router.lifespan_context(app):
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert (await http.get("/readyz")).status_code == 503  # shut down
        assert (await http.get("/healthz")).status_code == 200
