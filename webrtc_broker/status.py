"""``webrtc-broker status``: a readable summary of a running cluster.

The coordinator's ``/status`` knows the registered comm servers and how many
clients it sent to each; it does not know topics, which live in the comm
servers. Each comm server's own ``/status`` (on its ``--http-port``) has them,
but the coordinator is not told those addresses, so the command asks the comm
servers it is given (``--server-status``) and says plainly when it has none.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.table import Table

NO_TOPICS_NOTE = (
    "Topics are known only to the comm servers: pass --server-status http://HOST:PORT "
    "(a comm server's --http-port) to show them."
)


class StatusError(Exception):
    """The coordinator could not be asked."""


@dataclass(frozen=True, slots=True)
class ServerRow:
    alias: int
    name: str
    role: str
    clients: int
    """Clients the coordinator sent to this server (it counts CONNECTs)."""
    detail: dict[str, Any] | None = None
    """The server's own ``/status``, when it was given and answered."""


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    coordinator: str
    version: str
    clients: int
    servers: list[ServerRow]
    problems: list[str] = field(default_factory=list)
    """Comm-server status URLs that failed or that match no registered server."""

    @property
    def has_topics(self) -> bool:
        return any(row.detail is not None for row in self.servers)


def http_url(url: str) -> str:
    """The coordinator's HTTP base URL; the WebSocket URL clients use works too."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def status_url(url: str) -> str:
    """A comm server's status URL, given its base URL or the full ``/status`` URL."""
    base = http_url(url)
    return base if base.endswith("/status") else f"{base}/status"


async def _get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return data


async def fetch_status(
    coordinator_url: str, server_urls: Sequence[str] = (), *, timeout: float = 5.0
) -> ClusterStatus:
    """Ask the coordinator, and the given comm servers concurrently, and join the answers."""
    coordinator = http_url(coordinator_url)
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            summary = await _get_json(http, f"{coordinator}/status")
        except (httpx.HTTPError, ValueError) as exc:
            raise StatusError(f"cannot read {coordinator}/status: {exc}") from exc
        urls = [status_url(url) for url in server_urls]
        answers = await asyncio.gather(
            *(_get_json(http, url) for url in urls), return_exceptions=True
        )
    problems: list[str] = []
    details: dict[int, dict[str, Any]] = {}
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException):
            problems.append(f"{url}: {answer}")
        else:
            details[int(answer.get("alias", 0))] = answer
    rows = [
        ServerRow(
            alias=int(server["alias"]),
            name=str(server["name"]),
            role=str(server["role"]),
            clients=int(server["clients"]),
            detail=details.pop(int(server["alias"]), None),
        )
        for server in summary.get("servers", [])
    ]
    for alias, detail in details.items():
        problems.append(
            f"{detail.get('name', '?')} (alias {alias}) answered but is not registered "
            "with this coordinator"
        )
    return ClusterStatus(
        coordinator=coordinator,
        version=str(summary.get("version", "?")),
        clients=int(summary.get("clients", 0)),
        servers=rows,
        problems=problems,
    )


def _detail(row: ServerRow, key: str) -> str:
    if row.detail is None:
        return "-"
    return str(row.detail.get(key, "-"))


def render(status: ClusterStatus, console: Console) -> None:
    """Print the cluster as a table, one row per registered comm server."""
    table = Table(title=f"webrtc-broker {status.version} at {status.coordinator}")
    table.add_column("alias", justify="right")
    table.add_column("name")
    table.add_column("role")
    table.add_column("clients", justify="right")
    if status.has_topics:
        table.caption = (
            "clients: sent there by the coordinator; sessions: client sessions the server has; "
            "mesh: server sessions; queued: messages in writer queues"
        )
        table.add_column("sessions", justify="right")
        table.add_column("mesh", justify="right")
        table.add_column("topics", justify="right")
        table.add_column("server topics", justify="right")
        table.add_column("queued", justify="right")
    for row in status.servers:
        cells = [str(row.alias), row.name, row.role, str(row.clients)]
        if status.has_topics:
            cells += [
                _detail(row, key)
                for key in ("clients", "servers", "topics", "server_topics", "queue_depth")
            ]
        table.add_row(*cells)
    console.print(table)
    console.print(f"{len(status.servers)} servers, {status.clients} clients")
    if not status.has_topics:
        console.print(NO_TOPICS_NOTE, style="dim")
    for problem in status.problems:
        console.print(f"warning: {problem}", style="yellow")


async def run_status(coordinator_url: str, server_urls: Sequence[str], as_json: bool) -> int:
    """The ``status`` command; returns the exit code."""
    console = Console()
    try:
        status = await fetch_status(coordinator_url, server_urls)
    except StatusError as exc:
        Console(stderr=True).print(f"error: {exc}", style="red")
        return 1
    if as_json:
        console.print_json(json.dumps(asdict(status)))
    else:
        render(status, console)
    return 0
