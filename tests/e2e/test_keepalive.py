"""The SDK's keepalive gives up dead servers, not busy ones.

A publisher with a large reliable backlog hears nothing for as long as the
backlog takes to leave: its keepalive PING waits behind it. The server's SCTP
acknowledgements of that backlog are what keeps the session alive then.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.e2e.helpers import TIMEOUT, start_mesh, subscribe
from tests.support import Cluster, eventually
from webrtc_broker.client import BrokerClient, Keepalive

BACKLOG = 3500
BODY = b"x" * 4000
"""Four SCTP chunks each: 14 MB that take seconds to leave through aiortc."""
KEEPALIVE = Keepalive(interval=0.1, timeout=0.5)


async def test_a_publisher_backlog_is_not_mistaken_for_a_dead_server(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1")
    publisher = await BrokerClient.connect(cluster.url, "alice", keepalive=KEEPALIVE)
    receiver = await BrokerClient.connect(cluster.url, "bob")
    try:
        await subscribe(receiver, ["flood"])
        alias = publisher.alias
        started = time.monotonic()
        for _ in range(BACKLOG):
            publisher.publish("flood", BODY)
        await asyncio.wait_for(publisher.ping(), 120)
        echo_after = time.monotonic() - started
        # Without a backlog longer than the keepalive timeout this test proves nothing.
        assert echo_after > KEEPALIVE.timeout, f"inconclusive: backlog gone in {echo_after:.2f} s"
        assert publisher.reconnects == 0, "the busy server was presumed dead"
        assert publisher.alias == alias
        for _ in range(BACKLOG):
            message = await asyncio.wait_for(receiver.receive(), TIMEOUT)
            assert message.body == BODY
        print(
            f"\nkeepalive: PING echoed {echo_after:.2f} s after a {BACKLOG} x {len(BODY)} B "
            f"backlog (keepalive timeout {KEEPALIVE.timeout} s); session kept"
        )
    finally:
        await asyncio.gather(publisher.close(), receiver.close())


async def test_a_frozen_server_is_given_up_for_another(cluster: Cluster) -> None:
    """The other half: a server that stops acknowledging is left, even while the
    client has a backlog for it, and the reconnect goes to a live server although
    the frozen one is still registered."""
    await start_mesh(cluster, "s1", "s2")
    s1, s2 = await cluster.alias_of("s1"), await cluster.alias_of("s2")
    publisher = await BrokerClient.connect(cluster.url, "alice", server=s1, keepalive=KEEPALIVE)
    frozen = cluster.servers["s1"].process
    assert frozen is not None
    try:
        lost = publisher.session
        assert lost is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for _ in range(BACKLOG):
                publisher.publish("flood", BODY)
            await asyncio.wait_for(lost.closed.wait(), 30)
            given_up = time.monotonic() - started
            assert lost.close_reason == "server silent; presumed dead"

            async def moved_on() -> bool:
                return publisher.reconnects == 1

            await eventually(moved_on, timeout=30, interval=0.05)
            moved = time.monotonic() - started
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert publisher.server_alias == s2
        assert await asyncio.wait_for(publisher.ping(), TIMEOUT) > 0
        print(
            f"\nkeepalive: frozen server given up after {given_up:.2f} s, on s2 after {moved:.2f} s"
        )
    finally:
        await publisher.close()
