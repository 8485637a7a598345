"""Every use of aiortc's and aioice's internals, in one place.

aioice gathers host candidates itself (a socket per interface address on a
random port) and offers no hook to change that. A comm server needs its own:
one shared port (the UDP mux), a port range, advertised addresses, interface
filters. So, before a peer connection's local description is created, its
aioice ``Connection`` gets an instance-level ``get_component_candidates`` that
builds the host candidates from a :class:`~webrtc_broker.rtc.candidates.CandidatePolicy`
and leaves server-reflexive and relayed candidates to aioice.

Each internal used below says what it relies on;
``tests/unit/test_aioice_contract.py`` checks all of them, naming the one
that an aiortc or aioice upgrade changed. Checked with aioice 0.10.1, 0.11.0,
0.12.0 and 0.13.0 (0.9 lacks ``_local_username``) under aiortc 1.16.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, server_reflexive_candidate
from aiortc import RTCPeerConnection

from webrtc_broker.rtc.candidates import CandidatePolicy, HostCandidate
from webrtc_broker.rtc.udpmux import MuxEndpoint

log = logging.getLogger(__name__)

SOCKET_BUFFER = 262144
"""Receive buffer of a per-connection socket: what aioice asks for its own
(``aioice.turn.UDP_SOCKET_BUFFER_SIZE``), so sessions behave as they would without a policy."""
STUN_TIMEOUT = 5.0
"""Seconds a server-reflexive query may take (aioice's gathering timeout)."""

Release = Callable[[], None]


def ice_connection(pc: RTCPeerConnection) -> Any:
    """The aioice ``Connection`` under a peer connection's data channels.

    Relies on: ``RTCPeerConnection.sctp`` (public, the SCTP transport once a
    data channel exists or an offer with one is applied), ``.transport`` (the
    DTLS transport), its ``.transport`` (the ICE transport), ``.iceGatherer``
    (public) and the gatherer's private ``_connection``.
    """
    sctp = pc.sctp
    if sctp is None:
        raise RuntimeError("no SCTP transport yet: create a data channel or apply an offer first")
    return sctp.transport.transport.iceGatherer._connection


def install_gathering(pc: RTCPeerConnection, policy: CandidatePolicy) -> Release:
    """Make ``pc`` gather host candidates by ``policy``; returns what releases its
    mux endpoint (call it when the session closes; it is idempotent).

    Must run before the offer or answer is created: in single-port mode the
    connection's ufrag is replaced by one the mux hands out, and that ufrag is
    what the description carries.
    """
    connection = ice_connection(pc)
    endpoint: MuxEndpoint | None = None
    if policy.mux is not None:
        endpoint = policy.mux.register()
        # Relies on: Connection._local_username, the value behind the read-only
        # ``local_username`` property that the ICE parameters and the check of
        # incoming USERNAMEs read (aioice >= 0.10).
        connection._local_username = endpoint.ufrag
    # Relies on: Connection.get_component_candidates(component, addresses, timeout)
    # being how gather_candidates() gathers each component, called through the
    # instance (so an instance attribute overrides it), and gathering relayed
    # candidates (TURN) on its own when given no addresses.
    original = connection.get_component_candidates

    async def get_component_candidates(
        component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        del addresses  # aioice's interface addresses: the policy chooses instead
        protocols = await _host_protocols(connection, component, policy, endpoint)
        candidates = [p.local_candidate for p in protocols]
        candidates += await _reflexive(connection, protocols, single_port=endpoint is not None)
        candidates += await original(component=component, addresses=[], timeout=timeout)
        return candidates

    connection.get_component_candidates = get_component_candidates
    return endpoint.close if endpoint is not None else _nothing


def _nothing() -> None:
    pass


async def _host_protocols(
    connection: Any, component: int, policy: CandidatePolicy, endpoint: MuxEndpoint | None
) -> list[StunProtocol]:
    # Relies on: Connection._use_ipv4 / _use_ipv6 (the address families asked for).
    plan = policy.host_candidates(
        ipv4=bool(getattr(connection, "_use_ipv4", True)),
        ipv6=bool(getattr(connection, "_use_ipv6", True)),
    )
    protocols: list[StunProtocol] = []
    try:
        for candidate in plan:
            protocol = await _open(connection, policy, endpoint, candidate)
            if protocol is None:
                continue
            host, port = candidate.host, candidate.port
            if port is None:
                port = protocol.transport.get_extra_info("sockname")[1]
            # Relies on: StunProtocol.local_candidate, the candidate aioice pairs
            # with remote ones and reports as local.
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            protocols.append(protocol)
    except BaseException:
        for protocol in protocols:
            protocol.transport.close()
        raise
    # Relies on: Connection._protocols, the list aioice pairs remote candidates
    # with, sends consent checks through and closes on close().
    connection._protocols += protocols
    if not protocols:
        log.warning("no host candidate: no address passes the candidate filters")
    return protocols


async def _open(
    connection: Any,
    policy: CandidatePolicy,
    endpoint: MuxEndpoint | None,
    candidate: HostCandidate,
) -> StunProtocol | None:
    # Relies on: StunProtocol(receiver) being an asyncio datagram protocol whose
    # connection_made() takes any DatagramTransport (it only uses sendto, close
    # and get_extra_info) and whose receiver is the Connection.
    if endpoint is not None:
        protocol = StunProtocol(connection)
        endpoint.open_transport(protocol)
        return protocol
    try:
        sock = policy.bind(candidate.bind_host)
    except OSError as exc:
        if policy.port_range is not None:
            raise  # the range is exhausted: the caller must hear it
        log.info("cannot bind %s: %s", candidate.bind_host, exc)
        return None
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection), sock=sock)
    return protocol


async def _reflexive(
    connection: Any, protocols: list[StunProtocol], *, single_port: bool
) -> list[Candidate]:
    """Server-reflexive candidates through a STUN server, as aioice would have made them
    (it only does so for the host sockets it created itself)."""
    # Relies on: Connection.stun_server ((host, port) or None) and aioice.ice's
    # server_reflexive_candidate(protocol, stun_server) -> (Candidate, None).
    stun_server = getattr(connection, "stun_server", None)
    if not stun_server:
        return []
    queried = [p for p in protocols if ipaddress.ip_address(p.local_candidate.host).version == 4]
    if single_port:
        queried = queried[:1]  # one shared socket: one mapping to learn
    tasks = [asyncio.ensure_future(server_reflexive_candidate(p, stun_server)) for p in queried]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=STUN_TIMEOUT)
    for task in pending:
        task.cancel()
    found: list[Candidate] = []
    for task in done:
        if task.exception() is None:
            candidate = task.result()[0]
            if all((c.host, c.port) != (candidate.host, candidate.port) for c in found):
                found.append(candidate)
    return found


def acknowledged_tsn(pc: RTCPeerConnection) -> int:
    """The peer's cumulative SCTP acknowledgement of our data (0 when unknown).

    Relies on: RTCSctpTransport._last_sacked_tsn. Without it (another aiortc)
    only received messages show a peer's life, which is merely stricter.
    """
    transport = pc.sctp
    return int(getattr(transport, "_last_sacked_tsn", 0)) if transport is not None else 0
