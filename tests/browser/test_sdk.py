"""The browser SDK in real Chromium against real coordinator and comm-server processes."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser

from tests.browser.pages import BrowserClient, ConsoleLog, PageHost, assert_nothing_received
from tests.e2e.helpers import TIMEOUT, counter, start_mesh, subscribe, wait_status
from tests.support import Cluster
from webrtc_broker.client import BrokerClient
from webrtc_broker.wire import broker_pb2 as pb

BOTH_CAPABILITIES = pb.CAPABILITY_BATCH | pb.CAPABILITY_TOPIC_NAMES


async def test_two_pages_on_two_servers_exchange_both_kinds_both_ways(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    aliases = await start_mesh(cluster, "s1", "s2")
    alice = await BrowserClient.connect(
        browser, page_host, cluster, console, "alice", server=aliases["s1"]
    )
    bob = await BrowserClient.connect(
        browser, page_host, cluster, console, "bob", server=aliases["s2"]
    )
    assert (alice.server, bob.server) == (aliases["s1"], aliases["s2"])
    assert alice.alias != bob.alias
    # The servers answered the SDK's capabilities with theirs.
    assert alice.server_capabilities == bob.server_capabilities == BOTH_CAPABILITIES

    await alice.subscribe(["room", "a-only"])
    await bob.subscribe(["room"], compress=True)  # gzip by the browser's CompressionStream
    await wait_status(cluster, "s1", "server_topics", 1)  # s2 wants "room"
    await wait_status(cluster, "s2", "server_topics", 2)  # s1 wants "room" and "a-only"

    for reliable in (True, False):
        await alice.publish("room", f"alice reliable={reliable}", reliable=reliable)
        [got] = await bob.receive()
        assert got == {
            "sender": alice.alias,
            "text": f"alice reliable={reliable}",
            "reliable": reliable,
            "topic": "room",
            "identity": None,
            "role": None,
        }
        await bob.publish("room", f"bob reliable={reliable}", reliable=reliable)
        [got] = await alice.receive()
        assert (got["sender"], got["text"], got["reliable"], got["topic"]) == (
            bob.alias,
            f"bob reliable={reliable}",
            reliable,
            "room",
        )
    # A publisher does not get its own message back, nor a topic it is not subscribed to.
    await bob.publish("a-only", "for alice")
    [got] = await alice.receive()
    assert (got["text"], got["topic"]) == ("for alice", "a-only")
    await assert_nothing_received(bob)
    assert await alice.ping() > 0


async def test_a_burst_travels_in_batches_and_in_order(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    aliases = await start_mesh(cluster, "s1", "s2")
    alice = await BrowserClient.connect(
        browser, page_host, cluster, console, "alice", server=aliases["s1"]
    )
    bob = await BrowserClient.connect(
        browser, page_host, cluster, console, "bob", server=aliases["s2"]
    )
    await bob.subscribe(["burst"])
    await wait_status(cluster, "s1", "server_topics", 1)

    texts = [f"message {index:03d}" for index in range(300)]
    await alice.publish_many("burst", texts)  # one task: the SDK sends BATCH frames
    got = await bob.receive(len(texts))
    assert [m["text"] for m in got] == texts
    assert {m["sender"] for m in got} == {alice.alias}

    status = await cluster.server_status("s1")
    batches = counter(status, "frames_in", "client/batch")
    # About 40 of these frames fit one SCTP packet; the SDK sent far fewer messages than frames.
    assert 1 <= batches <= len(texts) // 10, status["stats"]["frames_in"]


async def test_a_page_and_a_python_client_share_a_topic(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await start_mesh(cluster, "s1")
    page = await BrowserClient.connect(browser, page_host, cluster, console, "browser-user")
    python = await BrokerClient.connect(cluster.url, "python-user", timeout=TIMEOUT)
    try:
        assert page.server == python.server_alias
        await page.subscribe(["chat"])
        await subscribe(python, ["chat"])

        await page.publish("chat", "plain from the browser")
        got = await asyncio.wait_for(python.receive(), TIMEOUT)
        assert (got.sender, got.body, got.reliable, got.identity, got.topic) == (
            page.alias,
            b"plain from the browser",
            True,
            None,
            "chat",
        )
        await page.publish("chat", "signed by the browser", identity=True, reliable=False)
        got = await asyncio.wait_for(python.receive(), TIMEOUT)
        assert (got.sender, got.body, got.reliable, got.identity, got.role) == (
            page.alias,
            b"signed by the browser",
            False,
            b"browser-user",
            pb.CLIENT,
        )

        python.publish("chat", "plain from python", reliable=False)
        [got_in_page] = await page.receive()
        assert got_in_page == {
            "sender": python.alias,
            "text": "plain from python",
            "reliable": False,
            "topic": "chat",
            "identity": None,
            "role": None,
        }
        python.publish_identity("chat", "signed by python")
        [got_in_page] = await page.receive()
        assert got_in_page == {
            "sender": python.alias,
            "text": "signed by python",
            "reliable": True,
            "topic": "chat",
            "identity": "python-user",
            "role": pb.CLIENT,
        }
    finally:
        await python.close()


async def test_an_original_protocol_page_gets_no_topic_names(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    """With no capabilities announced the server speaks the original protocol to the page."""
    await start_mesh(cluster, "s1")
    old = await BrowserClient.connect(browser, page_host, cluster, console, "old", capabilities=0)
    new = await BrowserClient.connect(browser, page_host, cluster, console, "new")
    assert old.server_capabilities == 0  # the server sent no AUTH back
    await old.subscribe(["t"])
    await new.subscribe(["t"])
    await new.publish("t", "hello")
    [got] = await old.receive()
    assert (got["sender"], got["text"], got["topic"]) == (new.alias, "hello", None)
    await old.publish("t", "hi")
    [got] = await new.receive()
    assert (got["text"], got["topic"]) == ("hi", "t")


async def test_close_is_seen_by_the_server(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await start_mesh(cluster, "s1")
    leaving = await BrowserClient.connect(browser, page_host, cluster, console, "leaving")
    staying = await BrowserClient.connect(browser, page_host, cluster, console, "staying")
    await staying.subscribe(["t"])
    await wait_status(cluster, "s1", "clients", 2)
    await leaving.page.evaluate(
        "() => { window.client.publish('t', 'last words'); window.client.close(); }"
    )
    # What was published right before close() still went out.
    [got] = await staying.receive()
    assert got["text"] == "last words"
    await wait_status(cluster, "s1", "clients", 1)
    assert await leaving.wait_closed() == "closed by the client"
    error = await leaving.page.evaluate(
        "() => { try { window.client.publish('t', 'x'); } catch (e) { return e.name; } }"
    )
    assert error == "ClosedError"


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_a_page_moves_to_another_server_when_its_server_stops(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog, kill: bool
) -> None:
    """SIGTERM: the server drains its clients. SIGKILL: the SDK's keepalive notices silence."""
    aliases = await start_mesh(cluster, "s1", "s2")
    page = await BrowserClient.connect(
        browser, page_host, cluster, console, "mover", server=aliases["s1"]
    )
    await page.subscribe(["news"])
    first_alias = page.alias
    await cluster.stop(cluster.servers["s1"], kill=kill)
    move = await page.wait_reconnected(timeout_ms=30_000)
    if kill:
        assert move["reason"] == "server silent; presumed dead"
    assert (page.server, page.alias != first_alias) == (aliases["s2"], True)
    # The subscription was restored on the new server.
    async with await BrokerClient.connect(cluster.url, "reporter", timeout=TIMEOUT) as reporter:
        await wait_status(cluster, "s2", "topics", 1)
        reporter.publish("news", "still subscribed")
        [got] = await page.receive()
        assert (got["text"], got["sender"]) == ("still subscribed", reporter.alias)
    assert await page.ping() > 0


async def test_without_reconnect_a_lost_server_ends_the_client(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await start_mesh(cluster, "s1")
    page = await BrowserClient.connect(
        browser, page_host, cluster, console, "alice", reconnect=False
    )
    await cluster.stop(cluster.servers["s1"])
    reason = await page.wait_closed(timeout_ms=30_000)
    assert reason
    assert await page.page.evaluate("() => window.reconnects.length") == 0
