"""100,000 topics on one comm server, and the other server still routes new ones to it."""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import TIMEOUT, subscribe, until_routed, wait_status
from tests.support import Cluster
from webrtc_broker.client import BrokerClient

CLIENTS = 5
PER_CLIENT = 20_000
LIMITS = ("--max-topics-per-peer", str(PER_CLIENT))
ENV = {"WEBRTC_BROKER_COMMSERVER_MAX_TOPICS_BYTES": str(1 << 20)}


async def test_a_hundred_thousand_topics_across_servers(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    for name in ("s1", "s2"):
        await cluster.start_server(name, *LIMITS, env=ENV)
    for name in ("s1", "s2"):
        await cluster.wait_mesh(name, 1)
    s1, s2 = await cluster.alias_of("s1"), await cluster.alias_of("s2")
    clients = [
        await BrokerClient.connect(cluster.url, f"user-{index}", server=s1)
        for index in range(CLIENTS)
    ]
    publisher = await BrokerClient.connect(cluster.url, "publisher", server=s2)
    try:
        topics = [f"user-{index:07d}-inbox" for index in range(CLIENTS * PER_CLIENT)]
        for index, client in enumerate(clients):
            chunk = topics[index * PER_CLIENT : (index + 1) * PER_CLIENT]
            await subscribe(client, chunk, compress=True)
        try:
            await wait_status(cluster, "s2", "server_topics", len(topics), timeout=30)
        except AssertionError:
            for name in ("s1", "s2"):
                status = await cluster.server_status(name)
                print(name, status["topics"], status["server_topics"], status["stats"]["drops"])
            raise

        # A topic subscribed after all those still reaches s1 from s2.
        await subscribe(clients[0], ["a-brand-new-topic"], compress=True)
        await until_routed(publisher, clients[0], "a-brand-new-topic")
        publisher.publish(topics[-1], b"to the last of them")
        got = await asyncio.wait_for(clients[-1].receive(), TIMEOUT)
        assert got.body == b"to the last of them"
    finally:
        await asyncio.gather(publisher.close(), *(c.close() for c in clients))
