"""A comm server behind 1:1 NAT is reached at the address it advertises, and only there.

The comm server runs inside a namespace on a private LAN, bound to one UDP
port (``--udp-port``). Its router maps a public address 1:1 to the server's
private one and, like a Kubernetes NodePort, a different public UDP port to the
bound one (both ways: see ``nat_one_to_one_server`` in ``tests/net/topology.py``).
The coordinator runs on the host side of the "internet"; the clients sit behind
a MASQUERADE NAT of their own, so neither end can reach the other's private
address.

* With ``--advertise-address PUBLIC:PUBLICPORT`` the server's only candidate is
  that address: two clients connect through both NATs, and exchange reliable
  and unreliable messages; the server's router translated their flows to
  PUBLIC:PUBLICPORT into the private bound port.
* The same server without ``--advertise-address`` offers its private address:
  the clients' checks go there, where nothing routes, and connecting fails
  with the SDK's timeout error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import topology
from tests.net.harness import Processes, exchange
from tests.net.topology import Internet, NattedSite, OneToOneServer

pytestmark = pytest.mark.timeout(240)

BOUND_PORT = 47000
"""The UDP port the server binds in its namespace (a fresh namespace has it free)."""
PUBLIC_PORT = 31000
"""The public port the router maps to it, as a NodePort would."""
UNREACHABLE_TIMEOUT = 8.0


@pytest.fixture
def net() -> Iterator[Internet]:
    with topology.internet() as made:
        yield made


@pytest.fixture
def behind_nat(net: Internet) -> Iterator[tuple[OneToOneServer, NattedSite]]:
    """The 1:1 NAT'd server's namespaces and a client site."""
    with (
        topology.nat_one_to_one_server(net, udp_port_map=[(PUBLIC_PORT, BOUND_PORT)]) as server,
        topology.natted_site(net) as site,
    ):
        yield server, site


async def _start(processes: Processes, net: Internet, server: OneToOneServer, *extra: str) -> str:
    url = await processes.coordinator(net.address)
    await processes.commserver(
        "s1", url, "--udp-port", str(BOUND_PORT), *extra, prefix=server.server.command()
    )
    return url


async def test_a_server_behind_one_to_one_nat_is_reached_at_its_advertised_address(
    net: Internet, behind_nat: tuple[OneToOneServer, NattedSite], tmp_path: Path
) -> None:
    server, site = behind_nat
    advertised = f"{server.public_address}:{PUBLIC_PORT}"
    async with Processes.running(tmp_path) as processes:
        url = await _start(processes, net, server, "--advertise-address", advertised)
        peer = await processes.peer("peers", url, prefix=site.client.command())
        pairs = {}
        for name in ("alice", "bob"):
            pairs[name] = (await peer.ok("connect", name=name, timeout=20))["pair"]
            assert pairs[name].endswith(f"-> host {advertised}"), pairs
        await peer.ok("subscribe", name="alice", topics=["to-alice"])
        await peer.ok("subscribe", name="bob", topics=["to-bob"])
        crossed = await exchange(peer, "bob", peer, "alice", "to-alice")
        crossed += await exchange(peer, "alice", peer, "bob", "to-bob")

        flows = [
            flow
            for flow in topology.nat_flows(server.router)
            if flow.destination == (server.public_address, PUBLIC_PORT)
        ]
        print(
            f"\n[advertised] comm server bound to {server.private_address}:{BOUND_PORT} "
            f"({server.lan}), advertised {advertised}; coordinator on {net.address}"
            f"\n  clients at {site.client_address} behind NAT {site.public_address}"
            f"\n  pairs: {pairs}\n  server router: "
            + "; ".join(
                f"{f.source[0]}:{f.source[1]} -> {f.destination[0]}:{f.destination[1]} "
                f"answered by {f.reply_source[0]}:{f.reply_source[1]}"
                for f in flows
            )
            + f"\n  messages exchanged through the server: {len(crossed)}"
        )
        # Each client's session came in at the public port and reached the bound
        # private one, from the client site's public address.
        assert len(flows) >= 2, flows
        for flow in flows:
            assert flow.source[0] == site.public_address, flow
            assert flow.reply_source == (server.private_address, BOUND_PORT), flow


async def test_the_same_server_without_an_advertised_address_is_unreachable(
    net: Internet, behind_nat: tuple[OneToOneServer, NattedSite], tmp_path: Path
) -> None:
    server, site = behind_nat
    async with Processes.running(tmp_path) as processes:
        url = await _start(processes, net, server)
        peer = await processes.peer("peers", url, prefix=site.client.command())
        reply = await peer.request(
            "connect", wait=UNREACHABLE_TIMEOUT, name="alice", timeout=UNREACHABLE_TIMEOUT
        )
        tried = {
            flow.destination
            for flow in topology.nat_flows(site.router)
            if flow.source[0] == site.client_address
        }
        print(
            f"\n[not advertised] comm server bound to {server.private_address}:{BOUND_PORT}, "
            f"public {server.public_address}:{PUBLIC_PORT} not offered\n  client "
            f"{site.client_address} behind NAT {site.public_address} checked {sorted(tried)}: "
            f"{reply.get('error', 'connected?!')} after {reply['elapsed']} s"
        )
        assert not reply["ok"], reply
        assert reply["error"].startswith("ConnectTimeoutError"), reply
        # The checks went to the private address, where nothing routes.
        assert (server.private_address, BOUND_PORT) in tried, tried
