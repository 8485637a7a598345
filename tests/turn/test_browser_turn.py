"""The browser SDK relays through a real coturn with credentials the coordinator issued.

Chromium pages (on another origin than the coordinator) connect with client
tokens on and ``iceTransportPolicy: "relay"``: the SDK must send its token to
``/ice-servers`` in a header (so the coordinator's CORS preflight must allow
it), get TURN credentials bound to its subject, and carry its session through
coturn. A page whose token is refused gets no TURN credentials (and the
authentication error of ``/connect``).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser

# The browser fixtures live with the browser tests; these tests use them too.
from tests.browser.conftest import browser, console, page_host
from tests.browser.pages import BrowserClient, ConnectFailed, ConsoleLog, PageHost
from tests.support import Cluster
from tests.turn.coturn import Coturn
from tests.turn.test_coturn_e2e import allocated_usernames, local_coturn, start_broker, token

__all__ = ["browser", "console", "page_host"]

_RELAYED = """async () => {
  const stats = await window.client.link.session.pc.getStats();
  const types = [];
  stats.forEach((report) => {
    if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") {
      types.push(stats.get(report.localCandidateId).candidateType);
    }
  });
  return types;
}"""


@pytest.fixture
def coturn() -> Any:
    with local_coturn() as server:
        yield server


async def test_browser_session_through_turn_with_its_token(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog, coturn: Coturn
) -> None:
    await start_broker(cluster, coturn.udp_url, coturn.secret, tokens=True)
    alice, bob = [
        await BrowserClient.connect(
            browser, page_host, cluster, console, token(name), iceTransportPolicy="relay"
        )
        for name in ("alice", "bob")
    ]
    await bob.subscribe(["room"])
    await alice.publish("room", "relayed by coturn")
    [got] = await bob.receive()
    assert (got["sender"], got["text"]) == (alice.alias, "relayed by coturn")
    for client in (alice, bob):
        types = await client.page.evaluate(_RELAYED)
        assert types and set(types) == {"relay"}, types
    subjects = {name.split(":", 1)[1] for name in allocated_usernames(coturn)}
    assert {"alice", "bob"} <= subjects, coturn.log()[-3000:]
    assert await turn_refusals(cluster) == {"no_token": 0, "bad_token": 0, "rate_limited": 0}


async def test_browser_with_a_refused_token_gets_no_credentials(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog, coturn: Coturn
) -> None:
    await start_broker(cluster, coturn.udp_url, coturn.secret, tokens=True)
    with pytest.raises(ConnectFailed, match="AuthenticationError"):
        await BrowserClient.connect(browser, page_host, cluster, console, "not-a-token")
    assert allocated_usernames(coturn) == []
    # Refused at /ice-servers for the token it sent in its header, not for a missing one.
    refused = await turn_refusals(cluster)
    assert refused["bad_token"] >= 1 and refused["no_token"] == 0, refused


async def turn_refusals(cluster: Cluster) -> dict[str, float]:
    metrics = (await cluster.http.get(f"{cluster.http_url}/metrics")).text
    prefix = "webrtc_broker_coordinator_turn_credentials_refused_total{reason="
    refusals = {}
    for line in metrics.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            refusals[labels[len(prefix) + 1 : -2]] = float(value)
    return refusals
