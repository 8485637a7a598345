"""A comm server's per-client limits, set by flags, exceeded by real clients.

Every limit drops the offending frame, counts it (``/status`` and
``/metrics``) and leaves the session up; the frames around it go through.
"""

from __future__ import annotations

from tests.e2e.helpers import (
    assert_nothing_received,
    connected,
    counter,
    eventually_equal,
    receive,
    receive_bodies,
    subscribe,
)
from tests.rawpeer import RawPeer
from tests.support import Cluster
from webrtc_broker.wire import broker_pb2 as pb

LIMITS = (
    "--max-frame-bytes", "4096",
    "--max-topics-per-peer", "3",
    "--max-topic-bytes", "16",
    "--publish-rate", "0.5",
    "--publish-burst", "10",
)  # fmt: skip


async def drop_count(cluster: Cluster, reason: str) -> int:
    return counter(await cluster.server_status("s1"), "drops", reason)


async def test_limits_drop_count_and_keep_the_session(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1", *LIMITS)
    async with connected(cluster, "alice", "bob") as (alice, bob):
        await subscribe(bob, ["room", "other"])

        # Frame size: the SDK would send it (its limit is 255 KiB); this server will not.
        alice.publish("room", b"x" * 5000)
        alice.publish("room", "small")
        assert (await receive(bob)).body == b"small"

        # Topics per peer and topic length: the subscription is refused whole.
        await subscribe(bob, ["room", "a", "b", "c"])
        await subscribe(bob, ["room", "t" * 17])
        alice.publish("room", "still subscribed to room")
        assert (await receive(bob)).body == b"still subscribed to room"
        alice.publish("t" * 17, "to a topic nobody may subscribe to")
        alice.publish("other", "other stays subscribed")
        assert (await receive(bob)).body == b"other stays subscribed"
        await assert_nothing_received(bob, after=alice)

        # Frame rate: dave's bucket holds 10 and refills at 0.5/s. Every frame pays,
        # PINGs included, so dave is a hand-driven client that sends nothing unasked.
        dave = await RawPeer.connect(cluster.url)
        try:
            dave.send_auth()
            for index in range(30):
                frame = pb.TopicMessage(type=pb.TOPIC, topic="room", body=f"{index}".encode())
                dave.send(frame.SerializeToString())
            ping = pb.PingMessage(type=pb.PING, time=1.0).SerializeToString()
            for _ in range(5):  # over the budget: not echoed, counted
                dave.send(ping)
            got = await receive_bodies(bob, 10)
            assert got == [f"{index}".encode() for index in range(10)]
            await eventually_equal(lambda: drop_count(cluster, "rate_limited"), 25)
            await assert_nothing_received(bob)
            assert dave.pongs.empty()
        finally:
            await dave.close()

        status = await cluster.server_status("s1")
        drops = status["stats"]["drops"]
        assert drops.get("frame_too_large") == 1
        assert drops.get("too_many_topics") == 1
        assert drops.get("topic_too_long") == 2
        assert drops.get("rate_limited") == 25
        assert counter(status, "drops", "internal_error") == 0
        assert status["clients"] == 2  # nobody was closed (dave has left)

        metrics = (
            await cluster.http.get(f"http://127.0.0.1:{cluster.servers['s1'].http_port}/metrics")
        ).text
        for reason, value in drops.items():
            if reason in ("frame_too_large", "too_many_topics", "topic_too_long", "rate_limited"):
                line = (
                    f'webrtc_broker_commserver_frames_dropped_total{{reason="{reason}"}} {value}.0'
                )
                assert line in metrics


async def test_frame_limit_applies_before_auth(cluster: Cluster) -> None:
    """A peer cannot make the server parse a huge first frame: it is dropped unread,
    and the session, which never authenticated, expires."""
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--max-frame-bytes", "2048", "--establish-timeout", "2")
    peer = await RawPeer.connect(cluster.url)
    try:
        auth = pb.AuthMessage(type=pb.AUTH, role=pb.CLIENT, body=b"x" * 4096)
        peer.send(auth.SerializeToString())
        await peer.wait_closed()
    finally:
        await peer.close()
    status = await cluster.server_status("s1")
    assert counter(status, "drops", "frame_too_large") == 1
    assert counter(status, "sessions", "failed:establish_timeout") == 1
    assert counter(status, "sessions", "established:client") == 0
