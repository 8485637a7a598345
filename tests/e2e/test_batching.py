"""Batching is negotiated and transparent: every kind of peer gets the same messages.

A burst of reliable messages on one topic reaches three subscribers on one
server: the SDK (announces batching and topic names), the SDK acting as a
client of the original protocol (announces nothing), and a raw peer of the
original protocol whose frames the test inspects byte for byte.
"""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import TIMEOUT, connected, receive, subscribe
from tests.rawpeer import RawPeer
from tests.support import Cluster
from webrtc_broker.client import BrokerClient
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type
from webrtc_broker.wire.subscription import subscription_frame

TOPIC = "burst"
COUNT = 200


async def _raw_subscriber(cluster: Cluster, server: int, capabilities: int) -> RawPeer:
    peer = await RawPeer.connect(cluster.url, server=server)
    peer.send_auth(b"raw", capabilities=capabilities)
    peer.send(subscription_frame([TOPIC]))
    await peer.ping()
    return peer


async def _raw_messages(peer: RawPeer, count: int) -> tuple[list[bytes], int]:
    """The first ``count`` topic frames a raw peer got, unpacked, and how many were batches."""
    frames: list[bytes] = []
    batches = 0
    async with asyncio.timeout(TIMEOUT):
        while len(frames) < count:
            data, _ = await peer.frames.get()
            kind = frame_type(data)
            if kind == pb.BATCH:
                batches += 1
                frames += decode_as(data, pb.BatchMessage).frames
            elif kind in (pb.TOPIC_FW, pb.AUTH):
                frames.append(data)
    return [f for f in frames if frame_type(f) == pb.TOPIC_FW], batches


async def test_batched_and_unbatched_peers_receive_the_same_messages(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    server = await cluster.alias_of("s1")
    old_raw = await _raw_subscriber(cluster, server, capabilities=0)
    new_raw = await _raw_subscriber(cluster, server, capabilities=pb.CAPABILITY_BATCH)
    async with connected(cluster, "publisher", "batched") as (publisher, batched):
        old_sdk = await BrokerClient.connect(cluster.url, "old", server=server, capabilities=0)
        try:
            for client in (batched, old_sdk):
                await subscribe(client, [TOPIC])
            assert batched.server_capabilities & pb.CAPABILITY_BATCH
            assert old_sdk.server_capabilities == 0  # the server never answers an old AUTH

            bodies = [f"message {i}".encode() for i in range(COUNT)]
            for body in bodies:
                publisher.publish(TOPIC, body, reliable=True)

            got_batched = [await receive(batched) for _ in bodies]
            got_old = [await receive(old_sdk) for _ in bodies]
            assert [m.body for m in got_batched] == bodies
            assert [m.body for m in got_old] == bodies
            assert {m.topic for m in got_batched} == {TOPIC}
            assert {m.topic for m in got_old} == {None}

            old_frames, old_batches = await _raw_messages(old_raw, COUNT)
            expected = [
                pb.TopicFWMessage(
                    type=pb.TOPIC_FW, from_alias=publisher.alias, body=body
                ).SerializeToString()
                for body in bodies
            ]
            assert old_batches == 0
            assert old_frames == expected  # byte for byte the original protocol

            new_frames, new_batches = await _raw_messages(new_raw, COUNT)
            assert new_frames == expected  # no topic names: this peer did not ask
            assert 0 < new_batches < COUNT  # the burst was packed into fewer messages
        finally:
            await old_sdk.close()
            await old_raw.close()
            await new_raw.close()


async def test_old_protocol_client_publishes_to_batched_clients(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "batched") as (batched,):
        old = await BrokerClient.connect(cluster.url, "old", capabilities=0)
        try:
            await subscribe(batched, [TOPIC])
            for i in range(20):
                old.publish(TOPIC, f"old {i}", reliable=True)
            got = [(await receive(batched)).body for _ in range(20)]
            assert got == [f"old {i}".encode() for i in range(20)]
        finally:
            await old.close()


async def test_unbatched_server_still_serves_new_clients(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--batch-window", "0")
    async with connected(cluster, "a", "b") as (alice, bob):
        await subscribe(bob, [TOPIC])
        assert bob.server_capabilities == pb.CAPABILITY_TOPIC_NAMES
        alice.publish(TOPIC, b"hello", reliable=True)
        message = await receive(bob)
        assert (message.body, message.topic) == (b"hello", TOPIC)
