"""Running a comm server as a process: HTTP endpoint, relay and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from commserver.http import create_http_app
from commserver.server import CommServer
from webrtc_broker.auth import ClientAuthenticator
from webrtc_broker.config import CommServerConfig
from webrtc_broker.httpserver import EmbeddedServer

log = logging.getLogger(__name__)


async def serve(
    config: CommServerConfig, *, authenticator: ClientAuthenticator | None = None
) -> None:
    """Run a comm server until SIGINT or SIGTERM; ``authenticator`` checks clients' AUTH."""
    server = CommServer(config, authenticator=authenticator)
    http = EmbeddedServer(
        uvicorn.Config(
            create_http_app(server),
            host=config.http_host,
            port=config.http_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay_task = asyncio.create_task(server.run(), name="commserver")
    http_task = asyncio.create_task(http.serve(), name="commserver-http")
    log.info(
        "comm server %s: coordinator %s, status http://%s:%d/status",
        config.name,
        config.coordinator_url,
        config.http_host,
        config.http_port,
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({relay_task, http_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper.done() and config.drain_seconds > 0:
        await server.drain(config.drain_seconds)
    log.info("comm server %s stopping", config.name)
    http.should_exit = True
    for task in (relay_task, stopper):
        task.cancel()
    for task in (relay_task, http_task, stopper):
        with contextlib.suppress(asyncio.CancelledError):
            await task
