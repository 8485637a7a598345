"""The UDP mux routes every datagram to the right connection and refuses to be fooled.

What it proves: binding requests go by the ufrag in USERNAME, responses by
transaction (and only from the address the request went to), everything else
by bound source address; an address is confirmed only by the connection's own
success response; a confirmed address is never moved to another connection
(counted); tentative bindings yield; a connection's bindings are bounded and
all go when it closes; unknown sources and malformed STUN are dropped and
counted; a taken port is an error naming it. Routing is driven through
``datagram_received`` (exact, no timing) and sending through a real socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aioice import stun
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from commserver.metrics import commserver_registry
from commserver.server import CommServer
from tests.metrics.prometheus_server import promtool_check
from tests.support import eventually
from webrtc_broker.config import CommServerConfig
from webrtc_broker.rtc.udpmux import MuxEndpoint, MuxError, MuxTransport, UdpMux

DTLS = b"\x16\xfe\xfd" + b"\x00" * 30
"""A DTLS record's first bytes (content type 22): anything that is not STUN."""

PEER_1 = ("203.0.113.10", 50001)
PEER_2 = ("203.0.113.11", 50002)
ATTACKER = ("203.0.113.66", 6666)


class Recorder(asyncio.DatagramProtocol):
    """Stands in for aioice's StunProtocol: records what reaches it."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: MuxTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, MuxTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    instance = UdpMux(0, host="127.0.0.1")
    await instance.open()
    yield instance
    instance.close()


def connection(mux: UdpMux) -> tuple[MuxEndpoint, Recorder]:
    endpoint = mux.register()
    protocol = Recorder()
    endpoint.open_transport(protocol)
    return endpoint, protocol


def request(ufrag: str, remote: str = "peer") -> stun.Message:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{ufrag}:{remote}"
    message.attributes["PRIORITY"] = 1
    return message


def success(to: stun.Message, addr: tuple[str, int]) -> bytes:
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=to.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = addr
    return bytes(response)


def answer(protocol: Recorder, addr: tuple[str, int], ufrag: str) -> None:
    """What aioice does for a request that passed its integrity check: send success."""
    assert protocol.transport is not None
    protocol.transport.sendto(success(request(ufrag), addr), addr)


def check(protocol: Recorder, addr: tuple[str, int]) -> stun.Message:
    """What aioice does for a connectivity check: send a binding request."""
    assert protocol.transport is not None
    message = request("remote", "local")
    protocol.transport.sendto(bytes(message), addr)
    return message


def bodies(protocol: Recorder) -> list[bytes]:
    return [data for data, _ in protocol.received]


async def test_request_goes_to_the_ufrag_it_names(mux: UdpMux) -> None:
    a, proto_a = connection(mux)
    b, proto_b = connection(mux)
    data = bytes(request(a.ufrag))
    mux.datagram_received(data, PEER_1)
    assert bodies(proto_a) == [data]
    assert bodies(proto_b) == []
    # An unauthenticated request binds nothing: only the connection's answer does.
    assert mux.binding_of(PEER_1) is None
    answer(proto_a, PEER_1, a.ufrag)
    assert mux.binding_of(PEER_1) == (a.ufrag, True)
    mux.datagram_received(DTLS, PEER_1)
    assert bodies(proto_a)[-1] == DTLS
    assert bodies(proto_b) == []
    del b


async def test_unknown_sources_and_ufrags_are_dropped(mux: UdpMux) -> None:
    _, proto = connection(mux)
    mux.datagram_received(DTLS, ATTACKER)
    mux.datagram_received(bytes(request("nosuchufrag12345")), ATTACKER)
    mux.datagram_received(b"", ATTACKER)
    indication = stun.Message(
        message_method=stun.Method.BINDING, message_class=stun.Class.INDICATION
    )
    mux.datagram_received(bytes(indication), ATTACKER)
    assert proto.received == []
    assert mux.stats.dropped_unknown == 4


async def test_check_binds_tentatively_and_its_response_comes_back(mux: UdpMux) -> None:
    a, proto = connection(mux)
    sent = check(proto, PEER_1)
    assert mux.binding_of(PEER_1) == (a.ufrag, False)
    # DTLS from the checked address already reaches the connection.
    mux.datagram_received(DTLS, PEER_1)
    assert bodies(proto) == [DTLS]
    mux.datagram_received(success(sent, PEER_1), PEER_1)
    assert len(proto.received) == 2
    assert mux.pending_transactions == 0


async def test_spoofed_responses_are_dropped(mux: UdpMux) -> None:
    _, proto = connection(mux)
    sent = check(proto, PEER_1)
    # The right transaction from another address (the attacker saw or guessed it).
    mux.datagram_received(success(sent, ATTACKER), ATTACKER)
    # A transaction nobody sent, from the checked address and from elsewhere.
    mux.datagram_received(success(request("x"), PEER_1), PEER_1)
    mux.datagram_received(success(request("x"), ATTACKER), ATTACKER)
    assert proto.received == []
    assert mux.stats.dropped_unknown == 3
    # The real response still gets through afterwards.
    mux.datagram_received(success(sent, PEER_1), PEER_1)
    assert len(proto.received) == 1


async def test_a_confirmed_address_is_never_stolen(mux: UdpMux) -> None:
    victim, victim_proto = connection(mux)
    hostile, hostile_proto = connection(mux)
    answer(victim_proto, PEER_1, victim.ufrag)
    # The hostile peer spoofs the victim's address with a request naming its own
    # ufrag and a valid integrity (it knows its own password): its connection answers.
    forged = bytes(request(hostile.ufrag))
    mux.datagram_received(forged, PEER_1)
    assert bodies(hostile_proto) == [forged]
    answer(hostile_proto, PEER_1, hostile.ufrag)
    assert mux.binding_of(PEER_1) == (victim.ufrag, True)
    assert mux.stats.refused_rebinds == 1
    # Its checks do not move the address either.
    check(hostile_proto, PEER_1)
    assert mux.binding_of(PEER_1) == (victim.ufrag, True)
    mux.datagram_received(DTLS, PEER_1)
    assert bodies(victim_proto) == [DTLS]
    assert bodies(hostile_proto) == [forged]


async def test_claimed_address_passes_when_its_owner_closes(mux: UdpMux) -> None:
    """A peer restarted on the same address and port: its new session authenticates
    while the old one still holds the address; the address passes once the old closes."""
    old, old_proto = connection(mux)
    new, new_proto = connection(mux)
    bystander, bystander_proto = connection(mux)
    answer(old_proto, PEER_1, old.ufrag)
    answer(new_proto, PEER_1, new.ufrag)
    assert mux.binding_of(PEER_1) == (old.ufrag, True)
    assert mux.pending_claims == 1
    old.close()
    assert mux.binding_of(PEER_1) == (new.ufrag, True)
    assert mux.pending_claims == 0
    mux.datagram_received(DTLS, PEER_1)
    assert bodies(new_proto) == [DTLS]
    # A claimant that closed first claims nothing.
    answer(bystander_proto, PEER_2, bystander.ufrag)
    third, third_proto = connection(mux)
    answer(third_proto, PEER_2, third.ufrag)
    third.close()
    assert mux.pending_claims == 0
    bystander.close()
    assert mux.binding_of(PEER_2) is None
    assert mux.bound_addresses == 1


async def test_tentative_bindings_yield(mux: UdpMux) -> None:
    a, proto_a = connection(mux)
    b, proto_b = connection(mux)
    check(proto_a, PEER_1)
    assert mux.binding_of(PEER_1) == (a.ufrag, False)
    # Another connection's check takes a tentative binding over...
    check(proto_b, PEER_1)
    assert mux.binding_of(PEER_1) == (b.ufrag, False)
    # ...and the connection the peer authenticates to confirms it for good.
    answer(proto_a, PEER_1, a.ufrag)
    assert mux.binding_of(PEER_1) == (a.ufrag, True)
    check(proto_b, PEER_1)
    assert mux.binding_of(PEER_1) == (a.ufrag, True)
    assert mux.stats.refused_rebinds == 0  # a check is not an authenticated claim
    assert len(b.bindings) == 0


async def test_bindings_per_connection_are_bounded() -> None:
    mux = UdpMux(0, host="127.0.0.1", max_bindings=8)
    await mux.open()
    try:
        endpoint, proto = connection(mux)
        for port in range(1000, 1100):  # a peer that lists 100 candidates
            check(proto, ("203.0.113.20", port))
        assert len(endpoint.bindings) == 8
        assert mux.bound_addresses == 8
        # The newest checks hold the slots (the oldest tentative went first).
        assert mux.binding_of(("203.0.113.20", 1099)) == (endpoint.ufrag, False)
        assert mux.binding_of(("203.0.113.20", 1000)) is None
        confirmed = [("203.0.113.30", port) for port in range(8)]
        for addr in confirmed:
            answer(proto, addr, endpoint.ufrag)
        assert all(mux.binding_of(a) == (endpoint.ufrag, True) for a in confirmed)
        # Full of confirmed addresses: more are refused, none is evicted.
        answer(proto, PEER_2, endpoint.ufrag)
        check(proto, PEER_1)
        assert mux.binding_of(PEER_2) is None and mux.binding_of(PEER_1) is None
        assert mux.stats.refused_bindings == 2
        assert mux.bound_addresses == 8
    finally:
        mux.close()


async def test_closed_connection_leaves_nothing(mux: UdpMux) -> None:
    a, proto_a = connection(mux)
    other, proto_other = connection(mux)
    for port in range(10):
        check(proto_a, ("203.0.113.40", port))
    answer(proto_a, PEER_1, a.ufrag)
    answer(proto_other, PEER_2, other.ufrag)
    assert mux.bound_addresses == 12
    assert mux.pending_transactions == 10
    a.close()
    await asyncio.wait_for(proto_a.lost.wait(), 5)
    assert mux.bound_addresses == 1
    assert mux.pending_transactions == 0
    assert mux.endpoints == 1
    assert a.bindings == {} and a.transactions == set()
    # Its ufrag and addresses now reach nobody.
    mux.datagram_received(bytes(request(a.ufrag)), PEER_1)
    mux.datagram_received(DTLS, PEER_1)
    assert mux.stats.dropped_unknown == 2
    # What it sends after closing goes nowhere and binds nothing.
    check(proto_a, PEER_1)
    assert mux.binding_of(PEER_1) is None
    # The other connection is untouched.
    mux.datagram_received(DTLS, PEER_2)
    assert bodies(proto_other) == [DTLS]


async def test_last_transport_closed_closes_the_endpoint(mux: UdpMux) -> None:
    endpoint = mux.register()
    first, second = Recorder(), Recorder()
    endpoint.open_transport(first)
    endpoint.open_transport(second)
    assert first.transport is not None and second.transport is not None
    first.transport.close()
    assert not endpoint.closed
    second.transport.close()
    assert endpoint.closed and mux.endpoints == 0
    await asyncio.wait_for(second.lost.wait(), 5)


async def test_many_connections_close_without_leaking(mux: UdpMux) -> None:
    endpoints = [connection(mux) for _ in range(200)]
    for index, (endpoint, proto) in enumerate(endpoints):
        addr = ("203.0.113.50", 2000 + index)
        check(proto, addr)
        answer(proto, addr, endpoint.ufrag)
    assert mux.bound_addresses == 200 and mux.endpoints == 200
    for endpoint, _ in endpoints:
        endpoint.close()
    assert (mux.bound_addresses, mux.endpoints, mux.pending_transactions) == (0, 0, 0)


async def test_ufrags_are_unique() -> None:
    names = iter(["same", "same", "same", "other"])
    mux = UdpMux(0, host="127.0.0.1", ufrag_factory=lambda: next(names))
    first = mux.register()
    second = mux.register()
    assert (first.ufrag, second.ufrag) == ("same", "other")
    assert len(UdpMux(0).register().ufrag) >= 16


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06\x00\xff",
        b"\x00\x01\xff\xff" + b"\x21\x12\xa4\x42" + b"\x00" * 12,
        b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06\x00\x04\xff\xfe:x",
        b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06\x00\x00",
        b"\x00\x01\x00\x00" + b"\xde\xad\xbe\xef" + b"\x00" * 12,
        b"\x01",
    ],
    ids=["attr-overruns", "length-overruns", "not-utf8", "no-colon", "no-cookie", "one-byte"],
)
async def test_malformed_stun_is_dropped(mux: UdpMux, datagram: bytes) -> None:
    _, proto = connection(mux)
    mux.datagram_received(datagram, ATTACKER)
    assert proto.received == []
    assert mux.stats.dropped_unknown == 1


async def test_datagrams_cross_the_real_socket(mux: UdpMux) -> None:
    """The routing above, through the kernel: a peer socket checks in and gets data."""
    endpoint, proto = connection(mux)
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        addr = peer.getsockname()
        await loop.sock_sendto(peer, bytes(request(endpoint.ufrag)), mux.sockname)
        await _until(lambda: len(proto.received) == 1)
        assert proto.received[0][1] == addr
        answer(proto, addr, endpoint.ufrag)
        data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 5)
        assert source == mux.sockname
        assert stun.parse_message(data).message_class == stun.Class.RESPONSE
        await loop.sock_sendto(peer, DTLS, mux.sockname)
        await _until(lambda: len(proto.received) == 2)
        assert proto.received[1] == (DTLS, addr)
    finally:
        peer.close()


class Failing(Recorder):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        raise RuntimeError("this connection cannot take it")


async def test_a_failing_connection_costs_only_itself(mux: UdpMux) -> None:
    """Datagrams read in one batch: one connection raising does not lose the others'."""
    endpoint, proto = connection(mux)
    broken = mux.register()
    failing = Failing()
    broken.open_transport(failing)
    loop = asyncio.get_running_loop()
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for peer in peers:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
        good, bad = (p.getsockname() for p in peers)
        answer(proto, good, endpoint.ufrag)
        answer(failing, bad, broken.ufrag)
        for _ in range(5):
            await loop.sock_sendto(peers[1], DTLS, mux.sockname)
            await loop.sock_sendto(peers[0], DTLS, mux.sockname)
        await _until(lambda: len(proto.received) == 5)
    finally:
        for peer in peers:
            peer.close()


