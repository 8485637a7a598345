"""A coordinator that goes away between the WebSocket upgrade and its WELCOME.

The stand-in below accepts the upgrade and closes at once (or sends garbage),
which a real coordinator does only when it is killed at that moment: a fault
to inject, not something to emulate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from webrtc_broker.client import BrokerClient
from webrtc_broker.client.errors import BrokerError

Handler = Callable[[ServerConnection], Awaitable[None]]


async def close_at_once(ws: ServerConnection) -> None:
    await ws.close()


async def send_garbage(ws: ServerConnection) -> None:
    await ws.send(b"\xff\xfe not a frame")


@pytest.fixture(params=[close_at_once, send_garbage], ids=["closed", "garbage"])
async def stand_in(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    handler: Handler = request.param
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def test_no_welcome_is_a_broker_error_the_reconnect_loop_retries(stand_in: str) -> None:
    with pytest.raises(BrokerError, match="sent no WELCOME"):
        await BrokerClient.connect(stand_in, "alice", ice_servers=[], timeout=5)
