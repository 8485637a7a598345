"""The README's web-page example runs as written, from a page of another origin."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Browser

from tests.browser.pages import ConsoleLog, PageHost, open_page
from tests.e2e.helpers import TIMEOUT, start_mesh, subscribe
from tests.support import ROOT, Cluster, eventually
from webrtc_broker.client import BrokerClient

README_COORDINATOR = "127.0.0.1:9090"
RTT_LINE = re.compile(r"\[readme\] log: rtt [0-9.]+ ms")


def readme_example() -> str:
    """The first HTML block of the README's "Use it from a web page" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it from a web page", 1)[1]
    match = re.search(r"```html\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's web-page section has no HTML example"
    return match.group(1)


async def test_the_readme_example(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await start_mesh(cluster, "s1")
    example = readme_example().replace(README_COORDINATOR, cluster.http_url.split("//", 1)[1])
    page_host.pages["/readme.html"] = example.encode()
    async with await BrokerClient.connect(cluster.url, "bob", timeout=TIMEOUT) as bob:
        await subscribe(bob, ["room/1"])
        await open_page(browser, f"{page_host.url}readme.html", console, "readme")
        got = [await asyncio.wait_for(bob.receive(), TIMEOUT) for _ in range(3)]
        reliable = [(m.body, m.identity) for m in got if m.reliable]
        assert reliable == [(b"hello", None), (b"signed hello", b"alice")]
        assert [m.body for m in got if not m.reliable] == [b'{"x":1,"y":2}']

        async def rtt_logged() -> bool:
            return any(RTT_LINE.fullmatch(line) for line in console.lines)

        await eventually(rtt_logged, timeout=TIMEOUT)
