"""The comm server's own HTTP endpoint: liveness, readiness, a JSON status and metrics."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commserver.metrics import commserver_registry
from commserver.peer import Peer
from commserver.server import CommServer
from webrtc_broker.metrics import metrics_endpoint
from webrtc_broker.rtc.memory import SESSION_TYPES, MemoryReport


def create_http_app(server: CommServer) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        """Alive unless a part the server cannot work without failed for good: then
        a liveness probe restarts it (the process also exits non-zero on its own)."""
        if server.healthy:
            return JSONResponse({"status": "ok"})
        failure = server.supervisor.failure
        return JSONResponse({"status": "failed", "reason": str(failure)}, status_code=503)

    async def readyz(_: Request) -> JSONResponse:
        """Ready while registered with at least one coordinator replica and not draining.

        It does not ask whether a coordinator is *ready*: a coordinator that waits
        for a ready server (``--ready-needs-server``) would otherwise wait forever
        for a server that waits for it."""
        ready = server.link.connected.is_set() and server.alias != 0 and not server.draining
        return JSONResponse(
            {"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503
        )

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(server.status())

    memory_report = MemoryReport(server.reclaimer, (*SESSION_TYPES, Peer))

    async def memory(_: Request) -> JSONResponse:
        """Resident memory and live session objects (a heap walk, at most once a second)."""
        return JSONResponse(memory_report.get())

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/debug/memory", memory),
            Route("/metrics", metrics_endpoint(commserver_registry(server))),
        ]
    )
