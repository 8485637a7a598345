"""The asyncio client.

Connecting follows PROTOCOL.md: WebSocket to the coordinator's ``/connect``,
WELCOME, CONNECT to the chosen server, answer its offer, AUTH on the reliable
channel. The protocol has no AUTH acknowledgement, so the client follows AUTH
with a PING on the same ordered channel: the echo can only come back once the
server accepted the AUTH, which makes :meth:`BrokerClient.connect` return only
for a session that really works.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from webrtc_broker.client.errors import (
    AuthenticationError,
    BrokerError,
    ClosedError,
    ConnectTimeoutError,
    MessageTooLargeError,
    NoServerAvailableError,
    ServerFullError,
)
from webrtc_broker.rtc import FlushScheduler, Session, SessionClosed
from webrtc_broker.rtc.writer import SCTP_PACKET_PAYLOAD
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.subscription import subscription_frame

log = logging.getLogger(__name__)

_REFUSAL_GRACE = 1.0
"""Seconds to wait, after a session closed during set-up, for the server's reason."""


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A topic message delivered to this client."""

    sender: int
    """Alias of the client that published it."""
    body: bytes
    reliable: bool
    """Whether it came on the reliable channel."""
    identity: bytes | None = None
    """The sender's authenticated identity, for messages published with identity."""
    role: int | None = None
    topic: str | None = None
    """The topic, when the server sends topic names (servers of this project do)."""


_CLOSED = object()

ALL_CAPABILITIES = pb.CAPABILITY_BATCH | pb.CAPABILITY_TOPIC_NAMES
"""What this SDK announces by default: it accepts batches and wants topic names."""

MAX_FRAME_BYTES = 255 * 1024
"""Data channels carry 256 KiB messages; the relay adds the sender's alias and the topic."""

BATCH_WINDOW = 0.005
"""Seconds the client's own frames may wait to share one data-channel message."""


