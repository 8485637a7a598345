"""What comm servers tell each other about topics: changes, in chunks, at any scale.

The relay is the real one with fake sessions (:mod:`tests.relayharness`);
what a server sends to its peers is decoded and applied to another relay, as
the peer would.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from commserver.peer import Peer
from tests.relayharness import RelayHarness, make_harness, session_of
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type
from webrtc_broker.wire.subscription import subscription_frame, subscription_topics

TOPICS = 100_000
DATA_CHANNEL_MESSAGE = 256 * 1024


def record(peer: Peer) -> list[bytes]:
    """Every frame the relay sends ``peer`` from now on."""
    frames: list[bytes] = []
    session = session_of(peer)
    original: Callable[..., None] = session.send

    def send(frame: bytes, *, reliable: bool, immediate: bool = False) -> None:
        frames.append(frame)
        original(frame, reliable=reliable, immediate=immediate)

    session.send = send  # type: ignore[method-assign]
    return frames


def subscriptions(
    frames: list[bytes],
) -> list[tuple[pb.SubscriptionChange.ValueType, frozenset[str]]]:
    found = []
    for frame in frames:
        if frame_type(frame) == pb.SUBSCRIPTION:
            message = decode_as(frame, pb.SubscriptionMessage)
            found.append((message.change, subscription_topics(message, max_bytes=1 << 24)))
    return found


def names(start: int, count: int) -> list[str]:
    return [f"user-{index:07d}-inbox" for index in range(start, start + count)]


def bulk_subscribe(harness: RelayHarness, topics: list[str], per_client: int = 1000) -> None:
    for start in range(0, len(topics), per_client):
        harness.subscribe(harness.client(), topics[start : start + per_client])


def test_only_changes_travel_to_servers_that_take_them() -> None:
    harness = make_harness()
    modern = harness.server("modern", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    legacy = harness.server("legacy")
    to_modern, to_legacy = record(modern), record(legacy)
    alice, bob = harness.client(), harness.client()
    harness.subscribe(alice, ["a", "b"])
    harness.subscribe(bob, ["b", "c"])
    harness.subscribe(alice, ["b"])  # "a" goes; "b" is still bob's
    harness.relay.forget(bob)  # "b" is alice's still, "c" goes
    assert subscriptions(to_modern) == [
        (pb.ADD, frozenset({"a", "b"})),
        (pb.ADD, frozenset({"c"})),
        (pb.REMOVE, frozenset({"a"})),
        (pb.REMOVE, frozenset({"c"})),
    ]
    assert [topics for _, topics in subscriptions(to_legacy)] == [
        {"a", "b"},
        {"a", "b", "c"},
        {"b", "c"},
        {"b"},
    ]
    assert all(change == pb.REPLACE for change, _ in subscriptions(to_legacy))


def test_a_hundred_thousand_topics_cross_in_chunks_and_new_ones_still_route() -> None:
    origin = make_harness(limits=None)
    modern = origin.server("peer", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    sent = record(modern)
    topics = names(0, TOPICS)
    bulk_subscribe(origin, topics)
    fresh = origin.client()
    origin.subscribe(fresh, ["a-new-topic"])
    assert sent and max(len(frame) for frame in sent) < DATA_CHANNEL_MESSAGE

    # The receiving server applies what arrived, in order, and routes by it.
    receiver = make_harness()
    link = receiver.server("origin", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    for frame in sent:
        receiver.relay.handle(link, frame, True)
    assert len(receiver.relay.servers.by_topic) == TOPICS + 1
    publisher = receiver.client()
    outbound = record(link)
    for topic in ("a-new-topic", topics[0], topics[-1]):
        receiver.publish(publisher, topic, b"x")
    assert [decode_as(f, pb.TopicMessage).topic for f in outbound] == [
        "a-new-topic",
        topics[0],
        topics[-1],
    ]


def test_a_new_link_gets_the_whole_set_in_chunks() -> None:
    harness = make_harness()
    bulk_subscribe(harness, names(0, 20_000))
    late = harness.server("late", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    # Its AUTH reply came first; the topics follow: one REPLACE, then ADDs.
    changes = subscriptions([frame for frame, _ in session_of(late).last])
    assert len(changes) > 1, "the whole set should take several chunks"
    assert [change for change, _ in changes] == [pb.REPLACE] + [pb.ADD] * (len(changes) - 1)
    receiver = make_harness()
    link = receiver.server("origin", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    receiver.relay.handle(link, subscription_frame(["stale"]), True)
    for frame, _ in session_of(late).last:
        if frame_type(frame) == pb.SUBSCRIPTION:
            receiver.relay.handle(link, frame, True)
    assert receiver.relay.servers.topics_of(link) == frozenset(names(0, 20_000))


@pytest.mark.parametrize("kind", [pb.ADD, pb.REMOVE])
def test_clients_cannot_send_changes(kind: pb.SubscriptionChange.ValueType) -> None:
    harness = make_harness()
    alice = harness.client()
    harness.subscribe(alice, ["a"])
    change = pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.PLAIN, topics=b"b", change=kind
    ).SerializeToString()
    harness.relay.handle(alice, change, True)
    assert harness.relay.clients.topics_of(alice) == {"a"}
    assert harness.stats.drops["unexpected_type"] == 1


def test_a_hub_advertises_what_its_servers_want_by_difference() -> None:
    hub = make_harness(hub=True)
    left = hub.server("left", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    right = hub.server("right", capabilities=pb.CAPABILITY_TOPIC_DELTAS)
    to_right = record(right)
    add = pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.PLAIN, topics=b"x y", change=pb.ADD
    ).SerializeToString()
    hub.relay.handle(left, add, True)
    remove = pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.PLAIN, topics=b"x", change=pb.REMOVE
    ).SerializeToString()
    hub.relay.handle(left, remove, True)
    assert subscriptions(to_right) == [
        (pb.ADD, frozenset({"x", "y"})),
        (pb.REMOVE, frozenset({"x"})),
    ]
