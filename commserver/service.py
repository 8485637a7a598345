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
from webrtc_broker.rtc.candidates import CandidatePolicy
from webrtc_broker.rtc.memory import freeze_startup_objects

log = logging.getLogger(__name__)

FATAL_GRACE = 1.0
"""Seconds /healthz reports a fatal failure before the process exits non-zero."""


async def serve(
    config: CommServerConfig, *, authenticator: ClientAuthenticator | None = None
) -> None:
    """Run a comm server until SIGINT or SIGTERM; ``authenticator`` checks clients' AUTH."""
    try:
        candidates = CandidatePolicy.from_config(config)
        # Before anything listens: a taken UDP port stops the process with its number.
        await candidates.open()
    except (OSError, ValueError) as exc:
        raise SystemExit(f"comm server {config.name} cannot start: {exc}") from None
    ice = candidates.describe()
    log.info(
        "comm server %s: UDP %s, ports %s, candidates %s",
        config.name,
        ice["mode"],
        ice["ports"],
        " ".join(ice["candidates"]) or "none",
    )
    server = CommServer(config, authenticator=authenticator, candidates=candidates)
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
    # Modules, configuration and the server object live as long as the process:
    # out of the collector's sight, full collections cost what sessions cost.
    freeze_startup_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay_task = asyncio.create_task(server.run(), name="commserver")
    http_task = asyncio.create_task(_serve_http(http, config), name="commserver-http")
    log.info(
        "comm server %s: coordinators %s, status http://%s:%d/status",
        config.name,
        _coordinators(config),
        config.http_host,
        config.http_port,
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({relay_task, http_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper.done() and config.drain_seconds > 0:
        await server.drain(config.drain_seconds)
    failed = not server.healthy or http_task.done()
    if failed and not http_task.done():
        # /healthz answers 503 for a moment before the process goes, so that a
        # probe (or an operator looking) sees why rather than a refused connection.
        await asyncio.sleep(FATAL_GRACE)
    log.info("comm server %s stopping", config.name)
    http.should_exit = True
    for task in (relay_task, stopper):
        task.cancel()
    for task in (relay_task, stopper):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(Exception):  # reported below, by _why
        await http_task
    if failed:
        raise SystemExit(f"comm server {config.name} failed: {_why(server, http_task)}")


async def _serve_http(http: EmbeddedServer, config: CommServerConfig) -> None:
    """uvicorn leaves with ``sys.exit`` when it cannot bind: turn that into an error
    the service reports (and exits on) instead of an exception escaping the loop."""
    try:
        await http.serve()
    except SystemExit:
        raise RuntimeError(f"cannot serve HTTP on {config.http_host}:{config.http_port}") from None


def _coordinators(config: CommServerConfig) -> str:
    """The coordinator replicas a log line names: URLs and the DNS name followed."""
    dns = config.coordinator_dns
    found = [f"dns:{dns}:{config.coordinator_dns_port}"] if dns else []
    return " ".join([*config.coordinator_urls, *found])


def _why(server: CommServer, http_task: asyncio.Task[None]) -> str:
    if server.supervisor.failure is not None:
        return str(server.supervisor.failure)
    return f"its HTTP endpoint stopped ({http_task.exception() or 'exited'})"
