"""A client whose network drops all UDP still connects, through TURN over TCP or TLS.

The client's site router drops every UDP packet it would forward (only TCP
leaves, as on some corporate and hotel networks); another client sits behind
an ordinary NAT. coturn (``tests/turn/coturn.py``) and the broker run on the
host side of the "internet". The coordinator hands out short-lived TURN
credentials at ``/ice-servers`` for a ``turn:...?transport=tcp`` and a
``turns:`` URL; the blocked client keeps only one of them per test, so each
transport is proven on its own:

* over TCP and over TLS the blocked client's session runs on a relay
  candidate, exchanges reliable and unreliable messages with the other
  client, and its router forwarded TCP to coturn and not one UDP flow;
* without TURN the same client fails to connect, with the SDK's own error,
  within the connect timeout it was given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import topology
from tests.net.harness import PeerProcess, Processes, exchange
from tests.net.topology import Internet, NattedSite
from tests.turn.coturn import Coturn, run_coturn

pytestmark = pytest.mark.timeout(240)

NO_TURN_TIMEOUT = 8.0
"""The connect timeout of the client that has no way out."""


@pytest.fixture
def net() -> Iterator[Internet]:
    with topology.internet() as made:
        yield made


@pytest.fixture
def turn(net: Internet) -> Iterator[Coturn]:
    with run_coturn(address=net.address) as running:
        yield running


@pytest.fixture
def blocked(net: Internet) -> Iterator[NattedSite]:
    with topology.natted_site(net, block_udp=True) as site:
        yield site


@pytest.fixture
def sites(blocked: NattedSite, net: Internet) -> Iterator[tuple[NattedSite, NattedSite]]:
    """The UDP-blocked site and an ordinary one."""
    with topology.natted_site(net) as open_site:
        yield blocked, open_site


async def _broker(processes: Processes, net: Internet, turn: Coturn) -> str:
    url = await processes.coordinator(
        net.address,
        "--turn-url", turn.tcp_url, "--turn-url", turn.tls_url, "--turn-secret", turn.secret,
    )  # fmt: skip
    # Only the internet's address is offered, as a server with one public address would.
    await processes.commserver("s1", url, "--candidate-include", str(net.network))
    return url


async def _peers(
    processes: Processes, url: str, turn: Coturn, *sites: NattedSite
) -> list[PeerProcess]:
    # SSL_CERT_FILE: Python's default TLS context (aioice's for turns:) trusts the test CA.
    env = {"SSL_CERT_FILE": str(turn.ca_file)}
    return [
        await processes.peer(f"peers-{s.client.name}", url, prefix=s.client.command(), env=env)
        for s in sites
    ]


@pytest.mark.parametrize("scheme", ["turn:", "turns:"], ids=["tcp", "tls"])
async def test_a_client_without_udp_connects_through_turn(
    scheme: str,
    net: Internet,
    turn: Coturn,
    sites: tuple[NattedSite, NattedSite],
    tmp_path: Path,
) -> None:
    blocked, open_site = sites
    async with Processes.running(tmp_path) as processes:
        url = await _broker(processes, net, turn)
        walled, other = await _peers(processes, url, turn, *sites)
        reply = await walled.ok("connect", name="walled", turn_only=scheme, timeout=20)
        await other.ok("connect", name="other", timeout=20)
        [turn_url] = reply["ice_urls"]
        assert turn_url == (turn.tcp_url if scheme == "turn:" else turn.tls_url)
        # The session runs on the relay coturn allocated on the host side.
        assert reply["pair"].startswith(f"relay {turn.address}:"), reply

        await walled.ok("subscribe", name="walled", topics=["to-walled"])
        await other.ok("subscribe", name="other", topics=["to-other"])
        crossed = await exchange(other, "other", walled, "walled", "to-walled")
        crossed += await exchange(walled, "walled", other, "other", "to-other")

        tcp = topology.nat_flows(blocked.router, "tcp")
        udp = topology.nat_flows(blocked.router, "udp")
        port = turn.port if scheme == "turn:" else turn.tls_port
        print(
            f"\n[TURN over {'TCP' if scheme == 'turn:' else 'TLS'}] internet {net.network}; "
            f"coturn, coordinator and comm server "
            f"on {net.address}\n  UDP-blocked client {blocked.client_address} behind NAT "
            f"{blocked.public_address}: TURN URL {turn_url}\n  its pair: {reply['pair']}"
            f"\n  router flows: TCP {sorted({f.destination for f in tcp})}, UDP {len(udp)}"
            f"\n  messages exchanged with {open_site.client_address} (NAT "
            f"{open_site.public_address}): {len(crossed)}"
        )
        assert (turn.address, port) in {flow.destination for flow in tcp}, tcp
        assert not [flow for flow in udp if flow.source[0] == blocked.client_address], udp


async def test_a_client_without_udp_or_turn_fails_within_its_timeout(
    net: Internet, turn: Coturn, blocked: NattedSite, tmp_path: Path
) -> None:
    async with Processes.running(tmp_path) as processes:
        url = await _broker(processes, net, turn)
        [walled] = await _peers(processes, url, turn, blocked)
        # No URL starts with "none:": the client gets no TURN server at all.
        reply = await walled.request(
            "connect", wait=NO_TURN_TIMEOUT, name="walled", turn_only="none:",
            timeout=NO_TURN_TIMEOUT,
        )  # fmt: skip
        print(
            f"\n[no TURN] UDP-blocked client {blocked.client_address} behind NAT "
            f"{blocked.public_address}: {reply['error'] if not reply['ok'] else 'connected?!'} "
            f"after {reply['elapsed']} s (timeout {NO_TURN_TIMEOUT:g} s)"
        )
        assert not reply["ok"], reply
        assert reply["error"].startswith("ConnectTimeoutError"), reply
