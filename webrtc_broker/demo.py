"""The short demo that ``webrtc-broker up --demo`` runs against the fresh cluster."""

from __future__ import annotations

import asyncio

from webrtc_broker.client import BrokerClient

TOPIC = "demo/chat"


async def run_demo(coordinator_url: str, servers: list[int]) -> None:
    """Two clients, on different servers when there are two, exchange messages both ways."""
    alice_server = servers[0]
    bob_server = servers[1] if len(servers) > 1 else servers[0]
    async with (
        await BrokerClient.connect(coordinator_url, "alice", server=alice_server) as alice,
        await BrokerClient.connect(coordinator_url, "bob", server=bob_server) as bob,
    ):
        print(f"demo: alice (alias {alice.alias}) is on server {alice_server}")
        print(f"demo: bob   (alias {bob.alias}) is on server {bob_server}")
        alice.subscribe([TOPIC])
        bob.subscribe([TOPIC])
        await asyncio.sleep(0.5)  # subscriptions travel to the other server
        alice.publish_identity(TOPIC, "hello bob, this is alice (reliable)")
        got = await asyncio.wait_for(bob.receive(), 10)
        print(f"demo: bob got   {got.body.decode()!r} from {got.sender}, identity {got.identity!r}")
        bob.publish(TOPIC, "hi alice, bob here (unreliable)", reliable=False)
        got = await asyncio.wait_for(alice.receive(), 10)
        print(f"demo: alice got {got.body.decode()!r} from {got.sender}")
        rtt = await alice.ping()
        print(f"demo: alice's round trip to her server: {rtt * 1000:.1f} ms", flush=True)
