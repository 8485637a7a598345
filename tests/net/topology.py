"""Real network boundaries on one machine: an "internet", NAT routers, private LANs.

The tests in this package put clients (and sometimes a comm server) behind Linux
NAT routers made of network namespaces, so that what crosses a boundary is what
would cross it between a home network and a server: a client's private address
routes nowhere, a server is reached only at its public address.

Address plan (all of it in 198.18.0.0/15, RFC 2544's benchmarking range):

* Every /24 this module uses comes from ``POOL``: 198.18.64.0/18 and
  198.19.0.0/17. The local Kubernetes cluster holds 198.18.0.0/24 (Services),
  198.18.128.0/20 (pods) and 198.19.255.0/24 (its API server); ``tests/netns.py``
  draws /30s from anywhere in the /15, so a /24 overlapping any route already on
  the host is never taken.
* Each /24 in use is claimed by an ``unreachable`` route on the host with metric
  :data:`CLAIM_METRIC`. Adding a route that exists fails, so the route is a lock
  between parallel runs (two test processes never share a /24), and it keeps a
  private LAN unroutable from the host even without the cluster's blackhole route
  for 198.18.0.0/15. Nothing is ever sent off the machine: packets for a private
  LAN that reach the host meet the unreachable route; the default route is never
  the most specific match for a claimed /24.
* The internet (:func:`internet`): a bridge in the host namespace with ``.1`` of
  its /24. A service bound to :attr:`Internet.address` is a public server.
  Every router's WAN is a veth whose host end is a port of the bridge, so
  routers and the host meet on one link and no forwarding by the host is
  involved (the host's own ``ip_forward`` is never touched). The connected
  route of the bridge (metric 0) wins over the claim (metric 4242), and both
  are more specific than the cluster's blackhole /15.
* A NAT'd site (:func:`natted_site`): a router namespace with WAN ``.N`` on the
  internet and ``.1`` of a private /24 on its LAN, MASQUERADE out of the WAN and
  ``ip_forward=1`` in the router namespace only; a client namespace with ``.2``
  of that LAN, its default route via the router. Optionally the router drops
  every UDP packet it would forward (a network that allows only TCP out).
* A public host (:func:`public_host`): a namespace with ``.N`` of the internet
  and nothing else, for a server that must not reach the host's other links.
* A 1:1 NAT'd server (:func:`nat_one_to_one_server`): a router whose WAN has a
  second, public address mapped 1:1 (DNAT in, SNAT out) to a server namespace on
  a private /24, optionally with one UDP port mapped to another (public P to
  private Q, as a Kubernetes NodePort does), in both directions.

IPv6 is switched off inside the namespaces and on the bridge: the tests are
about IPv4 NAT, and link-local addresses would only add candidates that fail.

Every piece is a context manager that removes what it made (namespaces, veths,
the bridge, the claim routes, processes left in its namespaces) even when the
body fails; names carry a random tag, so parallel runs do not collide. Without
root, ``ip``, ``iptables`` or ``conntrack``, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

POOL = (ipaddress.IPv4Network("198.18.64.0/18"), ipaddress.IPv4Network("198.19.0.0/17"))
"""Where this module's /24s come from (see the module docstring)."""
CLAIM_METRIC = 4242
"""Metric of the unreachable route that claims a /24 (see the module docstring)."""
COMMAND_TIMEOUT = 15.0

Network = ipaddress.IPv4Network


