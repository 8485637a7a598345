"""The comm server's per-client limits, on the real relay with fake sessions.

Each test exceeds one limit and checks three things: the offending frame had
no effect, it was counted under its reason, and the client's session goes on
(the limits drop, they never close). Comm servers are exempt from all of them.
"""

from __future__ import annotations

import pytest

from commserver.limits import (
    FRAME_TOO_LARGE,
    RATE_LIMITED,
    TOO_MANY_TOPICS,
    TOPIC_TOO_LONG,
    PeerLimits,
)
from tests.relayharness import make_harness, session_of
from webrtc_broker.client.client import MAX_FRAME_BYTES as SDK_MAX_FRAME_BYTES
from webrtc_broker.config import MAX_FRAME_BYTES, CommServerConfig
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as
from webrtc_broker.wire.subscription import subscription_frame


def test_default_frame_limit_is_what_the_sdk_may_send() -> None:
    # The SDK refuses (MessageTooLargeError) exactly what a default server would drop.
    assert MAX_FRAME_BYTES == SDK_MAX_FRAME_BYTES
    config = CommServerConfig.model_validate({})
    assert PeerLimits.from_config(config) == PeerLimits()
    assert PeerLimits().max_frame_bytes == MAX_FRAME_BYTES


def test_frame_above_max_frame_bytes_is_dropped() -> None:
    harness = make_harness(PeerLimits(max_frame_bytes=2000))
    alice, bob = harness.client(), harness.client()
    harness.subscribe(bob, ["room"])
    harness.publish(alice, "room", b"x" * 2000)  # the frame is a little larger
    harness.publish(alice, "room", b"x" * 1900)
    assert harness.stats.drops[FRAME_TOO_LARGE] == 1
    assert session_of(bob).sent == 1
    assert alice.established and not session_of(alice).close_reason

    # A server relays bigger frames than its clients may send (it adds the alias).
    server = harness.server("other")
    harness.publish(server, "room", b"x" * 5000)
    assert session_of(bob).sent == 2
    assert harness.stats.drops[FRAME_TOO_LARGE] == 1


def test_subscription_with_too_many_topics_is_refused_whole() -> None:
    harness = make_harness(PeerLimits(max_topics=3))
    alice, bob = harness.client(), harness.client()
    harness.subscribe(bob, ["a", "b"])
    harness.subscribe(bob, ["a", "b", "c", "d"])  # refused: the old set stays
    assert harness.stats.drops[TOO_MANY_TOPICS] == 1
    assert harness.relay.clients.topics_of(bob) == {"a", "b"}
    harness.publish(alice, "d", b"nobody")
    harness.publish(alice, "a", b"bob")
    assert session_of(bob).sent == 1
    harness.subscribe(bob, ["a", "b", "c"])  # at the limit is fine
    assert harness.relay.clients.topics_of(bob) == {"a", "b", "c"}


def test_topic_names_longer_than_max_topic_bytes() -> None:
    harness = make_harness(PeerLimits(max_topic_bytes=8))
    alice, bob = harness.client(), harness.client()
    harness.subscribe(bob, ["short", "x" * 9])
    harness.subscribe(bob, ["short", "é" * 5])  # 5 characters, 10 bytes
    assert harness.stats.drops[TOPIC_TOO_LONG] == 2
    assert harness.relay.clients.topics_of(bob) == frozenset()
    harness.subscribe(bob, ["short", "é" * 4, "x" * 8])
    assert harness.relay.clients.topics_of(bob) == {"short", "é" * 4, "x" * 8}

    harness.publish(alice, "x" * 9, b"too long")
    identity = pb.TopicIdentityMessage(type=pb.TOPIC_IDENTITY, topic="y" * 20, body=b"too")
    harness.relay.handle(alice, identity.SerializeToString(), False)
    assert harness.stats.drops[TOPIC_TOO_LONG] == 4
    harness.publish(alice, "x" * 8, b"fine")
    assert session_of(bob).sent == 1


