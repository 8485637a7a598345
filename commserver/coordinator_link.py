"""The comm server's control connection to the coordinator.

It must survive coordinator restarts without touching client sessions: the
link reconnects forever with capped exponential backoff (with jitter, so a
fleet of servers does not reconnect in lockstep) and every new connection
starts with a fresh WELCOME, which re-registers the server.

The server proposes its own alias at every registration (``alias`` and
``id`` in the URL), so it keeps one alias for the life of its process: the
other servers key their sessions with it by that alias, and a reconnect
of this link alone changes nothing for them. A server links to every
coordinator replica (:mod:`commserver.coordinators`), each link proposing
the same alias, read from the server at every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from webrtc_broker.backoff import Backoff

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes], Awaitable[None]]

ALIAS_TAKEN = 409
"""The coordinator's answer when another peer holds the alias we proposed."""


class CoordinatorLink:
    """Keeps one WebSocket to ``/discover`` open and hands every frame to ``on_frame``."""

    def __init__(
        self,
        *,
        base_url: str,
        role: str,
        name: str,
        secret: bytes,
        on_frame: FrameHandler,
        on_disconnect: Callable[[], None],
        backoff: Backoff,
        alias: Callable[[], int],
        server_id: str,
        on_alias_taken: Callable[[], int],
        queue_frames: int = 1024,
    ) -> None:
        self._base = f"{base_url.rstrip('/')}/discover"
        self._query = {"role": role, "name": name, "id": server_id}
        self._alias = alias
        self._on_alias_taken = on_alias_taken
        self._headers = {"Authorization": f"Bearer {secret.decode()}"} if secret else {}
        self._on_frame = on_frame
        self._on_disconnect = on_disconnect
        self._backoff = backoff
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(queue_frames)
        self.connected = asyncio.Event()
        self.connects = 0
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"{self._base}?{urlencode({**self._query, 'alias': str(self._alias())})}"

    def send(self, frame: bytes) -> None:
        """Queue a frame for the coordinator; dropped (and counted) while disconnected."""
        if not self.connected.is_set():
            self.dropped += 1
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        """Connect, serve, reconnect: forever, until cancelled."""
        while True:
            try:
                async with connect(
                    self.url, additional_headers=self._headers, max_size=1024 * 1024
                ) as ws:
                    self.connects += 1
                    self._backoff.reset()
                    log.info("connected to coordinator %s", self.url)
                    await self._serve(ws)
            except InvalidStatus as exc:
                log.warning("coordinator refused the connection: %s", exc)
                if exc.response.status_code == ALIAS_TAKEN:
                    self._on_alias_taken()
            except (TimeoutError, OSError, WebSocketException) as exc:
                log.warning("coordinator connection failed: %s", exc)
            finally:
                self.connected.clear()
                self._on_disconnect()
            await asyncio.sleep(self._backoff.next_delay())

    async def _serve(self, ws: ClientConnection) -> None:
        while not self._outbox.empty():  # frames addressed to the previous connection
            self._outbox.get_nowait()
        self.connected.set()
        writer = asyncio.create_task(self._write(ws), name="coordinator-writer")
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    await self._on_frame(frame)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, ws: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            while True:
                await ws.send(await self._outbox.get())
