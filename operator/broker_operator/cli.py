"""The ``webrtc-broker operator`` command; kopf and the Kubernetes client load only when it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from pydantic import ValidationError

from webrtc_broker.config import OperatorConfig


@click.command()
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to serve (repeatable) [all namespaces]",
)
@click.option("--metrics-host", help="Address of /metrics and the health endpoint [127.0.0.1]")
@click.option("--metrics-port", type=int, help="Port of /metrics [8080]")
@click.option("--health-port", type=int, help="Port of kopf's liveness /healthz, 0=off [8081]")
@click.option("--resync-seconds", type=float, help="Seconds between resyncs and autoscaling [10]")
@click.option("--status-url", help="Coordinator /status URL template for the autoscaler")
@click.option("--log-level", help="Log level [info]")
def operator(**flags: Any) -> None:
    """Run the Kubernetes operator for BrokerCluster resources (kopf)."""
    from broker_operator.runner import run_operator  # noqa: PLC0415 - keep --help fast
    from webrtc_broker import logs  # noqa: PLC0415

    given = {name: value for name, value in flags.items() if value not in (None, ())}
    try:
        config = OperatorConfig(**given)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(config.log_level)
    # 1 when a supervised task failed for good: the kubelet restarts the container.
    raise SystemExit(asyncio.run(run_operator(config)))
