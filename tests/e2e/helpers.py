"""Helpers shared by the end-to-end tests: clients, barriers and status probes.

Two barriers make "nothing arrived" assertions exact instead of timed:

* :func:`subscribe` awaits the SDK's confirmation: the PING it sends after the
  SUBSCRIPTION on the same ordered channel comes back only after the server
  applied the subscription.
* :func:`assert_nothing_received` pings the server on the reliable channel
  first: the server handles frames in order and its writers keep order, so any
  reliable delivery it queued for the client before the PING is in the inbox
  by the time the echo is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from tests.support import Cluster, eventually
from webrtc_broker.bench import routes
from webrtc_broker.client import BrokerClient, ReceivedMessage

TIMEOUT = 10.0

T = TypeVar("T")


@contextlib.asynccontextmanager
async def connected(
    cluster: Cluster, *credentials: str, server: str | None = None
) -> AsyncIterator[list[BrokerClient]]:
    """Clients named by their credentials, all on ``server`` when given; closed on exit."""
    alias = await cluster.alias_of(server) if server is not None else None
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for credential in credentials:
            client = await BrokerClient.connect(cluster.url, credential, server=alias)
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


async def subscribe(client: BrokerClient, topics: list[str], *, compress: bool = False) -> None:
    """Subscribe and wait until the client's server has applied it."""
    await asyncio.wait_for(client.subscribe(topics, compress=compress), TIMEOUT)


async def receive(client: BrokerClient, timeout: float = TIMEOUT) -> ReceivedMessage:
    return await asyncio.wait_for(client.receive(), timeout)


async def receive_bodies(client: BrokerClient, count: int) -> list[bytes]:
    return [(await receive(client)).body for _ in range(count)]


def inbox_size(client: BrokerClient) -> int:
    """Messages delivered to ``client`` and not read yet (the SDK has no public peek)."""
    return client._inbox.qsize()


async def assert_nothing_received(
    client: BrokerClient, *, after: BrokerClient | None = None
) -> None:
    """Fail if anything the server sent before now reached ``client``.

    With ``after`` (a publisher on the same server), its earlier messages are
    covered too: its own PING echo proves the server handled them.
    """
    if after is not None:
        await asyncio.wait_for(after.ping(), TIMEOUT)
    await asyncio.wait_for(client.ping(), TIMEOUT)
    assert inbox_size(client) == 0, f"unexpected message: {await client.receive()!r}"


async def wait_status(
    cluster: Cluster, name: str, key: str, value: int, timeout: float = 15.0
) -> dict[str, Any]:
    """Poll server ``name``'s ``/status`` until ``key`` equals ``value``; return the status."""

    async def probe() -> dict[str, Any] | None:
        status = await cluster.server_status(name)
        return status if status[key] == value else None

    result: dict[str, Any] = await eventually(probe, timeout=timeout)
    return result


async def eventually_equal(
    probe: Callable[[], Awaitable[T]], expected: T, *, timeout: float = 15.0
) -> None:
    """Poll ``probe`` until it returns ``expected``; the failure shows the last value."""
    last: list[T] = []

    async def check() -> bool:
        last[:] = [await probe()]
        return last[0] == expected

    try:
        await eventually(check, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"wanted {expected!r} within {timeout} s, last got {last!r}") from None


def counter(status: dict[str, Any], group: str, key: str) -> int:
    """One counter of a ``/status`` stats group (``frames_in``, ``drops``, ``sessions``)."""
    return int(status["stats"][group].get(key, 0))


async def start_mesh(cluster: Cluster, *names: str) -> dict[str, int]:
    """Coordinator and servers ``names``, fully meshed; returns their aliases."""
    if cluster.coordinator is None:
        await cluster.start_coordinator()
    for name in names:
        await cluster.start_server(name)
    for name in names:
        await cluster.wait_mesh(name, len(names) - 1)
    return {name: await cluster.alias_of(name) for name in names}


async def until_routed(alice: BrokerClient, bob: BrokerClient, topic: str = "pair") -> None:
    """Wait until alice's server knows that bob's server wants the topic: bob's
    subscription reaches alice's server a moment after bob's own server applied it."""
    await routes.until_routed(
        [routes.Route(alice, topic, bob)], probe=b"-1", timeout=TIMEOUT, interval=0.2
    )
    await asyncio.sleep(0.3)  # let copies still in flight arrive, then drop them
    while inbox_size(bob):
        await bob.receive()
