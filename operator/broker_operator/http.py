"""The operator's own HTTP endpoint: ``/metrics`` and a ``/healthz`` that reflects its tasks.

kopf's liveness endpoint (``--health-port``) only knows about kopf's own
machinery; the resync loop and this endpoint run beside kopf under a
:class:`~webrtc_broker.supervise.Supervisor`. This ``/healthz`` answers 503
once the supervisor has failed (a task out of restarts), in the seconds
before the operator exits non-zero. When this endpoint is itself the task
that failed, nothing answers here, which a probe reads as a failure too.
"""

from __future__ import annotations

import uvicorn
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from webrtc_broker.httpserver import EmbeddedServer
from webrtc_broker.metrics import metrics_endpoint
from webrtc_broker.supervise import Supervisor


def operator_app(registry: CollectorRegistry, supervisor: Supervisor) -> Starlette:
    async def healthz(_: Request) -> Response:
        failure = supervisor.failure
        if failure is None:
            return PlainTextResponse("ok\n")
        # The task's name only: exception text stays in the log.
        return PlainTextResponse(f"failed: task {failure.task}\n", status_code=503)

    return Starlette(
        routes=[Route("/metrics", metrics_endpoint(registry)), Route("/healthz", healthz)]
    )


def operator_http_server(app: Starlette, host: str, port: int) -> EmbeddedServer:
    """A fresh uvicorn server for ``app``: one per run, since a failed one is not reused."""
    return EmbeddedServer(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
    )
