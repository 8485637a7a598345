"""Removing every trace of a node: processes, containers, mounts, interfaces, rules, cgroups.

Each step works from what is on the machine (the process table, the mount
table, the interfaces, the iptables rules, the cgroup folders), not only
from what the node recorded, so that a node whose recorder was killed is
removed too. Only things that are the node's are touched: processes whose
command line names its folder or its containerd socket, mounts under its
folder, the interfaces with its bridge's name or attached to it, and the
rules of the chains the kubelet, kube-proxy and the CNI plugins make
(``KUBE-*``, ``CNI-*``), which this machine runs one node at a time.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES = ("iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy")
TABLES = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT = Path("/sys/fs/cgroup")
POD_CGROUP = "kubepods"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def processes_naming(needles: Iterable[str]) -> list[int]:
    """The processes whose command line contains one of ``needles``."""
    wanted = [needle.encode() for needle in needles]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(needle in command for needle in wanted):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        # A zombie child of this process: reap it.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def stop(pids: Iterable[int], grace: float = 10.0) -> None:
    """SIGTERM, up to ``grace`` seconds to exit, then SIGKILL."""
    pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder``, deepest (latest) first."""
    prefix = str(folder.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return list(reversed(points))


def unmount_all(folder: Path) -> list[str]:
    """Unmount everything below ``folder`` (overlay root filesystems, shm, network
    namespaces, the kubelet's volumes); the mount points that remain."""
    for _ in range(3):
        points = mounts_under(folder)
        if not points:
            return []
        for point in points:
            if _run("umount", point).returncode != 0:
                _run("umount", "-l", point)
    return mounts_under(folder)


def interfaces() -> dict[str, str | None]:
    """Every interface of the host's network namespace and the bridge it is attached to."""
    out = _run("ip", "-o", "link", "show").stdout
    found: dict[str, str | None] = {}
    for line in out.splitlines():
        fields = line.split()
        name = fields[1].rstrip(":").split("@")[0]
        master = fields[fields.index("master") + 1] if "master" in fields else None
        found[name] = master
    return found


def remove_bridge(bridge: str) -> None:
    """The bridge, the pods' veths attached to it, and with them the routes through it."""
    for name, master in interfaces().items():
        if master == bridge:
            _run("ip", "link", "del", name)
    _run("ip", "link", "del", bridge)


def _legacy_tables(binary: str) -> set[str]:
    """The tables the legacy (x_tables) iptables has: asking for another would make it."""
    names = Path(
        "/proc/net/ip6_tables_names" if binary.startswith("ip6") else "/proc/net/ip_tables_names"
    )
    try:
        return set(names.read_text().split())
    except OSError:
        return set()


def _chains(binary: str, table: str) -> tuple[list[str], list[str]]:
    """(the table's rules, the chains it declares), as ``-S`` prints them."""
    if binary.endswith("-legacy") and table not in _legacy_tables(binary):
        return [], []
    answer = _run(binary, "-w", "5", "-t", table, "-S")
    if answer.returncode != 0:
        return [], []
    lines = answer.stdout.splitlines()
    chains = [line.split()[1] for line in lines if line.startswith("-N ")]
    rules = [line for line in lines if line.startswith("-A ")]
    return rules, chains


def iptables_rules() -> list[str]:
    """Every rule and chain of the node's prefixes, in every table of every iptables
    (``binary table rule``): what :func:`remove_rules` removes."""
    found = []
    for binary in IPTABLES:
        for table in TABLES:
            rules, chains = _chains(binary, table)
            for line in [*rules, *(f"-N {chain}" for chain in chains)]:
                if any(prefix in line for prefix in CHAIN_PREFIXES):
                    found.append(f"{binary} {table} {line}")
    return found


def remove_rules() -> None:
    """The jumps to ``KUBE-*`` and ``CNI-*`` chains, then those chains, everywhere."""
    for binary in IPTABLES:
        for table in TABLES:
            rules, chains = _chains(binary, table)
            ours = [chain for chain in chains if chain.startswith(CHAIN_PREFIXES)]
            for rule in rules:
                fields = shlex.split(rule)  # comments are quoted, with spaces
                if fields[1] in ours:
                    continue  # goes with the chain
                if any(f"-j {chain}" in rule or f"-g {chain}" in rule for chain in ours):
                    _run(binary, "-w", "5", "-t", table, "-D", *fields[1:])
            for chain in ours:
                _run(binary, "-w", "5", "-t", table, "-F", chain)
            for chain in ours:
                _run(binary, "-w", "5", "-t", table, "-X", chain)


def pod_cgroups() -> list[Path]:
    """The kubelet's pod cgroups (``kubepods``) in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return []
    found = [CGROUP_ROOT / POD_CGROUP] if (CGROUP_ROOT / POD_CGROUP).is_dir() else []
    for hierarchy in CGROUP_ROOT.iterdir():
        if (hierarchy / POD_CGROUP).is_dir():
            found.append(hierarchy / POD_CGROUP)
    return found


def remove_cgroups() -> list[Path]:
    """Remove the pod cgroups, deepest first (each must be empty of processes by now);
    the ones that remain."""
    for top in pod_cgroups():
        folders = sorted(
            (path for path in top.rglob("*") if path.is_dir()),
            key=lambda path: len(path.parts),
            reverse=True,
        )
        for folder in [*folders, top]:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return pod_cgroups()


def nft_tables() -> list[str]:
    """The nftables tables of the machine (``family name``), iptables-nft's among them."""
    out = _run("nft", "list", "tables").stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def _empty_nft_table(table: str) -> bool:
    """Whether ``table`` holds nothing but iptables-nft's empty base chains."""
    answer = _run("nft", "list", "table", *table.split())
    if answer.returncode != 0:
        return False
    for text in answer.stdout.splitlines():
        line = text.strip()
        if line in ("", "}") or line.startswith(("table ", "chain ")):
            continue
        if line.startswith("type ") and line.endswith("policy accept;"):
            continue
        return False
    return True


def remove_empty_nft_tables(existing_before: Iterable[str]) -> None:
    """Remove the tables iptables-nft made for the node (absent before it, empty now)."""
    before = set(existing_before)
    for table in nft_tables():
        if table not in before and _empty_nft_table(table):
            _run("nft", "delete", "table", *table.split())


RUN_CONTAINERD = Path("/run/containerd")


def remove_run_containerd(existed_before: bool) -> None:
    """The folders containerd's shims and ``ctr`` make in /run/containerd whatever the
    configuration (shim sockets ``s/``, ``fifo/``, ``runc/``): removed when empty, and
    /run/containerd itself when it was not there before the node."""
    for folder in ("s", "fifo", "runc/k8s.io", "runc"):
        with contextlib.suppress(OSError):
            (RUN_CONTAINERD / folder).rmdir()
    if not existed_before:
        with contextlib.suppress(OSError):
            RUN_CONTAINERD.rmdir()
