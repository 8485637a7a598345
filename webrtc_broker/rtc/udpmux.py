"""One UDP socket for every peer connection of a comm server (an ICE UDP mux).

Each peer connection's ICE agent normally binds a socket of its own per host
address, on a random port: a firewall, a NodePort or a load balancer in front
of the server would have to open every port. Here one socket, bound to
``0.0.0.0:PORT``, carries every connection's ICE, DTLS and SCTP traffic, and
each connection's host candidates are :class:`MuxTransport` objects that send
through it. The socket is IPv4 and bound to the wildcard address, not one
socket per interface address, because the addresses a comm server is reached
at are often not its own (1:1 NAT, a NodePort, an advertised address) and
interface addresses come and go; one wildcard socket is reachable at all of
them and is one port to open. A wildcard socket's replies would leave from
whatever source address the kernel's routing picks, which need not be the
address the peer sent to (a host with several addresses; a peer on the same
host): ICE drops a response from another address than its check went to. So
the mux reads each datagram's destination address (``IP_PKTINFO``) and sends
to an address it heard from with that address as the source.

Incoming datagrams are routed to a connection as the ICE specification allows
for a shared socket (RFC 8445 section 7.3; Pion and libwebrtc do the same):

1. a STUN binding request carries ``USERNAME = LOCALUFRAG:REMOTEUFRAG``; it goes
   to the connection whose local ufrag that is (the mux hands out ufrags, so
   they are unique and long enough not to be guessed);
2. a STUN response goes to the transport whose request has that transaction
   ID, if it comes from the address the request went to;
3. everything else (DTLS, SCTP over DTLS, STUN indications) goes by source
   address to the connection the address is bound to; unknown sources are
   dropped and counted.

Addresses become bound two ways. Sending a binding request (a connectivity
check) to an address binds it *tentatively* to the sender, so that what the
peer sends back finds it. Answering a binding request with a success response
*confirms* the binding: the ICE agent sends success only after checking the
request's MESSAGE-INTEGRITY with its password, so only the real peer can
confirm. A confirmed binding is never moved to another connection (a hostile
peer that spoofs another session's address cannot steal its traffic; the
attempt is counted); a tentative one yields to a confirmation or to another
connection's check. Each connection holds at most ``max_bindings`` addresses
(the oldest tentative one goes first) and all of them go when it closes.

The hot path, DTLS and SCTP data from a bound address, is one dict lookup
(two on a wildcard socket: the address it was sent to is kept for the reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Address = tuple[str, int]

STUN_HEADER = 20
MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
USERNAME = 0x0006
STUN_MAX_FIRST_BYTE = 3
"""RFC 7983: a first byte of 0-3 is STUN, 20-63 DTLS (SCTP rides inside DTLS)."""

REQUEST, INDICATION, SUCCESS, ERROR = 0, 1, 2, 3
"""STUN message classes (RFC 8489 section 5)."""

UFRAG_LENGTH = 16
"""ICE allows 4 to 256 characters; 16 random ones (as Pion uses) are never guessed
and make a collision between live connections negligible."""
UFRAG_ALPHABET = string.ascii_letters + string.digits

MAX_BINDINGS = 64
"""Addresses one connection may hold: its peer's candidates that it checks, plus
peer-reflexive ones. A peer trickles at most ``max_candidates`` (64 by default)."""
MAX_TRANSACTIONS = 65536
"""Outstanding STUN transactions over every connection; the oldest go first beyond it."""
SOCKET_BUFFER = 4 * 1024 * 1024
"""Kernel receive/send buffer asked for the shared socket (capped by rmem_max/wmem_max).
Nothing queues above the kernel's: a datagram the send buffer cannot take is
dropped, as a full network would drop it (SCTP retransmits)."""
RECV_BATCH = 64
"""Datagrams read per readiness event of the socket. asyncio's datagram transport
reads one per event, which on one socket shared by every connection costs an
event-loop iteration per datagram (docs/benchmarks.md measured it: about 30 %
more CPU per delivery than a socket per connection, and less than per-connection
once drained this way); the bound keeps one busy socket from starving the loop."""
RECV_SIZE = 65536
"""Largest UDP payload."""
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
"""Linux's IP_PKTINFO (Python's socket module names it only from 3.12 on)."""
PKTINFO = struct.Struct("=i4s4s")
"""struct in_pktinfo: interface index, local (source) address, header destination."""
PKTINFO_SPACE = socket.CMSG_SPACE(PKTINFO.size)


class MuxError(OSError):
    """The mux's port cannot be bound."""


