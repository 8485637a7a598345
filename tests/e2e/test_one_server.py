"""One comm server: topic delivery rules between real clients over real WebRTC."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import (
    assert_nothing_received,
    connected,
    receive,
    receive_bodies,
    subscribe,
)
from tests.support import Cluster
from webrtc_broker.client import MessageTooLargeError


@pytest.fixture
async def one_server(cluster: Cluster) -> Cluster:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    return cluster


async def test_two_clients_exchange_reliable_and_unreliable(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob") as (alice, bob):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])

        alice.publish("room", b"reliable hello", reliable=True)
        got = await receive(bob)
        assert (got.sender, got.body, got.reliable) == (alice.alias, b"reliable hello", True)
        assert got.identity is None

        bob.publish("room", b"unreliable hi", reliable=False)
        got = await receive(alice)
        assert (got.sender, got.body, got.reliable) == (bob.alias, b"unreliable hi", False)

        # Reliable messages arrive complete and in order.
        for index in range(50):
            alice.publish("room", f"m{index}")
        assert await receive_bodies(bob, 50) == [f"m{index}".encode() for index in range(50)]


async def test_sender_does_not_get_its_own_message(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob") as (alice, bob):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        alice.publish("room", "reliable")
        alice.publish("room", "unreliable", reliable=False)
        assert sorted(await receive_bodies(bob, 2)) == [b"reliable", b"unreliable"]
        await assert_nothing_received(alice)


async def test_unsubscribed_client_gets_nothing(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob", "carol") as (alice, bob, carol):
        await subscribe(bob, ["room"])
        await subscribe(carol, ["elsewhere"])  # subscribed, but not to this topic
        alice.publish("room", "secret")
        alice.publish("room", "marker")
        assert await receive_bodies(bob, 2) == [b"secret", b"marker"]
        await assert_nothing_received(carol)
        # Publishing does not need a subscription, and carol's topic still works.
        alice.publish("elsewhere", "for carol")
        assert (await receive(carol)).body == b"for carol"


async def test_empty_subscription_stops_delivery(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob", "carol") as (alice, bob, carol):
        await subscribe(bob, ["room", "other"])
        await subscribe(carol, ["room"])
        alice.publish("room", "before")
        assert (await receive(bob)).body == b"before"
        assert (await receive(carol)).body == b"before"

        await subscribe(bob, [])
        alice.publish("other", "after, other topic")
        alice.publish("room", "after")
        assert (await receive(carol)).body == b"after"  # the server did relay it
        await assert_nothing_received(bob)

        status = await one_server.server_status("s1")
        assert status["topics"] == 1  # only carol's "room" is left

        await subscribe(bob, ["room"])  # and subscribing again works
        alice.publish("room", "again")
        assert (await receive(bob)).body == b"again"


async def test_subscription_replaces_previous_set(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob") as (alice, bob):
        await subscribe(bob, ["a", "b"])
        await subscribe(bob, ["b", "c"])
        for topic in ("a", "b", "c"):
            alice.publish(topic, topic)
        assert await receive_bodies(bob, 2) == [b"b", b"c"]
        await assert_nothing_received(bob)


async def test_gzip_subscriptions(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob") as (alice, bob):
        topics = [f"zone/{index}" for index in range(200)]
        await subscribe(bob, topics, compress=True)
        status = await one_server.server_status("s1")
        assert status["topics"] == 200
        alice.publish("zone/0", "first")
        alice.publish("zone/200", "not subscribed")
        alice.publish("zone/199", "last")
        assert await receive_bodies(bob, 2) == [b"first", b"last"]
        await assert_nothing_received(bob)

        await subscribe(bob, [], compress=True)
        assert (await one_server.server_status("s1"))["topics"] == 0
        alice.publish("zone/0", "gone")
        await assert_nothing_received(bob, after=alice)


async def test_client_subscribed_to_several_topics_gets_each(one_server: Cluster) -> None:
    async with connected(one_server, "alice", "bob", "carol") as (alice, bob, carol):
        await subscribe(bob, ["news", "chat", "positions"])
        await subscribe(carol, ["chat"])
        alice.publish("news", "n1")
        alice.publish("chat", "c1")
        alice.publish("positions", "p1", reliable=False)
        got = [await receive(bob) for _ in range(3)]
        assert {(m.body, m.reliable) for m in got} == {
            (b"n1", True),
            (b"c1", True),
            (b"p1", False),
        }
        assert all(m.sender == alice.alias for m in got)
        assert (await receive(carol)).body == b"c1"
        await assert_nothing_received(carol)


async def test_too_large_publish_is_refused_and_the_session_goes_on(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "alice", "bob") as (alice, bob):
        await subscribe(bob, ["room"])
        with pytest.raises(MessageTooLargeError):
            alice.publish("room", b"x" * (300 * 1024))
        alice.publish("room", b"small enough")
        assert (await receive(bob)).body == b"small enough"
