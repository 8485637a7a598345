"""Which host candidates a comm server offers, and on which ports.

Built once from the comm server's settings (:meth:`CandidatePolicy.from_config`):

* the port mode: every connection on one shared port (:class:`~webrtc_broker.rtc.udpmux.UdpMux`),
  a socket per connection on a port from a range, or (the default) on any free port;
* the addresses: interface addresses that pass ``candidate_include`` /
  ``candidate_exclude`` (interface globs or CIDR networks), or, when advertised
  addresses are set, those instead (1:1 NAT, a NodePort, a load balancer);
  an advertised address without a port carries the bound one.

Nothing here touches aiortc or aioice: :mod:`webrtc_broker.rtc.aiortc_internals`
turns the plan into candidates.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import ifaddr

from webrtc_broker.config import parse_host_port
from webrtc_broker.rtc.udpmux import UdpMux

log = logging.getLogger(__name__)

GLOB_CHARACTERS = frozenset("*?[")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PortMode(StrEnum):
    PER_CONNECTION = "per-connection"
    """A socket per connection and address, on any free port (aioice's own way)."""
    PORT_RANGE = "port-range"
    """A socket per connection and address, on a free port of ``udp_port_range``."""
    SINGLE_PORT = "single-port"
    """Every connection shares the mux's one socket."""


class PortRangeExhausted(OSError):
    """Every port of the range is taken."""


class CandidateSettings(Protocol):
    """The settings the policy reads (a :class:`~webrtc_broker.config.CommServerConfig`)."""

    @property
    def udp_port(self) -> int | None: ...
    @property
    def udp_ports(self) -> tuple[int, int] | None: ...
    @property
    def advertise_addresses(self) -> list[str]: ...
    @property
    def candidate_include(self) -> list[str]: ...
    @property
    def candidate_exclude(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Advertised:
    host: str
    """An IP address (a name is resolved by :meth:`CandidatePolicy.open`)."""
    port: int | None = None
    """None: the port the socket is bound to."""


@dataclass(frozen=True, slots=True)
class HostCandidate:
    """One host candidate to create: where to bind and what to put in the candidate."""

    bind_host: str
    """Address the socket binds (per-connection and range modes)."""
    host: str
    """Address the candidate carries."""
    port: int | None = None
    """Port the candidate carries; None: the bound port."""


@dataclass(frozen=True, slots=True)
class AddressFilter:
    """``include`` / ``exclude`` entries: interface-name globs or CIDR networks.

    An address is offered when include is empty or matches it, and no exclude
    entry matches it; except that an interface the include list names exactly
    (``lo``, no glob) is offered even when an exclude glob matches it, so that
    ``--candidate-include lo`` works without restating the default exclude list.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, interface: str, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if self.include and not any(_matches(e, interface, ip) for e in self.include):
            return False
        if interface in self.include:  # named exactly: stronger than any exclude
            return True
        return not any(_matches(e, interface, ip) for e in self.exclude)

    @property
    def is_empty(self) -> bool:
        return not self.include and not self.exclude


def _matches(entry: str, interface: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if "/" in entry:
        network: IpNetwork = ipaddress.ip_network(entry, strict=False)
        return ip.version == network.version and ip in network
    if GLOB_CHARACTERS & set(entry):
        return fnmatch.fnmatchcase(interface, entry)
    return interface == entry


def interface_addresses() -> list[tuple[str, str]]:
    """(interface name, address) of every usable local address.

    IPv6 addresses with a scope (link-local) are left out, as aioice does: a
    socket cannot bind them without the scope and peers elsewhere cannot reach them.
    """
    found: list[tuple[str, str]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append((adapter.name, ip.ip))
            elif ip.ip[2] == 0:
                found.append((adapter.name, ip.ip[0]))
    return found


class PortRange:
    """Binds sockets on free ports of ``[low, high]``, trying the next one when taken."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._next = random.randint(low, high)

    def bind(self, host: str) -> socket.socket:
        """A non-blocking UDP socket bound to ``host`` on a free port of the range."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        size = self.high - self.low + 1
        for _ in range(size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            sock.setblocking(False)
            return sock
        raise PortRangeExhausted(
            errno.EADDRINUSE, f"every UDP port of {self.low}-{self.high} is taken on {host}"
        )


@dataclass
class CandidatePolicy:
    """How one process's peer connections gather host candidates."""

    mode: PortMode = PortMode.PER_CONNECTION
    port: int | None = None
    """The shared port (single-port mode)."""
    port_range: PortRange | None = None
    advertised: tuple[Advertised, ...] = ()
    filter: AddressFilter = field(default_factory=AddressFilter)
    mux: UdpMux | None = None

    @classmethod
    def from_config(cls, config: CandidateSettings) -> CandidatePolicy:
        """The policy a comm server's settings describe (its mux not opened yet)."""
        advertised = tuple(Advertised(*parse_host_port(a)) for a in config.advertise_addresses)
        address_filter = AddressFilter(
            tuple(config.candidate_include), tuple(config.candidate_exclude)
        )
        if config.udp_port is not None:
            return cls(
                PortMode.SINGLE_PORT,
                port=config.udp_port,
                advertised=advertised,
                filter=address_filter,
                mux=UdpMux(config.udp_port),
            )
        ports = config.udp_ports
        if ports is not None:
            return cls(
                PortMode.PORT_RANGE,
                port_range=PortRange(*ports),
                advertised=advertised,
                filter=address_filter,
            )
        return cls(advertised=advertised, filter=address_filter)

    @property
    def is_default(self) -> bool:
        """Nothing to change: aioice gathers as it always does."""
        return self.mode is PortMode.PER_CONNECTION and not self.advertised and self.filter.is_empty

    async def open(self) -> None:
        """Resolve advertised names to addresses and bind the mux (a taken port raises)."""
        loop = asyncio.get_running_loop()
        resolved: list[Advertised] = []
        for entry in self.advertised:
            try:
                ipaddress.ip_address(entry.host)
                resolved.append(entry)
                continue
            except ValueError:
                pass
            family = socket.AF_INET if self.mode is PortMode.SINGLE_PORT else socket.AF_UNSPEC
            infos = await loop.getaddrinfo(entry.host, None, family=family, type=socket.SOCK_DGRAM)
            if not infos:
                raise OSError(f"advertised address {entry.host!r} does not resolve")
            address = str(infos[0][4][0])
            resolved.append(Advertised(address, entry.port))
        self.advertised = tuple(resolved)
        if self.mode is PortMode.SINGLE_PORT:
            for entry in self.advertised:
                if ipaddress.ip_address(entry.host).version != 4:
                    raise ValueError(f"the UDP port is IPv4: cannot advertise {entry.host}")
        if self.mux is not None and not self.mux.is_open:
            await self.mux.open()
            self.port = self.mux.port

    def close(self) -> None:
        if self.mux is not None:
            self.mux.close()

    def local_addresses(self, *, ipv4: bool = True, ipv6: bool = True) -> list[str]:
        """Interface addresses that pass the filter (IPv4 only in single-port mode)."""
        if self.mode is PortMode.SINGLE_PORT:
            ipv6 = False
        chosen: list[str] = []
        for interface, address in interface_addresses():
            version = ipaddress.ip_address(address).version
            if (version == 4 and not ipv4) or (version == 6 and not ipv6):
                continue
            if self.filter.allows(interface, address) and address not in chosen:
                chosen.append(address)
        return chosen

    def host_candidates(self, *, ipv4: bool = True, ipv6: bool = True) -> list[HostCandidate]:
        """The host candidates of one new connection."""
        if self.advertised:
            wildcard = {4: "0.0.0.0", 6: "::"}
            plan = [
                HostCandidate(wildcard[ipaddress.ip_address(a.host).version], a.host, a.port)
                for a in self.advertised
                if (ipv4 if ipaddress.ip_address(a.host).version == 4 else ipv6)
            ]
        else:
            plan = [HostCandidate(a, a) for a in self.local_addresses(ipv4=ipv4, ipv6=ipv6)]
        if self.mode is PortMode.SINGLE_PORT:
            return [HostCandidate(c.bind_host, c.host, c.port or self.port) for c in plan]
        return plan

    def bind(self, host: str) -> socket.socket:
        """A socket for one candidate of per-connection or port-range mode."""
        if self.port_range is not None:
            return self.port_range.bind(host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def describe(self) -> dict[str, Any]:
        """What ``/status`` shows and the start-up line logs."""
        if self.mode is PortMode.SINGLE_PORT:
            ports: Any = self.port
        elif self.port_range is not None:
            ports = f"{self.port_range.low}-{self.port_range.high}"
        else:
            ports = "any"
        candidates = [
            f"{_host_text(c.host)}:{c.port if c.port is not None else ports}"
            for c in self.host_candidates()
        ]
        body: dict[str, Any] = {"mode": str(self.mode), "ports": ports, "candidates": candidates}
        if self.advertised:
            body["advertised"] = True
        if self.mux is not None:
            stats = self.mux.stats
            body["mux"] = {
                "endpoints": self.mux.endpoints,
                "bound_addresses": self.mux.bound_addresses,
                "dropped_unknown": stats.dropped_unknown,
                "refused_rebinds": stats.refused_rebinds,
                "refused_bindings": stats.refused_bindings,
                "dropped_sends": stats.dropped_sends,
            }
        return body


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