@dataclass(slots=True)
class MuxStats:
    """Counters of a mux, read by ``/status`` and Prometheus."""

    dropped_unknown: int = 0
    """Datagrams from a source bound to no connection (or a STUN message naming none)."""
    refused_rebinds: int = 0
    """Confirmations refused because the address is confirmed for another connection."""
    refused_bindings: int = 0
    """Bindings refused because the connection already holds ``max_bindings`` confirmed."""
    dropped_sends: int = 0
    """Datagrams not sent because the socket's queue was full or the address was bad."""


class _Binding:
    """An address bound to one transport of one endpoint."""

    __slots__ = ("confirmed", "endpoint", "protocol")

    def __init__(
        self, endpoint: MuxEndpoint, protocol: asyncio.DatagramProtocol, confirmed: bool
    ) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.confirmed = confirmed


class MuxTransport(asyncio.DatagramTransport):
    """What an ICE agent's protocol sees as its socket: sends go through the shared one."""

    def __init__(self, endpoint: MuxEndpoint, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.protocol = protocol
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if not self._closing and addr is not None:
            self.endpoint.mux.send(self, bytes(data), (addr[0], addr[1]))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.endpoint.transport_closed(self)
        # asyncio's transports report the loss on the next loop iteration, and
        # aioice waits for it before its close() returns.
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.endpoint.mux.sockname
        # The shared socket is not one connection's to tune: "socket" stays None.
        return default

    def get_write_buffer_size(self) -> int:
        return 0  # the shared socket never queues (see SOCKET_BUFFER)


class MuxEndpoint:
    """One peer connection on the mux: its ufrag, its transports and its bindings."""

    def __init__(self, mux: UdpMux, ufrag: str) -> None:
        self.mux = mux
        self.ufrag = ufrag
        self.transports: list[MuxTransport] = []
        self.bindings: dict[Address, _Binding] = {}
        """Addresses bound to this endpoint, oldest first."""
        self.transactions: set[bytes] = set()
        self.claims: set[Address] = set()
        """Addresses this endpoint claimed while another held them (see UdpMux._claims)."""
        self.closed = False

    def open_transport(self, protocol: asyncio.DatagramProtocol) -> MuxTransport:
        """A transport for ``protocol`` (one host candidate); calls ``connection_made``."""
        if self.closed:
            raise MuxError(f"endpoint {self.ufrag} is closed")
        transport = MuxTransport(self, protocol)
        self.transports.append(transport)
        protocol.connection_made(transport)
        return transport

    def transport_closed(self, transport: MuxTransport) -> None:
        with contextlib.suppress(ValueError):
            self.transports.remove(transport)
        if not self.transports:
            self.close()

    def close(self) -> None:
        """Forget the ufrag, every binding and transaction; close the transports."""
        if self.closed:
            return
        self.closed = True
        self.mux.endpoint_closed(self)
        for transport in list(self.transports):
            transport.close()


class UdpMux:
    """The shared socket, its routing tables and counters."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "0.0.0.0",
        max_bindings: int = MAX_BINDINGS,
        max_transactions: int = MAX_TRANSACTIONS,
        ufrag_factory: Callable[[], str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_bindings = max_bindings
        self.max_transactions = max_transactions
        self.stats = MuxStats()
        self._ufrag_factory = ufrag_factory or _random_ufrag
        self._sock: socket.socket | None = None
        self._endpoints: dict[str, MuxEndpoint] = {}
        self._bindings: dict[Address, _Binding] = {}
        self._transactions: dict[bytes, tuple[MuxTransport, Address]] = {}
        self._claims: dict[Address, MuxTransport] = {}
        """Confirmed addresses another live connection authenticated for: the last
        claimant of each, bound when the owner closes."""
        self._wildcard = host in ("", "0.0.0.0")
        self._reply_from: dict[Address, bytes] = {}
        """The local address each peer address last sent to (wildcard sockets only):
        the source of what goes back to it. Kept for routed datagrams only, and at
        most ``max_transactions`` entries."""
        self._pktinfo: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self.sockname: Address = (host, port)

    # -- lifetime ---------------------------------------------------------

    async def open(self) -> None:
        """Bind the socket; a taken port is a :class:`MuxError` naming it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise MuxError(
                exc.errno, f"cannot bind UDP port {self.port} on {self.host}: {exc.strerror}"
            ) from exc
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if self._wildcard:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)
        self._sock = sock
        self.sockname = sock.getsockname()[:2]
        self.port = self.sockname[1]

    def close(self) -> None:
        """Close the socket and every endpoint still open (their connections see the loss)."""
        for endpoint in list(self._endpoints.values()):
            endpoint.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    # -- endpoints --------------------------------------------------------

    def register(self) -> MuxEndpoint:
        """A new endpoint with a ufrag no live endpoint has."""
        ufrag = self._ufrag_factory()
        while ufrag in self._endpoints:
            ufrag = self._ufrag_factory()
        endpoint = MuxEndpoint(self, ufrag)
        self._endpoints[ufrag] = endpoint
        return endpoint

    def endpoint_closed(self, endpoint: MuxEndpoint) -> None:
        if self._endpoints.get(endpoint.ufrag) is endpoint:
            del self._endpoints[endpoint.ufrag]
        for txid in endpoint.transactions:
            self._transactions.pop(txid, None)
        endpoint.transactions.clear()
        for addr in endpoint.claims:
            claim = self._claims.get(addr)
            if claim is not None and claim.endpoint is endpoint:
                del self._claims[addr]
        endpoint.claims.clear()
        for addr, binding in list(endpoint.bindings.items()):
            self._unbind(addr)
            claimant = self._claims.pop(addr, None) if binding.confirmed else None
            if claimant is not None and not claimant.endpoint.closed:
                claimant.endpoint.claims.discard(addr)
                self._bind(claimant, addr, confirmed=True)

    @property
    def endpoints(self) -> int:
        return len(self._endpoints)

    @property
    def bound_addresses(self) -> int:
        return len(self._bindings)

    @property
    def pending_transactions(self) -> int:
        return len(self._transactions)

    @property
    def pending_claims(self) -> int:
        return len(self._claims)

    def binding_of(self, addr: Address) -> tuple[str, bool] | None:
        """(ufrag, confirmed) of the endpoint ``addr`` is bound to; for tests and debugging."""
        binding = self._bindings.get(addr)
        return None if binding is None else (binding.endpoint.ufrag, binding.confirmed)

    # -- receiving --------------------------------------------------------

    def _drain(self) -> None:
        """Read what the socket holds, up to :data:`RECV_BATCH` datagrams."""
        sock = self._sock
        if sock is None:
            return
        recvmsg = sock.recvmsg
        ancillary = PKTINFO_SPACE if self._wildcard else 0
        for _ in range(RECV_BATCH):
            try:
                data, cmsgs, _flags, addr = recvmsg(RECV_SIZE, ancillary)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for one peer says nothing about the others.
                log.debug("udp mux: %s", exc)
                continue
            local = _destination(cmsgs) if cmsgs else None
            try:
                self.datagram_received(data, addr, local)
            except Exception:
                # One connection's failure to handle its datagram is that
                # connection's: the others' datagrams in this batch still go.
                log.exception("udp mux: a connection failed to take a datagram")

    def datagram_received(
        self, data: bytes, addr: tuple[Any, ...], local: bytes | None = None
    ) -> None:
        """Route one datagram; ``local`` is the (packed IPv4) address it was sent to."""
        if len(addr) != 2:
            addr = (addr[0], addr[1])
        binding = self._bindings.get(addr)
        if binding is not None and data and data[0] > STUN_MAX_FIRST_BYTE:
            if local is not None and self._reply_from.get(addr) != local:
                self._note_local(addr, local)
            binding.protocol.datagram_received(data, addr)
            return
        self._route_stun(data, (addr[0], addr[1]), binding, local)

    def _note_local(self, addr: Address, local: bytes) -> None:
        replies = self._reply_from
        if addr not in replies and len(replies) >= self.max_transactions:
            del replies[next(iter(replies))]
        replies[addr] = local

    def _route_stun(
        self, data: bytes, addr: Address, binding: _Binding | None, local: bytes | None = None
    ) -> None:
        if len(data) < STUN_HEADER or data[0] > STUN_MAX_FIRST_BYTE or data[4:8] != MAGIC_COOKIE:
            # Not STUN (or too short to be): only a bound source may send it.
            if binding is not None:
                binding.protocol.datagram_received(data, addr)
            else:
                self.stats.dropped_unknown += 1
            return
        kind = (data[0] << 8) | data[1]
        klass = ((kind >> 7) & 2) | ((kind >> 4) & 1)
        if klass == REQUEST:
            ufrag = _request_ufrag(data)
            endpoint = self._endpoints.get(ufrag) if ufrag is not None else None
            if endpoint is None or not endpoint.transports:
                self.stats.dropped_unknown += 1
                return
            if local is not None:
                self._note_local(addr, local)  # where the response must come from
            endpoint.transports[0].protocol.datagram_received(data, addr)
        elif klass in (SUCCESS, ERROR):
            txid = data[8:20]
            pending = self._transactions.get(txid)
            if pending is None or pending[1] != addr:
                self.stats.dropped_unknown += 1
                return
            transport = pending[0]
            del self._transactions[txid]
            transport.endpoint.transactions.discard(txid)
            transport.protocol.datagram_received(data, addr)
        elif binding is not None:
            binding.protocol.datagram_received(data, addr)
        else:
            self.stats.dropped_unknown += 1

    # -- sending ----------------------------------------------------------

    def send(self, transport: MuxTransport, data: bytes, addr: Address) -> None:
        """Send for ``transport``; a binding request or success response binds ``addr``."""
        sock = self._sock
        if sock is None:
            return
        if len(data) >= STUN_HEADER and data[0] <= STUN_MAX_FIRST_BYTE:
            kind = (data[0] << 8) | data[1]
            if kind == BINDING_REQUEST:
                self._remember_transaction(transport, data[8:20], addr)
                self._bind(transport, addr, confirmed=False)
            elif kind == BINDING_SUCCESS:
                self._bind(transport, addr, confirmed=True)
        local = self._reply_from.get(addr)
        try:
            if local is None:
                sock.sendto(data, addr)
            else:
                sock.sendmsg([data], self._source(local), 0, addr)
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            # A full send buffer, a peer's candidate of another address family, an
            # unreachable or filtered address: that datagram is lost, nothing else.
            self.stats.dropped_sends += 1
            log.debug("udp mux: cannot send to %s: %s", addr, exc)

    def _source(self, local: bytes) -> list[tuple[int, int, bytes]]:
        """The ancillary data that makes ``local`` the source of a datagram."""
        cmsgs = self._pktinfo.get(local)
        if cmsgs is None:
            info = PKTINFO.pack(0, local, bytes(4))
            cmsgs = self._pktinfo[local] = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        return cmsgs

    def _remember_transaction(self, transport: MuxTransport, txid: bytes, addr: Address) -> None:
        if txid in self._transactions:  # a retransmission
            return
        while len(self._transactions) >= self.max_transactions:
            oldest = next(iter(self._transactions))
            owner, _ = self._transactions.pop(oldest)
            owner.endpoint.transactions.discard(oldest)
        self._transactions[txid] = (transport, addr)
        transport.endpoint.transactions.add(txid)

    # -- bindings ---------------------------------------------------------

    def _bind(self, transport: MuxTransport, addr: Address, *, confirmed: bool) -> None:
        endpoint = transport.endpoint
        if endpoint.closed:
            return
        current = self._bindings.get(addr)
        if current is not None:
            if current.endpoint is endpoint:
                if confirmed and not current.confirmed:
                    current.confirmed = True
                    current.protocol = transport.protocol
                return
            if current.confirmed:
                if confirmed:
                    self.stats.refused_rebinds += 1
                    # Remembered: if the owner closes (a peer restarted on the same
                    # address and port, its old session timing out), the address
                    # passes to this connection at once instead of at its next check.
                    previous = self._claims.get(addr)
                    if previous is not None and previous.endpoint is not endpoint:
                        previous.endpoint.claims.discard(addr)
                    self._claims[addr] = transport
                    endpoint.claims.add(addr)
                    log.info(
                        "udp mux: %s:%d is confirmed for another connection; not rebound", *addr
                    )
                return
            self._unbind(addr)  # another connection's tentative binding yields
        if len(endpoint.bindings) >= self.max_bindings:
            victim = next((a for a, b in endpoint.bindings.items() if not b.confirmed), None)
            if victim is None:
                self.stats.refused_bindings += 1
                return
            self._unbind(victim)
        binding = _Binding(endpoint, transport.protocol, confirmed)
        self._bindings[addr] = binding
        endpoint.bindings[addr] = binding

    def _unbind(self, addr: Address) -> None:
        binding = self._bindings.pop(addr, None)
        if binding is not None:
            binding.endpoint.bindings.pop(addr, None)
            self._reply_from.pop(addr, None)


def _destination(cmsgs: list[tuple[int, int, bytes]]) -> bytes | None:
    """The header destination address of a datagram, from its IP_PKTINFO message."""
    for level, kind, data in cmsgs:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= PKTINFO.size:
            return bytes(data[8:12])
    return None


def _random_ufrag() -> str:
    return "".join(secrets.choice(UFRAG_ALPHABET) for _ in range(UFRAG_LENGTH))


def _request_ufrag(data: bytes) -> str | None:
    """The local part of a STUN request's USERNAME (``LOCAL:REMOTE``), or None."""
    end = min(len(data), STUN_HEADER + int.from_bytes(data[2:4], "big"))
    offset = STUN_HEADER
    while offset + 4 <= end:
        kind = int.from_bytes(data[offset : offset + 2], "big")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        start = offset + 4
        if start + length > end:
            return None
        if kind == USERNAME:
            local, sep, _ = data[start : start + length].partition(b":")
            if not sep:
                return None
            try:
                return local.decode("utf-8")
            except UnicodeDecodeError:
                return None
        offset = start + ((length + 3) & ~3)
    return None
