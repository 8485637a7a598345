"""Browser SDK clients in Debian's Chromium, driven by JSON lines on stdin.

The same commands and replies as :mod:`tests.net.peer` (connect, subscribe,
publish, receive, ping), each client a page of its own. The network tests run
this module inside a namespace (``ip netns exec NS python -m
tests.net.browser_peer COORDINATOR_URL``): Playwright's driver, Chromium and so
every socket of the browser live behind that namespace's NAT.

The pages come from a page host on the namespace's own loopback (a local page
may open connections anywhere) and import the SDK from the coordinator, as an
application's page would. Chromium keeps its default of hiding host
candidates behind mDNS names: the comm server, which has the reachable
address, learns the browser's NAT'd address from its checks instead (a
peer-reflexive candidate). ``connect`` takes the SDK's options
(``iceTransportPolicy``, ``timeout``) in ``options``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from tests.browser.conftest import LAUNCH_ARGS
from tests.browser.pages import PageHost
from tests.net.peer import serve_commands
from webrtc_broker.bench.nativepair import CHROMIUM

# Every peer connection the page makes is kept, so its selected pair can be read.
_KEEP_CONNECTIONS = """
window.peerConnections = [];
const Original = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Original {
  constructor(...args) { super(...args); window.peerConnections.push(this); }
};
"""

_CONNECT = """
async ([sdkUrl, url, credentials, options]) => {
  const sdk = await import(sdkUrl);
  window.inbox = [];
  const started = performance.now();
  try {
    const client = await sdk.BrokerClient.connect(url, credentials, options);
    window.client = client;
    client.on("message", (m) => window.inbox.push({
      sender: m.sender, body: m.text, reliable: m.reliable, topic: m.topic ?? null,
    }));
    return { alias: client.alias, server: client.serverAlias };
  } catch (error) {
    return { error: `${error.name}: ${error.message}`, ms: performance.now() - started };
  }
}
"""

_SELECTED_PAIR = """
async () => {
  for (const pc of window.peerConnections.slice().reverse()) {
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
      const pair = stats.get(report.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      return `${local.candidateType} ${local.address}:${local.port}/${local.protocol} -> ` +
        `${remote.candidateType} ${remote.address}:${remote.port}`;
    }
  }
  return "";
}
"""


class BrowserPeers:
    """The pages of this process, by client name."""

    def __init__(self, browser: Browser, host: PageHost, url: str) -> None:
        self.browser = browser
        self.host = host
        self.url = url
        self.sdk_url = url.replace("ws://", "http://").rstrip("/") + "/sdk/webrtc-broker.js"
        self.pages: dict[str, Page] = {}
        self.console: list[str] = []

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "connect":
            return await self._connect(command)
        page = self.pages[command["name"]]
        if op == "subscribe":
            await page.evaluate("(topics) => window.client.subscribe(topics)", command["topics"])
            return {}
        if op == "publish":
            await page.evaluate(
                "([t, b, reliable]) => window.client.publish(t, b, { reliable })",
                [command["topic"], command["body"], command["reliable"]],
            )
            return {}
        if op == "receive":
            count = command["count"]
            await page.wait_for_function(
                "(count) => window.inbox.length >= count",
                arg=count,
                timeout=command.get("timeout", 10.0) * 1000,
            )
            messages = await page.evaluate("(count) => window.inbox.splice(0, count)", count)
            return {"messages": messages}
        if op == "ping":
            return {"rtt": await page.evaluate("() => window.client.ping()") / 1000}
        raise ValueError(f"unknown op {op!r}")

    async def _connect(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command["name"]
        page = await self.browser.new_page()
        page.on("console", lambda m: self.console.append(f"[{name}] {m.type}: {m.text}"))
        await page.add_init_script(_KEEP_CONNECTIONS)
        await page.goto(self.host.url)
        options = {"timeout": command.get("timeout", 20.0) * 1000, **command.get("options", {})}
        info = await page.evaluate(
            _CONNECT, [self.sdk_url, self.url, command.get("credentials", name), options]
        )
        if "error" in info:
            await page.close()
            raise ConnectionError(info["error"])
        self.pages[name] = page
        return {
            "alias": info["alias"],
            "server": info["server"],
            "pair": await page.evaluate(_SELECTED_PAIR),
        }


async def main(url: str) -> None:
    async with PageHost.running() as host, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        peers = BrowserPeers(browser, host, url)
        try:
            await serve_commands(peers.handle)
        finally:
            for message in peers.console:
                print(message, file=sys.stderr)
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
