"""One comm server: topic delivery rules between real clients over real WebRTC."""

from __future__ import annotations

import asyncio

from tests.support import Cluster
from webrtc_broker.client import BrokerClient

TIMEOUT = 10


async def test_two_clients_exchange_reliable_and_unreliable(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    alice = await BrokerClient.connect(cluster.url, "alice")
    bob = await BrokerClient.connect(cluster.url, "bob")
    try:
        alice.subscribe(["room"])
        bob.subscribe(["room"])
        await asyncio.sleep(0.3)
        alice.publish("room", b"reliable hello", reliable=True)
        got = await asyncio.wait_for(bob.receive(), TIMEOUT)
        assert (got.sender, got.body, got.reliable) == (alice.alias, b"reliable hello", True)
        bob.publish("room", b"unreliable hi", reliable=False)
        got = await asyncio.wait_for(alice.receive(), TIMEOUT)
        assert (got.sender, got.body, got.reliable) == (bob.alias, b"unreliable hi", False)
    finally:
        await alice.close()
        await bob.close()