class FakeClock:
    """Stands in for the relay's ``perf_counter``: time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_publish_rate_drops_the_excess_and_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("commserver.relay.perf_counter", clock)
    harness = make_harness(PeerLimits(publish_rate=50.0, publish_burst=10))
    alice, bob, carol = harness.client(), harness.client(), harness.client()
    harness.subscribe(bob, ["room"])
    for index in range(25):  # all at once: the burst goes through, the rest is dropped
        harness.publish(alice, "room", str(index).encode())
    assert session_of(bob).sent == 10
    assert harness.stats.drops[RATE_LIMITED] == 15
    last = decode_as(session_of(bob).last[-1][0], pb.TopicFWMessage)
    assert last.body == b"9"  # in order: the first ten

    # Each client has its own bucket, and every frame pays: PINGs too (each is echoed).
    harness.publish(carol, "room", b"carol")
    assert session_of(bob).sent == 11
    ping = pb.PingMessage(type=pb.PING, time=1.0).SerializeToString()
    for _ in range(20):
        harness.relay.handle(carol, ping, True)
    assert session_of(carol).sent == 9
    assert harness.stats.drops[RATE_LIMITED] == 15 + 11

    clock.now += 0.1  # 5 tokens at 50/s
    for index in range(8):
        harness.publish(alice, "room", f"later {index}".encode())
    assert session_of(bob).sent == 16
    assert harness.stats.drops[RATE_LIMITED] == 26 + 3

    clock.now += 3600  # a long pause refills up to the burst, not beyond
    for index in range(15):
        harness.publish(alice, "room", f"after a pause {index}".encode())
    assert session_of(bob).sent == 26
    assert harness.stats.drops[RATE_LIMITED] == 29 + 5
    assert alice.established and not session_of(alice).close_reason


def test_frames_inside_a_batch_pay_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("commserver.relay.perf_counter", clock)
    harness = make_harness(PeerLimits(publish_rate=100.0, publish_burst=50))
    alice = harness.client()
    ping = pb.PingMessage(type=pb.PING).SerializeToString()  # 60,000 fit in one message
    batch = pb.BatchMessage(type=pb.BATCH, frames=[ping] * 60_000).SerializeToString()
    harness.relay.handle(alice, batch, False)
    assert session_of(alice).sent == 50  # the burst is echoed, the rest dropped at once
    assert harness.stats.drops[RATE_LIMITED] == 60_000 - 50
    harness.relay.handle(alice, batch, False)  # an empty bucket: nothing goes through
    assert session_of(alice).sent == 50
    assert harness.stats.drops[RATE_LIMITED] == 2 * 60_000 - 50

    clock.now += 0.1  # 10 tokens
    small = pb.BatchMessage(type=pb.BATCH, frames=[ping] * 4).SerializeToString()
    for _ in range(3):
        harness.relay.handle(alice, small, False)
    assert session_of(alice).sent == 50 + 10
    assert alice.established and not session_of(alice).close_reason


@pytest.mark.parametrize("compress", [False, True])
def test_subscriptions_pay_for_their_size(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    clock = FakeClock()
    monkeypatch.setattr("commserver.relay.perf_counter", clock)
    harness = make_harness(PeerLimits(publish_rate=100.0, publish_burst=100))
    alice, bob = harness.client(), harness.client()
    topics = [f"topic-{index:04}-" + "x" * 40 for index in range(900)]  # about 45 KiB
    frame = subscription_frame(topics, compress=compress)
    harness.relay.handle(alice, frame, True)
    assert harness.relay.clients.topics() == frozenset(topics)
    # 1 + 45 tokens: the bucket is down to about 54; two more such lists put it in debt,
    # the fourth is refused before it is inflated.
    for _ in range(3):
        harness.relay.handle(alice, frame, True)
    assert harness.stats.drops[RATE_LIMITED] == 1
    ping = pb.PingMessage(type=pb.PING, time=1.0).SerializeToString()
    harness.relay.handle(alice, ping, True)  # in debt: even a PING waits for the refill
    assert harness.stats.drops[RATE_LIMITED] == 2
    harness.relay.handle(bob, ping, True)  # others are not charged
    assert session_of(bob).sent == 1


def test_servers_and_zero_rate_are_not_rate_limited() -> None:
    harness = make_harness(PeerLimits(publish_rate=1.0, publish_burst=1))
    bob = harness.client()
    harness.subscribe(bob, ["room"])
    server = harness.server("other")
    for _ in range(50):
        harness.publish(server, "room", b"relayed")
    assert session_of(bob).sent == 50

    unlimited = make_harness(PeerLimits(publish_rate=0.0, publish_burst=1))
    alice, bob = unlimited.client(), unlimited.client()
    unlimited.subscribe(bob, ["room"])
    for _ in range(50):
        unlimited.publish(alice, "room", b"x")
    assert session_of(bob).sent == 50
    assert unlimited.stats.drops[RATE_LIMITED] == 0


def test_batched_frames_count_against_the_rate_one_by_one() -> None:
    from webrtc_broker.wire.codec import encode_batch  # noqa: PLC0415

    harness = make_harness(PeerLimits(publish_rate=0.001, publish_burst=3))
    alice, bob = harness.client(), harness.client()
    harness.subscribe(bob, ["room"])
    frame = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"b").SerializeToString()
    harness.relay.handle(alice, encode_batch([frame] * 5), True)
    assert session_of(bob).sent == 3
    assert harness.stats.drops[RATE_LIMITED] == 2
