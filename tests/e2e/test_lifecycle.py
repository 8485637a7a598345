"""Comings and goings: SDK connect errors, a comm server stopping, clients leaving."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.e2e.helpers import (
    TIMEOUT,
    connected,
    eventually_equal,
    receive,
    start_mesh,
    subscribe,
    wait_status,
)
from tests.support import Cluster, eventually, free_port
from webrtc_broker.client import BrokerClient, BrokerError, ClosedError, NoServerAvailableError


async def test_sdk_connect_errors(cluster: Cluster) -> None:
    with pytest.raises(BrokerError, match="cannot reach the coordinator"):
        await BrokerClient.connect(f"ws://127.0.0.1:{free_port()}", timeout=TIMEOUT)
    await cluster.start_coordinator()
    with pytest.raises(NoServerAvailableError):
        await BrokerClient.connect(cluster.url, "alice", timeout=TIMEOUT)
    await cluster.start_server("s1")
    with pytest.raises(NoServerAvailableError, match="not registered"):
        await BrokerClient.connect(cluster.url, "alice", server=12345, timeout=TIMEOUT)
    async with connected(cluster, "alice") as (alice,):
        assert alice.server_alias == await cluster.alias_of("s1")


async def test_comm_server_sigterm_drains_clients_to_another_server(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2", "s3")
    s1_alias = await cluster.alias_of("s1")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        ended = await BrokerClient.connect(cluster.url, "eve", server=s1_alias, reconnect=None)
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s2", "server_topics", 1)

        s1 = cluster.servers["s1"]
        assert s1.process is not None
        s1.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(s1.process.wait(), TIMEOUT + 10) == 0

        # A client that does not reconnect sees the end instead of waiting forever.
        with pytest.raises(ClosedError):
            await receive(ended)
        with pytest.raises(ClosedError):
            ended.publish("room", "too late")

        # alice was handed over: another server, her subscription restored there.
        async def moved() -> bool:
            return alice.reconnects == 1 and alice.server_alias not in (0, s1_alias)

        await eventually(moved, timeout=TIMEOUT)
        await subscribe(alice, ["room"])  # a barrier: her new server has applied it
        await wait_status(cluster, "s2", "servers", 1)  # s2 forgot s1
        if alice.server_alias != await cluster.alias_of("s2"):
            await wait_status(cluster, "s2", "server_topics", 1)  # and learned alice's server
        bob.publish("room", "still there, alice?")
        assert (await receive(alice)).body == b"still there, alice?"
        alice.publish("room", "yes")
        assert (await receive(bob)).body == b"yes"

        # The survivors forget s1.
        async def registered() -> list[str]:
            return sorted(s["name"] for s in (await cluster.coordinator_status())["servers"])

        await eventually_equal(registered, ["s2", "s3"])
        await ended.close()

        # bob is undisturbed, and a newcomer reaches him.
        assert await bob.ping() > 0
        async with connected(cluster, "carol") as (carol,):
            assert carol.server_alias != s1_alias
            carol.publish("room", "hello bob")
            assert (await receive(bob)).body == b"hello bob"
