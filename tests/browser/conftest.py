"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright.

Playwright's own browser builds are downloads, which this project never
does: the tests launch the distribution's ``/usr/bin/chromium`` (``make test``
installs it when missing). A failing test's browser console is printed, next
to the cluster's logs that the shared ``cluster`` fixture prints.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser.pages import ConsoleLog, PageHost

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",  # root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
async def page_host() -> AsyncIterator[PageHost]:
    async with PageHost.running() as host:
        yield host


@pytest.fixture
async def browser(console: ConsoleLog, request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield instance
        finally:
            await instance.close()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(console.dump())
