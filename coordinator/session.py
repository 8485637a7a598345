"""One accepted WebSocket, from registration to cleanup.

A session owns exactly two tasks: the reader, which hands every frame to the
relay, and the outbox's writer. Whichever ends first (peer disconnect, send
failure, outbox overflow, shutdown, idle timeout) ends the session: both tasks
are cancelled, the peer is unregistered at once so nobody queues frames for it
any more, and only then is the socket closed, because closing a stalled socket
can take a while and nobody else should wait for it.

A client's frames are charged to its signalling budget before anything else
(decoding included), so a flood costs its sender its frames and the
coordinator little. A client that has not been offered a session yet has a
timer: going ``idle_timeout`` seconds without a relayed frame closes it (1008),
so a socket opened only to hold a slot does not hold it for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from .budget import SignalBudget
from .counters import CoordinatorCounters, DropReason, TimeoutPhase
from .outbox import BytesSender, Outbox
from .registry import ClientPhase, RegisteredPeer, Registry
from .relay import SignalRelay

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
# A close frame to a peer that stopped reading never leaves the buffer; give up
# after this long and let the server drop the transport.
CLOSE_TIMEOUT = 2.0


class SessionSocket(BytesSender, Protocol):
    """The part of a Starlette WebSocket a session uses."""

    async def receive(self) -> Mapping[str, Any]: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class SocketSession:
    """Runs one registered peer until either side ends it."""

    def __init__(
        self,
        websocket: SessionSocket,
        *,
        peer: RegisteredPeer,
        outbox: Outbox,
        registry: Registry,
        relay: SignalRelay,
        counters: CoordinatorCounters,
        budget: SignalBudget | None = None,
        idle_timeout: float = 0.0,
    ) -> None:
        """``budget`` limits the frames the peer may send (None: unlimited, as for
        servers); ``idle_timeout`` closes a client that goes that many seconds
        without a relayed frame before a server offers it a session (0: never)."""
        self.peer = peer
        self._budget = budget
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self._websocket = websocket
        self._outbox = outbox
        self._registry = registry
        self._relay = relay
        self._counters = counters
        self._reader: asyncio.Task[None] | None = None
        self._close_code = CLOSE_INTERNAL_ERROR
        self._peer_disconnected = False
        self.finished = asyncio.Event()

    def stop(self, code: int = CLOSE_GOING_AWAY) -> None:
        """Ask the session to end and close the socket with ``code`` (used at shutdown)."""
        self._close_code = code
        if self._reader is not None:
            self._reader.cancel()
        else:
            self._outbox.close()

    async def run(self) -> None:
        """Relay until the session ends; the peer must already be registered."""
        try:
            if self._outbox.closed:  # stopped before it started
                await self._close(self._close_code)
                return
            reader = asyncio.create_task(self._read(), name=f"coordinator-reader-{self.peer.alias}")
            self._reader = reader
            writer = self._outbox.start(self._websocket)
            if self._idle_timeout > 0 and not self.peer.is_server:
                self._arm_idle_timer()
            try:
                await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if self._idle_timer is not None:
                    self._idle_timer.cancel()
                    self._idle_timer = None
                self._registry.remove(self.peer.alias, self.peer)
                self._outbox.close()
                reader.cancel()
                writer.cancel()
                await asyncio.wait((reader, writer))
            for task in (reader, writer):
                if not task.cancelled() and task.exception() is not None:
                    logger.error(
                        "session %d task failed", self.peer.alias, exc_info=task.exception()
                    )
            if not self._peer_disconnected:
                if self._outbox.overflowed:
                    self._counters.slow_connections_closed += 1
                    self._close_code = CLOSE_POLICY_VIOLATION
                    logger.info("peer %d too slow: outbound queue full, closing", self.peer.alias)
                await self._close(self._close_code)
        finally:
            self._registry.remove(self.peer.alias, self.peer)
            self.finished.set()

    def _arm_idle_timer(self) -> None:
        deadline = self.peer.last_relayed + self._idle_timeout
        delay = max(0.0, deadline - time.monotonic())
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        """Close a client that has not signalled in time; re-arm if it has since."""
        self._idle_timer = None
        peer = self.peer
        if peer.phase is ClientPhase.OFFERED:
            return  # a served client may stay quiet for as long as its session lasts
        if time.monotonic() < peer.last_relayed + self._idle_timeout:
            self._arm_idle_timer()
            return
        self._counters.connections_timed_out[TimeoutPhase.IDLE] += 1
        logger.debug(  # counted; one line per socket would let a flood fill the logs
            "client %d idle for %g s before being offered a session, closing",
            peer.alias,
            self._idle_timeout,
        )
        self.stop(CLOSE_POLICY_VIOLATION)

    async def _read(self) -> None:
        receive = self._websocket.receive
        handle = self._relay.handle
        dropped = self._counters.frames_dropped
        allow = self._budget.allow if self._budget is not None else None
        peer = self.peer
        while True:
            message = await receive()
            if message.get("type") == "websocket.receive" and allow is not None and not allow():
                # Refused before decoding: a flood costs the sender its frames, and
                # costs the coordinator as little as possible.
                dropped[DropReason.RATE_LIMITED] += 1
                continue
            data = message.get("bytes")
            if data is not None:
                try:
                    handle(peer, data)
                except Exception:
                    # A bug in the relay must not cost the peer its connection.
                    dropped[DropReason.INTERNAL_ERROR] += 1
                    logger.exception("relay failed on a frame from %d", peer.alias)
            elif message.get("type") == "websocket.disconnect":
                if message.get("code") == CLOSE_MESSAGE_TOO_BIG:
                    # The server closed it for a message above max_message_bytes.
                    dropped[DropReason.TOO_LARGE] += 1
                    logger.info("peer %d sent a message above the size limit, closed", peer.alias)
                self._peer_disconnected = True
                return
            else:
                dropped[DropReason.TEXT_FRAME] += 1

    async def _close(self, code: int) -> None:
        # The socket may already be closing (server shutdown) or stalled; any
        # failure here only means there is nothing left to close.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._websocket.close(code)
