"""Refusals reach the page as clear errors: a full server, and bad credentials."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page

from tests.browser.demo_page import open_demo, wait_connected
from tests.browser.pages import (
    TIMEOUT_MS,
    BrowserClient,
    ConnectFailed,
    ConsoleLog,
    PageHost,
    load_sdk,
    open_page,
)
from tests.e2e.helpers import connected, wait_status
from tests.support import Cluster


async def page_error(page: Page) -> str:
    """Wait for the demo page's error box; returns its text."""
    await page.wait_for_function(
        "() => document.body.dataset.state === 'error'", timeout=TIMEOUT_MS
    )
    assert await page.is_visible("#error")
    assert await page.is_visible("#retry")
    return (await page.text_content("#error")) or ""


async def test_a_page_passes_over_a_full_server(
    cluster: Cluster, browser: Browser, console: ConsoleLog
) -> None:
    """The demo asks for no server: a refusal sends it on to the next one listed.
    Round-robin puts the full server first for every other connection."""
    await cluster.start_coordinator("--selector", "round-robin")
    await cluster.start_server("s1", "--max-peers", "1")
    await cluster.start_server("s2")
    await cluster.wait_mesh("s1", 1)
    s2 = await cluster.alias_of("s2")
    async with connected(cluster, "first", server="s1"):
        for name in ("second", "third"):
            page = await open_demo(browser, cluster, console, name)
            await wait_connected(page)
            assert await page.evaluate("() => Number(document.body.dataset.server)") == s2
        status = await cluster.server_status("s1")
        assert status["stats"]["sessions"].get("refused:server_full", 0) >= 1


async def test_a_full_server_shows_server_full(
    cluster: Cluster, browser: Browser, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--max-peers", "1")
    s1 = await cluster.alias_of("s1")
    async with connected(cluster, "first", server="s1"):
        page = await open_demo(browser, cluster, console, "second")
        assert await page_error(page) == f"ServerFullError: server {s1} is full"
    # Once the slot is free, the page's Reconnect button gets a session.
    await wait_status(cluster, "s1", "clients", 0)
    await page.click("#retry")
    await wait_connected(page)


async def test_credentials_the_comm_server_refuses(
    cluster: Cluster, browser: Browser, console: ConsoleLog
) -> None:
    # A server that checks clients needs the server secret (anyone could pose as one).
    await cluster.start_coordinator("--server-secret", "s3cret")
    await cluster.start_server(
        "s1", "--allow", "alice", "--server-secret", "s3cret", module="tests.allowlist_commserver"
    )
    s1 = await cluster.alias_of("s1")
    mallory = await open_demo(browser, cluster, console, "mallory")
    assert await page_error(mallory) == (
        f"AuthenticationError: server {s1} refused: unknown credentials"
    )
    alice = await open_demo(browser, cluster, console, "alice")
    await wait_connected(alice)


async def test_credentials_the_coordinator_refuses(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator(
        "--allow",
        "alice",
        "--server-secret",
        "s3cret",
        module="tests.browser.allowlist_coordinator",
    )
    await cluster.start_server("s1", "--server-secret", "s3cret")
    # The demo page, served by the coordinator itself.
    mallory = await open_demo(browser, cluster, console, "mallory")
    assert await page_error(mallory) == (
        "AuthenticationError: the coordinator refused the credentials"
        " (HTTP 403: bad_client_credentials)"
    )
    alice = await open_demo(browser, cluster, console, "alice")
    await wait_connected(alice)
    # A page of another origin reads the coordinator's answer too (CORS).
    with pytest.raises(ConnectFailed, match=r"^AuthenticationError: the coordinator refused .*403"):
        await BrowserClient.connect(browser, page_host, cluster, console, "eve")


async def test_an_unreachable_coordinator_is_not_a_credentials_problem(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    page = await open_page(browser, page_host.url, console, "alice")
    await load_sdk(page, cluster)
    assert cluster.coordinator is not None
    await cluster.stop(cluster.coordinator)
    with pytest.raises(ConnectFailed, match=r"^BrokerError: cannot reach the coordinator"):
        await BrowserClient.connect(browser, page_host, cluster, console, "alice", page=page)


async def test_the_demo_moves_to_another_server_when_its_server_stops(
    cluster: Cluster, browser: Browser, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    s1 = await cluster.alias_of("s1")
    page = await open_demo(browser, cluster, console, "alice", server=s1)
    await wait_connected(page)
    await cluster.start_server("s2")
    s2 = await cluster.alias_of("s2")
    await cluster.stop(cluster.servers["s1"])
    await page.wait_for_function(
        "(s2) => document.body.dataset.server === String(s2)", arg=s2, timeout=30_000
    )
    assert await page.text_content("#server") == str(s2)
    assert await page.text_content("#status") == "connected"
    assert await page.is_hidden("#error")
