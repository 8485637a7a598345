"""Who is connected to the coordinator: aliases, peers, comm servers, client counts.

The registry is plain in-memory state touched only from the event loop, so it
needs no locks; every method is synchronous and cheap. It does not know about
WebSockets: a peer is reached through a :class:`FrameSink`, which keeps the
registry testable without a network and keeps slow sockets out of its way.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, NamedTuple, Protocol

from webrtc_broker.config import ServerRole

PeerRole = Literal["client", "server", "hub"]


class Origin(Enum):
    """Who sent a frame: a comm server's queue takes client frames only up to a share."""

    CLIENT = "client"
    SERVER = "server"


class Delivery(Enum):
    """What became of a frame handed to a :class:`FrameSink`."""

    QUEUED = "queued"
    TARGET_BUSY = "target_busy"
    """Dropped: client frames already fill their share of this server's queue."""
    QUEUE_FULL = "queue_full"
    """Dropped: the queue is full (a client's queue then closes) or already closed."""


class FrameSink(Protocol):
    """Where frames for one peer go; must never block the caller."""

    def send(self, frame: bytes, origin: Origin) -> Delivery:
        """Queue ``frame`` from a sender of kind ``origin``, or say why it was dropped."""
        ...


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A snapshot of one registered comm server, as selectors and /status see it."""

    alias: int
    name: str
    role: ServerRole
    clients: int


class ClientPhase(Enum):
    """How far a client has come; until a server offers it a session it must keep signalling.

    After an OFFER a client legitimately stays silent for its session's whole
    life (the SDKs keep this WebSocket open, and per-server client counts rely
    on it), so only the phases before it are subject to the idle timeout.
    """

    WELCOMED = "welcomed"  # no CONNECT relayed yet
    CONNECTING = "connecting"  # a CONNECT was relayed; no server has offered a session yet
    OFFERED = "offered"  # a server offered it a session


@dataclass(slots=True, eq=False)
class RegisteredPeer:
    """One connected WebSocket: a client or a comm server."""

    alias: int
    role: PeerRole
    sink: FrameSink
    name: str = ""
    # For a client: the server it last sent CONNECT to, which is where it is
    # (or is about to be) served; that is what per-server client counts mean.
    server: int | None = None
    # For a client: CONNECTs it sent that their server has not answered yet
    # (with an offer or a refusal), by server alias; bounded by the relay.
    pending: dict[int, int] = field(default_factory=dict)
    # For a client: see ClientPhase; and when (time.monotonic) it last had a frame relayed.
    phase: ClientPhase = ClientPhase.WELCOMED
    last_relayed: float = field(default_factory=time.monotonic)
    # For a comm server that proposed its alias: the per-process id it gave with it.
    server_id: str = ""

    @property
    def is_server(self) -> bool:
        return self.role != "client"


class ServerClaim(NamedTuple):
    """A comm server's own alias and the per-process id that proves it is the same
    server when it reconnects."""

    alias: int
    server_id: str


class Claim(Enum):
    """What a server's proposed alias finds in the registry."""

    FREE = "free"
    MINE = "mine"
    """Held by an earlier connection of the same server: the new one replaces it."""
    TAKEN = "taken"
    """Held by another peer: refused."""


def _initial_alias() -> int:
    # Milliseconds * 1000: a restarted coordinator starts above every alias the
    # previous run could have handed out (unless it gave out more than 1000 per
    # millisecond of its life), so comm servers that kept sessions across the
    # restart do not see an old alias again. Stays below 2**53 until the year
    # 2255, so JavaScript clients read it exactly.
    return time.time_ns() // 1_000_000 * 1000


ALIAS_SPACE_UNIT = 1000
"""``_initial_alias`` is a multiple of this; every number of alias spaces divides it."""

MAX_CLIENT_ALIAS = 2**52
"""Client aliases stay below the comm servers' range [2^52, 2^53)."""


class AliasAllocator:
    """Hands out increasing aliases that are never reused in this process.

    Coordinator replicas share nothing, so each hands out aliases from its own
    space: with ``spaces`` replicas' spaces, replica ``replica`` gives only
    aliases congruent to ``replica`` modulo ``spaces``: start + replica,
    then every ``spaces``-th number. The start is (ms since the epoch) x 1000
    and ``spaces`` divides 1000, so the start is a multiple of ``spaces``
    whenever the replica started: two replicas with different ids never hand
    out the same alias, whatever their start times (docs/protocol.md, "Aliases
    across replicas"). A restarted replica still starts above its earlier
    aliases unless it gave out more than 1000 / ``spaces`` per millisecond of
    its earlier life.
    """

    def __init__(self, start: int | None = None, *, spaces: int = 1, replica: int = 0) -> None:
        if spaces < 1 or ALIAS_SPACE_UNIT % spaces or not 0 <= replica < spaces:
            raise ValueError(f"replica {replica} of {spaces} alias spaces")
        self.spaces = spaces
        self.replica = replica
        self._next = (_initial_alias() if start is None else start) + replica
        if self._next <= 0:
            raise ValueError("aliases must be positive: 0 means 'unset' on the wire")

    @classmethod
    def for_replica(cls, spaces: int, replica: int | None) -> AliasAllocator:
        """The allocator of replica ``replica`` (a random one if None)."""
        chosen = random.randrange(spaces) if replica is None else replica
        return cls(spaces=spaces, replica=chosen)

    def allocate(self) -> int:
        alias = self._next
        if alias >= MAX_CLIENT_ALIAS:
            raise OverflowError("client aliases reached 2^52")
        self._next += self.spaces
        return alias


