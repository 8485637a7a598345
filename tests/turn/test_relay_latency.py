"""What relaying through coturn costs: PING round trips, direct and over TURN/UDP, TCP, TLS.

A benchmark with a behaviour check: every PING of every path is answered
(the relay carries a steady stream, not just a first message). The round
trips are printed (median and 95th percentile, in ms), never asserted: on a
shared machine they are a measurement, not a property. Everything is on
loopback, so the numbers show the relay's own overhead, not a network's.
Run with ``-s`` to see the table.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator

import pytest

from tests.support import Cluster
from tests.turn.coturn import Coturn
from tests.turn.test_coturn_e2e import (
    TIMEOUT,
    local_coturn,
    nominated_local_types,
    start_broker,
)
from webrtc_broker.client import BrokerClient
from webrtc_broker.client.link import fetch_ice_servers
from webrtc_broker.config import IceServer

PINGS = 200


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    with local_coturn() as server:
        yield server


async def ping_rtts(client: BrokerClient) -> list[float]:
    return [await asyncio.wait_for(client.ping(), TIMEOUT) for _ in range(PINGS)]


async def test_relay_round_trips(
    cluster: Cluster, coturn: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(coturn.ca_file))
    urls = {"udp": coturn.udp_url, "tcp": coturn.tcp_url, "tls": coturn.tls_url}
    # One coordinator serves all paths: each relayed client takes its fresh
    # credentials from it and points them at one of coturn's listeners.
    await start_broker(cluster, coturn.udp_url, coturn.secret, tokens=False)
    rows: list[tuple[str, float, float]] = []
    for path in ("direct", "udp", "tcp", "tls"):
        if path == "direct":
            client = await BrokerClient.connect(
                cluster.url, "direct", ice_servers=[], timeout=TIMEOUT
            )
        else:
            servers = await _servers_for(cluster, urls[path])
            client = await BrokerClient.connect(
                cluster.url,
                path,
                ice_servers=servers,
                ice_transport_policy="relay",
                timeout=TIMEOUT,
            )
        try:
            if path != "direct":
                assert nominated_local_types(client) == {"relay"}
            rtts = await ping_rtts(client)
        finally:
            await client.close()
        assert len(rtts) == PINGS
        ms = sorted(rtt * 1000 for rtt in rtts)
        rows.append((path, statistics.median(ms), ms[int(0.95 * len(ms)) - 1]))
    print(f"\nPING round trips, {PINGS} each, reliable channel, loopback")
    print(f"{'path':<8}{'median ms':>12}{'p95 ms':>10}")
    for path, median, p95 in rows:
        print(f"{path:<8}{median:>12.2f}{p95:>10.2f}")


async def _servers_for(cluster: Cluster, url: str) -> list[IceServer]:
    """The coordinator's answer, with its TURN entry pointed at ``url`` (same credentials)."""
    [entry] = await fetch_ice_servers(cluster.url)
    return [entry.model_copy(update={"urls": [url]})]
