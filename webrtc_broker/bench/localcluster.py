"""The cluster under test: started here as processes, or an existing one.

Starting reuses :mod:`webrtc_broker.cluster` (the helpers behind
``webrtc-broker up``): children die with the bench, are stopped in order, and
are polled over HTTP until ready. The differences are what a measurement
needs: free ports (other test runs may hold the usual ones), the batching
window passed to every server, logs in a file instead of the terminal, the
process ids for /proc sampling, a wait until the servers' mesh is
complete so every subscription has reached every server before traffic, and
the UDP port mode (:class:`UdpMode`) each server's peer connections use.

With several coordinators (replicas in disjoint alias spaces, every comm
server linked to each), a replica can be stopped (SIGTERM or SIGKILL) and
started again on its port with its replica id, the way a rolling restart
does: :func:`stop_coordinator`, :func:`start_coordinator`,
:func:`wait_rejoined`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from aioice.ice import get_host_addresses

from webrtc_broker.bench.options import UdpMode
from webrtc_broker.bench.results import ServerUdp
from webrtc_broker.bench.sampling import udp_ports
from webrtc_broker.cluster import (
    ALIAS_SPACES,
    STOP_GRACE,
    spawn,
    stop,
    wait_http_ok,
    wait_servers_registered,
)

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
LOWEST_UDP_PORT = 10000
"""Fixed UDP ports are chosen from here up to the kernel's ephemeral range."""
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORT_PROBES = 50


class ClusterError(Exception):
    """The cluster did not come up (or is not the one asked for)."""


@dataclass(frozen=True)
class ServerInfo:
    name: str
    alias: int
    pid: int | None
    """``None`` for a server the bench did not start."""
    status_url: str | None
    udp_ports: tuple[int, int] | None = None
    """The (low, high) ports its peer connections must use; ``None``: any port."""


@dataclass
class CoordinatorReplica:
    """A coordinator the bench started: what it takes to start it again alike."""

    index: int
    port: int
    args: tuple[str, ...]
    """Its command line (same port, same replica id on every start)."""
    process: asyncio.subprocess.Process | None = None
    """The running process; ``None`` while it is stopped."""

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://{HOST}:{self.port}/status"


@dataclass
class ClusterHandle:
    coordinator_url: str
    servers: list[ServerInfo]
    coordinator_pid: int | None
    batch_window: float | None
    """The servers' flush window, when the bench set it."""
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    udp_mode: UdpMode | None = None
    """The servers' UDP port mode, when the bench set it."""
    coordinators: list[CoordinatorReplica] = field(default_factory=list)
    """The coordinators the bench started (the first one's URL is ``coordinator_url``)."""
    log: Path | None = None
    """Where the started processes write (a restarted coordinator too)."""

    @property
    def coordinator_urls(self) -> list[str]:
        """Every coordinator's URL: what a client given all replicas gets."""
        return [replica.url for replica in self.coordinators] or [self.coordinator_url]


def free_port() -> int:
    """A port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's ephemeral port range (bind to port 0, outgoing connections)."""
    try:
        low, high = EPHEMERAL_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def free_udp_ports(count: int, taken: set[int] | frozenset[int] = frozenset()) -> tuple[int, int]:
    """``count`` consecutive UDP ports nobody holds now, as (low, high), both inclusive.

    They lie outside the kernel's ephemeral range: every peer connection of
    the bots (and of per-connection servers) binds an ephemeral port, and one
    of them must not take a port a server is about to bind. ``taken``: ports
    already handed to another server of this cluster.
    """
    ephemeral_low, ephemeral_high = ephemeral_ports()
    spans = [(LOWEST_UDP_PORT, ephemeral_low - count), (ephemeral_high + 1, 65536 - count)]
    spans = [(low, high) for low, high in spans if high >= low]
    for _ in range(PORT_PROBES if spans else 0):
        low, high = random.choice(spans)
        start = random.randint(low, high)
        ports = range(start, start + count)
        if not taken.intersection(ports) and all(_udp_free(port) for port in ports):
            return start, start + count - 1
    raise ClusterError(f"no {count} free consecutive UDP ports outside the ephemeral range")


def udp_flags(mode: UdpMode, ports: tuple[int, int] | None) -> list[str]:
    """The comm server's command-line flags for ``mode`` on ``ports``."""
    if mode is UdpMode.PER_CONNECTION or ports is None:
        return []
    if mode is UdpMode.SINGLE_PORT:
        return ["--udp-port", str(ports[0])]
    return ["--udp-port-range", f"{ports[0]}-{ports[1]}"]


