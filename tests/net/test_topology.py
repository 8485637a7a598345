"""The namespaces of ``tests/net/topology.py`` are the boundaries the other tests rely on.

* A NAT'd client reaches a public server over TCP and UDP, seen at its
  router's public address; neither the host nor another site reaches the
  client's private address.
* A UDP-blocked site passes TCP and no UDP.
* A 1:1 NAT'd server is reached at its public address, a mapped UDP port at
  the private port it maps to, and its own traffic from that port leaves from
  the public port.
* Namespaces, links, claim routes and processes are gone after the block,
  even when it fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.net import topology
from tests.net.topology import Internet, Namespace

ECHO = """
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[3])))
print("ready", flush=True)
if kind == socket.SOCK_DGRAM:
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
s.listen()
while True:
    c, peer = s.accept()
    c.sendall(f"{peer[0]}:{peer[1]}".encode())
    c.close()
"""

PROBE = """
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.settimeout(2)
if len(sys.argv) > 4:
    s.bind(("0.0.0.0", int(sys.argv[4])))
try:
    if kind == socket.SOCK_DGRAM:
        s.sendto(b"hi", (sys.argv[2], int(sys.argv[3])))
        print(s.recvfrom(100)[0].decode())
    else:
        s.connect((sys.argv[2], int(sys.argv[3])))
        print(s.recv(100).decode())
except OSError as exc:
    print(f"failed: {type(exc).__name__}")
"""


@pytest.fixture
def net() -> Iterator[Internet]:
    with topology.internet() as made:
        yield made


def echo(prefix: Sequence[str], kind: str, address: str, port: int) -> subprocess.Popen[str]:
    """An echo server telling each peer its address; killed by the caller."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", ECHO, kind, address, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def probe(ns: Namespace | None, kind: str, address: str, port: int, source: int = 0) -> str:
    """What the echo server at address:port says our address is, or "failed: ..."."""
    argv = [sys.executable, "-c", PROBE, kind, address, str(port)]
    if source:
        argv.append(str(source))
    command = ns.command(*argv) if ns is not None else argv
    return topology.run(*command).stdout.strip()


def test_a_natted_client_is_seen_at_its_router_and_is_unreachable_itself(net: Internet) -> None:
    with topology.natted_site(net) as east, topology.natted_site(net) as west:
        servers = [echo((), kind, net.address, 18000) for kind in ("tcp", "udp")]
        inner = [
            echo(east.client.command(), kind, east.client_address, 18001) for kind in ("tcp", "udp")
        ]
        try:
            seen = {kind: probe(east.client, kind, net.address, 18000) for kind in ("tcp", "udp")}
            from_host = probe(None, "udp", east.client_address, 18001)
            from_west = probe(west.client, "tcp", east.client_address, 18001)
        finally:
            for process in servers + inner:
                process.kill()
                process.wait()
    print(
        f"\nclient {east.client_address} seen by {net.address} as {seen}; "
        f"its private address from the host: {from_host}, from another site: {from_west}"
    )
    for kind in ("tcp", "udp"):
        assert seen[kind].startswith(f"{east.public_address}:"), seen
    assert from_host.startswith("failed"), from_host
    assert from_west.startswith("failed"), from_west


def test_a_udp_blocked_site_passes_tcp_only(net: Internet) -> None:
    with topology.natted_site(net, block_udp=True) as site:
        servers = [echo((), kind, net.address, 18002) for kind in ("tcp", "udp")]
        try:
            tcp = probe(site.client, "tcp", net.address, 18002)
            udp = probe(site.client, "udp", net.address, 18002)
        finally:
            for process in servers:
                process.kill()
                process.wait()
    print(f"\nUDP-blocked client {site.client_address}: TCP seen as {tcp}, UDP {udp}")
    assert tcp.startswith(f"{site.public_address}:"), tcp
    assert udp.startswith("failed"), udp


def test_one_to_one_nat_maps_the_address_and_a_port_both_ways(net: Internet) -> None:
    with (
        topology.nat_one_to_one_server(net, udp_port_map=[(31000, 47000)]) as server,
        topology.natted_site(net) as site,
    ):
        inside = [
            echo(server.server.command(), "udp", server.private_address, 47000),
            echo(server.server.command(), "tcp", server.private_address, 18003),
        ]
        outside = echo((), "udp", net.address, 18004)
        try:
            mapped = probe(site.client, "udp", server.public_address, 31000)
            unmapped = probe(site.client, "tcp", server.public_address, 18003)
            inside[0].kill()  # free 47000: the server's own traffic from it leaves from 31000
            inside[0].wait()
            outgoing = probe(server.server, "udp", net.address, 18004, source=47000)
            private = probe(site.client, "tcp", server.private_address, 18003)
        finally:
            for process in [*inside, outside]:
                process.kill()
                process.wait()
    print(
        f"\n1:1 {server.public_address} <-> {server.private_address}, UDP 31000 <-> 47000: "
        f"client seen inside as {mapped} (UDP) and {unmapped} (TCP); the server's UDP from "
        f"47000 seen outside as {outgoing}; its private address from the client: {private}"
    )
    assert mapped.startswith(f"{site.public_address}:"), mapped
    assert unmapped.startswith(f"{site.public_address}:"), unmapped
    assert outgoing == f"{server.public_address}:31000", outgoing
    assert private.startswith("failed"), private


def test_everything_is_removed_even_when_the_block_fails() -> None:
    made: dict[str, str] = {}
    with (
        pytest.raises(RuntimeError, match="the body failed"),
        topology.internet() as net,
        topology.natted_site(net) as site,
        topology.nat_one_to_one_server(net) as server,
    ):
        sleeper = subprocess.Popen(site.client.command("sleep", "600"))
        made = {
            "bridge": net.bridge,
            "namespaces": " ".join(
                ns.name for ns in (site.router, site.client, server.router, server.server)
            ),
            "routes": " ".join(str(n) for n in (net.network, site.lan, server.lan)),
        }
        raise RuntimeError("the body failed")
    deadline = time.monotonic() + 5
    while sleeper.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    namespaces = topology.run("ip", "netns", "list").stdout
    links = topology.run("ip", "-o", "link", "show").stdout
    routes = topology.run("ip", "route", "show").stdout
    print(f"\nmade {made}; left: namespaces, links and routes checked, sleeper {sleeper.poll()}")
    assert sleeper.poll() is not None
    assert not any(name in namespaces for name in made["namespaces"].split())
    assert f"wbp{net.tag}" not in links and made["bridge"] not in links
    assert not any(f"{network} " in routes for network in made["routes"].split())
