"""The aiortc and aioice internals that webrtc_broker/rtc/aiortc_internals.py relies on.

What it proves: every private attribute, method signature and behaviour that
module uses is still there and still behaves as it assumes, in the installed
aiortc and aioice; and their versions are inside the range pyproject.toml
declares as tested. A failure names the internal that changed, so an upgrade
that breaks candidate gathering fails here first, loudly, instead of as
sessions that never connect.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import aioice
import aiortc
import pytest
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, server_reflexive_candidate
from aiortc import RTCConfiguration, RTCPeerConnection

from webrtc_broker.rtc.aiortc_internals import acknowledged_tsn, ice_connection

ROOT = Path(__file__).resolve().parents[2]
USER = "webrtc_broker/rtc/aiortc_internals.py"


def require(owner: Any, name: str) -> Any:
    """``owner.name``, or a failure naming the internal and who relies on it."""
    label = getattr(owner, "__name__", type(owner).__name__)
    assert hasattr(owner, name), f"{label}.{name} is gone; {USER} relies on it"
    return getattr(owner, name)


def parameters(function: Any) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def declared_range(package: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["dependencies"]:
        if re.match(rf"{package}\b", requirement):
            low = re.search(r">=\s*([\d.]+)", requirement)
            high = re.search(r"<\s*([\d.]+)", requirement)
            assert low is not None, f"{requirement!r} has no lower bound"
            return version(low.group(1)), version(high.group(1)) if high else None
    raise AssertionError(f"pyproject.toml does not declare {package}")


@pytest.mark.parametrize("package", [aioice, aiortc], ids=["aioice", "aiortc"])
def test_installed_versions_are_the_tested_ones(package: Any) -> None:
    low, high = declared_range(package.__name__)
    installed = version(package.__version__)
    assert installed >= low, f"{package.__name__} {package.__version__} is below {low}"
    assert high is None or installed < high, (
        f"{package.__name__} {package.__version__} is not tested: check {USER} and this "
        "module against it, then widen the range in pyproject.toml"
    )


async def test_peer_connection_leads_to_the_ice_connection() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        assert require(pc, "sctp") is None
        pc.createDataChannel("probe")
        sctp = require(pc, "sctp")
        dtls = require(sctp, "transport")
        ice = require(dtls, "transport")
        gatherer = require(ice, "iceGatherer")
        connection = require(gatherer, "_connection")
        assert isinstance(connection, Connection), "iceGatherer._connection is not aioice's"
        assert ice_connection(pc) is connection
        assert isinstance(require(sctp, "_last_sacked_tsn"), int)
        assert acknowledged_tsn(pc) == sctp._last_sacked_tsn
    finally:
        await pc.close()


async def test_local_username_is_settable_through_its_private_attribute() -> None:
    connection = Connection(ice_controlling=True)
    require(connection, "_local_username")
    connection._local_username = "abcdefghijklmnop"
    assert connection.local_username == "abcdefghijklmnop", (
        "Connection.local_username no longer reads _local_username"
    )
    # The ICE parameters aiortc puts in the description read it too.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("probe")
        ice_connection(pc)._local_username = "abcdefghijklmnop"
        offer = await pc.createOffer()
        assert "a=ice-ufrag:abcdefghijklmnop" in offer.sdp
    finally:
        await pc.close()


async def test_gathering_goes_through_an_instance_override() -> None:
    connection = Connection(ice_controlling=True)
    assert parameters(require(Connection, "get_component_candidates"))[:3] == [
        "component",
        "addresses",
        "timeout",
    ], "Connection.get_component_candidates(component, addresses, timeout) changed"
    calls: list[int] = []
    original = connection.get_component_candidates

    async def override(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:
        calls.append(component)
        # No TURN or STUN server: aioice's own gathering given no address gives nothing.
        assert await original(component=component, addresses=[], timeout=timeout) == []
        return []

    connection.get_component_candidates = override  # type: ignore[method-assign]
    await connection.gather_candidates()
    assert calls == [1], "gather_candidates() no longer calls get_component_candidates"
    assert isinstance(require(connection, "_protocols"), list)
    assert require(connection, "_use_ipv4") is True
    assert require(connection, "_use_ipv6") is True
    assert require(connection, "stun_server") is None
    await connection.close()


class FakeTransport(asyncio.DatagramTransport):
    def __init__(self, protocol: StunProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def close(self) -> None:
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_stun_protocol_takes_any_datagram_transport() -> None:
    connection = Connection(ice_controlling=True)
    assert parameters(StunProtocol.__init__) == ["receiver"], "StunProtocol(receiver) changed"
    protocol = StunProtocol(connection)
    assert protocol.receiver is connection
    transport = FakeTransport(protocol)
    protocol.connection_made(transport)
    assert require(protocol, "transport") is transport
    assert isinstance(require(protocol, "transactions"), dict)
    protocol.local_candidate = Candidate(
        foundation=candidate_foundation("host", "udp", "192.0.2.1"),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host="192.0.2.1",
        port=3478,
        type="host",
    )
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    protocol.send_stun(message, ("192.0.2.2", 1))
    assert transport.sent == [(bytes(message), ("192.0.2.2", 1))], "send_stun must use sendto"
    # close() closes the transport and returns once connection_lost was called.
    await asyncio.wait_for(protocol.close(), 5)


def test_candidate_helpers_keep_their_signatures() -> None:
    assert parameters(candidate_foundation) == [
        "candidate_type",
        "candidate_transport",
        "base_address",
    ]
    assert parameters(candidate_priority)[:2] == ["candidate_component", "candidate_type"]
    assert parameters(server_reflexive_candidate) == ["protocol", "stun_server"]
    for name in ("foundation", "component", "transport", "priority", "host", "port", "type"):
        assert name in parameters(Candidate.__init__), f"Candidate({name}=...) is gone"
    assert candidate_priority(1, "host") > candidate_priority(1, "srflx")