def udp_census(servers: list[ServerInfo]) -> list[ServerUdp]:
    """Each started server's UDP sockets and whether they keep to its port mode."""
    found = []
    for server in servers:
        if server.pid is None:
            continue
        ports = udp_ports(server.pid) or []
        expected = server.udp_ports
        in_mode = None
        if expected is not None and ports:
            in_mode = all(expected[0] <= port <= expected[1] for port in ports)
        found.append(
            ServerUdp(
                server.name,
                len(ports),
                len(set(ports)),
                min(ports, default=None),
                max(ports, default=None),
                expected,
                in_mode,
            )
        )
    return found


def http_base(ws_url: str) -> str:
    """``ws://host:port`` -> ``http://host:port`` (and ``wss`` -> ``https``)."""
    return "http" + ws_url.rstrip("/").removeprefix("ws")


async def fetch_json(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """GET ``url`` as JSON; ``None`` on any failure (status is best effort)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(url)
            response.raise_for_status()
            data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.asynccontextmanager
async def local_cluster(
    servers: int,
    batch_window: float,
    log: Path,
    udp_mode: UdpMode = UdpMode.PER_CONNECTION,
    peers: int = 0,
    *,
    coordinators: int = 1,
) -> AsyncIterator[ClusterHandle]:
    """``coordinators`` coordinators and ``servers`` comm servers on free ports, stopped
    on exit. Several coordinators are replicas in disjoint alias spaces (``--alias-spaces
    10 --replica-id i``, as ``webrtc-broker up --coordinators N`` starts them), and every
    server links to each.

    ``peers``: the clients expected, which sizes each server's port range.
    """
    if not 1 <= coordinators <= ALIAS_SPACES:
        raise ClusterError(f"between 1 and {ALIAS_SPACES} coordinators, not {coordinators}")
    replicas = [_replica(index, coordinators) for index in range(coordinators)]
    handle = ClusterHandle(
        replicas[0].url, [], None, batch_window, udp_mode=udp_mode, coordinators=replicas, log=log
    )
    with log.open("ab") as output:
        try:
            try:
                await _start(handle, servers, output, _udp_ports(udp_mode, servers, peers))
            except TimeoutError as exc:
                raise ClusterError(
                    f"the cluster did not come up within {START_TIMEOUT:.0f} s (log: {log})"
                ) from exc
            yield handle
        finally:
            await stop(handle.processes)


def _udp_ports(mode: UdpMode, servers: int, peers: int) -> list[tuple[int, int] | None]:
    """Each server's own port (or range): servers on one host cannot share one."""
    if mode is UdpMode.PER_CONNECTION:
        return [None] * servers
    # A peer connection binds a socket per local address (at most: the server may filter
    # some out), and its mesh links count as peers too.
    sockets_per_peer = len(get_host_addresses(use_ipv4=True, use_ipv6=True)) or 1
    count = 1 if mode is UdpMode.SINGLE_PORT else sockets_per_peer * (peers + servers) + 16
    chosen: list[tuple[int, int] | None] = []
    taken: set[int] = set()
    for _ in range(servers):
        low, high = free_udp_ports(count, taken)
        taken.update(range(low, high + 1))
        chosen.append((low, high))
    return chosen


def _replica(index: int, count: int) -> CoordinatorReplica:
    port = free_port()
    args = ["coordinator", "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if count > 1:
        args += ["--alias-spaces", str(ALIAS_SPACES), "--replica-id", str(index)]
    return CoordinatorReplica(index, port, tuple(args))


def _name(replica: CoordinatorReplica, count: int) -> str:
    return "the coordinator" if count == 1 else f"coordinator replica {replica.index}"


async def _start(
    handle: ClusterHandle,
    servers: int,
    output: IO[bytes],
    udp_ports: list[tuple[int, int] | None],
) -> None:
    started = []
    for replica in handle.coordinators:
        replica.process = await spawn(*replica.args, stdout=output, stderr=output)
        handle.processes.append(replica.process)
        started.append((replica, replica.process))
    handle.coordinator_pid = started[0][1].pid
    for replica, process in started:
        await _ready(process, _name(replica, len(started)), f"{http_base(replica.url)}/readyz")
    links = [arg for url in handle.coordinator_urls for arg in ("--coordinator-url", url)]
    bases = []
    mode = handle.udp_mode or UdpMode.PER_CONNECTION
    for index in range(servers):
        http_port = free_port()
        process = await spawn(
            "commserver",
            *links,
            *("--name", f"bench-server-{index + 1}"),
            *("--http-host", HOST, "--http-port", str(http_port)),
            *("--batch-window", str(handle.batch_window), "--max-peers", "100000"),
            *udp_flags(mode, udp_ports[index]),
            *("--log-level", "warning"),
            stdout=output,
            stderr=output,
        )
        handle.processes.append(process)
        bases.append((f"http://{HOST}:{http_port}", process))
    for index, (base, process) in enumerate(bases):
        await _ready(process, f"comm server {index + 1}", f"{base}/readyz")
        status = await fetch_json(f"{base}/status")
        if status is None:
            raise ClusterError(f"comm server {index + 1} answers no /status")
        handle.servers.append(
            ServerInfo(
                str(status["name"]),
                int(status["alias"]),
                process.pid,
                f"{base}/status",
                udp_ports[index],
            )
        )
    for replica in handle.coordinators:
        await wait_servers_registered(replica.status_url, servers, START_TIMEOUT)
    await _wait_mesh(handle.servers)


async def stop_coordinator(handle: ClusterHandle, index: int, *, kill: bool = False) -> int:
    """Stop coordinator ``index`` with SIGTERM (it drains) or, with ``kill``, SIGKILL;
    return its exit status once it is gone. One that outlives the stop grace after
    SIGTERM is killed (its status then says so)."""
    replica = handle.coordinators[index]
    process = replica.process
    if process is None:
        raise ClusterError(f"coordinator replica {index} is not running")
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    replica.process = None
    handle.processes.remove(process)
    assert process.returncode is not None
    return process.returncode


async def start_coordinator(handle: ClusterHandle, index: int) -> None:
    """Start stopped coordinator ``index`` again, on its port with its replica id, and
    wait until it answers ``/readyz``."""
    replica = handle.coordinators[index]
    if replica.process is not None:
        raise ClusterError(f"coordinator replica {index} is already running")
    if handle.log is None:
        raise ClusterError("the cluster has no log to start a coordinator with")
    with handle.log.open("ab") as output:  # the child keeps its own descriptor
        process = await spawn(*replica.args, stdout=output, stderr=output)
    replica.process = process
    handle.processes.append(process)
    if index == 0:
        handle.coordinator_pid = process.pid
    name = _name(replica, len(handle.coordinators))
    try:
        await _ready(process, name, f"{http_base(replica.url)}/readyz")
    except TimeoutError as exc:
        raise ClusterError(f"{name} was not ready within {START_TIMEOUT:.0f} s") from exc


async def registered_names(replica: CoordinatorReplica) -> set[str]:
    """The names of the comm servers registered with ``replica`` now (none if it is down)."""
    status = await fetch_json(replica.status_url, timeout=2.0)
    servers = (status or {}).get("servers", [])
    return {str(server.get("name", "")) for server in servers if isinstance(server, dict)}


async def wait_rejoined(handle: ClusterHandle, index: int, timeout: float = START_TIMEOUT) -> None:
    """Until every comm server of the cluster is registered with coordinator ``index``."""
    replica = handle.coordinators[index]
    wanted = {server.name for server in handle.servers}
    try:
        async with asyncio.timeout(timeout):
            while True:
                if wanted <= await registered_names(replica):
                    return
                await asyncio.sleep(0.1)
    except TimeoutError as exc:
        missing = sorted(wanted - await registered_names(replica))
        raise ClusterError(
            f"comm servers {missing} did not register with coordinator replica {index} "
            f"within {timeout:.0f} s"
        ) from exc


async def _ready(process: asyncio.subprocess.Process, name: str, url: str) -> None:
    """Until ``url`` answers; a process that exits first (a taken port, a bad flag) fails
    the start at once, instead of after the whole start timeout."""
    ready = asyncio.ensure_future(wait_http_ok(url, START_TIMEOUT))
    exited = asyncio.ensure_future(process.wait())
    try:
        done, _ = await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (ready, exited):
            if not waiting.done():
                waiting.cancel()
        await asyncio.gather(ready, exited, return_exceptions=True)
    if ready in done and ready.exception() is None:
        return
    if exited in done:
        raise ClusterError(f"{name} exited with code {exited.result()} while starting")
    ready.result()  # the start timeout


async def _wait_mesh(servers: list[ServerInfo]) -> None:
    """Until every server has a session with every other one."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            statuses = [await fetch_json(s.status_url) for s in servers if s.status_url]
            if all(
                st is not None and int(st.get("servers", 0)) >= len(servers) - 1 for st in statuses
            ):
                return
            await asyncio.sleep(0.2)


async def external_cluster(url: str, servers: int) -> ClusterHandle:
    """The first ``servers`` comm servers registered with the coordinator at ``url``."""
    status = await fetch_json(f"{http_base(url)}/status")
    if status is None:
        raise ClusterError(f"no coordinator status at {http_base(url)}/status")
    registered = status.get("servers", [])
    if len(registered) < servers:
        raise ClusterError(f"{servers} servers asked for, {len(registered)} registered at {url}")
    infos = [
        ServerInfo(str(s.get("name", "")), int(s["alias"]), None, None)
        for s in registered[:servers]
    ]
    return ClusterHandle(url, infos, None, None)
