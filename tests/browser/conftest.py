"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright.

Playwright's own browser builds are downloads, which this project never
does: the tests launch the distribution's ``/usr/bin/chromium`` (``make test``
installs it when missing). A failing test's browser console is printed, next
to the cluster's logs that the shared ``cluster`` fixture prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, async_playwright
from playwright.async_api import Error as PlaywrightError

from tests.browser.pages import ConsoleLog, PageHost
from tests.support import Cluster
from webrtc_broker.bench.nativepair import CHROMIUM, HEADLESS_ARGS

LAUNCH_ARGS = list(HEADLESS_ARGS)


async def _leave(browser: Browser, cluster: Cluster) -> None:
    """Let every page leave as on navigating away, while it still runs.

    The SDK (and the demo) close their client on ``pagehide``; a page that is
    simply destroyed may leave its session to time out on the server.
    """
    for context in browser.contexts:
        for page in context.pages:
            with contextlib.suppress(PlaywrightError):
                await page.evaluate(
                    "() => dispatchEvent(new PageTransitionEvent('pagehide', {persisted: false}))"
                )
    await _until_no_clients(cluster)


async def _until_no_clients(cluster: Cluster, timeout: float = 5.0) -> None:
    """Wait (briefly) until no running comm server counts a client session."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            for proc in cluster.servers.values():
                while proc.running:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await cluster.server_status(proc.name))["clients"] == 0:
                            break
                    await asyncio.sleep(0.05)


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
async def page_host() -> AsyncIterator[PageHost]:
    async with PageHost.running() as host:
        yield host


@pytest.fixture
async def browser(
    cluster: Cluster, console: ConsoleLog, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    """Chromium; its pages leave their comm servers before the cluster stops.

    (A comm server that gets SIGTERM with clients connected drains them for
    seconds; pages that are gone already cost nothing.)
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield instance
        finally:
            await _leave(instance, cluster)
            await instance.close()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(console.dump())
