"""A coordinator crash: sessions outlive it, servers re-register under their own aliases,
and the mesh stays as it was."""

from __future__ import annotations

from tests.e2e.helpers import (
    connected,
    counter,
    eventually_equal,
    receive,
    receive_bodies,
    start_mesh,
    subscribe,
    wait_status,
)
from tests.support import Cluster

SERVERS = ("s1", "s2", "s3")
DUPLICATE = "failed:duplicate_link"


async def test_coordinator_killed_and_restarted(cluster: Cluster) -> None:
    old_aliases = await start_mesh(cluster, *SERVERS)
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(alice, ["room", "a"])
        await subscribe(bob, ["room", "b"])
        await wait_status(cluster, "s1", "server_topics", 2)
        await wait_status(cluster, "s2", "server_topics", 2)

        assert cluster.coordinator is not None
        await cluster.stop(cluster.coordinator, kill=True)
        for name in SERVERS:
            await wait_status(cluster, name, "registered", False)

        # During the outage, established sessions keep relaying, across servers too.
        alice.publish("room", "during the outage")
        assert (await receive(bob)).body == b"during the outage"
        bob.publish("room", "still here", reliable=False)
        assert (await receive(alice)).body == b"still here"

        await cluster.start_coordinator()

        async def registered() -> list[str]:
            return sorted(s["name"] for s in (await cluster.coordinator_status())["servers"])

        await eventually_equal(registered, list(SERVERS), timeout=30)
        new_aliases = {name: await cluster.alias_of(name) for name in SERVERS}
        # Each server proposes the alias it had, so the mesh links that survived, keyed
        # by alias at both ends, are still the links to these servers: none is remade.
        assert new_aliases == old_aliases
        for name in SERVERS:
            status = await cluster.server_status(name)
            assert (status["registered"], status["servers"], status["pending"]) == (True, 2, 0)
            assert status["alias"] == old_aliases[name]
            assert counter(status, "sessions", DUPLICATE) == 0
            assert counter(status, "sessions", "established:server") == 2

        # Old sessions still relay after the restart.
        alice.publish("room", "after the restart")
        assert (await receive(bob)).body == b"after the restart"

        # New clients connect through the new coordinator and reach the old ones.
        async with connected(cluster, "carol", server="s3") as (carol,):
            await subscribe(carol, ["room", "c"])
            await wait_status(cluster, "s1", "server_topics", 3)
            await wait_status(cluster, "s2", "server_topics", 3)
            carol.publish("room", "new client")
            assert (await receive(alice)).body == b"new client"
            assert (await receive(bob)).body == b"new client"
            for index in range(20):
                alice.publish("room", f"{index}")
            expected = [f"{index}".encode() for index in range(20)]
            assert await receive_bodies(carol, 20) == expected
            assert await receive_bodies(bob, 20) == expected