class Registry:
    """Connected peers by alias, registered servers in registration order."""

    def __init__(self, allocate_alias: Callable[[], int] | None = None) -> None:
        self.allocate_alias: Callable[[], int] = allocate_alias or AliasAllocator().allocate
        self._peers: dict[int, RegisteredPeer] = {}
        # Servers keep registration order (dicts are ordered), which is the
        # order servers see in WELCOME and /status lists.
        self._servers: dict[int, RegisteredPeer] = {}
        self._clients_per_server: dict[int, int] = {}
        self._reported: dict[int, int] = {}
        """Client counts servers reported themselves (docs/protocol.md, "Load reports")."""
        self._since_report: dict[int, int] = {}
        """CONNECTs relayed here to a reporting server since its last report."""
        self._client_count = 0

    def get(self, alias: int) -> RegisteredPeer | None:
        return self._peers.get(alias)

    def add(self, peer: RegisteredPeer) -> None:
        if peer.alias in self._peers:
            raise ValueError(f"alias {peer.alias} is already registered")
        self._peers[peer.alias] = peer
        if peer.is_server:
            self._servers[peer.alias] = peer
            self._clients_per_server[peer.alias] = 0
        else:
            self._client_count += 1

    def claim(self, alias: int, server_id: str) -> Claim:
        """Whether a server that proposes ``alias`` (with its per-process ``server_id``)
        may have it."""
        holder = self._peers.get(alias)
        if holder is None:
            return Claim.FREE
        if holder.is_server and server_id and holder.server_id == server_id:
            return Claim.MINE
        return Claim.TAKEN

    def remove(self, alias: int, peer: RegisteredPeer | None = None) -> RegisteredPeer | None:
        """Forget a peer; removing an unknown alias is a no-op (cleanup runs once per path).

        With ``peer``, only if the alias is still that peer's: a server that
        reconnected under its own alias must not lose its new registration to
        the cleanup of the old one.
        """
        if peer is not None and self._peers.get(alias) is not peer:
            return None
        peer = self._peers.pop(alias, None)
        if peer is None:
            return None
        if peer.is_server:
            del self._servers[alias]
            del self._clients_per_server[alias]
            self._reported.pop(alias, None)
            self._since_report.pop(alias, None)
            # Clients still pointing at it keep the stale alias; aliases are
            # never reused, so it can never be miscounted for another server.
        else:
            self._client_count -= 1
            self._leave_server(peer)
        return peer

    def note_connect(self, client: RegisteredPeer, server_alias: int) -> None:
        """Record that ``client`` sent CONNECT to ``server_alias``."""
        if client.server == server_alias:
            return
        self._leave_server(client)
        client.server = server_alias
        if server_alias in self._clients_per_server:
            self._clients_per_server[server_alias] += 1
        if server_alias in self._since_report:
            self._since_report[server_alias] += 1

    def report_clients(self, server_alias: int, count: float) -> bool:
        """A server's own count of its clients (all replicas' clients, not only ours).

        Until its next report, CONNECTs relayed to it here are added on top, so a
        burst of clients does not all see the same count. False (and nothing
        changes) for an alias that is not a registered server or a count that is
        not a plausible number of clients."""
        if server_alias not in self._servers:
            return False
        if not math.isfinite(count) or not 0 <= count < 2**31:
            return False
        self._reported[server_alias] = int(count)
        self._since_report[server_alias] = 0
        return True

    def clients_of(self, server_alias: int) -> int:
        """Clients of a server as selectors see them: its report when it sends
        them, else the clients whose CONNECT this coordinator relayed to it."""
        reported = self._reported.get(server_alias)
        if reported is None:
            return self._clients_per_server[server_alias]
        return reported + self._since_report[server_alias]

    def _leave_server(self, client: RegisteredPeer) -> None:
        previous = client.server
        if previous is not None and previous in self._clients_per_server:
            self._clients_per_server[previous] -= 1

    def servers(self) -> list[ServerInfo]:
        return [
            ServerInfo(
                alias=alias,
                name=peer.name,
                role="hub" if peer.role == "hub" else "server",
                clients=self.clients_of(alias),
            )
            for alias, peer in self._servers.items()
        ]

    def peers(self) -> list[RegisteredPeer]:
        return list(self._peers.values())

    @property
    def client_count(self) -> int:
        return self._client_count

    @property
    def server_count(self) -> int:
        return len(self._servers)