async def test_taken_port_names_it() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        with pytest.raises(MuxError, match=f"cannot bind UDP port {port}"):
            await UdpMux(port, host="127.0.0.1").open()
    finally:
        holder.close()


async def test_extra_info_hides_the_shared_socket(mux: UdpMux) -> None:
    _, proto = connection(mux)
    assert proto.transport is not None
    assert proto.transport.get_extra_info("sockname") == mux.sockname
    assert proto.transport.get_extra_info("socket") is None


async def _until(condition: Callable[[], bool]) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=5, interval=0.01)


async def test_mux_metrics_are_promtool_clean() -> None:
    """A single-port comm server exports the mux's families, valid for Prometheus."""
    server = CommServer(
        CommServerConfig(name="unit", coordinator_url="ws://127.0.0.1:9", udp_port=1)
    )
    assert server.candidates.mux is not None
    server.candidates.mux.stats.dropped_unknown = 7
    text = generate_latest(commserver_registry(server)).decode()
    assert await promtool_check(text) == (0, "")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    prefix = "webrtc_broker_commserver_udp_mux_"
    assert families[prefix + "dropped_unknown"].samples[0].value == 7
    for name in ("refused_rebinds", "refused_bindings", "dropped_sends"):
        assert families[prefix + name].type == "counter"
    for name in ("bound_addresses", "connections"):
        assert families[prefix + name].type == "gauge"


async def test_replies_leave_from_the_address_the_peer_sent_to() -> None:
    """A wildcard socket answers from the address each peer reached it at, not the
    one the kernel's routing would pick: ICE drops a response from another address."""
    wildcard = UdpMux(0)  # 0.0.0.0, as a comm server binds it
    await wildcard.open()
    endpoint, proto = connection(wildcard)
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.2", 0))  # routed back to from 127.0.0.1 by default
    peer.setblocking(False)
    reached_at = ("127.0.0.3", wildcard.port)
    try:
        addr = peer.getsockname()
        await loop.sock_sendto(peer, bytes(request(endpoint.ufrag)), reached_at)
        await _until(lambda: len(proto.received) == 1)
        answer(proto, addr, endpoint.ufrag)
        data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 5)
        assert source == reached_at
        assert stun.parse_message(data).message_class == stun.Class.RESPONSE
        await loop.sock_sendto(peer, DTLS, reached_at)
        await _until(lambda: len(proto.received) == 2)
        assert proto.transport is not None
        proto.transport.sendto(DTLS, addr)
        assert await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 5) == (DTLS, reached_at)
    finally:
        peer.close()
        wildcard.close()
