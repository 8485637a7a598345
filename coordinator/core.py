"""The coordinator's state and the life of each accepted peer.

Everything the endpoints share lives in one :class:`Coordinator` object, kept
on ``app.state``, instead of module globals: two apps in one process (tests,
``webrtc-broker up``) then never see each other's peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from webrtc_broker.config import CoordinatorConfig
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

from .admission import ConnectionCaps
from .budget import SignalBudget, SubjectBudgets, TokenBucket
from .counters import CoordinatorCounters
from .outbox import Outbox, Overflow
from .registry import AliasAllocator, Claim, PeerRole, RegisteredPeer, Registry, ServerClaim
from .relay import SignalRelay
from .selector import ServerSelector, make_selector
from .session import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, SessionSocket, SocketSession
from .topology import welcome_servers

logger = logging.getLogger(__name__)


class Coordinator:
    """Registry, relay, counters and readiness of one coordinator app."""

    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        selector: ServerSelector | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.selector: ServerSelector = selector or make_selector(config.selector)
        self.aliases = AliasAllocator.for_replica(config.alias_spaces, config.replica_id)
        """This replica's alias space (docs/protocol.md, "Aliases across replicas")."""
        self.registry = registry or Registry(self.aliases.allocate)
        self.counters = CoordinatorCounters()
        self.relay = SignalRelay(
            self.registry, self.counters, max_pending_connects=config.max_pending_connects
        )
        self.caps = ConnectionCaps(config.max_clients, config.max_clients_per_address)
        self.subjects = SubjectBudgets(config.subject_signal_rate, config.subject_signal_burst)
        self._sessions: set[SocketSession] = set()
        self._started = False
        self._draining = False

    @property
    def ready(self) -> bool:
        """True between lifespan startup and the start of shutdown, and with
        ``ready_needs_server`` only while a comm server is registered (a replica
        that knows no server has nothing to offer a client; the comm servers'
        own readiness does not wait for a ready coordinator, so there is no
        cycle at start)."""
        if self.config.ready_needs_server and self.registry.server_count == 0:
            return False
        return self._started and not self._draining

    @property
    def accepting(self) -> bool:
        return not self._draining

    def mark_started(self) -> None:
        self._started = True

    def begin_shutdown(self) -> None:
        """Report not-ready and refuse new peers; existing sessions keep running."""
        if not self._draining:
            logger.info("coordinator shutting down: refusing new connections")
        self._draining = True

    async def close_sessions(self, timeout: float = 5.0) -> None:
        """End every session (close code 1001) and wait for their cleanup."""
        sessions = list(self._sessions)
        for session in sessions:
            session.stop(CLOSE_GOING_AWAY)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for session in sessions:
                    await session.finished.wait()

    def _take_alias(self, alias: int, server_id: str) -> bool:
        """Make ``alias`` free for the server ``server_id``: an earlier connection of the
        same server (one this coordinator has not seen drop yet) is replaced."""
        verdict = self.registry.claim(alias, server_id)
        if verdict is Claim.TAKEN:
            return False
        if verdict is Claim.MINE:
            old = self.registry.get(alias)
            self.registry.remove(alias, old)
            for session in self._sessions:
                if session.peer is old:
                    logger.info("server %d reconnected; closing its previous connection", alias)
                    session.stop(CLOSE_GOING_AWAY)
        return True

    def welcome(self, alias: int, role: PeerRole) -> pb.WelcomeMessage:
        servers = welcome_servers(role, self.registry.servers(), self.selector)
        return pb.WelcomeMessage(type=pb.WELCOME, alias=alias, available_servers=servers)

    async def serve_peer(
        self,
        websocket: SessionSocket,
        role: PeerRole,
        name: str = "",
        *,
        subject: bytes | None = None,
        claim: ServerClaim | None = None,
    ) -> None:
        """Welcome an accepted peer, register it, relay its frames until it leaves.

        ``claim`` is a comm server's own alias (see :mod:`webrtc_broker.wire.aliases`):
        a server keeps it across reconnects, so its mesh links, keyed by alias at
        the other servers, never change when only its coordinator link did.

        ``subject`` is a client's verified identity: all connections of one
        subject share a signalling budget on top of their own.
        """
        if role != "client":
            await self._serve(websocket, role, name, budget=None, claim=claim)
            return
        config = self.config
        own = TokenBucket(config.signal_rate, config.signal_burst)
        if subject is None:
            await self._serve(websocket, role, name, budget=SignalBudget(own))
            return
        shared = self.subjects.acquire(subject)
        try:
            await self._serve(websocket, role, name, budget=SignalBudget(own, shared))
        finally:
            self.subjects.release(subject)

    async def _serve(
        self,
        websocket: SessionSocket,
        role: PeerRole,
        name: str,
        *,
        budget: SignalBudget | None,
        claim: ServerClaim | None = None,
    ) -> None:
        if claim is None:
            alias, server_id = self.registry.allocate_alias(), ""
        else:
            alias, server_id = claim
            if not self._take_alias(alias, server_id):
                await websocket.close(CLOSE_POLICY_VIOLATION)
                return
        welcome = codec.encode(self.welcome(alias, role))
        try:
            # Sent before registering: the peer never finds itself in its own
            # list, and nobody can signal to it before it knows its alias.
            await websocket.send_bytes(welcome)
        except Exception as exc:
            logger.debug("peer left before its welcome: %r", exc)
            return

        if role == "client":
            outbox = Outbox(self.config.send_queue_frames, overflow=Overflow.CLOSE)
        else:
            outbox = Outbox(
                self.config.send_queue_frames,
                overflow=Overflow.DROP,
                client_share=self.config.client_queue_share,
            )
        peer = RegisteredPeer(alias=alias, role=role, sink=outbox, name=name, server_id=server_id)
        self.registry.add(peer)
        self.counters.connections[role] += 1
        session = SocketSession(
            websocket,
            peer=peer,
            outbox=outbox,
            registry=self.registry,
            relay=self.relay,
            counters=self.counters,
            budget=budget,
            idle_timeout=self.config.client_idle_timeout if role == "client" else 0.0,
        )
        self._sessions.add(session)
        if role == "client":
            logger.debug("client %d connected", alias)
        else:
            logger.info("%s %d (%r) registered", role, alias, name)
        if self._draining:  # shutdown began while the welcome was in flight
            session.stop(CLOSE_GOING_AWAY)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if role == "client":
                logger.debug("client %d disconnected", alias)
            else:
                logger.info("%s %d (%r) unregistered", role, alias, name)
