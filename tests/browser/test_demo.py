"""The demo page the coordinator serves at ``/``, used the way a person would use it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from playwright.async_api import Browser, Page

from tests.browser.pages import TIMEOUT_MS, ConsoleLog, open_page
from tests.e2e.helpers import start_mesh, wait_status
from tests.support import ROOT, Cluster

ARTIFACTS = ROOT / "artifacts"

_PIXEL = """
([x, y]) => {
  const canvas = document.getElementById("canvas");
  const [r, g, b, a] = canvas.getContext("2d").getImageData(
    Math.round(x * canvas.width), Math.round(y * canvas.height), 1, 1).data;
  return a === 0 ? null : `rgb(${r}, ${g}, ${b})`;
}
"""


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
        "() => document.body.dataset.state !== 'connecting'", timeout=TIMEOUT_MS
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
        f"([x, y, color]) => ({_PIXEL})([x, y]) === color", arg=[x, y, color], timeout=TIMEOUT_MS
    )
    return color


async def test_two_tabs_see_each_others_avatar_and_chat(
    cluster: Cluster, browser: Browser, console: ConsoleLog
) -> None:
    aliases = await start_mesh(cluster, "s1", "s2")
    alice = await open_demo(browser, cluster, console, "alice", server=aliases["s1"])
    bob = await open_demo(browser, cluster, console, "bob", server=aliases["s2"])
    alice_alias = await wait_connected(alice)
    bob_alias = await wait_connected(bob)
    # Each tab subscribed to the room's topic; wait until the servers told each other.
    await wait_status(cluster, "s1", "server_topics", 1)
    await wait_status(cluster, "s2", "server_topics", 1)

    # The panel shows the session.
    assert await alice.text_content("#server") == str(aliases["s1"])
    assert await alice.text_content("#alias") == str(alice_alias)
    assert await bob.text_content("#server") == str(aliases["s2"])
    await alice.wait_for_function(
        "() => document.getElementById('rtt').textContent.endsWith(' ms')", timeout=TIMEOUT_MS
    )

    # Alice moves her mouse: Bob's canvas draws her avatar there, and follows it.
    await move_mouse(alice, 0.25, 0.6)
    color = await wait_avatar_drawn(bob, alice_alias, 0.25, 0.6)
    await move_mouse(alice, 0.7, 0.3)
    assert await wait_avatar_drawn(bob, alice_alias, 0.7, 0.3) == color
    assert await bob.evaluate(_PIXEL, [0.25, 0.6]) is None  # the old spot is clear again
    await bob.wait_for_function(
        "() => Number(document.getElementById('rate').textContent) > 0", timeout=TIMEOUT_MS
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await bob.screenshot(path=Path(ARTIFACTS, "demo-avatar.png"))

    # Bob moves too: Alice sees him; nobody draws themselves as another tab.
    await move_mouse(bob, 0.5, 0.5)
    await wait_avatar_drawn(alice, bob_alias, 0.5, 0.5)
    assert await alice.locator(f'#avatars li[data-alias="{alice_alias}"]').count() == 0

    # Chat: typed in one tab, shown in the other under the sender's authenticated name.
    await bob.fill("#chat-input", "hello from bob")
    await bob.press("#chat-input", "Enter")
    line = alice.locator("#chat-log li", has_text="hello from bob")
    await line.wait_for(timeout=TIMEOUT_MS)
    assert await line.inner_text() == "bob: hello from bob"
    await alice.fill("#chat-input", "hi bob")
    await alice.click("#chat-form button")
    await bob.locator("#chat-log li", has_text="hi bob").wait_for(timeout=TIMEOUT_MS)
    assert await bob.locator("#chat-log li").all_inner_texts() == [
        "bob: hello from bob",
        "alice: hi bob",
    ]
    await alice.screenshot(path=Path(ARTIFACTS, "demo-chat.png"))
    assert await alice.is_hidden("#error")
    assert await bob.is_hidden("#error")
