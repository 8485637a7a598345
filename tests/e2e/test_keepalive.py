"""The SDK's keepalive gives up dead servers, not busy ones, and costs little when idle.

A publisher with a large reliable backlog hears nothing for as long as the
backlog takes to leave: its keepalive PING waits behind it. The server's SCTP
acknowledgements of that backlog are what keeps the session alive then.

An idle session hears the server's probe before its own keepalive would PING,
so it does not PING at all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.e2e.helpers import TIMEOUT, connected, counter, start_mesh, subscribe
from tests.support import Cluster, eventually
from webrtc_broker.client import BrokerClient, Keepalive

BACKLOG = 3500
BODY = b"x" * 4000
"""Four SCTP chunks each: 14 MB that take seconds to leave through aiortc."""
BACKLOG_TIMEOUT = 120.0
"""How long the PING behind the backlog may take: well beyond the SDK's 10 s default,
since a machine busy with other work takes several times as long as an idle one."""
KEEPALIVE = Keepalive(interval=0.1, timeout=0.5)
"""For a frozen server: quick to give up (the default is 3 s / 4 s)."""
IDLE_SECONDS = 12.0
"""Four of the server's probes (one after every 2 s of silence, looked at every second),
where the client of before (a PING after each second of silence, echoed) sent six."""


async def flood(publisher: BrokerClient, receiver: BrokerClient) -> float:
    """Queue ``BACKLOG`` messages at once; seconds until a PING after them is echoed.
    The receiver reads them all, so the next flood starts from empty queues."""
    started = time.monotonic()
    for _ in range(BACKLOG):
        publisher.publish("flood", BODY)
    await publisher.ping(timeout=BACKLOG_TIMEOUT)
    echoed = time.monotonic() - started
    for _ in range(BACKLOG):
        assert (await asyncio.wait_for(receiver.receive(), TIMEOUT)).body == BODY
    return echoed


ATTEMPTS = 3
"""Calibrations tried before the backlog test is called inconclusive (load can swing)."""


async def test_a_publisher_backlog_is_not_mistaken_for_a_dead_server(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1")
    async with connected(cluster, "bob", "carol") as (receiver, calibrator):
        await subscribe(receiver, ["flood"])
        for _ in range(ATTEMPTS):
            # How long the echo waits behind the backlog on this machine, measured by a
            # client without keepalive; the keepalive under test gives up after a third.
            baseline = await flood(calibrator, receiver)
            keepalive = Keepalive(interval=baseline / 15, timeout=baseline / 3)
            publisher = await BrokerClient.connect(cluster.url, "alice", keepalive=keepalive)
            try:
                alias = publisher.alias
                echoed = await flood(publisher, receiver)
                assert publisher.reconnects == 0, "the busy server was presumed dead"
                assert publisher.alias == alias
            finally:
                await publisher.close()
            if echoed > keepalive.timeout:
                break
            # The machine sped up between calibration and test: measure again.
        assert echoed > keepalive.timeout, "inconclusive: every backlog left too fast"
    print(
        f"\nkeepalive: PING echoed {echoed:.2f} s after a {BACKLOG} x {len(BODY)} B backlog "
        f"(baseline {baseline:.2f} s, keepalive timeout {keepalive.timeout:.2f} s); session kept"
    )


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


async def test_a_new_client_passes_over_a_frozen_server(cluster: Cluster) -> None:
    """A frozen server stays listed until the coordinator's WebSocket ping gives it
    up; a new client that gets no session from it within half its connect timeout
    tries the next server. Round-robin sends one of the two clients there first."""
    await cluster.start_coordinator("--selector", "round-robin")
    await start_mesh(cluster, "s1", "s2")
    s2 = await cluster.alias_of("s2")
    frozen = cluster.servers["s1"].process
    assert frozen is not None
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        servers = []
        for name in ("alice", "bob"):
            # 4 s per attempt: one on the frozen server, then one on the live one.
            client = await BrokerClient.connect(cluster.url, name, timeout=8)
            servers.append(client.server_alias)
            await client.close()
        took = time.monotonic() - started
        assert servers == [s2, s2]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    print(f"\nkeepalive: two new clients on the live server after {took:.2f} s")


async def test_an_idle_client_hears_the_servers_probes_and_sends_no_ping(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1")
    client = await BrokerClient.connect(cluster.url, "idle")  # the default keepalive
    try:
        alias = client.alias
        before = counter(await cluster.server_status("s1"), "frames_in", "client/ping")
        await asyncio.sleep(IDLE_SECONDS)
        pings = counter(await cluster.server_status("s1"), "frames_in", "client/ping") - before
        assert client.reconnects == 0 and client.alias == alias, "the idle session was lost"
        print(f"\n{pings} keepalive PINGs in {IDLE_SECONDS:g} s of idling")
        # A PING may cross a probe on its way now and then (the two clocks are not in
        # phase, and a busy machine makes either tick late); PINGing on its own, the
        # client would have sent one every 2 s.
        assert pings <= 2, f"{pings} keepalive PINGs in {IDLE_SECONDS:g} s of idling"
    finally:
        await client.close()
