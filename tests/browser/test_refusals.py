"""In a browser too, "not now" is not "bad credentials".

A browser never sees the status of a refused WebSocket upgrade, so the SDK
asks the coordinator afterwards, from the page's own origin: ``GET
/connect`` (same token) and ``/readyz`` answer with CORS headers. The pages
come from another origin than the coordinator, as an application's would.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser
from websockets.asyncio.client import connect

from coordinator.counters import RefusalReason
from tests.browser.pages import BrowserClient, ConnectFailed, ConsoleLog, PageHost, open_page
from tests.coordinator.harness import make_config, running_coordinator, wait_until
from tests.e2e.helpers import TIMEOUT
from tests.support import Cluster

_READ_ACROSS_ORIGINS = """
async (url) => {
  try {
    const response = await fetch(url, { cache: "no-store" });
    return { status: response.status, body: await response.json() };
  } catch (error) {
    return { error: String(error) };
  }
}
"""


async def test_a_page_on_another_origin_reads_readyz(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    page = await open_page(browser, page_host.url, console, "reader")
    assert not page_host.url.startswith(cluster.http_url)  # another origin
    answer: dict[str, Any] = await page.evaluate(_READ_ACROSS_ORIGINS, f"{cluster.http_url}/readyz")
    assert answer == {"status": 200, "body": {"status": "ready"}}


async def test_a_full_coordinator_is_not_a_credentials_problem(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator("--max-clients", "1")
    await cluster.start_server("s1")
    async with connect(f"{cluster.url}/connect", open_timeout=TIMEOUT):  # the one slot
        with pytest.raises(ConnectFailed) as refused:
            await BrowserClient.connect(browser, page_host, cluster, console, "alice")
    assert str(refused.value) == (
        "CoordinatorUnavailableError: the coordinator cannot take the connection now"
        " (HTTP 503: too_many_connections)"
    )
    # Once the slot is free, the same page gets in.
    page = await BrowserClient.connect(browser, page_host, cluster, console, "bob")
    assert page.alias > 0


async def test_a_reconnecting_page_outlives_a_coordinator_restart(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    """Its server goes away while the coordinator drains for a restart: the page is
    refused (503) until the new coordinator is up, then lands on the other server."""
    config = make_config(port=cluster.coordinator_port)
    fast = {"firstDelay": 50, "maxDelay": 250}
    env = {"WEBRTC_BROKER_COMMSERVER_RECONNECT_MAX": "0.5"}
    async with running_coordinator(config) as old:
        await cluster.start_server("s1", env=env)
        await cluster.start_server("s2", env=env)
        s1 = await cluster.alias_of("s1")
        page = await BrowserClient.connect(
            browser, page_host, cluster, console, "alice", server=s1, reconnect=fast
        )
        old.coordinator.begin_shutdown()
        await cluster.stop(cluster.servers["s1"])
        refused = old.coordinator.counters.connections_refused
        await wait_until(lambda: refused[RefusalReason.SHUTTING_DOWN] >= 3, timeout=TIMEOUT)
        assert await page.page.evaluate("() => window.closeReason") is None
    async with running_coordinator(config):
        move = await page.wait_reconnected(timeout_ms=30_000)
        assert await page.page.evaluate("() => window.closeReason") is None
        assert move["server"] == await cluster.alias_of("s2")
        assert await page.ping() > 0
