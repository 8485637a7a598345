"""``webrtc-broker operator``: kopf, the resync loop and the metrics endpoint in one loop.

Three HTTP faces, each with one job: kopf's liveness endpoint
(``--health-port``, ``/healthz``) answers only while kopf's own machinery
is alive, which is what a liveness probe should restart on; the operator's
endpoint (``--metrics-port``) serves the operator's registry at ``/metrics``
and at ``/healthz`` whether the tasks below are alive; everything else is the
Kubernetes API.

The resync loop and the metrics endpoint run under a
:class:`~webrtc_broker.supervise.Supervisor`: either is restarted with
backoff when it fails (both keep no state across runs), and when one keeps
failing (a metrics port taken by another process, an API answer the resync
cannot read every time) the operator gives up: its ``/healthz`` answers 503
for :data:`FATAL_EXIT_DELAY` seconds, then it stops and exits with status 1.
Exiting is what Kubernetes acts on at once: the kubelet restarts the
container (and backs off between restarts if the cause stays), whereas a
failing liveness probe takes ``periodSeconds x failureThreshold`` (a minute
with ``deploy/operator.yaml``) to be noticed, and a pod whose resync died
while kopf's own probe still passed would never be restarted at all. kopf's
endpoint is left to kopf: it caches its probe results for 10 seconds, so it
could not report the failure any sooner than the exit does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from broker_operator.handlers import operator_settings, register
from broker_operator.http import operator_app, operator_http_server
from broker_operator.kube import KubeClient
from broker_operator.metrics import OperatorStats, operator_registry
from broker_operator.reconcile import Reconciler
from broker_operator.resync import resync_forever
from broker_operator.served import KopfCoverage
from webrtc_broker.config import OperatorConfig
from webrtc_broker.supervise import Failure, RestartPolicy, Supervisor

logger = logging.getLogger(__name__)

FATAL_EXIT_DELAY = 2.0
"""Seconds ``/healthz`` answers 503 before a failed operator stops (probes, scrapes and
logs see why), then exits with status 1."""

EXIT_FAILED = 1

METRICS_POLICY = RestartPolicy(max_restarts=5, window=60.0, first_delay=0.2, max_delay=5.0)
"""A port in use stays in use for a while: about 6 s of retries, then exit."""


def resync_policy(interval: float) -> RestartPolicy:
    """Five restarts within a window that fits six failed rounds (each waits ``interval``)."""
    return RestartPolicy(
        max_restarts=5, window=60.0 + 10 * interval, first_delay=0.2, max_delay=5.0
    )


async def run_operator(config: OperatorConfig) -> int:
    """Run until SIGINT or SIGTERM (kopf handles both); the process's exit status."""
    settings = operator_settings(clusterwide=not config.namespaces)
    client = await KubeClient.login(settings)
    stats = OperatorStats()
    reconciler = Reconciler(client, stats, config)
    registry = kopf.OperatorRegistry()
    # Serving every namespace, kopf discovers the CRD by itself, and may need a nudge.
    coverage = None if config.namespaces else KopfCoverage()
    register(registry, reconciler, config.resync_seconds, coverage)
    liveness = (
        f"http://{config.metrics_host}:{config.health_port}/healthz" if config.health_port else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_fatal(failure: Failure) -> None:
        logger.critical("operator failed (%s); exiting in %g s", failure, FATAL_EXIT_DELAY)
        loop.call_later(FATAL_EXIT_DELAY, stop.set)

    supervisor = Supervisor("operator", on_fatal=on_fatal)
    app = operator_app(operator_registry(stats, lambda: supervisor.restarts), supervisor)
    supervisor.start(
        "metrics",
        lambda: operator_http_server(app, config.metrics_host, config.metrics_port).serve(),
        restart=True,
        policy=METRICS_POLICY,
    )
    supervisor.start(
        "resync",
        lambda: resync_forever(
            client, reconciler, list(config.namespaces), config.resync_seconds, coverage
        ),
        restart=True,
        policy=resync_policy(config.resync_seconds),
    )

    async def stop_side_tasks(**_: Any) -> None:
        # On the way out, before kopf waits (5 s) for tasks it did not start to end.
        await supervisor.close()
        # kopf leaves its waiter on the stop flag pending when a signal stops it.
        stop.set()

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
            stop_flag=stop,
        )
    finally:
        await supervisor.close()
        await client.close()
    if supervisor.failure is not None:
        logger.critical("operator exiting with status %d: %s", EXIT_FAILED, supervisor.failure)
        return EXIT_FAILED
    return 0
