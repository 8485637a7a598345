"""``webrtc-broker operator``: kopf, the reconciler and the metrics endpoint in one loop.

Three HTTP faces, each with one job: kopf's liveness endpoint
(``--health-port``, ``/healthz``) answers only while kopf's own machinery
is alive, which is what a liveness probe should restart on; the metrics
endpoint (``--metrics-port``, ``/metrics``) serves the operator's registry;
everything else is the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf

from broker_operator.handlers import operator_settings, register
from broker_operator.kube import KubeClient
from broker_operator.metrics import OperatorStats, operator_registry
from broker_operator.reconcile import Reconciler
from webrtc_broker.config import OperatorConfig
from webrtc_broker.metrics import serve_metrics

logger = logging.getLogger(__name__)


def _set(flag: asyncio.Future[None]) -> None:
    if not flag.done():
        flag.set_result(None)


async def run_operator(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (kopf handles both) or until ``stop`` is set."""
    settings = operator_settings()
    client = await KubeClient.login(settings)
    stats = OperatorStats()
    reconciler = Reconciler(client, stats, config)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, config.resync_seconds)
    liveness = (
        f"http://{config.metrics_host}:{config.health_port}/healthz" if config.health_port else None
    )
    stop_flag: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = None
    if stop is not None:
        waiter = asyncio.create_task(stop.wait())
        waiter.add_done_callback(lambda _: _set(stop_flag))
    metrics = asyncio.create_task(
        serve_metrics(operator_registry(stats), config.metrics_host, config.metrics_port)
    )
    logger.info(
        "operator serving %s; metrics on %s:%d",
        ", ".join(config.namespaces) or "all namespaces",
        config.metrics_host,
        config.metrics_port,
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
        )
    finally:
        for task in (metrics, waiter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await client.close()
