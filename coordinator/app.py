"""The coordinator's ASGI app: WebSocket entry points plus health and status.

Credentials are checked before the WebSocket is accepted: a refused peer
gets an HTTP answer to its upgrade whose status says why (403 for bad
credentials, 503 or 429 for "not now", see :mod:`coordinator.refusals`), no
WebSocket, no alias, and no trace in the registry.

``GET /ice-servers`` hands out STUN/TURN servers, with short-lived TURN
credentials signed per request (:mod:`coordinator.turn`, docs/turn.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import HTTPConnection

import webrtc_broker
from webrtc_broker.auth import (
    AuthError,
    ClientAuthenticator,
    Identity,
    OpenClientAuthenticator,
    ServerSecret,
    check_trust_anchor,
)
from webrtc_broker.config import CoordinatorConfig, ServerRole
from webrtc_broker.tokens import client_authenticator

from .admission import UNKNOWN_ADDRESS
from .core import Coordinator
from .counters import RefusalReason, TurnRefusal
from .credentials import ClaimProblem, display_name, presented_token, server_claim, server_role
from .metrics import add_metrics_route
from .refusals import PUBLIC_CORS, deny, refusal_response
from .registry import Claim, PeerRole, ServerClaim
from .selector import ServerSelector
from .static import add_static_routes
from .turn import IssueLimiter, anonymous_subject, issue, retry_after, turn_entry

logger = logging.getLogger(__name__)

_FLOOD_REFUSALS = frozenset(
    {RefusalReason.TOO_MANY_CONNECTIONS, RefusalReason.TOO_MANY_FROM_ADDRESS}
)

ICE_SERVERS_CORS = {
    **PUBLIC_CORS,
    # The browser SDK sends its token as a header, which makes the request
    # "non-simple": the browser asks first (OPTIONS) whether it may.
    "Access-Control-Allow-Headers": "Authorization",
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Expose-Headers": "Retry-After",
    "Access-Control-Max-Age": "600",
}
"""``/ice-servers`` takes no cookies, only a bearer token the page holds, so
any origin may call it; what it returns depends on that token, never on ambient
credentials."""

_TURN_REFUSAL_STATUS = {
    TurnRefusal.NO_TOKEN: 401,
    TurnRefusal.BAD_TOKEN: 401,
    TurnRefusal.RATE_LIMITED: 429,
}

_TURN_REFUSAL_MESSAGE = {
    TurnRefusal.NO_TOKEN: "a client token is required (Authorization: Bearer, or ?token=)",
    TurnRefusal.BAD_TOKEN: "the client token was refused",
    TurnRefusal.RATE_LIMITED: "too many TURN credentials requested; retry later",
}


class ServerStatus(BaseModel):
    alias: int
    name: str
    role: ServerRole
    clients: int


class Status(BaseModel):
    servers: list[ServerStatus]
    clients: int
    version: str
    replica: int = 0
    """This replica's alias space (docs/protocol.md, "Aliases across replicas")."""
    alias_spaces: int = 1


