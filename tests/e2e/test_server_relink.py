"""A comm server whose coordinator link drops and comes back keeps its place in the mesh.

The server's WebSocket to the coordinator goes through a proxy that cuts it
on demand (a network blip; the coordinator lives on). Working data channels
need no coordinator, so reliable messages between a publisher on that server
and a subscriber on another must all arrive, once and in order, however often
the link is cut.
"""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import TIMEOUT, counter, subscribe, until_routed
from tests.faultproxy import FaultProxy
from tests.support import Cluster, eventually
from webrtc_broker.client import BrokerClient

MESSAGES = 1200
CUTS = 3


async def test_cutting_a_servers_coordinator_link_loses_no_reliable_message(
    cluster: Cluster,
) -> None:
    await cluster.start_coordinator()
    proxy = await FaultProxy("127.0.0.1", cluster.coordinator_port).start()
    try:
        await cluster.start_server("s1", "--coordinator-url", f"ws://127.0.0.1:{proxy.port}")
        await cluster.start_server("s2")
        for name in ("s1", "s2"):
            await cluster.wait_mesh(name, 1)
        s1, s2 = await cluster.alias_of("s1"), await cluster.alias_of("s2")
        publisher = await BrokerClient.connect(cluster.url, "publisher", server=s1)
        subscriber = await BrokerClient.connect(cluster.url, "subscriber", server=s2)
        try:
            await subscribe(subscriber, ["stream"])
            await until_routed(publisher, subscriber, "stream")
            for index in range(MESSAGES):
                publisher.publish("stream", str(index))
                if index and index % (MESSAGES // (CUTS + 1)) == 0:
                    proxy.cut()  # publishing goes on while s1 reconnects
                await asyncio.sleep(0.004)
            await reregistered(cluster, CUTS + 1)
            got = [int((await subscriber.receive()).body) for _ in range(MESSAGES)]
            assert got == list(range(MESSAGES)), "lost, duplicated or reordered"
        finally:
            await asyncio.gather(publisher.close(), subscriber.close())
        assert proxy.connections == CUTS + 1
        assert await cluster.alias_of("s1") == s1, "s1 changed its alias"
        for name in ("s1", "s2"):
            status = await cluster.server_status(name)
            # The mesh link was never remade: one server session established, ever.
            assert counter(status, "sessions", "established:server") == 1, status["stats"]
        assert (await cluster.server_status("s1"))["stats"]["coordinator_connects"] == CUTS + 1
        assert s2 in [s["alias"] for s in (await cluster.coordinator_status())["servers"]]
    finally:
        await proxy.close()
    print(f"\n{MESSAGES} reliable messages across {CUTS} cuts of s1's coordinator link: none lost")


async def reregistered(cluster: Cluster, connections: int) -> None:
    """Wait until s1 has registered ``connections`` times and is registered now."""

    async def back() -> bool:
        status = await cluster.server_status("s1")
        registrations = status["stats"]["coordinator_connects"]
        return bool(status["registered"]) and registrations == connections

    await eventually(back, timeout=TIMEOUT)
