"""Debian's Chromium behind a real NAT talks to a Python client through a single-port server.

The Playwright driver runs inside a NAT'd client namespace (``ip netns exec``),
so Chromium's sockets live there; the Python SDK client sits behind another
NAT; the coordinator runs on the host side of the "internet"
(``tests/net/topology.py``) and the comm server (``--udp-port``) on a public
host of its own there, so that nothing it might send to a multicast group
leaves the internet bridge.

Chromium hides its host candidates behind mDNS names. The comm server drops
them instead of resolving them (that would open a resolver socket on port
5353 and cannot work across a NAT; the addresses would be private anyway):
the session works because the server, which has the reachable address, takes
the browser's NAT'd address from its checks as a peer-reflexive candidate.
Reliable and unreliable messages cross both ways; the browser's router
translated its flows to the server's one port, the only UDP socket the server
holds.

A second test puts Chromium on a network that drops all UDP, with the SDK's
``iceTransportPolicy: "relay"`` and TURN over TCP from the coordinator's
``/ice-servers`` (coturn on the host side): the session runs on a relay
candidate and messages cross the same way.

A third reaches a comm server behind 1:1 NAT, with a public port mapped to
its bound one, at its ``--advertise-address PUBLIC:PORT`` (the NodePort way
browsers outside a Kubernetes cluster reach a comm server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import topology
from tests.net.harness import PeerProcess, Process, Processes, exchange
from tests.net.topology import Internet, NattedSite, OneToOneServer, PublicHost
from tests.turn.coturn import Coturn, run_coturn
from tests.udp import udp_sockets

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
UDP_PORT = 47001
"""The comm server's one port (its namespace is fresh: the port is free)."""
PUBLIC_PORT = 31000
"""The public port a 1:1 NAT maps to it, as a NodePort would."""


@pytest.fixture
def net() -> Iterator[Internet]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with topology.internet() as made:
        yield made


@pytest.fixture
def server_host(net: Internet) -> Iterator[PublicHost]:
    """Where the comm server runs: a public address and no other link (see the docstring)."""
    with topology.public_host(net) as host:
        yield host


@pytest.fixture
def sites(net: Internet) -> Iterator[tuple[NattedSite, NattedSite]]:
    """The browser's site and the Python client's."""
    with topology.natted_site(net) as browser_site, topology.natted_site(net) as python_site:
        yield browser_site, python_site


@pytest.fixture
def walled(net: Internet) -> Iterator[tuple[NattedSite, NattedSite, Coturn]]:
    """A UDP-blocked site for the browser, the Python client's site, and coturn."""
    with (
        topology.natted_site(net, block_udp=True) as browser_site,
        topology.natted_site(net) as python_site,
        run_coturn(address=net.address) as turn,
    ):
        yield browser_site, python_site, turn


async def _commserver(processes: Processes, url: str, host: PublicHost) -> Process:
    return await processes.commserver(
        "s1", url, "--udp-port", str(UDP_PORT), prefix=host.namespace.command()
    )


async def _clients(
    processes: Processes, url: str, browser_site: NattedSite, python_site: NattedSite
) -> tuple[PeerProcess, PeerProcess]:
    browser = await processes.peer(
        "chromium", url, prefix=browser_site.client.command(), module="tests.net.browser_peer"
    )
    python = await processes.peer("python", url, prefix=python_site.client.command())
    return browser, python


async def _exchange(browser: PeerProcess, python: PeerProcess) -> list[str]:
    await browser.ok("subscribe", name="chromium", topics=["to-browser"])
    await python.ok("subscribe", name="python", topics=["to-python"])
    crossed = await exchange(python, "python", browser, "chromium", "to-browser")
    crossed += await exchange(browser, "chromium", python, "python", "to-python")
    return crossed


async def test_chromium_behind_nat_and_a_python_client_share_a_single_port_server(
    net: Internet, server_host: PublicHost, sites: tuple[NattedSite, NattedSite], tmp_path: Path
) -> None:
    browser_site, python_site = sites
    udp_port, public = UDP_PORT, server_host.address
    async with Processes.running(tmp_path) as processes:
        url = await processes.coordinator(net.address)
        server = await _commserver(processes, url, server_host)
        browser, python = await _clients(processes, url, browser_site, python_site)
        page = await browser.ok("connect", name="chromium", timeout=30, wait=60)
        other = await python.ok("connect", name="python", timeout=20)
        crossed = await _exchange(browser, python)

        flows = [
            flow
            for flow in topology.nat_flows(browser_site.router)
            if flow.source[0] == browser_site.client_address
            and flow.destination == (public, udp_port)
        ]
        sockets = udp_sockets(server.pid)
        print(
            f"\n[chromium, single port] internet {net.network}; coordinator on {net.address}, "
            f"comm server on {public}, UDP port {udp_port}"
            f"\n  Chromium at {browser_site.client_address} behind NAT "
            f"{browser_site.public_address}: pair {page['pair']}"
            f"\n  Python at {python_site.client_address} behind NAT "
            f"{python_site.public_address}: pair {other['pair']}"
            f"\n  browser router flows to the server port: "
            f"{[(f.source, f.reply_destination) for f in flows]}"
            f"\n  comm server UDP sockets: {sockets}"
            f"\n  messages exchanged: {len(crossed)}"
        )
        assert page["pair"].endswith(f"-> host {public}:{udp_port}"), page
        assert flows, topology.nat_flows(browser_site.router)
        assert {f.reply_destination[0] for f in flows} == {browser_site.public_address}
        # One socket carries every session; the browser's mDNS (.local) candidates
        # opened no resolver socket (port 5353) beside it.
        assert sockets == [("0.0.0.0", udp_port)], sockets


