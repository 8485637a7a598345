"""The candidate policy: which addresses and ports a comm server's sessions offer.

What it proves: interface globs and CIDR networks include and exclude
addresses (exclude wins, except over an interface the include list names
exactly); advertised addresses replace interface addresses and carry their own
port or the bound one; the settings map to the three port modes; a port range
skips taken ports and fails with a clear error once every port is taken; and
real sessions gathering by a policy offer exactly those candidates, connect,
and (without a policy) leave aioice's own gathering untouched.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from webrtc_broker.config import VIRTUAL_INTERFACES, CommServerConfig
from webrtc_broker.rtc import Session
from webrtc_broker.rtc import candidates as module
from webrtc_broker.rtc.aiortc_internals import ice_connection
from webrtc_broker.rtc.candidates import (
    AddressFilter,
    Advertised,
    CandidatePolicy,
    PortMode,
    PortRange,
    PortRangeExhausted,
)
from webrtc_broker.rtc.udpmux import UdpMux

INTERFACES = [
    ("lo", "127.0.0.1"),
    ("lo", "::1"),
    ("eth0", "10.1.2.3"),
    ("eth0", "2001:db8::3"),
    ("eth1", "192.168.7.9"),
    ("docker0", "172.17.0.1"),
    ("cni-podman0", "10.88.0.1"),
    ("wlan0", "10.1.9.9"),
]


@pytest.fixture
def interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "interface_addresses", lambda: list(INTERFACES))


def chosen(include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[str]:
    policy = CandidatePolicy(filter=AddressFilter(include, exclude))
    return policy.local_addresses()


def test_no_filter_takes_every_address(interfaces: None) -> None:
    assert chosen() == [address for _, address in INTERFACES]


def test_interface_globs(interfaces: None) -> None:
    assert chosen(include=("eth*",)) == ["10.1.2.3", "2001:db8::3", "192.168.7.9"]
    assert chosen(exclude=("eth*", "lo")) == ["172.17.0.1", "10.88.0.1", "10.1.9.9"]
    assert chosen(include=("eth0",)) == ["10.1.2.3", "2001:db8::3"]


def test_cidr_networks(interfaces: None) -> None:
    assert chosen(include=("10.0.0.0/8",)) == ["10.1.2.3", "10.88.0.1", "10.1.9.9"]
    assert chosen(include=("2001:db8::/32",)) == ["2001:db8::3"]
    # A v6 network never matches a v4 address.
    assert chosen(exclude=("::/0",)) == [a for _, a in INTERFACES if ":" not in a]


def test_include_and_exclude_together(interfaces: None) -> None:
    # Exclude carves out of include...
    assert chosen(include=("10.0.0.0/8",), exclude=("10.88.0.0/16",)) == ["10.1.2.3", "10.1.9.9"]
    assert chosen(include=("eth*", "wlan*"), exclude=("10.1.0.0/16",)) == [
        "2001:db8::3",
        "192.168.7.9",
    ]
    # ...except over an interface the include list names exactly.
    assert chosen(include=("lo",), exclude=("lo", "docker*")) == ["127.0.0.1", "::1"]
    assert chosen(include=("lo",), exclude=("127.0.0.0/8",)) == ["127.0.0.1", "::1"]


def test_default_exclude_list(interfaces: None) -> None:
    assert chosen(exclude=VIRTUAL_INTERFACES) == [
        "10.1.2.3",
        "2001:db8::3",
        "192.168.7.9",
        "10.1.9.9",
    ]


def test_single_port_offers_ipv4_on_the_shared_port(interfaces: None) -> None:
    policy = CandidatePolicy(
        PortMode.SINGLE_PORT, port=3478, filter=AddressFilter(exclude=VIRTUAL_INTERFACES)
    )
    assert [(c.host, c.port) for c in policy.host_candidates()] == [
        ("10.1.2.3", 3478),
        ("192.168.7.9", 3478),
        ("10.1.9.9", 3478),
    ]


def test_advertised_addresses_replace_interfaces(interfaces: None) -> None:
    advertised = (Advertised("198.51.100.7", 31000), Advertised("198.51.100.8"))
    single = CandidatePolicy(PortMode.SINGLE_PORT, port=3478, advertised=advertised)
    assert [(c.host, c.port) for c in single.host_candidates()] == [
        ("198.51.100.7", 31000),  # a NodePort mapping 31000 to the bound port
        ("198.51.100.8", 3478),  # no port: the bound one
    ]
    ranged = CandidatePolicy(
        PortMode.PORT_RANGE,
        port_range=PortRange(40000, 40010),
        advertised=(Advertised("198.51.100.8"), Advertised("2001:db8::8")),
    )
    plan = ranged.host_candidates()
    assert [(c.bind_host, c.host, c.port) for c in plan] == [
        ("0.0.0.0", "198.51.100.8", None),
        ("::", "2001:db8::8", None),
    ]
    assert [c.host for c in ranged.host_candidates(ipv6=False)] == ["198.51.100.8"]


def test_settings_choose_the_mode() -> None:
    single = CandidatePolicy.from_config(
        CommServerConfig(udp_port=3478, advertise_addresses=["198.51.100.7:31000"])
    )
    assert single.mode is PortMode.SINGLE_PORT and single.mux is not None
    assert single.advertised == (Advertised("198.51.100.7", 31000),)
    ranged = CandidatePolicy.from_config(CommServerConfig(udp_port_range="40000-40099"))
    assert ranged.mode is PortMode.PORT_RANGE and ranged.mux is None
    assert ranged.port_range is not None
    assert (ranged.port_range.low, ranged.port_range.high) == (40000, 40099)
    default = CandidatePolicy.from_config(CommServerConfig())
    assert default.mode is PortMode.PER_CONNECTION
    assert default.filter.exclude == VIRTUAL_INTERFACES
    assert not default.is_default  # the default exclude list is a filter
    assert CandidatePolicy.from_config(CommServerConfig(candidate_exclude=[])).is_default


def test_an_advertised_port_needs_the_single_port() -> None:
    # Each connection binds its own port: one advertised port cannot map them all.
    with pytest.raises(ValueError, match="needs udp_port"):
        CommServerConfig(advertise_addresses=["198.51.100.7:31000"])
    with pytest.raises(ValueError, match="needs udp_port"):
        CommServerConfig(advertise_addresses=["198.51.100.7:31000"], udp_port_range="40000-40009")
    assert CommServerConfig(advertise_addresses=["198.51.100.7:31000"], udp_port=7591)


def test_describe_names_mode_ports_and_candidates(interfaces: None) -> None:
    policy = CandidatePolicy(
        PortMode.PORT_RANGE, port_range=PortRange(40000, 40009), filter=AddressFilter(("eth0",))
    )
    assert policy.describe() == {
        "mode": "port-range",
        "ports": "40000-40009",
        "candidates": ["10.1.2.3:40000-40009", "[2001:db8::3]:40000-40009"],
    }


@pytest.fixture
def two_free_ports() -> Iterator[tuple[int, int]]:
    """Two consecutive ports free for UDP on loopback (held by nobody when yielded)."""
    for low in range(45000, 46000, 2):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
                a.bind(("127.0.0.1", low))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                    b.bind(("127.0.0.1", low + 1))
        except OSError:
            continue
        yield low, low + 1
        return
    raise AssertionError("no two free ports")


def test_port_range_exhausted(two_free_ports: tuple[int, int]) -> None:
    low, high = two_free_ports
    ports = PortRange(low, high)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", low))
        with ports.bind("127.0.0.1") as sock:
            assert sock.getsockname()[1] == high
            with pytest.raises(PortRangeExhausted, match=f"every UDP port of {low}-{high}"):
                ports.bind("127.0.0.1")


# -- sessions gathering by a policy -----------------------------------------


def offered(description: bytes) -> tuple[list[tuple[str, int]], str]:
    """(host, port) of each candidate in a description, and its ufrag."""
    sdp = json.loads(description)["sdp"]
    found = []
    ufrag = ""
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            found.append((fields[4], int(fields[5])))
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line.partition(":")[2]
    return found, ufrag


async def connect(offerer: Session, answerer: Session) -> None:
    answer = await answerer.accept_offer(await offerer.create_offer())
    await offerer.accept_answer(answer)
    await asyncio.gather(offerer.wait_open(10), answerer.wait_open(10))


async def exchange(a: Session, b_inbox: asyncio.Queue[bytes]) -> None:
    a.send(b"ping", reliable=True, immediate=True)
    assert await asyncio.wait_for(b_inbox.get(), 10) == b"ping"


async def test_sessions_share_the_mux_port() -> None:
    policy = CandidatePolicy(
        PortMode.SINGLE_PORT,
        port=0,
        mux=UdpMux(0),
        advertised=(Advertised("127.0.0.1"),),
    )
    await policy.open()
    sessions: list[Session] = []
    try:
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        for _ in range(3):
            server = Session(on_frame=lambda d, r: None, candidate_policy=policy)
            client = Session(on_frame=lambda d, r: inbox.put_nowait(d))
            sessions += [server, client]
            offer = await server.create_offer()
            candidates, ufrag = offered(offer)
            assert candidates == [("127.0.0.1", policy.port)]
            assert len(ufrag) == 16
            answer = await client.accept_offer(offer)
            await server.accept_answer(answer)
            await asyncio.gather(server.wait_open(10), client.wait_open(10))
            await exchange(server, inbox)
        assert policy.mux is not None and policy.mux.endpoints == 3
    finally:
        for session in sessions:
            await session.close()
    assert policy.mux.endpoints == 0
    assert policy.mux.bound_addresses == 0
    policy.close()


async def test_answering_session_on_the_mux() -> None:
    """Server links answer offers: the answerer's ufrag and candidates come from the mux."""
    policy = CandidatePolicy(
        PortMode.SINGLE_PORT, port=0, mux=UdpMux(0), filter=AddressFilter(("lo",))
    )
    await policy.open()
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    offerer = Session(on_frame=lambda d, r: inbox.put_nowait(d))
    answerer = Session(on_frame=lambda d, r: None, candidate_policy=policy)
    try:
        offer = await offerer.create_offer()
        answer = await answerer.accept_offer(offer)
        candidates, ufrag = offered(answer)
        assert candidates == [("127.0.0.1", policy.port)]
        await offerer.accept_answer(answer)
        await asyncio.gather(offerer.wait_open(10), answerer.wait_open(10))
        await exchange(answerer, inbox)
        assert len(ufrag) == 16
    finally:
        await offerer.close()
        await answerer.close()
        policy.close()


