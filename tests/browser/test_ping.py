"""The browser SDK's ``ping()`` ends at its timeout when the server stops answering."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from playwright.async_api import Browser

from tests.browser.pages import BrowserClient, ConsoleLog, PageHost
from tests.e2e.helpers import start_mesh
from tests.support import Cluster

_TIMED_PING = """
async ([reliable, timeout]) => {
  const started = performance.now();
  try {
    await window.client.ping({ reliable, timeout });
    return { resolved: true };
  } catch (error) {
    return {
      error: error.name,
      message: error.message,
      isBrokerError: error instanceof window.sdk.BrokerError,
      elapsed: performance.now() - started,
    };
  }
}
"""


async def test_ping_rejects_at_its_timeout_on_a_frozen_server(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await start_mesh(cluster, "s1")
    server = cluster.servers["s1"].process
    assert server is not None
    # No keepalive: the ping's own timeout is the only thing that can end the wait.
    page = await BrowserClient.connect(
        browser, page_host, cluster, console, "alice", keepalive=False, reconnect=False
    )
    server.send_signal(signal.SIGSTOP)
    try:
        for reliable in (True, False):
            timed = page.page.evaluate(_TIMED_PING, [reliable, 500])
            outcome: dict[str, Any] = await asyncio.wait_for(timed, 10)
            assert outcome.get("error") == "PingTimeoutError", outcome
            assert outcome["isBrokerError"] and "500 ms" in outcome["message"]
            assert 450 <= outcome["elapsed"] < 3000
    finally:
        server.send_signal(signal.SIGCONT)
    # The session outlives a timed-out ping; the default timeout is in force.
    assert await page.ping() > 0
