"""A comm server played by a test: just enough for a client's session, and misbehaving on demand.

:class:`FakeServer` registers with a coordinator on ``/discover`` like a
comm server, answers a client's CONNECT with a real WebRTC offer (aiortc),
echoes PINGs and sends TOPICs back to their publisher as TOPIC_FW. Through
:meth:`FakeServer.signal` and the raw WebSocket a test sends whatever it
likes to a client: repeated offers, answers, broken candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from websockets.asyncio.client import connect

from tests.coordinator.harness import TestPeer
from webrtc_broker.client.link import SignallingDrop as Drop
from webrtc_broker.rtc import Session
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb

BeforeOffer = Callable[[int], Awaitable[None]]


@dataclass
class FakeServer:
    """A comm server reduced to what a client needs, driven by the test."""

    peer: TestPeer
    before_offer: BeforeOffer | None = None
    """Called with the client's alias on CONNECT, before the offer goes out."""
    sessions: dict[int, Session] = field(default_factory=dict)
    offers: dict[int, bytes] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    @property
    def alias(self) -> int:
        return self.peer.alias

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for session in self.sessions.values():
            await session.close()

    async def signal(self, to: int, kind: pb.MessageType.ValueType, data: bytes) -> None:
        await self.peer.send(pb.WebRtcMessage(type=kind, to_alias=to, data=data))

    async def _read(self) -> None:
        async for data in self.peer.ws:
            if not isinstance(data, bytes):
                continue
            kind = frame_type(data)
            if kind == pb.CONNECT:
                client = decode_as(data, pb.ConnectMessage).from_alias
                if self.before_offer is not None:
                    await self.before_offer(client)
                session = Session(on_frame=self._on_frame_of(client))
                self.sessions[client] = session
                self.offers[client] = await session.create_offer()
                await self.signal(client, pb.WEBRTC_OFFER, self.offers[client])
            elif kind == pb.WEBRTC_ICE_CANDIDATE:  # a browser trickles its candidates
                candidate = decode_as(data, pb.WebRtcMessage)
                known = self.sessions.get(candidate.from_alias)
                if known is not None:
                    with contextlib.suppress(Exception):
                        await known.add_candidate(candidate.data)
            elif kind == pb.WEBRTC_ANSWER:
                answer = decode_as(data, pb.WebRtcMessage)
                with contextlib.suppress(Exception):  # the client's business, not the test's
                    await self.sessions[answer.from_alias].accept_answer(answer.data)

    def _on_frame_of(self, client: int) -> Callable[[bytes, bool], None]:
        def on_frame(data: bytes, reliable: bool) -> None:
            session = self.sessions[client]
            try:
                kind = frame_type(data)
            except FrameError:
                return
            if kind == pb.PING:
                session.send(data, reliable=reliable, immediate=True)
            elif kind == pb.TOPIC:
                topic = decode_as(data, pb.TopicMessage)
                forward = pb.TopicFWMessage(
                    type=pb.TOPIC_FW, from_alias=client, body=topic.body, topic=topic.topic
                )
                session.send(forward.SerializeToString(), reliable=reliable)

        return on_frame


@contextlib.asynccontextmanager
async def fake_server(
    coordinator_url: str, name: str, before_offer: BeforeOffer | None = None
) -> AsyncIterator[FakeServer]:
    """A :class:`FakeServer` registered at the coordinator's ``ws://`` URL as ``name``."""
    query = urlencode({"role": "COMMUNICATION_SERVER", "name": name})
    ws = await connect(f"{coordinator_url.rstrip('/')}/discover?{query}", max_size=1024 * 1024)
    try:
        welcome = decode_as(await asyncio.wait_for(ws.recv(decode=False), 10), pb.WelcomeMessage)
    except BaseException:
        await ws.close()
        raise
    server = FakeServer(TestPeer(ws, welcome), before_offer)
    server.start()
    try:
        yield server
    finally:
        await server.close()
        await ws.close()


def junk_frames(server: FakeServer, client: int) -> list[tuple[bytes, Drop | None]]:
    """Frames a misbehaving server sends an established client, and what each should cost.

    None: the frame is used, harmlessly (a well-formed candidate of an unreachable
    address only adds a connectivity check that fails). Frames that are not broker
    frames at all are dropped by the coordinator before they reach a client.
    """

    def webrtc(kind: pb.MessageType.ValueType, data: bytes) -> bytes:
        return pb.WebRtcMessage(
            type=kind, from_alias=server.alias, to_alias=client, data=data
        ).SerializeToString()

    candidate = b'{"candidate": "candidate:1 1 udp 1 10.9.9.9 9 typ host", "sdpMid": "7"}'
    return [
        (webrtc(pb.WEBRTC_OFFER, server.offers[client]), Drop.REPEATED_OFFER),
        (webrtc(pb.WEBRTC_OFFER, b"not an offer"), Drop.REPEATED_OFFER),
        (webrtc(pb.WEBRTC_ANSWER, server.offers[client]), Drop.UNEXPECTED_TYPE),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b"not json"), Drop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b'{"candidate": "garbage"}'), Drop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b"[]"), Drop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, candidate), None),
        (pb.ConnectMessage(type=pb.CONNECT, to_alias=client).SerializeToString(),
         Drop.UNEXPECTED_TYPE),
    ]  # fmt: skip


async def stranger_signals(other: FakeServer, client: int) -> None:
    """Another server's offer and refusal, for a client it never served."""
    rogue = Session(on_frame=lambda _d, _r: None)
    try:
        await other.signal(client, pb.WEBRTC_OFFER, await rogue.create_offer())
    finally:
        await rogue.close()
    await other.peer.send(
        pb.ConnectionRefusedMessage(
            type=pb.CONNECTION_REFUSED, to_alias=client, reason=pb.SERVER_FULL
        )
    )
