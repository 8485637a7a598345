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

HUGE = 200 * 1024


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
            await attacker.ping()  # reliable barrier: the server handled all of the above
            status = await cluster.server_status("s1")
            assert counter(status, "drops", "malformed") == len(malformed)
            assert counter(status, "drops", "unexpected_type") == len(unexpected)
            assert counter(status, "drops", "internal_error") == 0

            # The same on the unreliable channel (small frames: none is lost on loopback).
            small = [frame for frame in malformed if len(frame) < 1000]
            for frame in [*small, *unexpected]:
                attacker.send(frame, reliable=False)

            async def drops() -> tuple[int, int]:
                drops = (await cluster.server_status("s1"))["stats"]["drops"]
                return drops.get("malformed", 0), drops.get("unexpected_type", 0)

            await eventually_equal(
                drops, (len(malformed) + len(small), 2 * len(unexpected)), timeout=TIMEOUT
            )

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
