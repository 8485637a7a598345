"""The autoscaler reads the coordinator's /status over HTTP, with kopf's aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from broker_operator.autoscaler import read_load


@pytest.fixture
async def coordinator() -> AsyncIterator[str]:
    """A stand-in /status on loopback: two servers (one a hub) and a broken route."""

    async def status(_: web.Request) -> web.Response:
        servers = [
            {"alias": 1, "name": "a", "role": "server", "clients": 7},
            {"alias": 2, "name": "b", "role": "server", "clients": 5},
            {"alias": 3, "name": "h", "role": "hub", "clients": 0},
        ]
        return web.json_response({"servers": servers, "clients": 4})

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="draining")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_load_is_what_the_servers_report(coordinator: str) -> None:
    load = await read_load(f"{coordinator}/status")
    # Servers report every replica's clients; this replica counts only its own 4.
    assert (load.clients, load.per_server) == (12, (7, 5))


async def test_an_unanswering_coordinator_is_an_aiohttp_error(coordinator: str) -> None:
    with pytest.raises(aiohttp.ClientResponseError):
        await read_load(f"{coordinator}/broken")
    with pytest.raises(aiohttp.ClientError):
        await read_load("http://127.0.0.1:1/status")
