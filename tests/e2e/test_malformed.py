"""Hostile input never crashes a process: garbage on data channels and on the coordinator."""

from __future__ import annotations

import asyncio
import random

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.helpers import (
    TIMEOUT,
    connected,
    counter,
    eventually_equal,
    receive,
    subscribe,
)
from tests.rawpeer import RawPeer
from tests.support import Cluster
from webrtc_broker.wire import FrameError, decode
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.codec import encode_batch

HUGE = 200 * 1024
MAX_MESSAGE = 256 * 1024
"""The max-message-size aiortc announces: the largest data-channel message a peer takes."""


def not_a_frame(data: bytes) -> bool:
    try:
        decode(data)
    except FrameError:
        return True
    return False


def random_garbage(rng: random.Random, count: int, min_size: int, max_size: int) -> list[bytes]:
    """Random byte strings that are not broker frames (a few random ones would be)."""
    frames: list[bytes] = []
    while len(frames) < count:
        data = rng.randbytes(rng.randint(min_size, max_size))
        if not_a_frame(data):
            frames.append(data)
    return frames


def garbage_frames(rng: random.Random) -> tuple[list[bytes | str], list[bytes]]:
    """(frames that are not broker frames, valid frames of types a client may not send)."""
    topic = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"x" * 100).SerializeToString()
    malformed: list[bytes | str] = [
        *random_garbage(rng, 20, 1, 300),
        *(topic[:cut] for cut in (1, 3, 5, 9, len(topic) - 1)),  # truncated
        b"\x08\x63",  # unknown type 99
        b"\x08\x00",  # UNKNOWN_MESSAGE_TYPE
        b"\x08\xff\xff\xff\xff\x0f",  # type as a 5-byte varint
        b"\x08\x09\x22\xff",  # TOPIC with a body that overruns the frame
        *random_garbage(rng, 1, HUGE, HUGE),
        "hello, I am a text frame",
        "\x08\x09 text that starts like a TOPIC \u00e9\u4e2d",
    ]
    unexpected = [
        pb.WelcomeMessage(type=pb.WELCOME, alias=1, available_servers=[1]).SerializeToString(),
        pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=1, body=b"x").SerializeToString(),
        pb.ConnectMessage(type=pb.CONNECT, to_alias=1).SerializeToString(),
        pb.AuthMessage(type=pb.AUTH, role=pb.CLIENT, body=b"again").SerializeToString(),
    ]
    return malformed, unexpected


async def test_garbage_on_data_channels(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "alice", "bob") as (alice, bob):
        await subscribe(bob, ["room"])
        attacker = await RawPeer.connect(cluster.url)
        try:
            attacker.send_auth(b"attacker")
            await attacker.ping()
            rng = random.Random(1234)
            malformed, unexpected = garbage_frames(rng)
            for frame in [*malformed, *unexpected]:
                attacker.send(frame, reliable=True)
            # A BATCH is unpacked frame by frame: its garbage is counted, a nested BATCH
            # is refused, and the valid frame in it is relayed.
            inner = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"batched")
            nested = encode_batch([inner.SerializeToString()])
            attacker.send(encode_batch([b"\x08\x63", nested, inner.SerializeToString()]))
            await attacker.ping()  # reliable barrier: the server handled all of the above
            status = await cluster.server_status("s1")
            assert counter(status, "drops", "malformed") == len(malformed) + 1
            assert counter(status, "drops", "unexpected_type") == len(unexpected) + 1
            assert counter(status, "drops", "internal_error") == 0
            got = await receive(bob)
            assert (got.sender, got.body) == (attacker.alias, b"batched")

            # The same on the unreliable channel: small frames, paced by round trips so
            # that no burst makes SCTP abandon one (the channel has no retransmissions).
            small = [frame for frame in malformed if len(frame) < 1000]
            for frame in [*small, *unexpected]:
                attacker.send(frame, reliable=False)
                await attacker.ping()

            async def drops() -> tuple[int, int]:
                drops = (await cluster.server_status("s1"))["stats"]["drops"]
                return drops.get("malformed", 0), drops.get("unexpected_type", 0)

            expected = (len(malformed) + 1 + len(small), 2 * len(unexpected) + 1)
            await eventually_equal(drops, expected, timeout=TIMEOUT)

            # The attacker's own session survives, and so does a huge valid frame.
            await subscribe(alice, ["room"])
            big = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"B" * HUGE)
            attacker.send(big.SerializeToString())
            for receiver in (alice, bob):
                got = await receive(receiver)
                assert (got.sender, len(got.body)) == (attacker.alias, HUGE)
        finally:
            await attacker.close()

        alice.publish("room", "all good")
        assert (await receive(bob)).body == b"all good"
        status = await cluster.server_status("s1")
        assert (status["clients"], status["pending"]) == (2, 0)
        assert counter(status, "drops", "internal_error") == 0


