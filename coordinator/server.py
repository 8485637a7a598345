"""Run the coordinator app under uvicorn, inside the caller's event loop.

``serve`` is a coroutine rather than ``uvicorn.run`` so that ``webrtc-broker
up`` and the tests can run the coordinator next to other services in one
loop. Logging is left entirely to the caller (``log_config=None``,
``log_level=None``): uvicorn would otherwise replace the CLI's handlers and
reset the levels it chose for uvicorn's loggers.
"""

from __future__ import annotations

import logging
import resource
import socket

import uvicorn
from fastapi import FastAPI

from webrtc_broker.auth import ClientAuthenticator
from webrtc_broker.config import CoordinatorConfig

from . import redact
from .app import create_app
from .core import Coordinator
from .counters import TimeoutPhase
from .handshake import handshake_limited
from .refusals import DenyingWebSocketProtocol

logger = logging.getLogger(__name__)


class CoordinatorServer(uvicorn.Server):
    """A uvicorn server that reports not-ready before it stops accepting.

    uvicorn closes its listeners and connections first and runs the app's
    lifespan shutdown last; flipping readiness at the start of shutdown lets
    /readyz and the WebSocket endpoints refuse during the whole drain.
    """

    def __init__(self, config: uvicorn.Config, coordinator: Coordinator) -> None:
        super().__init__(config)
        self.coordinator = coordinator

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.coordinator.begin_shutdown()
        await super().shutdown(sockets=sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``); valid once ``started`` is True."""
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        raise RuntimeError("server is not listening yet")


def build_server(
    config: CoordinatorConfig,
    *,
    app: FastAPI | None = None,
    authenticator: ClientAuthenticator | None = None,
) -> CoordinatorServer:
    """A ready-to-``serve()`` uvicorn server for ``config`` (and ``app``, if given)."""
    if app is None:
        app = create_app(config, authenticator=authenticator)
    coordinator: Coordinator = app.state.coordinator
    timeouts = coordinator.counters.connections_timed_out

    def count_handshake_timeout() -> None:
        timeouts[TimeoutPhase.HANDSHAKE] += 1

    uvicorn_config = uvicorn.Config(
        app,
        http=handshake_limited(config.handshake_timeout, count_handshake_timeout),
        ws=DenyingWebSocketProtocol,  # refusals are HTTP responses that say why
        host=config.host,
        port=config.port,
        lifespan="on",
        log_config=None,
        log_level=None,
        # URLs may carry credentials (browsers cannot set WebSocket headers).
        access_log=False,
        server_header=False,
        ws_ping_interval=config.ping_interval,
        ws_ping_timeout=config.ping_timeout,
        ws_max_size=config.max_message_bytes,
        # The client address (per-address cap) comes from X-Forwarded-For only
        # when the TCP peer is a proxy we were told to trust; uvicorn would
        # otherwise believe any local process.
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=list(config.trusted_proxies) or None,
    )
    redact.install()
    return CoordinatorServer(uvicorn_config, coordinator)


FDS_PER_CLIENT = 1
FDS_BESIDES_CLIENTS = 1024
"""Descriptors for servers, handshakes in progress, HTTP requests and the process itself."""


def raise_open_files_limit(config: CoordinatorConfig) -> int:
    """Raise the soft limit on open files toward the hard one; return the new soft limit.

    Many container runtimes start processes with a soft limit of 1024, far
    below ``max_clients``: past it ``accept`` fails and nobody gets in, capped
    or not. Raising the soft limit up to the hard one needs no privilege.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not config.max_clients:
        return soft  # no cap to size the limit for
    wanted = config.max_clients * FDS_PER_CLIENT + FDS_BESIDES_CLIENTS
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted:
        logger.warning(
            "open files limited to %d: fewer than the %d that max_clients=%d needs",
            soft,
            wanted,
            config.max_clients,
        )
    return soft


async def serve(
    config: CoordinatorConfig, *, authenticator: ClientAuthenticator | None = None
) -> None:
    """Serve the coordinator until SIGINT/SIGTERM (or ``should_exit``), then drain."""
    raise_open_files_limit(config)
    await build_server(config, authenticator=authenticator).serve()