def skip_reason() -> str | None:
    """Why namespaces and NAT cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces and NAT rules need root"
    for tool in ("ip", "iptables", "conntrack"):
        if shutil.which(tool) is None:
            return f"the network tests need `{tool}` (iproute2, iptables, conntrack)"
    return None


def require() -> None:
    """Skip the calling test, printing why, when the topology cannot be built."""
    reason = skip_reason()
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (``ip``, ``iptables``, ``sysctl``), failing with its stderr."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


def _tag() -> str:
    return f"{random.randrange(16**6):06x}"


# -- address claims ---------------------------------------------------------


def _routed_networks() -> list[Network]:
    """Every IPv4 prefix in the host's routing tables but the blackhole covering the pool."""
    found: list[Network] = []
    output = run("ip", "-4", "route", "show", "table", "all").stdout
    for line in output.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] in ("local", "broadcast", "multicast", "anycast"):
            continue  # single addresses: interface addresses are listed below
        typed = words[0] in ("unreachable", "blackhole", "prohibit", "throw")
        try:
            network = ipaddress.IPv4Network(words[1] if typed else words[0], strict=False)
        except ValueError:
            continue  # "default", or not IPv4
        if typed and network.prefixlen <= 15:
            continue  # the cluster's blackhole for the whole /15 is a backstop, not a user
        found.append(network)
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    return found


@contextlib.contextmanager
def claimed_subnet() -> Iterator[Network]:
    """A /24 of :data:`POOL` no route or address on the host overlaps, held until exit."""
    candidates = [subnet for network in POOL for subnet in network.subnets(new_prefix=24)]
    random.shuffle(candidates)
    used = _routed_networks()
    for subnet in candidates:
        if any(subnet.overlaps(other) for other in used):
            continue
        claim = run(
            "ip", "route", "add", "unreachable", str(subnet), "metric", str(CLAIM_METRIC),
            check=False,
        )  # fmt: skip
        if claim.returncode != 0:
            continue  # another run claimed it a moment ago
        try:
            yield subnet
        finally:
            run("ip", "route", "del", "unreachable", str(subnet), "metric", str(CLAIM_METRIC),
                check=False)  # fmt: skip
        return
    raise RuntimeError(f"no free /24 in {', '.join(map(str, POOL))}")


# -- namespaces -------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    """A network namespace: run commands in it, find what runs in it."""

    name: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.command(*argv), check=check)

    def pids(self) -> list[int]:
        """Processes whose network namespace this is."""
        output = run("ip", "netns", "pids", self.name, check=False).stdout
        return [int(word) for word in output.split() if word.isdigit()]

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def iptables(self, *argv: str) -> None:
        self.run("iptables", "-w", "5", *argv)


def _kill_all(namespace: Namespace) -> None:
    """SIGKILL what still runs in ``namespace`` (only the tests start processes there)."""
    for _ in range(3):
        pids = namespace.pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@contextlib.contextmanager
def namespace(role: str, tag: str) -> Iterator[Namespace]:
    """A fresh namespace ``wbnet-TAG-ROLE`` with loopback up and IPv6 off."""
    created = Namespace(f"wbnet-{tag}-{role}")
    run("ip", "netns", "add", created.name)
    try:
        created.run("ip", "link", "set", "lo", "up")
        created.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        created.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        yield created
    finally:
        _kill_all(created)
        run("ip", "netns", "del", created.name, check=False)


def _link(left: Namespace, left_name: str, right: Namespace, right_name: str) -> None:
    """A veth pair between two namespaces (removed with either namespace)."""
    run(
        "ip", "-n", left.name, "link", "add", left_name, "type", "veth",
        "peer", "name", right_name, "netns", right.name,
    )  # fmt: skip
    left.run("ip", "link", "set", left_name, "up")
    right.run("ip", "link", "set", right_name, "up")


def _address(ns: Namespace, interface: str, address: str) -> None:
    ns.run("ip", "addr", "add", address, "dev", interface)


# -- the internet -----------------------------------------------------------


@dataclass
class Internet:
    """The host namespace side: a bridge every router's WAN plugs into."""

    tag: str
    bridge: str
    network: Network
    _next_host: int = 10
    _ports: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The host's address here: bind a public server to it."""
        return str(self.network.network_address + 1)

    def allocate(self) -> str:
        """A free public address of this internet (a router's WAN, a 1:1 NAT's public IP)."""
        if self._next_host >= self.network.num_addresses - 1:
            raise RuntimeError(f"{self.network} is full")
        address = str(self.network.network_address + self._next_host)
        self._next_host += 1
        return address

    def plug(self, ns: Namespace, interface: str) -> None:
        """A veth from ``ns`` (named ``interface`` there) to a port of the bridge."""
        port = f"wbp{self.tag}{len(self._ports):02d}"
        run(
            "ip", "link", "add", port, "type", "veth",
            "peer", "name", interface, "netns", ns.name,
        )  # fmt: skip
        self._ports.append(port)
        run("ip", "link", "set", port, "master", self.bridge)
        run("ip", "link", "set", port, "up")
        ns.run("ip", "link", "set", interface, "up")

    def cleanup_ports(self) -> None:
        for port in self._ports:
            run("ip", "link", "del", port, check=False)


