"""TOPIC_IDENTITY stamping (no spoofing, across servers too) and PING echoes."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.e2e.helpers import TIMEOUT, connected, receive, start_mesh, subscribe, wait_status
from tests.rawpeer import RawPeer
from tests.support import Cluster
from webrtc_broker.client import BrokerClient, PingTimeoutError
from webrtc_broker.client.client import PING_TIMEOUT
from webrtc_broker.wire import broker_pb2 as pb


async def test_identity_is_the_authenticated_credentials(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2")
    async with (
        connected(cluster, "alice@example", server="s1") as (alice,),
        connected(cluster, "bob", "carol", server="s2") as (bob, carol),
    ):
        await subscribe(alice, ["room", "a"])
        await subscribe(bob, ["room", "b"])
        await subscribe(carol, ["room"])
        await wait_status(cluster, "s1", "server_topics", 2)  # room and b
        await wait_status(cluster, "s2", "server_topics", 2)  # room and a

        alice.publish_identity("room", "signed by alice")
        for receiver in (bob, carol):  # across the server hop
            got = await receive(receiver)
            assert (got.sender, got.body, got.identity, got.role) == (
                alice.alias,
                b"signed by alice",
                b"alice@example",
                pb.CLIENT,
            )
        bob.publish_identity("room", "signed by bob", reliable=False)
        got = await receive(carol)  # same server
        assert (got.sender, got.identity, got.role, got.reliable) == (
            bob.alias,
            b"bob",
            pb.CLIENT,
            False,
        )
        got = await receive(alice)
        assert (got.sender, got.identity, got.role) == (bob.alias, b"bob", pb.CLIENT)


async def test_identity_and_sender_cannot_be_spoofed(cluster: Cluster) -> None:
    aliases = await start_mesh(cluster, "s1", "s2")
    mallory = await RawPeer.connect(cluster.url, server=aliases["s1"], token="mallory")
    try:
        mallory.send_auth(b"mallory")
        await mallory.ping()  # the server accepted the AUTH
        async with (
            connected(cluster, "alice", server="s1") as (alice,),
            connected(cluster, "bob", server="s2") as (bob,),
        ):
            await subscribe(alice, ["room"])
            await subscribe(bob, ["room", "b"])
            await wait_status(cluster, "s1", "server_topics", 2)

            forged = pb.TopicIdentityMessage(
                type=pb.TOPIC_IDENTITY,
                from_alias=alice.alias,
                topic="room",
                identity=b"admin",
                role=pb.COMMUNICATION_SERVER,
                body=b"trust me",
            )
            mallory.send(forged.SerializeToString())
            mallory.send(forged.SerializeToString(), reliable=False)
            for receiver in (alice, bob):
                forged_got = {
                    (m.sender, m.identity, m.role, m.body, m.reliable)
                    for m in [await receive(receiver), await receive(receiver)]
                }
                stamped = (mallory.alias, b"mallory", pb.CLIENT, b"trust me")
                assert forged_got == {(*stamped, True), (*stamped, False)}

            plain = pb.TopicMessage(
                type=pb.TOPIC, from_alias=alice.alias, topic="room", body=b"plain forged"
            )
            mallory.send(plain.SerializeToString())
            for receiver in (alice, bob):
                got = await receive(receiver)
                assert (got.sender, got.body, got.identity) == (
                    mallory.alias,
                    b"plain forged",
                    None,
                )
    finally:
        await mallory.close()


async def test_ping_is_echoed_on_both_channels(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "alice") as (alice,):
        for reliable in (True, False):
            rtt = await asyncio.wait_for(alice.ping(reliable=reliable), TIMEOUT)
            assert 0 < rtt < TIMEOUT
        # Concurrent probes are matched to their own echoes.
        rtts = await asyncio.wait_for(
            asyncio.gather(*(alice.ping(reliable=i % 2 == 0) for i in range(20))), TIMEOUT
        )
        assert len(rtts) == 20
        assert all(rtt > 0 for rtt in rtts)
        status = await cluster.server_status("s1")
        # Reliable PINGs include the SDK's own post-AUTH probe.
        assert status["stats"]["frames_in"]["client/ping"] >= 22


async def test_raw_ping_comes_back_unchanged(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    peer = await RawPeer.connect(cluster.url)
    try:
        peer.send_auth()
        await peer.ping()
        probe = pb.PingMessage(type=pb.PING, time=1234.5).SerializeToString()
        for reliable in (True, False):
            peer.send(probe, reliable=reliable)
        echoes = await asyncio.wait_for(asyncio.gather(peer.pongs.get(), peer.pongs.get()), TIMEOUT)
        assert set(echoes) == {(1234.5, True), (1234.5, False)}
    finally:
        await peer.close()


async def test_ping_times_out_on_a_frozen_server(cluster: Cluster) -> None:
    """A server that stops answering fails ``ping()`` at its timeout, not never."""
    await cluster.start_coordinator()
    server = await cluster.start_server("s1")
    assert server.process is not None
    # No keepalive: the ping's own timeout is the only thing that can end the wait.
    alice = await BrokerClient.connect(cluster.url, "alice", keepalive=None, reconnect=None)
    try:
        assert 0 < PING_TIMEOUT <= 30  # the default is bounded too
        server.process.send_signal(signal.SIGSTOP)
        try:
            for reliable in (True, False):
                started = time.monotonic()
                with pytest.raises(PingTimeoutError, match=r"within 0\.5 s") as timed_out:
                    await asyncio.wait_for(alice.ping(reliable=reliable, timeout=0.5), TIMEOUT)
                assert isinstance(timed_out.value, TimeoutError)
                assert 0.45 < time.monotonic() - started < 3
        finally:
            server.process.send_signal(signal.SIGCONT)
        # The session outlives a timed-out ping.
        assert 0 < await alice.ping(timeout=TIMEOUT) < TIMEOUT
    finally:
        await alice.close()
