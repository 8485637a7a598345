"""Star topology: non-hub servers relay through a hub, and every message arrives once."""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import (
    assert_nothing_received,
    connected,
    counter,
    receive_bodies,
    subscribe,
)
from tests.support import Cluster, eventually

TOPIC = "star"
COUNT = 30
SETTLE = 0.5
"""Seconds for a stray duplicate to show up before the counters are read."""


async def _exchange_through(cluster: Cluster, sender_server: str, receiver_server: str) -> None:
    async with (
        connected(cluster, "sender", server=sender_server) as (sender,),
        connected(cluster, "receiver", server=receiver_server) as (receiver,),
    ):
        await subscribe(receiver, [TOPIC])
        before = counter(await cluster.server_status(receiver_server), "frames_in", "server/topic")

        async def subscribed_everywhere() -> bool:
            status = await cluster.server_status(sender_server)
            return bool(status["server_topics"] == 1)

        await eventually(subscribed_everywhere)
        bodies = [f"m{i}".encode() for i in range(COUNT)]
        for body in bodies:
            sender.publish(TOPIC, body, reliable=True)
        assert await receive_bodies(receiver, COUNT) == bodies
        await asyncio.sleep(SETTLE)
        status = await cluster.server_status(receiver_server)
        assert counter(status, "frames_in", "server/topic") - before == COUNT  # exactly once
        await assert_nothing_received(receiver)


async def test_servers_relay_through_the_hub(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("hub", "--role", "hub")
    await cluster.start_server("s1")
    await cluster.start_server("s2")
    await cluster.wait_mesh("hub", 2)
    await cluster.wait_mesh("s1", 1)  # star: the non-hub servers only know the hub
    await cluster.wait_mesh("s2", 1)
    await _exchange_through(cluster, "s1", "s2")
    hub = await cluster.server_status("hub")
    assert counter(hub, "deliveries", "server") >= COUNT  # the hub did the forwarding


async def test_no_duplicates_when_servers_also_meshed_directly(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    await cluster.start_server("s2")
    await cluster.wait_mesh("s2", 1)
    await cluster.start_server("hub", "--role", "hub")  # joins after: links to both
    await cluster.wait_mesh("hub", 2)
    await cluster.wait_mesh("s1", 2)
    await _exchange_through(cluster, "s1", "s2")
