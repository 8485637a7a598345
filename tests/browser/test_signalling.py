"""The browser SDK's link survives whatever signalling reaches it.

The page connects through a real coordinator to a comm server played by the
test (``tests.fakeserver``), which then sends it repeated offers, an answer,
broken candidates and a CONNECT; a second registered server sends an offer
and a refusal of its own. The page must count each of them by reason
(``client.signallingDropped``), keep its session, and still exchange
messages. A broken candidate before the offer must not cost the offer.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.pages import BrowserClient, ConsoleLog, PageHost
from tests.fakeserver import fake_server, junk_frames, stranger_signals
from tests.support import Cluster, eventually
from webrtc_broker.client.link import SignallingDrop
from webrtc_broker.wire import broker_pb2 as pb

pytestmark = pytest.mark.timeout(90)


async def dropped(client: BrowserClient) -> dict[str, int]:
    counts: dict[str, Any] = await client.page.evaluate("() => window.client.signallingDropped")
    return {reason: int(count) for reason, count in counts.items()}


async def exchange(client: BrowserClient, text: str) -> None:
    await client.ping()
    await client.publish("t", text)
    [message] = await client.receive()
    assert (message["topic"], message["text"]) == ("t", text)


async def test_junk_signalling_costs_the_page_nothing(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()
    async with (
        fake_server(cluster.url, "other") as other,
        fake_server(cluster.url, "good") as server,
    ):
        client = await BrowserClient.connect(
            browser, page_host, cluster, console, "page", server=server.alias
        )
        await exchange(client, "before")
        expected: dict[str, int] = {SignallingDrop.WRONG_SENDER: 2}
        for frame, reason in junk_frames(server, client.alias):
            if reason is None:
                continue  # whether a browser takes that candidate is its own affair
            await server.peer.send_raw(frame)
            expected[reason] = expected.get(reason, 0) + 1
        await stranger_signals(other, client.alias)

        async def all_counted() -> bool:
            return await dropped(client) == expected

        await eventually(all_counted, timeout=10, interval=0.1)
        await exchange(client, "after")
        assert await client.page.evaluate("() => window.reconnects.length") == 0
        assert await client.page.evaluate("() => window.closeReason") is None
        await client.close()


async def test_a_broken_candidate_before_the_offer_does_not_cost_the_offer(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    await cluster.start_coordinator()

    async def before_offer(client: int) -> None:
        for junk in (b"not json", b'{"candidate": 7}', b'{"candidate": "garbage"}'):
            await server.signal(client, pb.WEBRTC_ICE_CANDIDATE, junk)

    async with fake_server(cluster.url, "good", before_offer) as server:
        client = await BrowserClient.connect(
            browser, page_host, cluster, console, "page", server=server.alias
        )
        await exchange(client, "hello")
        # The first two are refused on arrival; the third parses, and the browser
        # refuses it once the offer is applied, without failing the offer.
        assert await dropped(client) == {SignallingDrop.REJECTED: 2}
        await client.close()
