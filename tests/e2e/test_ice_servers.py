"""ICE servers from the configuration reach the peer connections of both ends."""

from __future__ import annotations

import json
import socket

from tests.e2e.helpers import receive, subscribe
from tests.support import Cluster
from webrtc_broker.client import BrokerClient
from webrtc_broker.config import IceServer


def unused_udp_port() -> int:
    """A local UDP port nobody listens on: a STUN server that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_silent_stun_server_is_handed_out_and_harmless(cluster: Cluster) -> None:
    servers = [{"urls": [f"stun:127.0.0.1:{unused_udp_port()}"]}]
    ice = json.dumps(servers)
    await cluster.start_coordinator(env={"WEBRTC_BROKER_COORDINATOR_ICE_SERVERS": ice})
    await cluster.start_server("s1", env={"WEBRTC_BROKER_COMMSERVER_ICE_SERVERS": ice})

    alice = await BrokerClient.connect(cluster.url, "alice")
    try:
        bob = await BrokerClient.connect(cluster.url, "bob", ice_servers=[])
        try:
            assert alice.ice_servers == [IceServer.model_validate(s) for s in servers]
            assert bob.ice_servers == []  # the application's choice wins
            await subscribe(bob, ["room"])
            alice.publish("room", b"through host candidates", reliable=True)
            got = await receive(bob)
            assert (got.sender, got.body) == (alice.alias, b"through host candidates")
        finally:
            await bob.close()
    finally:
        await alice.close()
