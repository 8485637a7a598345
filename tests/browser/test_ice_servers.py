"""The browser SDK takes its STUN/TURN servers from the coordinator (cross-origin)."""

from __future__ import annotations

import json

from playwright.async_api import Browser

from tests.browser.pages import BrowserClient, ConsoleLog, PageHost
from tests.e2e.test_ice_servers import unused_udp_port
from tests.support import Cluster

_URLS = "() => window.client.link.session.pc.getConfiguration().iceServers.map((s) => s.urls)"


async def test_sdk_uses_the_coordinators_ice_servers_unless_given(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    stun = f"stun:127.0.0.1:{unused_udp_port()}"
    ice = json.dumps([{"urls": [stun]}])
    await cluster.start_coordinator(env={"WEBRTC_BROKER_COORDINATOR_ICE_SERVERS": ice})
    await cluster.start_server("s1", env={"WEBRTC_BROKER_COMMSERVER_ICE_SERVERS": ice})

    alice = await BrowserClient.connect(browser, page_host, cluster, console, "alice")
    urls = await alice.page.evaluate(_URLS)
    assert [u if isinstance(u, list) else [u] for u in urls] == [[stun]]

    bob = await BrowserClient.connect(browser, page_host, cluster, console, "bob", iceServers=[])
    assert await bob.page.evaluate(_URLS) == []

    await bob.subscribe(["room"])
    await alice.publish("room", "over host candidates")
    [got] = await bob.receive()
    assert (got["sender"], got["text"]) == (alice.alias, "over host candidates")
