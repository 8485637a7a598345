"""The control plane's address on this machine: an interface of its own inside 198.18.0.0/15.

The API server must be reachable from pods, which a node puts in network
namespaces of their own: loopback is not the same address there. So each
control plane gets an address of its own on an interface of the host that
carries nothing else (``wbk8s-<hash of its state folder>``, one address in
198.19.255.0/24), the API server binds it and advertises it (the
``kubernetes`` Service's endpoint), and every kubeconfig names it. The
interface is a dummy where the kernel has that driver, else a bridge without
ports, which holds a local address just as well.

198.18.0.0/15 is reserved for benchmarking: no real network uses it. A
blackhole route for the whole /15 makes sure that an address of it that
nothing answers yet (a Service IP before kube-proxy, a pod that is gone)
goes nowhere, rather than out of the default route. The route is shared by
every control plane on the machine and removed with the last interface.

Creating interfaces takes CAP_NET_ADMIN (root). Without it the API server
binds 127.0.0.1 as before, and :func:`claim` says so: pods cannot reach it
then.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RESERVED = "198.18.0.0/15"
POOL = ipaddress.ip_network("198.19.255.0/24")
PREFIX = "wbk8s-"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class HostAddress:
    """Where the API server listens; ``interface`` is ``None`` on loopback."""

    address: str
    interface: str | None = None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def _addresses_in_use() -> set[str]:
    out = _ip("-o", "-4", "addr", "show").stdout
    return {field.split("/")[0] for line in out.splitlines() for field in line.split()[3:4]}


KINDS = ("dummy", "bridge")


def _our_interfaces() -> list[str]:
    out = _ip("-o", "link", "show").stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [name for name in names if name.startswith(PREFIX)]


def _add_interface(name: str) -> str | None:
    """Create ``name``; ``None`` when done, else why not."""
    errors = []
    for kind in KINDS:
        made = _ip("link", "add", name, "type", kind, check=False)
        if made.returncode == 0:
            return None
        errors.append(f"{kind}: {made.stderr.strip()}")
    return "; ".join(errors)


def interface_name(state_dir: Path) -> str:
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
    return PREFIX + digest[:8]  # 14 characters: within the kernel's 15


def _pick_address(state_dir: Path) -> str:
    """An address of the pool no interface has, starting from one derived from the folder."""
    hosts = list(POOL.hosts())
    start = int(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest(), 16) % len(hosts)
    taken = _addresses_in_use()
    for offset in range(len(hosts)):
        candidate = str(hosts[(start + offset) % len(hosts)])
        if candidate not in taken:
            return candidate
    raise RuntimeError(f"every address of {POOL} is in use")


def claim(state_dir: Path) -> HostAddress:
    """The dummy interface of ``state_dir``'s control plane, created with its address and
    the blackhole route; loopback when interfaces cannot be made here."""
    name = interface_name(state_dir)
    release(HostAddress(LOOPBACK, name))  # a leftover of a control plane that was killed
    address = _pick_address(state_dir)
    failure = _add_interface(name)
    if failure is not None:
        print(
            f"[k8s] no interface for the API server ({failure}): it binds "
            f"{LOOPBACK}, which pods cannot reach",
            file=sys.stderr,
        )
        return HostAddress(LOOPBACK)
    _ip("addr", "add", f"{address}/32", "dev", name)
    _ip("link", "set", name, "up")
    if "blackhole" not in _ip("route", "show", RESERVED, "type", "blackhole").stdout:
        _ip("route", "add", "blackhole", RESERVED)
    return HostAddress(address, name)


def release(host: HostAddress) -> None:
    """Remove the interface, and the blackhole route once no control plane is left."""
    if host.interface is None:
        return
    _ip("link", "del", host.interface, check=False)
    if not _our_interfaces():
        _ip("route", "del", "blackhole", RESERVED, check=False)