async def test_range_session_binds_in_range(two_free_ports: tuple[int, int]) -> None:
    low, high = two_free_ports
    policy = CandidatePolicy(
        PortMode.PORT_RANGE, port_range=PortRange(low, high), filter=AddressFilter(("127.0.0.0/8",))
    )
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    server = Session(on_frame=lambda d, r: None, candidate_policy=policy)
    client = Session(on_frame=lambda d, r: inbox.put_nowait(d))
    second = Session(on_frame=lambda d, r: None, candidate_policy=policy)
    third = Session(on_frame=lambda d, r: None, candidate_policy=policy)
    try:
        offer = await server.create_offer()
        first_candidates, _ = offered(offer)
        answer = await client.accept_offer(offer)
        await server.accept_answer(answer)
        await asyncio.gather(server.wait_open(10), client.wait_open(10))
        await exchange(server, inbox)
        second_candidates, _ = offered(await second.create_offer())
        # One port each, both from the range.
        assert sorted([*first_candidates, *second_candidates]) == [
            ("127.0.0.1", low),
            ("127.0.0.1", high),
        ]
        # The range is used up: the next session's offer fails, saying so.
        with pytest.raises(PortRangeExhausted, match=f"{low}-{high}"):
            await third.create_offer()
    finally:
        for session in (server, client, second, third):
            await session.close()


async def test_no_policy_leaves_aioice_alone() -> None:
    for policy in (None, CandidatePolicy()):
        session = Session(on_frame=lambda d, r: None, candidate_policy=policy)
        try:
            await session.create_offer()
            connection = ice_connection(session.pc)
            assert "get_component_candidates" not in vars(connection)
            assert len(connection.local_username) == 4  # aioice's own ufrag
        finally:
            await session.close()
