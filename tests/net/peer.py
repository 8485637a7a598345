"""Python SDK clients in a process of their own, driven by JSON lines on stdin.

The network tests run this module inside a namespace (``ip netns exec NS python
-m tests.net.peer URL``), so the clients' sockets live behind that namespace's
NAT. Each line on stdin is a command, each line on stdout its reply, in order::

    {"op": "connect", "name": "a", "credentials": "alice", "timeout": 15,
     "turn_only": "turns:"}                  -> {"ok": true, "alias": 3, "server": 1,
                                                 "pair": "host 198.19.4.2:40112 -> ...",
                                                 "ice_urls": [...]}
    {"op": "subscribe", "name": "a", "topics": ["t"]}        -> {"ok": true}
    {"op": "publish", "name": "a", "topic": "t", "body": "x", "reliable": false}
    {"op": "receive", "name": "a", "count": 2, "timeout": 10} -> {"ok": true, "messages": [...]}
    {"op": "ping", "name": "a"}                               -> {"ok": true, "rtt": 0.003}

A failed command answers ``{"ok": false, "error": "ConnectTimeoutError: ...",
"elapsed": seconds}``; the process goes on with the next. End of input closes
every client and ends the process.

``turn_only`` keeps, of the ICE servers the coordinator hands out at
``/ice-servers``, only the URLs starting with it, so that one test can prove
each TURN transport in turn with the coordinator's own credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from webrtc_broker.client import BrokerClient
from webrtc_broker.client.link import fetch_ice_servers
from webrtc_broker.config import IceServer

log = logging.getLogger("tests.net.peer")


def selected_pair(client: BrokerClient) -> str:
    """The ICE candidate pair the session uses, as "typ addr:port -> typ addr:port".

    Read from aiortc's and aioice's internals, for the test's printed summary
    only; an empty string where they differ from what this expects.
    """
    try:
        session = client.session
        sctp = session.pc.sctp if session is not None else None
        if sctp is None:
            return ""
        connection = sctp.transport.transport._connection
        pair = next(iter(connection._nominated.values()))
        local, remote = pair.local_candidate, pair.remote_candidate
        return (
            f"{local.type} {local.host}:{local.port}/{local.transport} -> "
            f"{remote.type} {remote.host}:{remote.port}"
        )
    except (AttributeError, StopIteration):
        return ""


async def _ice_servers(url: str, prefix: str | None) -> list[IceServer] | None:
    """None (the SDK fetches them) or the coordinator's list cut to URLs with ``prefix``."""
    if prefix is None:
        return None
    kept = []
    for server in await fetch_ice_servers(url):
        urls = [u for u in server.urls if u.startswith(prefix)]
        if urls:
            kept.append(server.model_copy(update={"urls": urls}))
    return kept


class Peers:
    """The clients of this process, by name."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: dict[str, BrokerClient] = {}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "connect":
            return await self._connect(command)
        client = self.clients[command["name"]]
        if op == "subscribe":
            client.subscribe(command["topics"])
            await client.ping()  # the server applied it once the echo is back
            return {}
        if op == "publish":
            client.publish(command["topic"], command["body"].encode(), reliable=command["reliable"])
            return {}
        if op == "receive":
            messages = []
            async with asyncio.timeout(command.get("timeout", 10.0)):
                for _ in range(command["count"]):
                    got = await client.receive()
                    messages.append(
                        {
                            "sender": got.sender,
                            "body": got.body.decode(errors="replace"),
                            "reliable": got.reliable,
                            "topic": got.topic,
                        }
                    )
            return {"messages": messages}
        if op == "ping":
            return {"rtt": await client.ping()}
        if op == "close":
            await self.clients.pop(command["name"]).close()
            return {}
        raise ValueError(f"unknown op {op!r}")

    async def _connect(self, command: dict[str, Any]) -> dict[str, Any]:
        ice_servers = await _ice_servers(self.url, command.get("turn_only"))
        client = await BrokerClient.connect(
            self.url,
            command.get("credentials", command["name"]),
            timeout=command.get("timeout", 20.0),
            ice_servers=ice_servers,
            reconnect=None,
        )
        self.clients[command["name"]] = client
        return {
            "alias": client.alias,
            "server": client.server_alias,
            "pair": selected_pair(client),
            "ice_urls": [url for server in client.ice_servers for url in server.urls],
        }

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_commands(handle: Handler) -> None:
    """Answer each JSON line on stdin with one on stdout: ``handle``'s reply with
    ``ok``, or the failure as ``error`` (the test reads it), and ``elapsed`` seconds."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        started = time.monotonic()
        try:
            reply = {"ok": True, **await handle(command)}
        except Exception as exc:  # the test reads the failure from the reply
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["elapsed"] = round(time.monotonic() - started, 3)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


async def main(url: str) -> None:
    peers = Peers(url)
    try:
        await serve_commands(peers.handle)
    finally:
        await peers.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1]))
