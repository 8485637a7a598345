"""Waiting until a subscription has crossed the server mesh.

A client's SUBSCRIPTION is applied by its own server at once, but reaches the
other servers a moment later, over the mesh. A message published on another
server before then is not lost: it has no subscriber there yet. Benches and
tests that count deliveries across servers therefore first publish probes
until one arrives on every route they use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from webrtc_broker.client import BrokerClient


@dataclass(frozen=True)
class Route:
    """``publisher``'s messages on ``topic`` are meant to reach ``receiver``."""

    publisher: BrokerClient
    topic: str
    receiver: BrokerClient


async def until_routed(
    routes: Sequence[Route], *, probe: bytes, timeout: float, interval: float = 0.1
) -> None:
    """Publish ``probe`` on every route each ``interval`` until it arrived on all of them.

    Each receiver's messages are read (and dropped) until its first probe, so
    the probe must be a body nothing else sends on the topic. Probes still in
    flight arrive later: callers skip them, or drain the inbox. Raises
    :class:`TimeoutError` after ``timeout`` seconds.
    """

    async def heard(receiver: BrokerClient) -> None:
        while (await receiver.receive()).body != probe:
            pass

    waits = [asyncio.ensure_future(heard(route.receiver)) for route in routes]
    try:
        async with asyncio.timeout(timeout):
            while not all(wait.done() for wait in waits):
                for route in routes:
                    route.publisher.publish(route.topic, probe)
                await asyncio.wait(waits, timeout=interval)
    finally:
        for wait in waits:
            wait.cancel()
