"""``webrtc-broker client``: a line-oriented client for trying a cluster by hand."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from webrtc_broker.client.client import BrokerClient
from webrtc_broker.client.errors import BrokerError

_FLUSH_SECONDS = 0.5
"""After stdin ends, how long to wait so the last messages leave."""


async def _print_messages(client: BrokerClient) -> None:
    async for message in client:
        who = f"{message.sender}"
        if message.identity is not None:
            who += f" ({message.identity.decode(errors='replace')})"
        print(f"[{who}] {message.body.decode(errors='replace')}", flush=True)


async def _publish_stdin(
    client: BrokerClient, topics: tuple[str, ...], *, reliable: bool, identity: bool
) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        body = line.rstrip("\n")
        for topic in topics:
            if identity:
                client.publish_identity(topic, body, reliable=reliable)
            else:
                client.publish(topic, body, reliable=reliable)
    await asyncio.sleep(_FLUSH_SECONDS)


async def run_client(
    *,
    coordinator_url: str,
    topics: tuple[str, ...],
    credentials: str,
    unreliable: bool,
    identity: bool,
    no_stdin: bool,
) -> int:
    # Coordinator replicas may be listed comma-separated (a base URL holds no comma).
    urls = [url.strip() for url in coordinator_url.split(",") if url.strip()]
    try:
        client = await BrokerClient.connect(urls, credentials)
    except (BrokerError, ValueError) as exc:  # ValueError: no URL given
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"connected as alias {client.alias} via server {client.server_alias}"
        f" (coordinator {client.coordinator_url})",
        file=sys.stderr,
    )
    client.subscribe(topics)
    printer = asyncio.create_task(_print_messages(client))
    try:
        if no_stdin:
            await printer
        else:
            await _publish_stdin(client, topics, reliable=not unreliable, identity=identity)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
        await client.close()
    return 0
