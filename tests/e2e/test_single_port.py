"""A comm server's peer connections on one UDP port, on a port range, and behind an
advertised address, with real processes and Python SDK clients on this machine.

What it proves: with ``--udp-port P`` the server process holds exactly one UDP
socket (read from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/udp``) and it serves
24 clients and every server link, while junk from a stranger is dropped and
counted; with ``--udp-port-range`` every socket the server holds is in the
range; a server whose only candidate is an advertised address (its interface
addresses filtered out) still serves; an advertised port that a NodePort-like
iptables mapping sends to the bound one is the only path and works;
``--candidate-include lo`` offers loopback; a server killed and restarted on its
port relinks although the other server still holds the old link on the same
address pair; a taken port stops the process with an error naming it;
``/status`` and ``/metrics`` show the mode, the candidates and the mux's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import TIMEOUT, receive, subscribe, wait_status
from tests.support import Cluster, eventually
from tests.udp import free_udp_range, udp_ports
from webrtc_broker.client import BrokerClient

CLIENTS = 24


def udp_port_base() -> int:
    """A port that is free for UDP now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def send_junk(port: int) -> int:
    """Datagrams a stranger sends to the shared port: DTLS-looking records, binding
    requests naming no session, responses to no transaction. Returns how many."""
    stun_header = b"\x21\x12\xa4\x42" + os.urandom(12)
    datagrams = [
        b"\x16\xfe\xfd" + os.urandom(60),
        b"\x00\x01\x00\x0c" + stun_header + b"\x00\x06\x00\x08nobody:x",
        b"\x01\x01\x00\x00" + stun_header,
    ] * 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for datagram in datagrams:
            stranger.sendto(datagram, ("127.0.0.1", port))
    return len(datagrams)


def pid_of(cluster: Cluster, name: str) -> int:
    process = cluster.servers[name].process
    assert process is not None
    return process.pid


@contextlib.asynccontextmanager
async def clients_on(
    cluster: Cluster, server: str, count: int
) -> AsyncIterator[list[BrokerClient]]:
    alias = await cluster.alias_of(server)
    async with contextlib.AsyncExitStack() as stack:
        clients = await asyncio.gather(
            *(
                BrokerClient.connect(cluster.url, f"c{index}", server=alias)
                for index in range(count)
            )
        )
        for client in clients:
            stack.push_async_callback(client.close)
        yield list(clients)


async def everyone_hears_everyone(clients: list[BrokerClient], topic: str = "room") -> None:
    """Each client publishes once; each receives every other client's message."""
    for client in clients:
        await subscribe(client, [topic])
    for index, client in enumerate(clients):
        client.publish(topic, f"from {index}")
    for index, client in enumerate(clients):
        got = {(await receive(client)).body for _ in range(len(clients) - 1)}
        assert got == {f"from {i}".encode() for i in range(len(clients)) if i != index}


