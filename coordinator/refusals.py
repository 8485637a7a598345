"""How a refused WebSocket upgrade is answered: an HTTP status that says why.

A peer must be able to tell "your credentials are wrong" (give up) from "not
now" (try again later): a client that took a draining coordinator's refusal
for bad credentials would stop reconnecting for good. So every
:class:`RefusalReason` has its own status, sent as a WebSocket denial
response (the ASGI ``websocket.http.response`` extension, which uvicorn
implements) instead of a close before accept, which uvicorn always answers
with 403. The body is the reason's name, and never anything the peer sent.

| status | reasons | what a peer should do |
|---|---|---|
| 403 | bad server secret, bad client credentials | stop: retrying cannot help |
| 503 | shutting down, at the client cap | retry with backoff |
| 429 | at the per-address cap | retry with backoff |
| 409 | a server proposed an alias another peer holds | propose another |
| 400 | no server role, a malformed alias | fix the request |
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .counters import RefusalReason

REFUSAL_STATUS: Mapping[RefusalReason, HTTPStatus] = {
    RefusalReason.BAD_ROLE: HTTPStatus.BAD_REQUEST,
    RefusalReason.BAD_ALIAS: HTTPStatus.BAD_REQUEST,
    RefusalReason.BAD_SERVER_SECRET: HTTPStatus.FORBIDDEN,
    RefusalReason.BAD_CLIENT_CREDENTIALS: HTTPStatus.FORBIDDEN,
    RefusalReason.ALIAS_TAKEN: HTTPStatus.CONFLICT,
    RefusalReason.SHUTTING_DOWN: HTTPStatus.SERVICE_UNAVAILABLE,
    RefusalReason.TOO_MANY_CONNECTIONS: HTTPStatus.SERVICE_UNAVAILABLE,
    RefusalReason.TOO_MANY_FROM_ADDRESS: HTTPStatus.TOO_MANY_REQUESTS,
}

PUBLIC_CORS = {"Access-Control-Allow-Origin": "*"}
"""For endpoints a page on another origin must read (readiness, the admission
check): they take no cookies and reveal nothing secret, so any origin may."""


def refusal_response(reason: RefusalReason, headers: Mapping[str, str] | None = None) -> Response:
    """The HTTP answer that tells a peer why it was refused."""
    return PlainTextResponse(
        f"{reason.value}\n",
        status_code=REFUSAL_STATUS[reason],
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def deny(websocket: WebSocket, reason: RefusalReason) -> None:
    """Answer ``websocket``'s upgrade with the status of ``reason``; it is never accepted."""
    await websocket.send_denial_response(refusal_response(reason))


class DenyingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol, with denial responses that end the handshake.

    uvicorn 0.54's sans-I/O protocol sends a denial response but does not
    count it as the end of the handshake, so each refusal also logged the
    error "ASGI callable returned without completing handshake": 3,000
    refused upgrades wrote 3,000 ERROR lines, and a connection flood became a
    log flood. The handshake is over once the response's last part is sent.
    """

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            self.handshake_complete = True