async def test_garbage_on_the_coordinator_websocket(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    s1 = await cluster.alias_of("s1")
    rng = random.Random(99)
    # A peer sends garbage on its coordinator connection first, then behaves.
    peer = await RawPeer.open(cluster.url)
    try:
        frames: list[bytes | str] = [
            *random_garbage(rng, 20, 1, 200),
            b"\x08\x63",  # unknown type
            b"\x08\x02\x18",  # CONNECT truncated inside to_alias
            pb.PingMessage(type=pb.PING, time=1).SerializeToString(),  # not relayed
            pb.ConnectMessage(type=pb.CONNECT, to_alias=12345).SerializeToString(),  # nobody
            pb.ConnectMessage(type=pb.CONNECT, to_alias=peer.alias).SerializeToString(),  # self
            "a text frame",
            *random_garbage(rng, 1, 100 * 1024, 100 * 1024),
        ]
        for frame in frames:
            await peer.send_coordinator(frame)
        # The same connection still signals: a full session set-up through it works.
        await peer.establish(s1)
        peer.send_auth()
        await peer.ping()
    finally:
        await peer.close()

    # A frame above the coordinator's size limit costs only that connection.
    async with connect(f"{cluster.url}/connect", max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), TIMEOUT)  # WELCOME
        await ws.send(b"\x08\x02" + bytes(512 * 1024))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009  # message too big

    assert cluster.coordinator is not None and cluster.coordinator.running
    assert (await cluster.http.get(f"{cluster.http_url}/readyz")).status_code == 200
    async with connected(cluster, "alice", "bob") as (alice, bob):
        await subscribe(bob, ["room"])
        alice.publish("room", "the coordinator still relays")
        assert (await receive(bob)).body == b"the coordinator still relays"


async def test_frame_that_outgrows_the_peer_limit_when_relayed(cluster: Cluster) -> None:
    """A TOPIC at aiortc's 256 KiB message limit becomes a TOPIC_FW a few bytes larger
    (from_alias, topic name) that no subscriber can receive: it is dropped for them,
    without breaking the fan-out or the server."""
    await cluster.start_coordinator()
    # By default the server drops such a frame on arrival (max_frame_bytes is the SDK's
    # 255 KiB, see test_limits.py); let it through to reach the writers' own check.
    await cluster.start_server("s1", "--max-frame-bytes", str(MAX_MESSAGE))
    async with connected(cluster, "alice", "bob", "carol") as (alice, bob, carol):
        for client in (alice, bob, carol):
            await subscribe(client, ["room"])
        sender = await RawPeer.connect(cluster.url)
        try:
            sender.send_auth()
            await sender.ping()
            envelope = len(
                pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"").SerializeToString()
            )
            body = b"B" * (MAX_MESSAGE - envelope - 4)  # the body field's tag, 3-byte length
            frame = pb.TopicMessage(type=pb.TOPIC, topic="room", body=body).SerializeToString()
            assert len(frame) == MAX_MESSAGE
            sender.send(frame)
            sender.send(
                pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"next").SerializeToString()
            )
            for client in (alice, bob, carol):
                assert (await receive(client)).body == b"next"  # the big one never arrives
            await sender.ping()
        finally:
            await sender.close()
        status = await cluster.server_status("s1")
        assert counter(status, "frames_in", "client/topic") == 2
        assert counter(status, "drops", "internal_error") == 0
        alice.publish("room", "business as usual")
        assert (await receive(bob)).body == b"business as usual"
        assert (await receive(carol)).body == b"business as usual"
