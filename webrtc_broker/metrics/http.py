"""Serving a registry at ``/metrics``.

The coordinator and the comm servers mount :func:`metrics_endpoint` on the
HTTP port they already have. A service without one (the operator) can run
:func:`serve_metrics` in its event loop instead.

Collectors read the services' plain counters, which only the event loop
mutates, so the exposition runs on the event loop too (it does no I/O beyond
reading ``/proc``): a worker thread could catch a dict mid-update.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import uvicorn
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webrtc_broker.httpserver import EmbeddedServer

Endpoint = Callable[[Request], Awaitable[Response]]


def metrics_endpoint(registry: CollectorRegistry) -> Endpoint:
    """A Starlette endpoint answering with ``registry`` in the format the scraper asks for.

    Prometheus asks for OpenMetrics; ``curl`` and ``promtool`` get the classic
    text format.
    """

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return metrics


def metrics_app(registry: CollectorRegistry) -> Starlette:
    """A minimal app serving ``/metrics`` (and ``/healthz``), for services with no HTTP port."""

    async def healthz(_: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return Starlette(
        routes=[Route("/metrics", metrics_endpoint(registry)), Route("/healthz", healthz)]
    )


def metrics_server(registry: CollectorRegistry, host: str, port: int) -> EmbeddedServer:
    """A uvicorn server for :func:`metrics_app`; ``await server.serve()`` runs it."""
    return EmbeddedServer(
        uvicorn.Config(
            metrics_app(registry),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve ``registry`` on ``http://host:port/metrics`` until cancelled."""
    await metrics_server(registry, host, port).serve()
