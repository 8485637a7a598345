"""The browser SDK leaves a coordinator that goes away during its set-up for the next URL.

A comm server drops a set-up it can no longer signal, so a client whose
coordinator WebSocket closes before its session is up has nothing left to
wait for. The first URL here is a coordinator played by the test: it
WELCOMEs the page, takes its CONNECT and closes the WebSocket, as a replica
that stops then would. The page's set-up timeout is far longer than the
test may run, so a client that waited it out would fail the test; one that
moves on at once connects through the second URL, a real coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser
from websockets.asyncio.server import ServerConnection, serve

from tests.browser.pages import ConsoleLog, PageHost, open_page
from tests.support import Cluster
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type

_CONNECT = """
async ([sdkUrl, urls, options]) => {
  const sdk = await import(sdkUrl);
  Math.random = () => 0;  // a first connect starts at the first URL listed
  try {
    const client = await sdk.BrokerClient.connect(urls, "alice", options);
    window.client = client;
    return { url: client.coordinatorUrl, server: client.serverAlias };
  } catch (error) {
    return { error: `${error.name}: ${error.message}` };
  }
}
"""

SETUP_TIMEOUT_MS = 600_000
"""The page's set-up timeout: waiting it out would overrun the test's own bound."""

TEST_BOUND_S = 60.0
"""How long the connect may take before the test calls it stuck (a hang guard only)."""

CLIENT_ALIAS = 4242
LISTED_SERVER = 77


@dataclass
class VanishingCoordinator:
    """WELCOMEs a client, takes its CONNECT and closes: a replica that stops mid set-up."""

    events: list[str] = field(default_factory=list)
    url: str = ""

    async def _handle(self, ws: ServerConnection) -> None:
        welcome = pb.WelcomeMessage(
            type=pb.WELCOME, alias=CLIENT_ALIAS, available_servers=[LISTED_SERVER]
        )
        await ws.send(welcome.SerializeToString())
        self.events.append("welcome")
        async for frame in ws:
            if isinstance(frame, bytes) and frame_type(frame) == pb.CONNECT:
                connect = decode_as(frame, pb.ConnectMessage)
                self.events.append(f"connect {connect.from_alias}->{connect.to_alias}")
                break
        await ws.close()
        self.events.append("closed")

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[VanishingCoordinator]:
        coordinator = cls()
        async with serve(coordinator._handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            coordinator.url = f"ws://127.0.0.1:{port}"
            yield coordinator


async def test_a_coordinator_closing_during_the_setup_is_left_for_the_next(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with VanishingCoordinator.running() as vanishing:
        page = await open_page(browser, page_host.url, console, "alice")
        urls = [vanishing.url, cluster.url]
        options = {"timeout": SETUP_TIMEOUT_MS, "iceServers": []}
        sdk_url = f"{cluster.http_url}/sdk/webrtc-broker.js"
        async with asyncio.timeout(TEST_BOUND_S):
            info: dict[str, Any] = await page.evaluate(_CONNECT, [sdk_url, urls, options])
        assert info == {"url": cluster.url, "server": await cluster.alias_of("s1")}, info
        # The vanishing coordinator served the first attempt, up to the client's CONNECT.
        assert vanishing.events == [
            "welcome",
            f"connect {CLIENT_ALIAS}->{LISTED_SERVER}",
            "closed",
        ]
        moved_on = [
            line
            for line in console.lines
            if f"no session through {vanishing.url}" in line
            and "BrokerError: the coordinator connection closed during set-up" in line
        ]
        assert len(moved_on) == 1, console.dump()
        assert await page.evaluate("() => window.client.ping()") > 0
        await page.evaluate("() => window.client.close()")
