"""STUN/TURN servers from the configuration, as aiortc wants them."""

from __future__ import annotations

from collections.abc import Iterable

from aiortc import RTCIceServer

from webrtc_broker.config import IceServer


def rtc_ice_servers(servers: Iterable[IceServer]) -> list[RTCIceServer]:
    """Convert configured :class:`IceServer` entries to aiortc's ``RTCIceServer``."""
    return [
        RTCIceServer(
            urls=list(server.urls),
            username=server.username,
            credential=(
                server.credential.get_secret_value() if server.credential is not None else None
            ),
        )
        for server in servers
    ]
