"""A hand-driven peer: the client's connect flow without the SDK's good manners.

:class:`RawPeer` does what :class:`webrtc_broker.client.BrokerClient` does up to
the open data channels (coordinator ``/connect``, WELCOME, CONNECT, answer the
server's offer, ICE) and then stops: the test decides what goes on the wire,
AUTH or not, valid frames or garbage, binary or text. It also keeps every
CONNECTION_REFUSED the coordinator relays, so a test can see why a server
closed the session. It answers every offer, from anyone, without the SDK's
state machine (:mod:`webrtc_broker.rtc.handshake`): a hostile client does not
keep to it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from webrtc_broker.rtc import Session
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb

TIMEOUT = 10.0


class RawPeer:
    """One coordinator WebSocket and (after :meth:`establish`) one session with a server."""

    def __init__(self, ws: ClientConnection, welcome: pb.WelcomeMessage) -> None:
        self.ws = ws
        self.alias = welcome.alias
        self.servers = list(welcome.available_servers)
        self.server_alias = 0
        self.frames: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        """Data-channel frames received (PING echoes aside), with their channel kind."""
        self.refusals: asyncio.Queue[pb.ConnectionRefusedMessage] = asyncio.Queue()
        self.pongs: asyncio.Queue[tuple[float, bool]] = asyncio.Queue()
        """PING echoes: the probe's time and whether it came on the reliable channel."""
        self._ping_ids = itertools.count(1)
        self.session = Session(on_frame=self._on_frame)
        # The session's writers take bytes only; text frames go straight to the channels.
        self._channels: dict[bool, Any] = {}
        self.session.pc.on("datachannel", self._keep_channel)
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, coordinator_url: str, token: str = "", *, server_secret: str = ""
    ) -> RawPeer:
        """Connect to the coordinator and read the WELCOME.

        As a client (``/connect``) by default; with ``server_secret``, as a comm
        server (``/discover``), which the coordinator then lists to clients too.
        """
        if server_secret:
            query = urlencode({"role": "COMMUNICATION_SERVER", "name": "raw-peer"})
            url = f"{coordinator_url}/discover?{query}"
            headers = {"Authorization": f"Bearer {server_secret}"}
        else:
            url = f"{coordinator_url}/connect" + (
                f"?{urlencode({'token': token})}" if token else ""
            )
            headers = {}
        ws = await connect(url, additional_headers=headers, max_size=1024 * 1024)
        try:
            data = await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
            peer = cls(ws, decode_as(data, pb.WelcomeMessage))
        except BaseException:
            await ws.close()
            raise
        peer._reader = asyncio.get_running_loop().create_task(peer._read_coordinator())
        return peer

    @classmethod
    async def connect(
        cls,
        coordinator_url: str,
        *,
        server: int | None = None,
        token: str = "",
        server_secret: str = "",
    ) -> RawPeer:
        """:meth:`open` plus :meth:`establish`: a session whose channels are open, no AUTH sent."""
        peer = await cls.open(coordinator_url, token, server_secret=server_secret)
        try:
            await peer.establish(server)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def establish(self, server: int | None = None, timeout: float = TIMEOUT) -> None:
        """Send CONNECT to ``server`` (default: the coordinator's first choice), wait for open."""
        self.server_alias = self.servers[0] if server is None else server
        await self.send_coordinator(
            pb.ConnectMessage(type=pb.CONNECT, to_alias=self.server_alias).SerializeToString()
        )
        await self.session.wait_open(timeout)

    def _keep_channel(self, channel: Any) -> None:
        self._channels[channel.label == "reliable"] = channel

    def _on_frame(self, data: bytes, reliable: bool) -> None:
        with contextlib.suppress(FrameError):
            if frame_type(data) == pb.PING:
                self.pongs.put_nowait((decode_as(data, pb.PingMessage).time, reliable))
                return
        self.frames.put_nowait((data, reliable))

    async def _read_coordinator(self) -> None:
        with contextlib.suppress(WebSocketException):
            async for data in self.ws:
                if isinstance(data, bytes):
                    await self._on_coordinator_frame(data)

    async def _on_coordinator_frame(self, data: bytes) -> None:
        try:
            kind = frame_type(data)
        except FrameError:
            return
        if kind == pb.WEBRTC_OFFER:
            offer = decode_as(data, pb.WebRtcMessage)
            answer = await self.session.accept_offer(offer.data)
            await self.send_coordinator(
                pb.WebRtcMessage(
                    type=pb.WEBRTC_ANSWER, to_alias=offer.from_alias, data=answer
                ).SerializeToString()
            )
        elif kind == pb.WEBRTC_ICE_CANDIDATE:
            await self.session.add_candidate(decode_as(data, pb.WebRtcMessage).data)
        elif kind == pb.CONNECTION_REFUSED:
            self.refusals.put_nowait(decode_as(data, pb.ConnectionRefusedMessage))

    # -- sending ----------------------------------------------------------

    async def send_coordinator(self, frame: bytes | str) -> None:
        await self.ws.send(frame)

    def send(self, frame: bytes | str, *, reliable: bool = True) -> None:
        """Put ``frame`` on a data channel as is (a ``str`` goes as a text message)."""
        self._channels[reliable].send(frame)

    def send_auth(
        self, body: bytes = b"raw", role: pb.Role.ValueType = pb.CLIENT, capabilities: int = 0
    ) -> None:
        """AUTH; without ``capabilities`` exactly what a client of the original protocol sends."""
        self.send(
            pb.AuthMessage(
                type=pb.AUTH, role=role, body=body, capabilities=capabilities
            ).SerializeToString()
        )

    def send_server_auth(self, secret: str, server_id: str = "impostor") -> None:
        """AUTH as a comm server, with the JSON body servers present to each other."""
        body = json.dumps({"id": server_id, "name": server_id, "secret": secret}).encode()
        self.send_auth(body, pb.COMMUNICATION_SERVER)

    # -- receiving --------------------------------------------------------

    async def receive(
        self, kind: pb.MessageType.ValueType, timeout: float = TIMEOUT
    ) -> tuple[bytes, bool]:
        """The next data-channel frame of type ``kind``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                data, reliable = await self.frames.get()
                with contextlib.suppress(FrameError):
                    if frame_type(data) == kind:
                        return data, reliable

    async def ping(self, *, reliable: bool = True, timeout: float = TIMEOUT) -> None:
        """Send a PING and wait for its echo: on the reliable channel, a barrier.

        The server handles a channel's frames in order, so once the echo of a
        reliable PING is back, every reliable frame sent before it was handled.
        """
        probe = float(next(self._ping_ids))
        self.send(pb.PingMessage(type=pb.PING, time=probe).SerializeToString(), reliable=reliable)
        async with asyncio.timeout(timeout):
            while (await self.pongs.get())[0] != probe:
                pass

    async def refusal(self, timeout: float = TIMEOUT) -> pb.ConnectionRefusedMessage:
        return await asyncio.wait_for(self.refusals.get(), timeout)

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        await asyncio.wait_for(self.session.closed.wait(), timeout)

    async def close(self) -> None:
        await self.session.close("closed by the test")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.ws.close()
