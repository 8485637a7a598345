"""The cluster under test: started here as processes, or an existing one.

Starting reuses :mod:`webrtc_broker.cluster` (the helpers behind
``webrtc-broker up``): children die with the bench, are stopped in order, and
are polled over HTTP until ready. The differences are what a measurement
needs: free ports (other test runs may hold the usual ones), the batching
window passed to every server, logs in a file instead of the terminal, the
process ids for /proc sampling, and a wait until the servers' mesh is
complete so every subscription has reached every server before traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from webrtc_broker.cluster import spawn, stop, wait_http_ok, wait_servers_registered

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


class ClusterError(Exception):
    """The cluster did not come up (or is not the one asked for)."""


@dataclass(frozen=True)
class ServerInfo:
    name: str
    alias: int
    pid: int | None
    """``None`` for a server the bench did not start."""
    status_url: str | None


@dataclass
class ClusterHandle:
    coordinator_url: str
    servers: list[ServerInfo]
    coordinator_pid: int | None
    batch_window: float | None
    """The servers' flush window, when the bench set it."""
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)


def free_port() -> int:
    """A port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


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
    servers: int, batch_window: float, log: Path
) -> AsyncIterator[ClusterHandle]:
    """A coordinator and ``servers`` comm servers on free ports, stopped on exit."""
    handle = ClusterHandle(f"ws://{HOST}:{free_port()}", [], None, batch_window)
    with log.open("ab") as output:
        try:
            try:
                await _start(handle, servers, output)
            except TimeoutError as exc:
                raise ClusterError(
                    f"the cluster did not come up within {START_TIMEOUT:.0f} s (log: {log})"
                ) from exc
            yield handle
        finally:
            await stop(handle.processes)


async def _start(handle: ClusterHandle, servers: int, output: IO[bytes]) -> None:
    url = handle.coordinator_url
    port = url.rsplit(":", 1)[1]
    coordinator = await spawn(
        *("coordinator", "--host", HOST, "--port", port, "--log-level", "warning"),
        stdout=output,
        stderr=output,
    )
    handle.processes.append(coordinator)
    handle.coordinator_pid = coordinator.pid
    await wait_http_ok(f"{http_base(url)}/readyz", START_TIMEOUT)
    bases = []
    for index in range(servers):
        http_port = free_port()
        process = await spawn(
            "commserver",
            *("--coordinator-url", url, "--name", f"bench-server-{index + 1}"),
            *("--http-host", HOST, "--http-port", str(http_port)),
            *("--batch-window", str(handle.batch_window), "--max-peers", "100000"),
            *("--log-level", "warning"),
            stdout=output,
            stderr=output,
        )
        handle.processes.append(process)
        bases.append((f"http://{HOST}:{http_port}", process.pid))
    for index, (base, pid) in enumerate(bases):
        await wait_http_ok(f"{base}/readyz", START_TIMEOUT)
        status = await fetch_json(f"{base}/status")
        if status is None:
            raise ClusterError(f"comm server {index + 1} answers no /status")
        handle.servers.append(
            ServerInfo(str(status["name"]), int(status["alias"]), pid, f"{base}/status")
        )
    await wait_servers_registered(f"{http_base(url)}/status", servers, START_TIMEOUT)
    await _wait_mesh(handle.servers)


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
