"""Clients behind real NAT routers reach a public comm server, and one UDP port serves them all.

Two sites, each a client namespace behind its own MASQUERADE router (see
``tests/net/topology.py``), run Python SDK clients; the coordinator and the
comm server run on the host's side of the "internet" bridge. The clients'
private addresses route nowhere: the server only ever sees each router's
public address, learned as a peer-reflexive candidate from the clients' checks.

* Reliable and unreliable messages cross both NATs, both ways.
* In single-port mode (``--udp-port``) the comm server holds exactly one UDP
  socket, on that port, while a dozen NAT'd clients are connected: one port
  serves every session. With ``--udp-port-range`` every socket, and every flow
  the routers translated, is on a port of the range. In the default mode each
  session has sockets of its own, which the printed summary shows next to it.

The sockets are counted from ``/proc/PID/fd`` matched against the server's
``/proc/PID/net/udp`` tables.
"""

from __future__ import annotations

import socket
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import topology
from tests.net.harness import Processes, exchange, free_port
from tests.net.topology import Internet, NattedSite
from tests.udp import free_udp_range, udp_sockets

pytestmark = pytest.mark.timeout(300)

CLIENTS_PER_SITE = 6


@pytest.fixture
def net() -> Iterator[Internet]:
    with topology.internet() as made:
        yield made


@pytest.fixture
def sites(net: Internet) -> Iterator[tuple[NattedSite, NattedSite]]:
    with topology.natted_site(net) as east, topology.natted_site(net) as west:
        yield east, west


@pytest.mark.parametrize("mode", ["single-port", "port-range", "per-connection"])
async def test_clients_behind_two_nats_share_topics_through_one_server(
    mode: str, net: Internet, sites: tuple[NattedSite, NattedSite], tmp_path: Path
) -> None:
    east, west = sites
    async with Processes.running(tmp_path) as processes:
        url = await processes.coordinator(net.address)
        # Only the internet's address is offered: the host's other addresses are
        # reachable from the sites too (they are all this host's), but not public.
        extra = ["--candidate-include", str(net.network)]
        udp_port = None
        port_range = None
        if mode == "single-port":
            udp_port = free_port("0.0.0.0", socket.SOCK_DGRAM)
            extra += ["--udp-port", str(udp_port)]
        elif mode == "port-range":
            port_range = free_udp_range(4 * CLIENTS_PER_SITE)
            extra += ["--udp-port-range", "{}-{}".format(*port_range)]
        server = await processes.commserver("s1", url, *extra)
        peers = {
            site.client.name: await processes.peer(
                f"peers-{label}", url, prefix=site.client.command()
            )
            for label, site in (("east", east), ("west", west))
        }
        east_peer, west_peer = peers[east.client.name], peers[west.client.name]

        pairs: dict[str, str] = {}
        connect_seconds: list[float] = []
        for index in range(CLIENTS_PER_SITE):
            for label, peer in (("east", east_peer), ("west", west_peer)):
                name = f"{label}{index}"
                reply = await peer.ok("connect", name=name, timeout=20)
                pairs[name] = reply["pair"]
                connect_seconds.append(reply["elapsed"])
        for label, peer in (("east", east_peer), ("west", west_peer)):
            await peer.ok("subscribe", name=f"{label}0", topics=[f"to-{label}"])

        crossed = await exchange(east_peer, "east1", west_peer, "west0", "to-west")
        crossed += await exchange(west_peer, "west1", east_peer, "east0", "to-east")

        sockets = udp_sockets(server.pid)
        clients = 2 * CLIENTS_PER_SITE
        ports = "" if port_range is None else " (range {}-{})".format(*port_range)
        print(
            f"\n[{mode}{ports}] internet {net.network}, coordinator and comm server on "
            f"{net.address}"
            f"\n  east: client {east.client_address} ({east.lan}) behind NAT {east.public_address}"
            f"\n  west: client {west.client_address} ({west.lan}) behind NAT {west.public_address}"
            f"\n  east0 pair: {pairs['east0']}\n  west0 pair: {pairs['west0']}"
            f"\n  connect (one at a time): median {statistics.median(connect_seconds):.3f} s, "
            f"max {max(connect_seconds):.3f} s"
            f"\n  messages crossed both NATs: {len(crossed)} ({', '.join(crossed)})"
            f"\n  comm server UDP sockets with {clients} NAT'd clients connected: {len(sockets)}"
            f" -> {sorted({port for _, port in sockets})[:20]}"
        )
        if udp_port is not None:
            assert sockets == [(sockets[0][0], udp_port)], sockets
            # Every client's session runs to that one port.
            for name, pair in pairs.items():
                assert pair.endswith(f"-> host {net.address}:{udp_port}"), (name, pair)
        else:
            # Every session has its own socket(s): at least one per client.
            assert len(sockets) >= clients, sockets
        if port_range is not None:
            low, high = port_range
            assert all(low <= port <= high for _, port in sockets), (port_range, sockets)
        for site in (east, west):
            # Every client's own socket left through the router, translated to its
            # public address; in single-port mode all of them went to the one port.
            flows = [
                flow
                for flow in topology.nat_flows(site.router)
                if flow.source[0] == site.client_address
            ]
            print(
                f"  {site.router.name}: {len(flows)} UDP flows from {site.client_address} to "
                f"{sorted({flow.destination[0] for flow in flows})} translated to "
                f"{sorted({flow.reply_destination[0] for flow in flows})}, server ports "
                f"{sorted({flow.destination[1] for flow in flows})[:20]}"
            )
            assert len({flow.source for flow in flows}) >= CLIENTS_PER_SITE, flows
            assert {flow.reply_destination[0] for flow in flows} == {site.public_address}
            if udp_port is not None:
                assert {flow.destination[1] for flow in flows} == {udp_port}, flows
            if port_range is not None:
                assert all(port_range[0] <= f.destination[1] <= port_range[1] for f in flows)