def create_app(
    config: CoordinatorConfig | None = None,
    *,
    authenticator: ClientAuthenticator | None = None,
    selector: ServerSelector | None = None,
) -> FastAPI:
    """Build a coordinator app; its state is at ``app.state.coordinator``.

    ``authenticator`` checks client credentials (default: what
    ``config.client_auth`` names; out of the box everyone is accepted, as the
    original broker did); ``selector`` overrides ``config.selector``.
    ``app.state.counters`` holds the :class:`CoordinatorCounters`.
    """
    if config is None:
        # Read from the environment. Ignored for mypy: without the pydantic
        # plugin it does not see that every field has a default.
        config = CoordinatorConfig()  # type: ignore[call-arg, unused-ignore]
    coordinator = Coordinator(config, selector=selector)
    jwt_secret = config.client_jwt_secret
    client_auth: ClientAuthenticator = authenticator or client_authenticator(
        config.client_auth, jwt_secret.get_secret_value() if jwt_secret is not None else None
    )
    secret = config.server_secret
    server_secret = ServerSecret(secret.get_secret_value() if secret is not None else None)
    # What the config refuses for --client-auth, refused for an authenticator given
    # in code too: with /discover open, checking clients would protect nothing.
    check_trust_anchor(client_auth, server_secret)
    if any(server.username or server.credential for server in config.ice_servers):
        logger.warning(
            "ice_servers carry static TURN credentials: /ice-servers gives them to every "
            "client; prefer turn_urls with turn_secret (short-lived credentials)"
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        coordinator.mark_started()
        yield
        coordinator.begin_shutdown()
        await coordinator.close_sessions()

    # No docs/OpenAPI routes: this is an infrastructure service, not a public API.
    app = FastAPI(
        title="webrtc-broker coordinator",
        version=webrtc_broker.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.coordinator = coordinator
    app.state.counters = coordinator.counters
    app.state.registry = coordinator.registry
    _add_peer_routes(app, coordinator, client_auth, server_secret)
    _add_admission_check(app, coordinator, client_auth)  # GET /connect, for browsers
    _add_http_routes(app, coordinator)
    _add_ice_servers_route(app, coordinator, client_auth)  # GET /ice-servers
    app.state.metrics_registry = add_metrics_route(app, coordinator)  # GET /metrics
    add_static_routes(app)  # the demo page at / and the browser SDK under /sdk/
    return app


def _admit_server(
    websocket: WebSocket, coordinator: Coordinator, server_secret: ServerSecret
) -> tuple[PeerRole, ServerClaim | None] | RefusalReason:
    """A comm server's role and proposed alias, or why it is refused."""
    role = server_role(websocket.query_params.get("role"))
    if role is None:
        return RefusalReason.BAD_ROLE
    try:
        server_secret.verify(presented_token(websocket.headers, websocket.query_params))
    except AuthError:
        return RefusalReason.BAD_SERVER_SECRET
    if not coordinator.accepting:
        return RefusalReason.SHUTTING_DOWN
    claim = server_claim(websocket.query_params)
    if claim is ClaimProblem.MALFORMED:
        return RefusalReason.BAD_ALIAS
    if claim is not None and coordinator.registry.claim(*claim) is Claim.TAKEN:
        return RefusalReason.ALIAS_TAKEN
    return role, claim


def admit_client(
    connection: HTTPConnection, coordinator: Coordinator, client_auth: ClientAuthenticator
) -> Identity | RefusalReason:
    """A client's identity, or why it is refused (the connection caps aside)."""
    token = presented_token(connection.headers, connection.query_params)
    try:
        identity = client_auth.authenticate((token or "").encode())
    except AuthError:
        return RefusalReason.BAD_CLIENT_CREDENTIALS
    except Exception:
        # A broken authenticator must fail closed, and loudly.
        logger.exception("client authenticator failed")
        return RefusalReason.BAD_CLIENT_CREDENTIALS
    if not coordinator.accepting:
        return RefusalReason.SHUTTING_DOWN
    return identity


def _add_admission_check(
    app: FastAPI, coordinator: Coordinator, client_auth: ClientAuthenticator
) -> None:
    @app.get("/connect")
    async def connect_check(request: Request) -> Response:
        """How an upgrade of this request to a WebSocket would be answered now.

        A browser never sees the status of a refused upgrade, only that it
        failed; the browser SDK asks here (across origins, with the same
        ``token``) whether the credentials were refused or the coordinator
        said "not now". Nothing is opened or counted.
        """
        address = request.client.host if request.client is not None else UNKNOWN_ADDRESS
        refusal = coordinator.caps.refusal(address)
        if refusal is None:
            admitted = admit_client(request, coordinator, client_auth)
            refusal = admitted if isinstance(admitted, RefusalReason) else None
        if refusal is None:
            return Response(status_code=204, headers={**PUBLIC_CORS, "Cache-Control": "no-store"})
        return refusal_response(refusal, PUBLIC_CORS)


def _add_peer_routes(
    app: FastAPI,
    coordinator: Coordinator,
    client_auth: ClientAuthenticator,
    server_secret: ServerSecret,
) -> None:
    async def refuse(websocket: WebSocket, reason: RefusalReason) -> None:
        coordinator.counters.connections_refused[reason] += 1
        # A connection flood must not become a log flood: over a cap, the
        # counter says it and the log only does at debug level.
        level = logging.DEBUG if reason in _FLOOD_REFUSALS else logging.INFO
        logger.log(level, "refused %s connection: %s", websocket.url.path, reason.value)
        await deny(websocket, reason)

    @app.websocket("/discover")
    async def discover(websocket: WebSocket) -> None:
        """A comm server's control connection."""
        admitted = _admit_server(websocket, coordinator, server_secret)
        if isinstance(admitted, RefusalReason):
            await refuse(websocket, admitted)
            return
        role, claim = admitted
        await websocket.accept()
        name = display_name(websocket.query_params.get("name"))
        await coordinator.serve_peer(websocket, role, name, claim=claim)

    # Only a verified identity may share a budget across connections: with the
    # open authenticator the "identity" is whatever the client typed.
    verified_identities = not isinstance(client_auth, OpenClientAuthenticator)

    @app.websocket("/connect")
    async def connect(websocket: WebSocket) -> None:
        """A client's connection: it learns its alias and which server to use."""
        # The caps come first: they cost a dict lookup, a token check costs a signature.
        address = websocket.client.host if websocket.client is not None else UNKNOWN_ADDRESS
        refusal = coordinator.caps.admit(address)
        if refusal is not None:
            await refuse(websocket, refusal)
            return
        try:
            await _serve_client(websocket)
        finally:
            coordinator.caps.release(address)

    async def _serve_client(websocket: WebSocket) -> None:
        admitted = admit_client(websocket, coordinator, client_auth)
        if isinstance(admitted, RefusalReason):
            await refuse(websocket, admitted)
            return
        await websocket.accept()
        subject = admitted.value if verified_identities else None
        await coordinator.serve_peer(websocket, "client", subject=subject)


def _add_http_routes(app: FastAPI, coordinator: Coordinator) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: started and not shutting down, so new peers are welcome (and with
        ``--ready-needs-server``, a comm server registered)."""
        # Pages on other origins read it too (the browser SDK, after a failed upgrade).
        headers = {**PUBLIC_CORS, "Cache-Control": "no-store"}
        if coordinator.ready:
            return JSONResponse({"status": "ready"}, headers=headers)
        return JSONResponse({"status": "not ready"}, status_code=503, headers=headers)

    @app.get("/status")
    async def status() -> Status:
        registry = coordinator.registry
        return Status(
            servers=[
                ServerStatus(alias=s.alias, name=s.name, role=s.role, clients=s.clients)
                for s in registry.servers()
            ],
            clients=registry.client_count,
            version=webrtc_broker.__version__,
            replica=coordinator.aliases.replica,
            alias_spaces=coordinator.aliases.spaces,
        )


def _add_ice_servers_route(
    app: FastAPI, coordinator: Coordinator, client_auth: ClientAuthenticator
) -> None:
    """``GET /ice-servers``: static entries as configured, plus fresh TURN credentials.

    With client tokens on, only a client with a valid token gets anything, and
    its TURN username carries the token's subject; the rate limit is per
    subject. Without them, anyone who can reach the coordinator gets
    credentials (a random subject each), rate-limited per remote address: the
    relay stays open to all of them, but only for ``turn_ttl`` seconds at a time.
    """
    config = coordinator.config
    counters = coordinator.counters
    tokens_required = not isinstance(client_auth, OpenClientAuthenticator)
    secret = config.turn_secret.get_secret_value() if config.turn_secret is not None else None
    limiter = IssueLimiter(config.turn_issue_rate, config.turn_issue_burst)
    static = [server.to_json() for server in config.ice_servers]

    def refuse(reason: TurnRefusal, headers: dict[str, str] | None = None) -> JSONResponse:
        counters.turn_credentials_refused[reason] += 1
        return JSONResponse(
            {"error": reason.value, "message": _TURN_REFUSAL_MESSAGE[reason]},
            status_code=_TURN_REFUSAL_STATUS[reason],
            headers={**ICE_SERVERS_CORS, "Cache-Control": "no-store", **(headers or {})},
        )

    def subject_of(request: Request) -> str | TurnRefusal:
        token = presented_token(request.headers, request.query_params)
        if not token:
            return TurnRefusal.NO_TOKEN
        try:
            identity = client_auth.authenticate(token.encode())
        except AuthError:
            return TurnRefusal.BAD_TOKEN
        except Exception:
            logger.exception("client authenticator failed")  # fail closed, and loudly
            return TurnRefusal.BAD_TOKEN
        return identity.value.decode(errors="replace")

    @app.options("/ice-servers", include_in_schema=False)
    async def ice_servers_preflight() -> Response:
        """The CORS preflight of a browser sending its token in ``Authorization``."""
        return Response(status_code=204, headers=ICE_SERVERS_CORS)

    @app.get("/ice-servers")
    async def ice_servers(request: Request) -> Response:
        """STUN/TURN servers for this client; the TURN credentials expire after ``turn_ttl``."""
        if tokens_required:
            subject = subject_of(request)
            if isinstance(subject, TurnRefusal):
                return refuse(subject, {"WWW-Authenticate": "Bearer"})
            key = f"subject:{subject}"
        else:
            subject = anonymous_subject()
            address = request.client.host if request.client is not None else UNKNOWN_ADDRESS
            key = f"address:{address}"
        body: list[dict[str, object]] = list(static)
        if secret is not None and config.turn_urls:
            wait = limiter.take(key)
            if wait is not None:
                return refuse(TurnRefusal.RATE_LIMITED, {"Retry-After": retry_after(wait)})
            credential = issue(secret, subject, config.turn_ttl)
            counters.turn_credentials_issued += 1
            body.append(turn_entry(config.turn_urls, credential))
        return JSONResponse(body, headers={**ICE_SERVERS_CORS, "Cache-Control": "no-store"})