@contextlib.contextmanager
def internet() -> Iterator[Internet]:
    """A fresh "internet" (see the module docstring); skips the test without root."""
    require()
    tag = _tag()
    bridge = f"wbi{tag}"
    with claimed_subnet() as network:
        made = Internet(tag, bridge, network)
        run("ip", "link", "add", bridge, "type", "bridge")
        try:
            sysctl = f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"
            with contextlib.suppress(OSError), open(sysctl, "w") as knob:
                knob.write("1")
            run("ip", "addr", "add", f"{made.address}/{network.prefixlen}", "dev", bridge)
            run("ip", "link", "set", bridge, "up")
            yield made
        finally:
            made.cleanup_ports()
            run("ip", "link", "del", bridge, check=False)


# -- NAT'd sites ------------------------------------------------------------


@dataclass(frozen=True)
class NattedSite:
    """A client namespace behind a MASQUERADE router."""

    router: Namespace
    client: Namespace
    public_address: str
    """The router's WAN address: what servers see as the client's address."""
    lan: Network
    client_address: str
    """The client's private address (routes nowhere outside the site)."""
    udp_blocked: bool


@contextlib.contextmanager
def natted_site(net: Internet, *, block_udp: bool = False) -> Iterator[NattedSite]:
    """A client behind its own NAT router on ``net``.

    With ``block_udp`` the router drops every UDP packet it would forward
    (both ways), so only TCP leaves the LAN, as on networks that allow web
    traffic alone.
    """
    tag = _tag()
    with contextlib.ExitStack() as stack:
        lan = stack.enter_context(claimed_subnet())
        router = stack.enter_context(namespace("rt", tag))
        client = stack.enter_context(namespace("cl", tag))
        wan_address = net.allocate()
        net.plug(router, "wan")
        _address(router, "wan", f"{wan_address}/{net.network.prefixlen}")
        router.run("ip", "route", "add", "default", "via", net.address)
        _link(router, "lan", client, "eth0")
        gateway, client_address = str(lan.network_address + 1), str(lan.network_address + 2)
        _address(router, "lan", f"{gateway}/24")
        _address(client, "eth0", f"{client_address}/24")
        client.run("ip", "route", "add", "default", "via", gateway)
        router.sysctl("net.ipv4.ip_forward", "1")
        router.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
        if block_udp:
            router.iptables("-A", "FORWARD", "-p", "udp", "-j", "DROP")
        yield NattedSite(router, client, wan_address, lan, client_address, block_udp)


# -- a public host ----------------------------------------------------------


@dataclass(frozen=True)
class PublicHost:
    """A namespace with a public address of its own on the internet (no NAT)."""

    namespace: Namespace
    address: str


@contextlib.contextmanager
def public_host(net: Internet) -> Iterator[PublicHost]:
    """A server with a public address and no other interface than its link to ``net``.

    What it sends to a multicast group (an mDNS query, say) stays on the bridge,
    where a process in the host namespace would send it out of every interface.
    """
    with namespace("ph", _tag()) as host:
        address = net.allocate()
        net.plug(host, "eth0")
        _address(host, "eth0", f"{address}/{net.network.prefixlen}")
        host.run("ip", "route", "add", "default", "via", net.address)
        yield PublicHost(host, address)


# -- a server behind 1:1 NAT ------------------------------------------------


@dataclass(frozen=True)
class OneToOneServer:
    """A server namespace whose private address is mapped 1:1 to a public one."""

    router: Namespace
    server: Namespace
    public_address: str
    private_address: str
    lan: Network
    port_map: tuple[tuple[int, int], ...]
    """(public, private) UDP ports mapped to each other, both ways."""


