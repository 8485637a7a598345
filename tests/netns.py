"""A network namespace with an address of its own, for tests where the client's address matters.

Limits that count per remote address cannot be tested from 127.0.0.1: the
attacker and the well-behaved clients would be one address. :func:`network_namespace`
creates a namespace joined to the host by a veth pair, with a /30 from
198.19.128.0/18 (in 198.18.0.0/15, reserved for benchmarking by RFC 2544, so it
routes nowhere else): ``host_address`` on the host side, ``address`` inside. A service bound
to ``host_address`` is reached from the namespace with ``address`` as the
peer, and from the host with ``host_address``.

Names are unique per call (several tests, or several test runs, may hold
namespaces at once) and everything is removed on exit, even when the body
fails. Without root or ``ip`` the test is skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

NETWORK = ipaddress.ip_network("198.19.128.0/18")
"""A part of RFC 2544's benchmarking range (198.18.0.0/15, never routed beyond this host's
veth pairs) that no other test uses: tests/net takes 198.18.64.0/18 and 198.19.0.0/17, the
local Kubernetes cluster 198.18.0.0/24, 198.18.128.0/20 and 198.19.255.0/24."""


@dataclass(frozen=True)
class NetworkNamespace:
    name: str
    host_interface: str
    host_address: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=10)


def _addresses_in_use() -> str:
    result = subprocess.run(
        ["ip", "-o", "addr", "show"], check=True, capture_output=True, text=True, timeout=10
    )
    return result.stdout


def skip_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (the tests create one per attacker address)"
    if shutil.which("ip") is None:
        return "network namespaces need the `ip` command (iproute2)"
    return None


def _free_subnet(
    used: str, rng: random.Random
) -> Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Host and namespace addresses of a /30 of 198.18.0.0/15 that no interface has."""
    for _ in range(100):
        block = rng.randrange(NETWORK.num_addresses // 4)
        base = NETWORK.network_address + block * 4
        hosts = [base + 1, base + 2]
        if not any(f" {host}/" in used for host in hosts):
            return hosts
    raise RuntimeError("no free /30 in 198.18.0.0/15")


@contextlib.contextmanager
def network_namespace() -> Iterator[NetworkNamespace]:
    """A namespace with its own address; removed on exit (skips the test if impossible)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    rng = random.Random()
    tag = f"{os.getpid() % 100_000}x{rng.randrange(1_000_000):06d}"
    name = f"wb-attack-{tag}"
    # Interface names are limited to 15 characters.
    host_if, inner_if = f"wbh{tag[-10:]}", f"wbn{tag[-10:]}"
    host, inner = _free_subnet(_addresses_in_use(), rng)
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
        _ip("link", "set", inner_if, "netns", name)
        _ip("addr", "add", f"{host}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{inner}/30", "dev", inner_if)
        _ip("netns", "exec", name, "ip", "link", "set", inner_if, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield NetworkNamespace(name, host_if, str(host), str(inner))
    finally:
        # Deleting the namespace destroys its end of the pair, which takes the
        # host end with it; the explicit delete covers a failure before the move.
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _ip("netns", "del", name)
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _ip("link", "del", host_if)
