"""A comm server's links to every coordinator replica, seen by the server as one.

Coordinator replicas share no store: each knows only the peers connected to
it. So a comm server keeps one :class:`~commserver.coordinator_link.CoordinatorLink`
to every replica, each supervised and backed off on its own, each registering
the same alias and id. What that asks of the server:

* **Answers go back the way the question came.** A client connected to
  replica A is reachable only through A, so every frame carrying a
  ``from_alias`` records the link it came on (:meth:`CoordinatorLinks.note_route`)
  and :meth:`CoordinatorLinks.send` sends a frame for that alias on that link.
  An alias with no (live) route goes out on any registered link.
* **Servers listed by any replica are merged.** Each link's last WELCOME is
  kept (:attr:`LinkSlot.listed`); the server links once to every server any
  replica lists, and a listing only goes when its link does.
* **Ready while one link is registered** (:attr:`CoordinatorLinks.connected`).

The replica set is a fixed list of URLs, or a DNS name (a headless Service)
whose A records (AAAA records if it has none) are re-resolved every few
seconds with ``loop.getaddrinfo``: a new address gets a link, a vanished one
loses its link.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from commserver.coordinator_link import CoordinatorLink
from webrtc_broker.supervise import Supervisor
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb

log = logging.getLogger(__name__)

MAX_ROUTES = 65536
"""Aliases whose link is remembered; the oldest route is forgotten past this."""

DNS_TASK = "coordinator-dns"
LINK_TASK = "coordinator-link"
"""The first link's task name (the only one with a single coordinator, as before);
the others are ``coordinator-link:<url>``."""

_ADDRESSED: dict[int, type[pb.ConnectMessage | pb.WebRtcMessage | pb.ConnectionRefusedMessage]] = {
    pb.CONNECT: pb.ConnectMessage,
    pb.WEBRTC_OFFER: pb.WebRtcMessage,
    pb.WEBRTC_ANSWER: pb.WebRtcMessage,
    pb.WEBRTC_ICE_CANDIDATE: pb.WebRtcMessage,
    pb.CONNECTION_REFUSED: pb.ConnectionRefusedMessage,
}

LinkFactory = Callable[
    [str, Callable[[bytes], Awaitable[None]], Callable[[], None]], CoordinatorLink
]
"""Makes the link to one URL, given its frame and disconnect handlers."""

FrameHandler = Callable[[bytes, "LinkSlot"], Awaitable[None]]
Resolver = Callable[[str, int], Awaitable[list[str]]]


class LinkState(enum.Enum):
    """Where one coordinator link stands.

    CONNECTING -> CONNECTED (socket open) -> REGISTERED (its WELCOME arrived);
    any -> CONNECTING when the socket drops; any -> STOPPED for good (its
    address vanished from DNS, or the server drains).
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    REGISTERED = "registered"
    STOPPED = "stopped"


@dataclass(eq=False)
class LinkSlot:
    """One coordinator replica: its link, its state and the servers it listed."""

    url: str
    task: str
    link: CoordinatorLink | None = None
    state: LinkState = LinkState.CONNECTING
    listed: set[int] = field(default_factory=set)
    """Servers this replica's last WELCOME listed; emptied when the link drops."""
    welcomes: int = 0

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state.value,
            "servers_listed": len(self.listed),
            "welcomes": self.welcomes,
            "connects": self.link.connects if self.link else 0,
            "dropped": self.link.dropped if self.link else 0,
        }


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host``, without blocking the loop: its IPv4 ones, or its
    IPv6 ones when it has none (an IPv6-only cluster). Never both: a dual-stack
    replica has one of each, and two links to one replica would keep replacing
    each other's registration."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror as no_ipv4:
        try:
            infos = await loop.getaddrinfo(
                host, port, family=socket.AF_INET6, type=socket.SOCK_STREAM
            )
        except socket.gaierror:
            raise no_ipv4 from None
    return sorted({str(info[4][0]) for info in infos})


