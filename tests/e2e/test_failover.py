"""kill -9 of a comm server during traffic: clients move, survivors never notice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from tests.e2e.helpers import TIMEOUT, connected, receive, start_mesh, subscribe, wait_status
from tests.support import Cluster, eventually

RECOVERY_LIMIT = 30.0
"""Bound on the wait for recovery; the time it took is printed, not asserted."""


async def test_kill_9_moves_clients_and_leaves_others_undisturbed(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2", "s3")
    s1_alias = await cluster.alias_of("s1")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
        connected(cluster, "carol", server="s3") as (carol,),
    ):
        for client in (alice, bob, carol):
            await subscribe(client, ["room"])
        await wait_status(cluster, "s2", "server_topics", 1)
        await wait_status(cluster, "s3", "server_topics", 1)

        sent: list[bytes] = []

        async def bob_talks(stop: asyncio.Event) -> None:
            while not stop.is_set():
                body = f"bob {len(sent)}".encode()
                bob.publish("room", body, reliable=True)
                sent.append(body)
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        talker = asyncio.create_task(bob_talks(stop))
        await asyncio.sleep(0.5)
        s1 = cluster.servers["s1"]
        await cluster.stop(s1, kill=True)
        killed_at = time.monotonic()

        async def alice_moved() -> bool:
            return alice.reconnects == 1 and alice.server_alias not in (0, s1_alias)

        await eventually(alice_moved, timeout=RECOVERY_LIMIT)
        recovered_in = time.monotonic() - killed_at

        async def routes_gone() -> bool:
            statuses = [await cluster.server_status(name) for name in ("s2", "s3")]
            return all(status["servers"] == 1 for status in statuses)

        await eventually(routes_gone, timeout=RECOVERY_LIMIT)
        routes_gone_in = time.monotonic() - killed_at
        stop.set()
        await talker

        # carol, on a surviving server, got every message bob sent, in order.
        got: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            while len(got) < len(sent):
                got.append((await receive(carol)).body)
        assert got == sent

        # alice is back in the conversation from her new server.
        await subscribe(alice, ["room"])
        if alice.server_alias != await cluster.alias_of("s2"):
            await wait_status(cluster, "s2", "server_topics", 1)
        while not alice._inbox.empty():  # what reached her during the move
            alice._inbox.get_nowait()
        bob.publish("room", "welcome back")
        assert (await asyncio.wait_for(receive(alice), TIMEOUT)).body == b"welcome back"
        print(
            f"\nkill -9: client back on a server after {recovered_in:.1f} s, "
            f"routes to the dead server gone after {routes_gone_in:.1f} s, "
            f"{len(sent)} messages between survivors, none lost"
        )


async def test_server_link_lost_while_both_live_is_remade(cluster: Cluster) -> None:
    """A frozen server (SIGSTOP past the keepalive timeout) loses its link; once it
    runs again the server that made the link makes it again."""
    await start_mesh(cluster, "s1", "s2")
    s2 = cluster.servers["s2"]
    assert s2.process is not None
    s2.process.send_signal(signal.SIGSTOP)
    try:
        await wait_status(cluster, "s1", "servers", 0, timeout=RECOVERY_LIMIT)
    finally:
        s2.process.send_signal(signal.SIGCONT)
    await cluster.wait_mesh("s1", 1)
    await cluster.wait_mesh("s2", 1)
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s1", "server_topics", 1)
        alice.publish("room", "across the new link")
        assert (await receive(bob)).body == b"across the new link"
