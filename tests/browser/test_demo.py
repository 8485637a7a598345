"""The demo page the coordinator serves at ``/``, used the way a person would use it."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from tests.browser.demo_page import PIXEL, move_mouse, open_demo, wait_avatar_drawn, wait_connected
from tests.browser.pages import TIMEOUT_MS, ConsoleLog
from tests.e2e.helpers import start_mesh, wait_status
from tests.support import ROOT, Cluster

ARTIFACTS = ROOT / "artifacts"


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
    assert await bob.evaluate(PIXEL, [0.25, 0.6]) is None  # the old spot is clear again
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
