"""A bounded outbound queue per WebSocket, drained by one writer task.

Frames for a peer are produced by other peers' read loops. If those loops
awaited the peer's socket, one slow or stalled peer would stall everybody who
signals to it. Instead a frame is put in this queue without waiting, and when
the queue is full the peer is declared too slow: the queue closes, its writer
is cancelled and the owning session closes the socket with 1008. A bounded
queue plus a hard close is simpler and fairer than dropping signalling frames
(a lost ICE candidate or OFFER breaks a session set-up silently).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class BytesSender(Protocol):
    """The part of a WebSocket the writer needs (Starlette's WebSocket has it)."""

    async def send_bytes(self, data: bytes) -> None: ...


class Outbox:
    """Queue of frames for one peer; implements :class:`registry.FrameSink`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an outbox must hold at least one frame")
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=limit)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.overflowed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._queue.qsize()

    def send(self, frame: bytes) -> bool:
        """Queue ``frame`` without waiting; False when closed or, fatally, full."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True
            self.close()
            return False
        return True

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
