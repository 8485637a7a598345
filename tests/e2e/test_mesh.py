"""Several comm servers: the server mesh and subscription-driven forwarding."""

from __future__ import annotations

from typing import Any

from tests.e2e.helpers import (
    assert_nothing_received,
    connected,
    counter,
    receive,
    receive_bodies,
    start_mesh,
    subscribe,
    wait_status,
)
from tests.support import Cluster


async def test_clients_on_different_servers_exchange_both_ways(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2", "s3")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
        connected(cluster, "carol", server="s3") as (carol,),
    ):
        for client, name in ((alice, "s1"), (bob, "s2"), (carol, "s3")):
            await subscribe(client, ["room", f"only-{name}"])
        # room plus the two other servers' own topics: both other servers' sets arrived.
        for name in ("s1", "s2", "s3"):
            await wait_status(cluster, name, "server_topics", 3)

        alice.publish("room", "from s1", reliable=True)
        bob.publish("room", "from s2", reliable=False)
        carol.publish("room", "from s3", reliable=True)
        received = {}
        for client in (alice, bob, carol):
            got = [await receive(client) for _ in range(2)]
            received[client.alias] = {(m.sender, m.body, m.reliable) for m in got}
        assert received == {
            alice.alias: {(bob.alias, b"from s2", False), (carol.alias, b"from s3", True)},
            bob.alias: {(alice.alias, b"from s1", True), (carol.alias, b"from s3", True)},
            carol.alias: {(alice.alias, b"from s1", True), (bob.alias, b"from s2", False)},
        }

        # A burst keeps its order across the server hop.
        for index in range(100):
            alice.publish("room", f"{index}")
        expected = [f"{index}".encode() for index in range(100)]
        assert await receive_bodies(bob, 100) == expected
        assert await receive_bodies(carol, 100) == expected
        await assert_nothing_received(alice)


async def test_server_without_subscribers_gets_no_topic_traffic(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2", "s3")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
        connected(cluster, "carol", server="s3") as (carol,),
    ):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await subscribe(carol, ["lobby"])  # s3 has a client, but not on "room"
        await wait_status(cluster, "s1", "server_topics", 2)  # room (s2) and lobby (s3)
        await wait_status(cluster, "s2", "server_topics", 2)

        for index in range(100):
            alice.publish("room", f"a{index}")
            bob.publish("room", f"b{index}")
        assert await receive_bodies(bob, 100) == [f"a{index}".encode() for index in range(100)]
        assert await receive_bodies(alice, 100) == [f"b{index}".encode() for index in range(100)]

        s3 = await cluster.server_status("s3")
        assert counter(s3, "frames_in", "server/topic") == 0, s3["stats"]["frames_in"]
        assert counter(s3, "deliveries", "client") == 0
        s1 = await cluster.server_status("s1")
        assert counter(s1, "frames_in", "server/topic") == 100  # from s2, which is subscribed
        await assert_nothing_received(carol)

        # Once a client on s3 subscribes, s3 gets the topic too. Dropping "lobby" makes
        # the arrival of s3's new set visible: s1 and s2 then know one topic, "room".
        await subscribe(carol, ["room"])
        await wait_status(cluster, "s1", "server_topics", 1)
        await wait_status(cluster, "s2", "server_topics", 1)
        alice.publish("room", "now for carol too")
        got_carol = await receive(carol)
        assert (got_carol.sender, got_carol.body) == (alice.alias, b"now for carol too")
        s3 = await cluster.server_status("s3")
        assert counter(s3, "frames_in", "server/topic") == 1


async def test_late_server_joins_the_mesh(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])

        await cluster.start_server("s3")
        for name in ("s1", "s2", "s3"):
            await cluster.wait_mesh(name, 2)
        statuses: list[dict[str, Any]] = [
            await cluster.server_status(name) for name in ("s1", "s2", "s3")
        ]
        assert [status["pending"] for status in statuses] == [0, 0, 0]
        coordinator = await cluster.coordinator_status()
        assert sorted(server["name"] for server in coordinator["servers"]) == ["s1", "s2", "s3"]

        # s3 learnt the existing subscriptions when it joined.
        await wait_status(cluster, "s3", "server_topics", 1)
        async with connected(cluster, "carol", server="s3") as (carol,):
            await subscribe(carol, ["room", "new"])
            await wait_status(cluster, "s1", "server_topics", 2)
            await wait_status(cluster, "s2", "server_topics", 2)
            carol.publish("room", "hello from the new server")
            assert (await receive(alice)).body == b"hello from the new server"
            assert (await receive(bob)).body == b"hello from the new server"
            alice.publish("room", "from s1")
            bob.publish("room", "from s2", reliable=False)
            got = {(m.sender, m.body) for m in [await receive(carol), await receive(carol)]}
            assert got == {(alice.alias, b"from s1"), (bob.alias, b"from s2")}

        # carol's exit withdraws s3's subscriptions from the other servers.
        await wait_status(cluster, "s3", "clients", 0)
        await wait_status(cluster, "s3", "topics", 0)
        await wait_status(cluster, "s1", "server_topics", 1)
        await wait_status(cluster, "s2", "server_topics", 1)
