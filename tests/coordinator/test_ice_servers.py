"""``GET /ice-servers``: the configured STUN/TURN servers, handed to clients."""

from __future__ import annotations

import logging

import pytest

from tests.coordinator.harness import make_config, running_coordinator
from webrtc_broker.client.link import fetch_ice_servers

ICE_SERVERS = [
    {"urls": ["stun:127.0.0.1:3478"]},
    {
        "urls": ["turn:127.0.0.1:3478?transport=udp", "turns:127.0.0.1:5349"],
        "username": "turn-user",
        "credential": "turn-password-do-not-leak",
    },
]


async def test_configured_servers_are_returned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_coordinator(make_config(ice_servers=ICE_SERVERS)) as coord:
        response = await coord.get("/ice-servers")
        assert response.status_code == 200
        assert response.json() == ICE_SERVERS  # null fields omitted
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["cache-control"] == "no-store"
        # The credential is for clients only: never in status, metrics or logs.
        for path in ("/status", "/metrics"):
            other = await coord.get(path)
            assert other.status_code == 200
            assert "turn-password-do-not-leak" not in other.text
    assert "turn-password-do-not-leak" not in caplog.text
    assert "turn-password-do-not-leak" not in repr(make_config(ice_servers=ICE_SERVERS))


async def test_no_servers_by_default() -> None:
    async with running_coordinator(make_config()) as coord:
        response = await coord.get("/ice-servers")
        assert response.status_code == 200
        assert response.json() == []


async def test_python_sdk_reads_the_list_and_takes_404_as_none() -> None:
    async with running_coordinator(make_config(ice_servers=ICE_SERVERS)) as coord:
        fetched = await fetch_ice_servers(coord.url(""))
        assert [server.to_json() for server in fetched] == ICE_SERVERS
        assert await fetch_ice_servers(coord.url("/no-such-prefix")) == []