class BrokerClient:
    """A client session with one comm server."""

    def __init__(
        self,
        ws: ClientConnection,
        alias: int,
        server_alias: int,
        inbox_size: int,
        capabilities: int,
    ) -> None:
        self.alias = alias
        self.server_alias = server_alias
        self._ws = ws
        self._inbox: asyncio.Queue[ReceivedMessage | object] = asyncio.Queue(inbox_size)
        self._pings: dict[float, asyncio.Future[float]] = {}
        self._ping_ids = itertools.count(1)
        self._refusal: asyncio.Future[BrokerError] = asyncio.get_running_loop().create_future()
        self.session = Session(on_frame=self._on_frame)
        self.session.on_close(lambda _s: self._on_session_closed())
        self.dropped = 0
        """Messages dropped because the inbox was full (the oldest go first)."""
        self.capabilities = capabilities
        self.server_capabilities = 0
        """What the server announced in its AUTH reply (0 for servers that do not)."""
        self._batching: FlushScheduler | None = None
        self._coordinator_task: asyncio.Task[None] | None = None

    # -- connecting -------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        coordinator_url: str,
        credentials: bytes | str = b"",
        *,
        server: int | None = None,
        timeout: float = 20.0,
        inbox_size: int = 10_000,
        capabilities: int = ALL_CAPABILITIES,
    ) -> BrokerClient:
        """Connect through the coordinator at ``coordinator_url`` (``ws://host:port``).

        ``credentials`` go to the coordinator (``token`` query parameter) and to
        the comm server (AUTH body). ``server`` picks a server alias from the
        coordinator's list instead of its first choice. ``capabilities`` is what
        the client announces in AUTH (protocol additions); 0 behaves exactly like
        a client of the original protocol.
        """
        if isinstance(credentials, str):
            credentials = credentials.encode()
        try:
            async with asyncio.timeout(timeout):
                return await cls._connect(
                    coordinator_url, credentials, server, inbox_size, capabilities
                )
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"no session within {timeout} s") from exc

    @classmethod
    async def _connect(
        cls,
        url: str,
        credentials: bytes,
        server: int | None,
        inbox_size: int,
        capabilities: int,
    ) -> BrokerClient:
        query = urlencode({"token": credentials.decode(errors="replace")}) if credentials else ""
        endpoint = f"{url.rstrip('/')}/connect" + (f"?{query}" if query else "")
        try:
            ws = await connect(endpoint, max_size=1024 * 1024)
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise AuthenticationError("the coordinator refused the credentials") from exc
            raise BrokerError(f"coordinator answered HTTP {exc.response.status_code}") from exc
        except (OSError, WebSocketException) as exc:
            raise BrokerError(f"cannot reach the coordinator at {url}: {exc}") from exc
        try:
            welcome = decode_as(await ws.recv(decode=False), pb.WelcomeMessage)
            servers = list(welcome.available_servers)
            if not servers:
                raise NoServerAvailableError("the coordinator has no comm server registered")
            if server is not None and server not in servers:
                raise NoServerAvailableError(f"server {server} is not registered: {servers}")
            target = servers[0] if server is None else server
            client = cls(ws, welcome.alias, target, inbox_size, capabilities)
        except BaseException:
            await ws.close()
            raise
        try:
            await client._establish(credentials)
        except BaseException:
            await client.close()
            raise
        return client

    async def _establish(self, credentials: bytes) -> None:
        self._coordinator_task = asyncio.get_running_loop().create_task(
            self._read_coordinator(), name=f"client-{self.alias}-coordinator"
        )
        await self._ws.send(
            pb.ConnectMessage(
                type=pb.CONNECT, from_alias=self.alias, to_alias=self.server_alias
            ).SerializeToString()
        )
        try:
            await self._first_of(self.session.opened)
            self.session.send(
                pb.AuthMessage(
                    type=pb.AUTH,
                    role=pb.CLIENT,
                    body=credentials,
                    capabilities=self.capabilities,
                ).SerializeToString(),
                reliable=True,
            )
            await self._first_of(asyncio.ensure_future(self.ping()))
        except (SessionClosed, ClosedError) as exc:
            # The server closes a refused session; its reason travels via the coordinator.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_REFUSAL_GRACE):
                    raise await asyncio.shield(self._refusal) from exc
            raise BrokerError(f"session closed during set-up: {exc}") from exc

    async def _first_of(self, step: asyncio.Future[Any]) -> None:
        """Wait for ``step``, unless the server refuses first."""
        done, _ = await asyncio.wait({step, self._refusal}, return_when=asyncio.FIRST_COMPLETED)
        if self._refusal in done:
            if not step.done():
                step.cancel()
            raise self._refusal.result()
        step.result()

    async def _read_coordinator(self) -> None:
        with contextlib.suppress(WebSocketException):
            async for frame in self._ws:
                if isinstance(frame, bytes):
                    await self._on_coordinator_frame(frame)

    async def _on_coordinator_frame(self, data: bytes) -> None:
        try:
            kind = frame_type(data)
            if kind == pb.WEBRTC_OFFER:
                message = decode_as(data, pb.WebRtcMessage)
                answer = await self.session.accept_offer(message.data)
                await self._ws.send(
                    pb.WebRtcMessage(
                        type=pb.WEBRTC_ANSWER,
                        from_alias=self.alias,
                        to_alias=self.server_alias,
                        data=answer,
                    ).SerializeToString()
                )
            elif kind == pb.WEBRTC_ICE_CANDIDATE:
                await self.session.add_candidate(decode_as(data, pb.WebRtcMessage).data)
            elif kind == pb.CONNECTION_REFUSED:
                self._refused(decode_as(data, pb.ConnectionRefusedMessage))
        except (FrameError, ValueError) as exc:
            log.warning("ignoring a bad frame from the coordinator: %s", exc)

    def _refused(self, message: pb.ConnectionRefusedMessage) -> None:
        if self._refusal.done():
            return
        detail = message.data.decode(errors="replace")
        error: BrokerError
        if message.reason == pb.SERVER_FULL:
            error = ServerFullError(f"server {self.server_alias} is full")
        elif message.reason == pb.AUTH_FAILED:
            error = AuthenticationError(f"server {self.server_alias} refused: {detail or 'auth'}")
        else:
            error = BrokerError(f"server {self.server_alias} refused the session: {detail}")
        self._refusal.set_result(error)

    # -- traffic ----------------------------------------------------------

    def _on_frame(self, data: bytes, reliable: bool, *, in_batch: bool = False) -> None:
        try:
            kind = frame_type(data)
            if kind == pb.TOPIC_FW:
                fw = decode_as(data, pb.TopicFWMessage)
                self._deliver(
                    ReceivedMessage(fw.from_alias, fw.body, reliable, topic=fw.topic or None)
                )
            elif kind == pb.TOPIC_IDENTITY_FW:
                ifw = decode_as(data, pb.TopicIdentityFWMessage)
                self._deliver(
                    ReceivedMessage(
                        ifw.from_alias,
                        ifw.body,
                        reliable,
                        ifw.identity,
                        ifw.role,
                        ifw.topic or None,
                    )
                )
            elif kind == pb.BATCH and not in_batch:
                for frame in decode_as(data, pb.BatchMessage).frames:
                    self._on_frame(frame, reliable, in_batch=True)
            elif kind == pb.AUTH:
                self._server_announced(decode_as(data, pb.AuthMessage).capabilities)
            elif kind == pb.PING:
                sent = decode_as(data, pb.PingMessage).time
                waiter = self._pings.pop(sent, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(sent)
        except FrameError as exc:
            log.debug("ignoring a malformed frame: %s", exc)

    def _server_announced(self, capabilities: int) -> None:
        self.server_capabilities = capabilities
        if capabilities & pb.CAPABILITY_BATCH and self.capabilities & pb.CAPABILITY_BATCH:
            if self._batching is None:
                self._batching = FlushScheduler(BATCH_WINDOW)
            self.session.enable_batching(self._batching, SCTP_PACKET_PAYLOAD)

    def _deliver(self, message: ReceivedMessage) -> None:
        if self._inbox.full():
            self._inbox.get_nowait()
            self.dropped += 1
        self._inbox.put_nowait(message)

    def _send(self, frame: bytes, reliable: bool) -> None:
        if self.session.closed.is_set():
            raise ClosedError(f"session closed: {self.session.close_reason}")
        if len(frame) > MAX_FRAME_BYTES:
            raise MessageTooLargeError(
                f"{len(frame)} bytes encoded; at most {MAX_FRAME_BYTES} can be relayed"
            )
        self.session.send(frame, reliable=reliable)

    def subscribe(self, topics: Iterable[str], *, compress: bool = False) -> None:
        """Replace this client's subscriptions with ``topics`` (empty: unsubscribe all)."""
        self._send(subscription_frame(topics, compress=compress), True)

    def publish(self, topic: str, body: bytes | str, *, reliable: bool = True) -> None:
        """Publish ``body`` to every other subscriber of ``topic``."""
        if isinstance(body, str):
            body = body.encode()
        frame = pb.TopicMessage(type=pb.TOPIC, topic=topic, body=body).SerializeToString()
        self._send(frame, reliable)

    def publish_identity(self, topic: str, body: bytes | str, *, reliable: bool = True) -> None:
        """Publish ``body`` stamped by the server with this client's authenticated identity."""
        if isinstance(body, str):
            body = body.encode()
        frame = pb.TopicIdentityMessage(
            type=pb.TOPIC_IDENTITY, topic=topic, body=body
        ).SerializeToString()
        self._send(frame, reliable)

    async def ping(self, *, reliable: bool = True) -> float:
        """Round-trip time to the comm server, in seconds."""
        # The echo comes back unchanged, so a unique value doubles as the probe's id.
        probe = float(next(self._ping_ids))
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[probe] = waiter
        started = time.perf_counter()
        try:
            self._send(pb.PingMessage(type=pb.PING, time=probe).SerializeToString(), reliable)
            await waiter
        finally:
            self._pings.pop(probe, None)
        return time.perf_counter() - started

    async def receive(self) -> ReceivedMessage:
        """The next message; raises :class:`ClosedError` once the session is closed."""
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # let other readers see the end too
            raise ClosedError(f"session closed: {self.session.close_reason}")
        assert isinstance(item, ReceivedMessage)
        return item

    async def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            try:
                yield await self.receive()
            except ClosedError:
                return

    # -- closing ----------------------------------------------------------

    def _on_session_closed(self) -> None:
        error = ClosedError(f"session closed: {self.session.close_reason}")
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pings.clear()
        if self._inbox.full():
            self._inbox.get_nowait()
        self._inbox.put_nowait(_CLOSED)

    @property
    def closed(self) -> bool:
        return self.session.closed.is_set()

    async def close(self) -> None:
        """Close the session and the coordinator connection."""
        if self._batching is not None:
            self._batching.flush()  # what was published before close() still goes out
            self._batching.close()
        await self.session.close("closed by the client")
        if self._coordinator_task is not None:
            self._coordinator_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._coordinator_task
        await self._ws.close()

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
