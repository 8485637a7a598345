"""The demo page (served by the coordinator at ``/``), driven as a person would drive it.

The page exposes its state for tests and assistive tools alike: ``body``'s
``data-state`` (connecting, connected, error) and ``data-alias``, one
``#avatars li`` per other tab with its position and colour, the chat log and
the error box.
"""

from __future__ import annotations

from urllib.parse import urlencode

from playwright.async_api import Browser, Page

from tests.browser.pages import TIMEOUT_MS, ConsoleLog, open_page
from tests.support import Cluster

PIXEL = """
([x, y]) => {
  const canvas = document.getElementById("canvas");
  const [r, g, b, a] = canvas.getContext("2d").getImageData(
    Math.round(x * canvas.width), Math.round(y * canvas.height), 1, 1).data;
  return a === 0 ? null : `rgb(${r}, ${g}, ${b})`;
}
"""
"""The canvas colour at (x, y), fractions of its size; ``null`` where nothing is drawn."""


async def open_demo(
    browser: Browser, cluster: Cluster, console: ConsoleLog, name: str, **params: str | int
) -> Page:
    query = urlencode({"token": name, "room": "test", **params})
    page = await open_page(browser, f"{cluster.http_url}/?{query}", console, name)
    await page.set_viewport_size({"width": 1280, "height": 800})
    return page


async def wait_connected(page: Page) -> int:
    """Wait for the page's session; returns its alias."""
    await page.wait_for_function(
        "() => ['connected', 'error'].includes(document.body.dataset.state)", timeout=TIMEOUT_MS
    )
    state = await page.evaluate("() => document.body.dataset.state")
    assert state == "connected", await page.text_content("#error")
    return int(await page.evaluate("() => document.body.dataset.alias"))


async def move_mouse(page: Page, x: float, y: float) -> None:
    """Move the mouse to (x, y), fractions of the canvas, in a few steps as a hand does."""
    box = await page.locator("#canvas").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=5)


async def wait_avatar_drawn(page: Page, alias: int, x: float, y: float) -> str:
    """Wait until ``page`` lists ``alias`` at (x, y) and its canvas shows its colour there."""
    avatar = page.locator(f'#avatars li[data-alias="{alias}"]')
    await avatar.wait_for(timeout=TIMEOUT_MS)
    await page.wait_for_function(
        """([alias, x, y]) => {
            const item = document.querySelector(`#avatars li[data-alias="${alias}"]`);
            const near = (value, target) => Math.abs(Number(value) - target) < 0.01;
            return item !== null && near(item.dataset.x, x) && near(item.dataset.y, y);
        }""",
        arg=[alias, x, y],
        timeout=TIMEOUT_MS,
    )
    color = await avatar.get_attribute("data-color")
    assert color is not None and color.startswith("rgb(")
    # The canvas is redrawn every animation frame: wait for the frame that shows it.
    await page.wait_for_function(
        f"([x, y, color]) => ({PIXEL})([x, y]) === color", arg=[x, y, color], timeout=TIMEOUT_MS
    )
    return color
