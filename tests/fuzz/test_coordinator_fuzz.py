"""Fuzzing the coordinator's WebSocket handler, in process, through its ASGI app.

Each example builds a fresh app with :func:`coordinator.create_app` and
drives its ``/connect`` and ``/discover`` endpoints with ASGI messages
directly (no network, no uvicorn): a comm server and a client connect, then
both send random and mutated signalling frames. Properties:

* no exception escapes the endpoint, and neither peer is disconnected;
* every frame is accounted for: relayed or dropped under exactly one reason;
* nothing reaches a peer with a sender alias other than the real sender's;
* afterwards the coordinator still relays a valid frame both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coordinator import create_app
from coordinator.core import Coordinator
from coordinator.counters import DropReason
from tests.coordinator.harness import make_config
from tests.fuzz.mutations import fuzz_settings, hostile_frames
from webrtc_broker.wire import FrameError, decode, decode_as
from webrtc_broker.wire import broker_pb2 as pb

TIMEOUT = 5.0


class AsgiPeer:
    """One WebSocket peer speaking ASGI to the app: what uvicorn would do, in memory."""

    def __init__(self, app: Any, path: str, query: bytes = b"") -> None:
        self._app = app
        self._scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 9090),
            "subprotocols": [],
        }
        self._incoming: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed_with: int | None = None
        self.alias = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._incoming.put_nowait({"type": "websocket.connect"})
        self._task = asyncio.create_task(self._app(self._scope, self._receive, self._send))
        welcome = decode_as(await asyncio.wait_for(self.frames.get(), TIMEOUT), pb.WelcomeMessage)
        self.alias = welcome.alias

    async def _receive(self) -> Mapping[str, Any]:
        return await self._incoming.get()

    async def _send(self, message: Mapping[str, Any]) -> None:
        if message["type"] == "websocket.send":
            assert message.get("bytes") is not None, "the coordinator sent a text frame"
            self.frames.put_nowait(message["bytes"])
        elif message["type"] == "websocket.close":
            self.closed_with = int(message.get("code", 1000))

    def send(self, frame: bytes | str) -> None:
        key = "text" if isinstance(frame, str) else "bytes"
        self._incoming.put_nowait({"type": "websocket.receive", key: frame})

    async def next_frame(self, predicate: Any) -> bytes:
        """The next frame for which ``predicate(frame)`` holds, skipping others."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await self.frames.get()
                if predicate(frame):
                    return frame

    async def disconnect(self) -> None:
        """Leave, and surface any exception the endpoint raised."""
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        assert self._task is not None
        await asyncio.wait_for(self._task, TIMEOUT)


def signalling_frames(to_alias: int, spoofed: int) -> list[bytes]:
    """A valid frame of every type the coordinator relays, for mutating."""
    offer = b'{"type": "offer", "sdp": "v=0"}'
    messages = [
        pb.ConnectMessage(type=pb.CONNECT, from_alias=spoofed, to_alias=to_alias),
        pb.WebRtcMessage(type=pb.WEBRTC_OFFER, from_alias=spoofed, to_alias=to_alias, data=offer),
        pb.WebRtcMessage(type=pb.WEBRTC_ANSWER, to_alias=to_alias, data=offer),
        pb.WebRtcMessage(type=pb.WEBRTC_ICE_CANDIDATE, to_alias=to_alias, data=b"{}"),
        pb.ConnectionRefusedMessage(
            type=pb.CONNECTION_REFUSED, to_alias=to_alias, reason=pb.SERVER_FULL, data=b"x"
        ),
        pb.PingMessage(type=pb.PING, time=1.0),
    ]
    return [message.SerializeToString() for message in messages]


def is_probe(tag: bytes) -> Any:
    def check(frame: bytes) -> bool:
        try:
            message = decode_as(frame, pb.WebRtcMessage)
        except FrameError:
            return False
        return message.type == pb.WEBRTC_ICE_CANDIDATE and message.data == tag

    return check


def probe(to_alias: int, tag: bytes) -> bytes:
    return pb.WebRtcMessage(
        type=pb.WEBRTC_ICE_CANDIDATE, to_alias=to_alias, data=tag
    ).SerializeToString()


def accounted(coordinator: Coordinator) -> int:
    counters = coordinator.counters
    relayed, dropped = counters.frames_relayed, counters.frames_dropped
    return sum(relayed.values()) + sum(dropped.values()) + counters.load_reports


async def exchange(draw: st.DataObject) -> None:
    app = create_app(make_config())
    coordinator: Coordinator = app.state.coordinator
    server = AsgiPeer(app, "/discover", b"role=COMMUNICATION_SERVER&name=s")
    client = AsgiPeer(app, "/connect")
    await server.connect()
    await client.connect()
    senders = {"client": (client, server), "server": (server, client)}
    count = draw.draw(st.integers(1, 40), label="frames")
    for _ in range(count):
        role = draw.draw(st.sampled_from(sorted(senders)), label="sender")
        sender, receiver = senders[role]
        bases = signalling_frames(receiver.alias, spoofed=receiver.alias + 7)
        bases += signalling_frames(sender.alias, spoofed=0)  # to itself
        sender.send(draw.draw(hostile_frames(bases), label="frame"))

    # Each reader handles its peer's frames in order: once a probe sent after them
    # comes out on the other side, every earlier frame of that peer was handled.
    for tag, (sender, receiver) in (
        (b"probe-c", senders["client"]),
        (b"probe-s", senders["server"]),
    ):
        sender.send(probe(receiver.alias, tag))
    for tag, peer in ((b"probe-c", server), (b"probe-s", client)):
        forwarded = decode_as(await peer.next_frame(is_probe(tag)), pb.WebRtcMessage)
        assert forwarded.from_alias == (client.alias if peer is server else server.alias)

    dropped = coordinator.counters.frames_dropped
    assert dropped[DropReason.INTERNAL_ERROR] == 0
    assert accounted(coordinator) == count + 2
    for peer, other in ((server, client), (client, server)):
        assert peer.closed_with is None
        while not peer.frames.empty():  # all that reached a peer came from the other one
            message = decode(peer.frames.get_nowait())
            assert getattr(message, "from_alias", other.alias) == other.alias

    # Still relaying both ways. Fuzzed CONNECTs may have used up the client's budget
    # of unanswered ones; the server's offer answers one, so a CONNECT passes again.
    server.send(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=client.alias).SerializeToString())
    await client.next_frame(lambda f: decode(f).type == pb.WEBRTC_OFFER)
    client.send(pb.ConnectMessage(type=pb.CONNECT, to_alias=server.alias).SerializeToString())
    connect = decode_as(
        await server.next_frame(lambda f: decode(f).type == pb.CONNECT), pb.ConnectMessage
    )
    assert (connect.from_alias, connect.from_role) == (client.alias, pb.CLIENT)
    await server.disconnect()
    await client.disconnect()
    assert coordinator.registry.peers() == []


@fuzz_settings
@given(st.data())
def test_hostile_signalling_frames(data: st.DataObject) -> None:
    asyncio.run(exchange(data))