async def test_chromium_without_udp_relays_through_turn_over_tcp(
    net: Internet,
    server_host: PublicHost,
    walled: tuple[NattedSite, NattedSite, Coturn],
    tmp_path: Path,
) -> None:
    browser_site, python_site, turn = walled
    async with Processes.running(tmp_path) as processes:
        url = await processes.coordinator(
            net.address, "--turn-url", turn.tcp_url, "--turn-secret", turn.secret
        )
        await _commserver(processes, url, server_host)
        browser, python = await _clients(processes, url, browser_site, python_site)
        page = await browser.ok(
            "connect", name="chromium", timeout=30, wait=60,
            options={"iceTransportPolicy": "relay"},
        )  # fmt: skip
        other = await python.ok("connect", name="python", timeout=20)
        crossed = await _exchange(browser, python)

        tcp = {
            flow.destination
            for flow in topology.nat_flows(browser_site.router, "tcp")
            if flow.source[0] == browser_site.client_address
        }
        udp = [
            flow
            for flow in topology.nat_flows(browser_site.router, "udp")
            if flow.source[0] == browser_site.client_address
        ]
        print(
            f"\n[chromium, UDP blocked, relay only] internet {net.network}; coturn and "
            f"coordinator on {net.address} (TURN {turn.tcp_url}), comm server on "
            f"{server_host.address}:{UDP_PORT}"
            f"\n  Chromium at {browser_site.client_address} behind NAT "
            f"{browser_site.public_address}: pair {page['pair']}"
            f"\n  Python at {python_site.client_address}: pair {other['pair']}"
            f"\n  browser router flows: TCP {sorted(tcp)}, UDP {len(udp)}"
            f"\n  messages exchanged: {len(crossed)}"
        )
        assert page["pair"].startswith(f"relay {turn.address}:"), page
        assert page["pair"].endswith(f"-> host {server_host.address}:{UDP_PORT}"), page
        assert (turn.address, turn.port) in tcp, tcp
        assert not udp, udp


@pytest.fixture
def behind_one_to_one(net: Internet) -> Iterator[tuple[OneToOneServer, NattedSite, NattedSite]]:
    """A comm server behind 1:1 NAT (public port 31000 to bound 47000) and two client sites."""
    with (
        topology.nat_one_to_one_server(net, udp_port_map=[(PUBLIC_PORT, UDP_PORT)]) as server,
        topology.natted_site(net) as browser_site,
        topology.natted_site(net) as python_site,
    ):
        yield server, browser_site, python_site


async def test_chromium_behind_nat_reaches_a_one_to_one_natted_server_at_its_advertised_port(
    net: Internet,
    behind_one_to_one: tuple[OneToOneServer, NattedSite, NattedSite],
    tmp_path: Path,
) -> None:
    server, browser_site, python_site = behind_one_to_one
    advertised = f"{server.public_address}:{PUBLIC_PORT}"
    async with Processes.running(tmp_path) as processes:
        url = await processes.coordinator(net.address)
        await processes.commserver(
            "s1", url, "--udp-port", str(UDP_PORT), "--advertise-address", advertised,
            prefix=server.server.command(),
        )  # fmt: skip
        browser, python = await _clients(processes, url, browser_site, python_site)
        page = await browser.ok("connect", name="chromium", timeout=30, wait=60)
        other = await python.ok("connect", name="python", timeout=20)
        crossed = await _exchange(browser, python)
        flows = [
            flow
            for flow in topology.nat_flows(server.router)
            if flow.destination == (server.public_address, PUBLIC_PORT)
        ]
        print(
            f"\n[chromium, advertised] comm server bound to {server.private_address}:{UDP_PORT}"
            f" behind 1:1 NAT, advertised {advertised}"
            f"\n  Chromium at {browser_site.client_address} behind NAT "
            f"{browser_site.public_address}: pair {page['pair']}"
            f"\n  Python at {python_site.client_address}: pair {other['pair']}"
            f"\n  server router: "
            + "; ".join(
                f"{f.source} -> {f.destination} answered by {f.reply_source}" for f in flows
            )
            + f"\n  messages exchanged: {len(crossed)}"
        )
        assert page["pair"].endswith(f"-> host {advertised}"), page
        assert {f.source[0] for f in flows} == {
            browser_site.public_address,
            python_site.public_address,
        }, flows
        assert {f.reply_source for f in flows} == {(server.private_address, UDP_PORT)}, flows
