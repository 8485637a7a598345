"""ICE server helpers: aiortc conversion and the SDK's coordinator URL and fallback."""

from __future__ import annotations

from tests.support import free_port
from webrtc_broker.client.link import fetch_ice_servers, ice_servers_url
from webrtc_broker.config import IceServer
from webrtc_broker.rtc import rtc_ice_servers


def test_rtc_ice_servers_carry_urls_and_credentials() -> None:
    servers = [
        IceServer.model_validate({"urls": ["stun:127.0.0.1:3478"]}),
        IceServer.model_validate(
            {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"}
        ),
    ]
    stun, turn = rtc_ice_servers(servers)
    assert (stun.urls, stun.username, stun.credential) == (["stun:127.0.0.1:3478"], None, None)
    assert (turn.urls, turn.username, turn.credential) == (["turn:127.0.0.1:3478"], "u", "c")
    assert servers[1].to_json() == {
        "urls": ["turn:127.0.0.1:3478"],
        "username": "u",
        "credential": "c",
    }


def test_ice_servers_url_follows_the_coordinator_url() -> None:
    assert ice_servers_url("ws://127.0.0.1:9090") == "http://127.0.0.1:9090/ice-servers"
    assert ice_servers_url("wss://127.0.0.1/broker/") == "https://127.0.0.1/broker/ice-servers"
    assert ice_servers_url("http://127.0.0.1:9090") == "http://127.0.0.1:9090/ice-servers"


async def test_unreachable_coordinator_means_no_ice_servers() -> None:
    assert await fetch_ice_servers(f"ws://127.0.0.1:{free_port()}") == []