@contextlib.contextmanager
def nat_one_to_one_server(
    net: Internet, *, udp_port_map: Sequence[tuple[int, int]] = ()
) -> Iterator[OneToOneServer]:
    """A server behind a router that maps a public address 1:1 to its private one.

    Every port of the public address reaches the same port of the server
    (DNAT), and what the server sends out leaves from the public address
    (SNAT). Each ``(public, private)`` pair of ``udp_port_map`` maps UDP port
    ``public`` to ``private`` instead, both ways: datagrams to PUBLIC:public
    reach PRIVATE:private, and datagrams the server sends from ``private`` leave
    from ``public``, even to a peer that never wrote first.
    """
    tag = _tag()
    with contextlib.ExitStack() as stack:
        lan = stack.enter_context(claimed_subnet())
        router = stack.enter_context(namespace("nr", tag))
        server = stack.enter_context(namespace("sv", tag))
        wan_address, public = net.allocate(), net.allocate()
        net.plug(router, "wan")
        _address(router, "wan", f"{wan_address}/{net.network.prefixlen}")
        _address(router, "wan", f"{public}/{net.network.prefixlen}")
        router.run("ip", "route", "add", "default", "via", net.address)
        _link(router, "lan", server, "eth0")
        gateway, private = str(lan.network_address + 1), str(lan.network_address + 2)
        _address(router, "lan", f"{gateway}/24")
        _address(server, "eth0", f"{private}/24")
        server.run("ip", "route", "add", "default", "via", gateway)
        router.sysctl("net.ipv4.ip_forward", "1")
        # Port mappings first: the first matching nat rule decides a new flow.
        for outside, inside in udp_port_map:
            router.iptables(
                "-t", "nat", "-A", "PREROUTING", "-d", public, "-p", "udp",
                "--dport", str(outside), "-j", "DNAT", "--to-destination", f"{private}:{inside}",
            )  # fmt: skip
            router.iptables(
                "-t", "nat", "-A", "POSTROUTING", "-s", private, "-o", "wan", "-p", "udp",
                "--sport", str(inside), "-j", "SNAT", "--to-source", f"{public}:{outside}",
            )  # fmt: skip
        router.iptables(
            "-t", "nat", "-A", "PREROUTING", "-d", public, "-j", "DNAT",
            "--to-destination", private,
        )  # fmt: skip
        router.iptables(
            "-t", "nat", "-A", "POSTROUTING", "-s", private, "-o", "wan", "-j", "SNAT",
            "--to-source", public,
        )  # fmt: skip
        yield OneToOneServer(router, server, public, private, lan, tuple(udp_port_map))


# -- inspecting processes ---------------------------------------------------


@dataclass(frozen=True)
class NatFlow:
    """One connection a router tracks, as sent and as answered (after NAT)."""

    protocol: str
    source: tuple[str, int]
    destination: tuple[str, int]
    reply_source: tuple[str, int]
    """Where the answers come from: the translated destination, when the router DNATs."""
    reply_destination: tuple[str, int]
    """Where the answers go: the translated source, when the router NATs the flow."""


def nat_flows(router: Namespace, protocol: str = "udp") -> list[NatFlow]:
    """The ``protocol`` flows the router's conntrack table holds (``conntrack -L``)."""
    output = router.run("conntrack", "-L", "-p", protocol, check=False).stdout
    flows = []
    for line in output.splitlines():
        fields = [word.split("=", 1) for word in line.split() if "=" in word]
        values: dict[str, list[str]] = {}
        for key, value in fields:
            values.setdefault(key, []).append(value)
        try:
            flows.append(
                NatFlow(
                    protocol,
                    (values["src"][0], int(values["sport"][0])),
                    (values["dst"][0], int(values["dport"][0])),
                    (values["src"][1], int(values["sport"][1])),
                    (values["dst"][1], int(values["dport"][1])),
                )
            )
        except (KeyError, IndexError, ValueError):
            continue
    return flows
