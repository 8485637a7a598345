"""The browser SDK given several coordinator URLs goes through whichever answers.

The page forces the order the client tries them in (``Math.random`` gives 0,
so a first connect starts at the first URL listed instead of a random one).
The coordinator that must refuse runs in this process (draining, or checking
credentials), so that the test can read what it refused; the others, and the
comm servers, are the real processes. The pages come from another origin
than every coordinator, as an application's would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from coordinator.counters import RefusalReason
from tests.browser.pages import ConsoleLog, PageHost, open_page
from tests.coordinator.harness import make_config, running_coordinator
from tests.support import Cluster, free_port
from webrtc_broker.auth import AuthError, Identity

_CONNECT = """
async ([sdkUrl, urls, credentials, options]) => {
  const sdk = await import(sdkUrl);
  Math.random = () => 0;  // a first connect starts at the first URL listed
  window.moves = [];
  try {
    const client = await sdk.BrokerClient.connect(urls, credentials, options);
    window.client = client;
    client.on("reconnected", (c) => {
      window.moves.push({ url: c.coordinatorUrl, server: c.serverAlias });
    });
    return { url: client.coordinatorUrl, urls: client.coordinatorUrls, server: client.serverAlias };
  } catch (error) {
    return { error: error.name, message: error.message };
  }
}
"""

FAST = {"firstDelay": 50, "maxDelay": 250}


class Letmein:
    def authenticate(self, credentials: bytes) -> Identity:
        if credentials != b"letmein":
            raise AuthError("bad token")
        return Identity(b"user")


async def _connect(
    page: Page, sdk_from: str, urls: list[str], credentials: str, **options: Any
) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        _CONNECT, [f"{sdk_from}/sdk/webrtc-broker.js", urls, credentials, options]
    )
    return result


async def test_a_coordinator_that_is_down_is_passed_over(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    page = await open_page(browser, page_host.url, console, "alice")
    down = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    info = await _connect(page, cluster.http_url, [down, cluster.url], "alice")
    assert info == {
        "url": cluster.url,
        "urls": [down, cluster.url],
        "server": await cluster.alias_of("s1"),
    }
    assert await page.evaluate("() => window.client.ping()") > 0


async def test_a_draining_coordinator_is_passed_over(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with running_coordinator(make_config()) as draining:
        draining.coordinator.begin_shutdown()
        refused = draining.coordinator.counters.connections_refused
        page = await open_page(browser, page_host.url, console, "alice")
        alone = await _connect(page, cluster.http_url, [draining.url("")], "alice")
        assert alone["error"] == "CoordinatorUnavailableError", alone
        assert refused[RefusalReason.SHUTTING_DOWN] == 1
        info = await _connect(page, cluster.http_url, [draining.url(""), cluster.url], "alice")
        assert info["url"] == cluster.url, info
        assert refused[RefusalReason.SHUTTING_DOWN] == 2  # it was asked first


async def test_refused_credentials_are_not_tried_elsewhere(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()  # serves the SDK only
    strict_config = make_config(server_secret="s3cret")
    async with (
        running_coordinator(strict_config, authenticator=Letmein()) as strict,
        running_coordinator(make_config()) as other,
    ):
        page = await open_page(browser, page_host.url, console, "mallory")
        urls = [strict.url(""), other.url("")]
        info = await _connect(page, cluster.http_url, urls, "wrong")
        assert info["error"] == "AuthenticationError", info
        refused = strict.coordinator.counters.connections_refused
        assert refused[RefusalReason.BAD_CLIENT_CREDENTIALS] == 1
        assert other.coordinator.counters.connections["client"] == 0
        assert sum(other.coordinator.counters.connections_refused.values()) == 0


async def test_a_reconnect_goes_through_the_other_coordinator(
    cluster: Cluster,
    browser: Browser,
    page_host: PageHost,
    console: ConsoleLog,
    tmp_path: Path,
) -> None:
    """Each coordinator has a comm server of its own; the page's coordinator and
    server die together, and it comes back through the other coordinator."""
    other = Cluster(tmp_path / "other")
    other.workdir.mkdir()
    try:
        await cluster.start_coordinator()
        await cluster.start_server("s1")
        await other.start_coordinator()
        await other.start_server("s2")
        page = await open_page(browser, page_host.url, console, "alice")
        # The SDK comes from the coordinator that stays.
        urls = [cluster.url, other.url]
        info = await _connect(page, other.http_url, urls, "alice", reconnect=FAST)
        assert info["url"] == cluster.url, info
        assert cluster.coordinator is not None
        await cluster.stop(cluster.coordinator, kill=True)
        await cluster.stop(cluster.servers["s1"], kill=True)
        await page.wait_for_function("() => window.moves.length > 0", timeout=30_000)
        moves = await page.evaluate("() => window.moves")
        assert moves == [{"url": other.url, "server": await other.alias_of("s2")}]
        assert await page.evaluate("() => window.client.ping()") > 0
        await page.evaluate("() => window.client.close()")
    finally:
        await other.close()
