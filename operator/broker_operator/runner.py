"""``webrtc-broker operator``: kopf, the resync loop and the metrics endpoint in one loop.

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
from typing import Any

import kopf

from broker_operator.handlers import operator_settings, register
from broker_operator.kube import KubeClient
from broker_operator.metrics import OperatorStats, operator_registry
from broker_operator.reconcile import Reconciler
from broker_operator.resync import resync_forever
from webrtc_broker.config import OperatorConfig
from webrtc_broker.metrics import serve_metrics

logger = logging.getLogger(__name__)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_operator(config: OperatorConfig) -> None:
    """Run until SIGINT or SIGTERM (kopf handles both)."""
    settings = operator_settings()
    client = await KubeClient.login(settings)
    stats = OperatorStats()
    reconciler = Reconciler(client, stats, config)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, config.resync_seconds)
    liveness = (
        f"http://{config.metrics_host}:{config.health_port}/healthz" if config.health_port else None
    )
    side_tasks = [
        asyncio.create_task(
            serve_metrics(operator_registry(stats), config.metrics_host, config.metrics_port)
        ),
        asyncio.create_task(
            resync_forever(client, reconciler, list(config.namespaces), config.resync_seconds)
        ),
    ]

    async def stop_side_tasks(**_: Any) -> None:
        # On the way out, before kopf waits (5 s) for tasks it did not start to end.
        await _cancel(side_tasks)

    kopf.on.cleanup(registry=registry, id="stop-side-tasks")(stop_side_tasks)
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
        )
    finally:
        await _cancel(side_tasks)
        await client.close()