async def metric(cluster: Cluster, name: str, family: str) -> float:
    response = await cluster.http.get(f"http://127.0.0.1:{cluster.servers[name].http_port}/metrics")
    for line in response.text.splitlines():
        if line.startswith(family + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {family} in /metrics")


async def test_one_udp_socket_serves_every_client(cluster: Cluster) -> None:
    port = udp_port_base()
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--udp-port", str(port))
    status = await cluster.server_status("s1")
    assert status["ice"]["mode"] == "single-port"
    assert status["ice"]["ports"] == port
    assert status["ice"]["candidates"], "no candidate address on this machine"
    assert all(c.endswith(f":{port}") for c in status["ice"]["candidates"])
    junk = send_junk(port)
    async with clients_on(cluster, "s1", CLIENTS) as clients:
        await everyone_hears_everyone(clients)
        assert udp_ports(pid_of(cluster, "s1")) == [port]
        # The junk sent before the clients came was dropped and counted, nothing else.
        mux = (await cluster.server_status("s1"))["ice"]["mux"]
        assert mux["dropped_unknown"] >= junk, mux
        status = await cluster.server_status("s1")
        assert status["clients"] == CLIENTS
        assert status["ice"]["mux"]["endpoints"] == CLIENTS
        assert status["ice"]["mux"]["bound_addresses"] >= CLIENTS
        assert await metric(cluster, "s1", "webrtc_broker_commserver_udp_mux_bound_addresses") >= (
            CLIENTS
        )
    # Closed sessions leave no binding behind.
    await eventually(lambda: _mux_empty(cluster, "s1"), timeout=TIMEOUT)
    assert udp_ports(pid_of(cluster, "s1")) == [port]


async def _mux_empty(cluster: Cluster, name: str) -> bool:
    mux = (await cluster.server_status(name))["ice"]["mux"]
    return bool(mux["endpoints"] == 0 and mux["bound_addresses"] == 0)


async def test_port_range_holds_every_socket_in_range(cluster: Cluster) -> None:
    low, high = free_udp_range(64)
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--udp-port-range", f"{low}-{high}")
    status = await cluster.server_status("s1")
    assert (status["ice"]["mode"], status["ice"]["ports"]) == ("port-range", f"{low}-{high}")
    async with clients_on(cluster, "s1", 20) as clients:
        await everyone_hears_everyone(clients)
        ports = udp_ports(pid_of(cluster, "s1"))
        assert len(ports) >= 20, ports
        assert all(low <= p <= high for p in ports), ports


async def test_advertised_address_is_the_only_candidate(cluster: Cluster) -> None:
    """Interfaces filtered out (no address is in TEST-NET-3), loopback advertised:
    clients on this machine reach the server through the advertised address only."""
    port = udp_port_base()
    await cluster.start_coordinator()
    await cluster.start_server(
        "s1",
        "--udp-port", str(port),
        "--advertise-address", "127.0.0.1",
        "--candidate-include", "203.0.113.0/24",
    )  # fmt: skip
    status = await cluster.server_status("s1")
    assert status["ice"]["candidates"] == [f"127.0.0.1:{port}"]
    async with clients_on(cluster, "s1", 4) as clients:
        await everyone_hears_everyone(clients)
    assert udp_ports(pid_of(cluster, "s1")) == [port]


def default_source_address() -> str | None:
    """The address this host sends from by default (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            return None
        return str(probe.getsockname()[0])


@contextlib.contextmanager
def node_port(public: int, target: str, bound: int) -> Iterator[None]:
    """What a NodePort in front of a NAT does, on this host, with iptables.

    UDP to ``127.0.0.1:public`` is mapped to ``target:bound`` (nat OUTPUT DNAT); what
    the server sends from ``bound`` leaves only as a reply of such a mapped flow
    (conntrack rewrites its source back to ``127.0.0.1:public``): anything else it
    sends from that port is dropped, as a NAT drops what no mapping covers, so the
    clients can reach the server through the advertised port and no other way.
    Both rules are removed on exit.
    """
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("emulating a NodePort needs root and iptables")
    comment = ["-m", "comment", "--comment", "webrtc-broker test NodePort"]
    rules = [
        ("nat", "OUTPUT", ["-p", "udp", "-d", "127.0.0.1", "--dport", str(public),
         *comment, "-j", "DNAT", "--to-destination", f"{target}:{bound}"]),
        ("filter", "OUTPUT", ["-p", "udp", "--sport", str(bound),
         "-m", "conntrack", "!", "--ctstate", "DNAT", *comment, "-j", "DROP"]),
    ]  # fmt: skip
    added: list[tuple[str, str, list[str]]] = []
    try:
        for table, chain, spec in rules:
            subprocess.run(["iptables", "-t", table, "-I", chain, *spec], check=True)
            added.append((table, chain, spec))
        yield
    finally:
        for table, chain, spec in added:
            subprocess.run(["iptables", "-t", table, "-D", chain, *spec], check=True)


async def test_advertised_port_maps_to_the_bound_one(cluster: Cluster) -> None:
    """A NodePort: candidates carry a port the server does not bind; the network maps
    it to the bound one, and clients connect through it (no other path exists)."""
    target = default_source_address()
    if target is None:
        pytest.skip("no default route: the clients' addresses are unknown")
    bound, public = udp_port_base(), udp_port_base()
    with node_port(public, target, bound):
        await cluster.start_coordinator()
        await cluster.start_server(
            "s1", "--udp-port", str(bound), "--advertise-address", f"127.0.0.1:{public}"
        )
        status = await cluster.server_status("s1")
        assert status["ice"]["candidates"] == [f"127.0.0.1:{public}"]
        async with clients_on(cluster, "s1", 4) as clients:
            await everyone_hears_everyone(clients)
        assert udp_ports(pid_of(cluster, "s1")) == [bound]


async def test_loopback_included_by_name(cluster: Cluster) -> None:
    """``--candidate-include lo`` offers loopback although the default exclude list
    names it (and aioice itself never offers 127.0.0.1)."""
    port = udp_port_base()
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--udp-port", str(port), "--candidate-include", "lo")
    status = await cluster.server_status("s1")
    assert status["ice"]["candidates"] == [f"127.0.0.1:{port}"]
    async with clients_on(cluster, "s1", 3) as clients:
        await everyone_hears_everyone(clients)


async def test_two_servers_meshed_on_single_ports(cluster: Cluster) -> None:
    ports = {"s1": udp_port_base(), "s2": udp_port_base()}
    await cluster.start_coordinator()
    for name, port in ports.items():
        await cluster.start_server(name, "--udp-port", str(port))
    for name in ports:
        await cluster.wait_mesh(name, 1)
    async with (
        clients_on(cluster, "s1", 5) as first,
        clients_on(cluster, "s2", 5) as second,
    ):
        for client in (*first, *second):
            await subscribe(client, ["mesh"])
        # s2's subscription reaches s1 a moment after s2 applied it.
        await wait_status(cluster, "s1", "server_topics", 1)
        first[0].publish("mesh", "across")
        for client in (*first[1:], *second):
            assert (await receive(client)).body == b"across"
        for name, port in ports.items():
            assert udp_ports(pid_of(cluster, name)) == [port]
            mux = (await cluster.server_status(name))["ice"]["mux"]
            assert mux["endpoints"] == 6  # five clients and the server link


async def test_server_restarted_on_its_port_relinks(cluster: Cluster) -> None:
    """A server killed and restarted on the same UDP port (a pod restart with host
    networking or a NodePort) links again with the server that still holds the old
    session on the same address pair: the address passes to the new session."""
    ports = {"s1": udp_port_base(), "s2": udp_port_base()}
    await cluster.start_coordinator()
    for name, port in ports.items():
        await cluster.start_server(name, "--udp-port", str(port))
    for name in ports:
        await cluster.wait_mesh(name, 1)
    await cluster.stop(cluster.servers["s2"], kill=True)
    started = asyncio.get_running_loop().time()
    await cluster.start_server("s2", "--udp-port", str(ports["s2"]))
    await cluster.wait_mesh("s2", 1)
    await cluster.wait_mesh("s1", 1)
    mux = (await cluster.server_status("s1"))["ice"]["mux"]
    print(
        f"re-meshed {asyncio.get_running_loop().time() - started:.1f} s after the restart; "
        f"s1 refused {mux['refused_rebinds']} rebinds meanwhile"
    )
    async with clients_on(cluster, "s1", 2) as first, clients_on(cluster, "s2", 2) as second:
        for client in (*first, *second):
            await subscribe(client, ["mesh"])
        for name in ports:  # each server knows the other's clients want the topic
            await wait_status(cluster, name, "server_topics", 1)
        second[0].publish("mesh", "after restart")
        for client in (*first, second[1]):
            assert (await receive(client)).body == b"after restart"


async def test_taken_port_stops_the_server_naming_it(cluster: Cluster) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        await cluster.start_coordinator()
        proc = await cluster.start_server("s1", "--udp-port", str(port), wait=False)
        assert proc.process is not None
        code = await asyncio.wait_for(proc.process.wait(), 30)
    assert code != 0
    assert f"cannot bind UDP port {port}" in proc.log()


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    if not Path("/proc/self/net/udp").exists():
        pytest.skip("needs Linux /proc to count a process's UDP sockets")
