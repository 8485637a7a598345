"""The Python SDK's coordinator link survives whatever signalling reaches it.

A real coordinator (in this event loop) relays between an SDK client and a
comm server played by the test (:class:`FakeServer`: it offers, echoes PINGs,
forwards TOPICs back as TOPIC_FW), and, on demand, misbehaves: repeated and
fresh offers after the session is up, offers that are not SDP, answers (which
a server never sends a client), candidates that are not candidates, bytes
that are not frames. A second registered server sends its own offer and a
refusal to the same client. Each frame must be dropped and counted by reason,
never end the link's reader; the client then still pings and exchanges
messages, and a new client still connects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.coordinator.harness import RunningCoordinator, TestPeer, running_coordinator
from tests.support import eventually
from webrtc_broker.client import BrokerClient
from webrtc_broker.client.link import SignallingDrop
from webrtc_broker.rtc import Session
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb

pytestmark = pytest.mark.timeout(60)

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
    coordinator: RunningCoordinator, name: str, before_offer: BeforeOffer | None = None
) -> AsyncIterator[FakeServer]:
    server = FakeServer(await coordinator.comm_server(name), before_offer)
    server.start()
    try:
        yield server
    finally:
        await server.close()


def junk_frames(server: FakeServer, client: int) -> list[tuple[bytes, SignallingDrop | None]]:
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
        (webrtc(pb.WEBRTC_OFFER, server.offers[client]), SignallingDrop.REPEATED_OFFER),
        (webrtc(pb.WEBRTC_OFFER, b"not an offer"), SignallingDrop.REPEATED_OFFER),
        (webrtc(pb.WEBRTC_ANSWER, server.offers[client]), SignallingDrop.UNEXPECTED_TYPE),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b"not json"), SignallingDrop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b'{"candidate": "garbage"}'), SignallingDrop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, b"[]"), SignallingDrop.REJECTED),
        (webrtc(pb.WEBRTC_ICE_CANDIDATE, candidate), None),
        (pb.ConnectMessage(type=pb.CONNECT, to_alias=client).SerializeToString(),
         SignallingDrop.UNEXPECTED_TYPE),
    ]  # fmt: skip


async def exchange(client: BrokerClient, topic: str, body: bytes) -> None:
    """A ping and a message through the server and back."""
    await asyncio.wait_for(client.ping(), 5)
    client.publish(topic, body)
    received = await asyncio.wait_for(client.receive(), 5)
    assert (received.topic, received.body) == (topic, body)


def reader_alive(client: BrokerClient) -> bool:
    link = client._link
    return link is not None and link._reader is not None and not link._reader.done()


async def test_junk_after_set_up_costs_nothing_but_counted_drops() -> None:
    async with (
        running_coordinator() as coordinator,
        fake_server(coordinator, "good") as server,
        fake_server(coordinator, "other") as other,
    ):
        url = coordinator.url("")
        client = await BrokerClient.connect(url, server=server.alias, timeout=10)
        try:
            await exchange(client, "t", b"before")
            junk = junk_frames(server, client.alias)
            for frame, _ in junk:
                await server.peer.send_raw(frame)
            # Another server: an offer of its own and a refusal, for a client it never served.
            rogue = Session(on_frame=lambda _d, _r: None)
            try:
                await other.signal(client.alias, pb.WEBRTC_OFFER, await rogue.create_offer())
            finally:
                await rogue.close()
            await other.peer.send(
                pb.ConnectionRefusedMessage(
                    type=pb.CONNECTION_REFUSED, to_alias=client.alias, reason=pb.SERVER_FULL
                )
            )
            expected: dict[str, int] = {}
            for _, reason in junk:
                if reason is not None:
                    expected[reason] = expected.get(reason, 0) + 1
            expected[SignallingDrop.WRONG_SENDER] = 2

            async def all_counted() -> bool:
                return dict(client.signalling_dropped) == expected

            await eventually(all_counted, timeout=10, interval=0.05)
            assert reader_alive(client), "the link's reader survived every frame"
            # What the coordinator never relays (not a broker frame), fed to the link directly.
            link = client._link
            assert link is not None
            for garbage in (b"\xff\xff\xff garbage", b"\x08"):
                await link._on_coordinator_frame(garbage)
            assert client.signalling_dropped[SignallingDrop.MALFORMED] == 2
            await exchange(client, "t", b"after")
            assert client.reconnects == 0, "the session itself was never lost"
            session = client.session
            assert session is not None and not session.closed.is_set()
        finally:
            await client.close()
        # And the next client connects as ever.
        fresh = await BrokerClient.connect(url, server=server.alias, timeout=10)
        try:
            await exchange(fresh, "u", b"fresh")
        finally:
            await fresh.close()


async def test_junk_before_the_offer_and_another_servers_offer_do_not_stop_the_set_up() -> None:
    async with running_coordinator() as coordinator, fake_server(coordinator, "other") as other:
        rogue = Session(on_frame=lambda _d, _r: None)

        async def before_offer(client: int) -> None:
            # The other server offers first: the client must wait for its own server's.
            await other.signal(client, pb.WEBRTC_OFFER, await rogue.create_offer())
            await server.signal(client, pb.WEBRTC_ANSWER, b"{}")
            await server.signal(client, pb.WEBRTC_ICE_CANDIDATE, b"not json")

        async with fake_server(coordinator, "good", before_offer) as server:
            try:
                client = await BrokerClient.connect(
                    coordinator.url(""), server=server.alias, timeout=10
                )
            finally:
                await rogue.close()
            try:
                await exchange(client, "t", b"hello")
                assert client.signalling_dropped[SignallingDrop.WRONG_SENDER] == 1
                assert client.signalling_dropped[SignallingDrop.UNEXPECTED_TYPE] == 1
                assert reader_alive(client)
            finally:
                await client.close()


async def test_an_offer_the_client_cannot_answer_fails_only_that_attempt() -> None:
    """A first offer that is not SDP ends that set-up at once (not at the timeout)."""
    async with running_coordinator() as coordinator:
        broken = {"on": True}

        async def before_offer(client: int) -> None:
            if broken["on"]:
                broken["on"] = False
                await server.signal(client, pb.WEBRTC_OFFER, b'{"type": "answer", "sdp": ""}')

        async with fake_server(coordinator, "good", before_offer) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(Exception, match="session closed during set-up"):
                await BrokerClient.connect(coordinator.url(""), server=server.alias, timeout=10)
            assert loop.time() - started < 5
            client = await BrokerClient.connect(
                coordinator.url(""), server=server.alias, timeout=10
            )
            try:
                await exchange(client, "t", b"second attempt")
            finally:
                await client.close()
