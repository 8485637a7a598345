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
from tests.support import Cluster, free_port
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


async def test_comm_server_sigterm_ends_its_sessions(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s2", "server_topics", 1)

        s1 = cluster.servers["s1"]
        assert s1.process is not None
        s1.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(s1.process.wait(), TIMEOUT) == 0

        # alice's session ends: her reader sees the end instead of waiting forever.
        with pytest.raises(ClosedError):
            await receive(alice)
        with pytest.raises(ClosedError):
            alice.publish("room", "too late")

        # The survivors forget s1: the coordinator, s2's mesh and s2's subscriptions.
        async def registered() -> list[str]:
            return [s["name"] for s in (await cluster.coordinator_status())["servers"]]

        await eventually_equal(registered, ["s2"])
        await wait_status(cluster, "s2", "servers", 0)
        await wait_status(cluster, "s2", "server_topics", 0)

        # bob is undisturbed, and a newcomer reaches him.
        assert await bob.ping() > 0
        async with connected(cluster, "carol") as (carol,):
            assert carol.server_alias == await cluster.alias_of("s2")
            carol.publish("room", "hello bob")
            assert (await receive(bob)).body == b"hello bob"
