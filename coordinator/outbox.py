"""A bounded outbound queue per WebSocket, drained by one writer task.

Frames for a peer are produced by other peers' read loops. If those loops
awaited the peer's socket, one slow or stalled peer would stall everybody who
signals to it. Instead a frame is put in this queue without waiting.

What happens when the queue is full depends on whose queue it is, because a
budget is charged to the party that sends, never to the one it targets:

* A client's queue holds only what comm servers send it. When it is full the
  client is too slow for its own signalling: the queue closes, its writer is
  cancelled and the owning session closes the socket with 1008. A bounded
  queue plus a hard close is simpler and fairer than dropping signalling
  frames (a lost ICE candidate or OFFER breaks a session set-up silently).
* A comm server's queue holds what any client sends it, so closing the server
  when it fills would let one client knock a server off the coordinator.
  Client frames may fill only a share of it (``client_share``); beyond that the
  client's frame is dropped (``Delivery.TARGET_BUSY``) and the server keeps
  its connection and the rest of its queue for frames from other servers.
  When even that is full, frames are dropped, never the server: a server that
  has really stopped reading is found by the WebSocket pings.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import Protocol

from .registry import Delivery, Origin

logger = logging.getLogger(__name__)


class BytesSender(Protocol):
    """The part of a WebSocket the writer needs (Starlette's WebSocket has it)."""

    async def send_bytes(self, data: bytes) -> None: ...


class Overflow(Enum):
    """What a full outbox does."""

    CLOSE = "close"  # a client's: the slow client is closed
    DROP = "drop"  # a comm server's: the frame is dropped, the server stays


class Outbox:
    """Queue of frames for one peer; implements :class:`registry.FrameSink`."""

    def __init__(
        self, limit: int, *, overflow: Overflow = Overflow.CLOSE, client_share: float = 1.0
    ) -> None:
        if limit < 1:
            raise ValueError("an outbox must hold at least one frame")
        if not 0 < client_share <= 1:
            raise ValueError("client_share must be in (0, 1]")
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=limit)
        self._limit = limit
        self._client_limit = max(1, int(limit * client_share))
        self._overflow = overflow
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.overflowed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._queue.qsize()

    def send(self, frame: bytes, origin: Origin) -> Delivery:
        """Queue ``frame`` without waiting, or say why it was dropped."""
        if self._closed:
            return Delivery.QUEUE_FULL
        size = self._queue.qsize()
        if origin is Origin.CLIENT and size >= self._client_limit:
            return Delivery.TARGET_BUSY
        if size >= self._limit:
            if self._overflow is Overflow.CLOSE:
                self.overflowed = True
                self.close()
            return Delivery.QUEUE_FULL
        self._queue.put_nowait(frame)
        return Delivery.QUEUED

    def close(self) -> None:
        """Stop accepting frames and stop the writer; queued frames are discarded."""
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()

    def start(self, websocket: BytesSender) -> asyncio.Task[None]:
        """Start the single writer task; the caller owns it and must await it."""
        if self._writer is not None:
            raise RuntimeError("outbox writer already started")
        self._writer = asyncio.create_task(self._drain(websocket), name="coordinator-writer")
        if self._closed:
            self._writer.cancel()
        return self._writer

    async def _drain(self, websocket: BytesSender) -> None:
        get = self._queue.get
        while True:
            frame = await get()
            try:
                await websocket.send_bytes(frame)
            except Exception as exc:
                # The peer is gone or closing; its reader sees the disconnect.
                # Ending the writer ends the session either way.
                logger.debug("writer stopped: %r", exc)
                self._closed = True
                return