def coordinator_url(address: str, port: int) -> str:
    """The WebSocket URL of the replica at ``address`` (IPv6 in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"ws://{host}:{port}"


class CoordinatorLinks:
    """Every coordinator link of one comm server; see the module docstring."""

    def __init__(
        self,
        *,
        make_link: LinkFactory,
        supervisor: Supervisor,
        on_frame: FrameHandler,
        on_lost: Callable[[LinkSlot], None],
        urls: Iterable[str] = (),
        dns: str | None = None,
        dns_port: int = 9090,
        dns_interval: float = 10.0,
        resolver: Resolver = resolve_addresses,
    ) -> None:
        self._make_link = make_link
        self._supervisor = supervisor
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._static = list(dict.fromkeys(urls))
        self._dns = dns
        self._dns_port = dns_port
        self._dns_interval = dns_interval
        self._resolver = resolver
        self.slots: dict[str, LinkSlot] = {}
        self.connected = asyncio.Event()
        """Set while at least one link is registered: the server's readiness."""
        self._routes: OrderedDict[int, LinkSlot] = OrderedDict()
        self._generation = itertools.count(1)
        self._tasks_named: set[str] = set()
        self._stopped = False

    # -- what the server reads --------------------------------------------

    @property
    def dropped(self) -> int:
        """Frames dropped because their link was down, over every link."""
        return sum(slot.link.dropped for slot in self.slots.values() if slot.link)

    def listed_servers(self) -> set[int]:
        """Every server some registered link's WELCOME listed."""
        return set().union(*(slot.listed for slot in self.slots.values()))

    def registered(self) -> list[LinkSlot]:
        return [s for s in self.slots.values() if s.state is LinkState.REGISTERED]

    def status(self) -> list[dict[str, Any]]:
        return [slot.status() for slot in self.slots.values()]

    # -- routing -------------------------------------------------------------

    def note_route(self, alias: int, slot: LinkSlot) -> None:
        """``alias`` spoke to us through ``slot``: answers to it go back there."""
        if not alias:
            return
        self._routes[alias] = slot
        self._routes.move_to_end(alias)
        while len(self._routes) > MAX_ROUTES:
            self._routes.popitem(last=False)

    def forget_route(self, alias: int) -> None:
        self._routes.pop(alias, None)

    def routed(self, alias: int) -> LinkSlot | None:
        """The link ``alias`` last spoke through (or was listed by), live or not."""
        return self._routes.get(alias)

    def route(self, alias: int) -> LinkSlot | None:
        """The link for ``alias``: the one it spoke through while that one is registered,
        else any registered link (the first replica that will carry it)."""
        slot = self._routes.get(alias)
        if slot is not None and slot.state is LinkState.REGISTERED:
            return slot
        live = self.registered()
        return live[0] if live else slot

    def send(self, frame: bytes) -> None:
        """Send a signalling frame on the link of the alias it is addressed to."""
        slot = self.route(_to_alias(frame))
        if slot is None and self.slots:
            slot = next(iter(self.slots.values()))  # down: it counts the frame dropped
        if slot is not None and slot.link is not None:
            slot.link.send(frame)

    def broadcast(self, frame: bytes) -> None:
        """Send ``frame`` on every registered link (reports every replica needs)."""
        for slot in self.registered():
            if slot.link is not None:
                slot.link.send(frame)

    # -- link life -----------------------------------------------------------

    def welcomed(self, slot: LinkSlot, servers: Iterable[int]) -> None:
        slot.listed = set(servers)
        slot.welcomes += 1
        self._move(slot, LinkState.REGISTERED)
        for alias in slot.listed:
            current = self._routes.get(alias)
            if current is None or current.state is not LinkState.REGISTERED:
                self.note_route(alias, slot)

    def _move(self, slot: LinkSlot, state: LinkState) -> None:
        if slot.state is LinkState.STOPPED:
            return  # for good
        slot.state = state
        self._update_connected()

    def _add(self, url: str) -> None:
        task = f"{LINK_TASK}:{url}" if self._tasks_named else LINK_TASK
        if task in self._tasks_named:  # back in DNS: the supervisor keeps the old name
            task = f"{task}#{next(self._generation)}"
        self._tasks_named.add(task)
        slot = LinkSlot(url=url, task=task)

        async def on_frame(data: bytes) -> None:
            if slot.state is LinkState.CONNECTING:
                self._move(slot, LinkState.CONNECTED)
            await self._on_frame(data, slot)

        def on_disconnect() -> None:
            slot.listed = set()
            self._move(slot, LinkState.CONNECTING)
            self._on_lost(slot)

        slot.link = self._make_link(url, on_frame, on_disconnect)
        self.slots[url] = slot
        self._supervisor.start(slot.task, slot.link.run, restart=True)
        log.info("linking to coordinator %s", url)

    async def _remove(self, url: str) -> None:
        slot = self.slots.pop(url)
        await self._supervisor.stop(slot.task)
        slot.state = LinkState.STOPPED
        slot.listed = set()
        self._update_connected()
        self._on_lost(slot)
        log.info("coordinator %s is gone from DNS: link closed", url)

    def _update_connected(self) -> None:
        """Readiness follows the links: set while any one is registered."""
        if self.registered():
            self.connected.set()
        else:
            self.connected.clear()

    def start(self) -> None:
        """Link to every static URL and, with a DNS name, start resolving it."""
        for url in self._static:
            self._add(url)
        if self._dns is not None:
            self._supervisor.start(DNS_TASK, self._follow_dns, restart=True)

    async def stop(self) -> None:
        """Close every link for good (the server drains: no new client is sent here)."""
        self._stopped = True
        if self._dns is not None:
            await self._supervisor.stop(DNS_TASK)
        for slot in list(self.slots.values()):
            await self._supervisor.stop(slot.task)
            slot.state = LinkState.STOPPED
            slot.listed = set()
        self.connected.clear()

    async def _follow_dns(self) -> None:
        """Keep one link per address of the DNS name; a failed lookup changes nothing
        (a DNS hiccup must not close links to replicas that are still there)."""
        assert self._dns is not None
        while True:
            try:
                addresses = await self._resolver(self._dns, self._dns_port)
            except OSError as exc:
                log.warning("cannot resolve coordinator name %s: %s", self._dns, exc)
            else:
                await self.apply_addresses(addresses)
            await asyncio.sleep(self._dns_interval)

    async def apply_addresses(self, addresses: Iterable[str]) -> None:
        """Make the DNS-found links those of ``addresses`` (static URLs stay)."""
        if self._stopped:
            return
        wanted = {coordinator_url(address, self._dns_port) for address in addresses}
        for url in wanted - set(self.slots):
            self._add(url)
        for url in set(self.slots) - wanted - set(self._static):
            await self._remove(url)


def _to_alias(frame: bytes) -> int:
    """The alias a signalling frame is addressed to (0 if it has none)."""
    try:
        cls = _ADDRESSED.get(frame_type(frame))
        return decode_as(frame, cls).to_alias if cls is not None else 0
    except FrameError:
        return 0
