"""Prometheus export of the coordinator, read from its counters and registry at scrape time.

The relay path only does ``dict[key] += 1`` on :class:`CoordinatorCounters`
(whose keys all exist from the start) and the registry already knows who is
connected, so the collector builds every family when Prometheus asks.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from webrtc_broker.metrics import counter, gauge, metrics_endpoint, service_registry

from .core import Coordinator
from .outbox import Outbox

SERVICE = "coordinator"


class CoordinatorCollector:
    """Builds the coordinator's metric families from a live :class:`Coordinator`."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        coordinator = self._coordinator
        registry = coordinator.registry
        counters = coordinator.counters
        servers = {"server": 0, "hub": 0}
        for server in registry.servers():
            servers[server.role] += 1
        yield gauge(
            SERVICE,
            "ready",
            "1 between startup and the start of shutdown, else 0.",
            int(coordinator.ready),
        )
        yield gauge(
            SERVICE,
            "servers",
            "Comm servers registered (connected on /discover), by mesh role.",
            [((role,), count) for role, count in servers.items()],
            ("role",),
        )
        yield gauge(
            SERVICE,
            "clients",
            "Clients connected on /connect.",
            registry.client_count,
        )
        queued = sum(len(peer.sink) for peer in registry.peers() if isinstance(peer.sink, Outbox))
        yield gauge(
            SERVICE,
            "send_queue_messages",
            "Frames waiting in the per-WebSocket outbound queues, summed over peers.",
            queued,
        )
        yield counter(
            SERVICE,
            "connections_total",
            "WebSockets accepted and welcomed, by peer role.",
            [((role,), value) for role, value in counters.connections.items()],
            ("role",),
        )
        yield counter(
            SERVICE,
            "connections_refused_total",
            "WebSocket upgrades refused (HTTP 4xx or 503, see coordinator.refusals), by reason.",
            [((reason,), value) for reason, value in counters.connections_refused.items()],
            ("reason",),
        )
        yield counter(
            SERVICE,
            "frames_relayed_total",
            "Signalling frames forwarded to their target, by message type.",
            [((kind,), value) for kind, value in counters.frames_relayed.items()],
            ("type",),
        )
        yield counter(
            SERVICE,
            "frames_dropped_total",
            "Frames received and not forwarded, by reason.",
            [((reason,), value) for reason, value in counters.frames_dropped.items()],
            ("reason",),
        )
        yield counter(
            SERVICE,
            "connections_timed_out_total",
            "Connections closed for taking too long: the HTTP request or WebSocket upgrade "
            "(handshake), or a client's first signalling (idle).",
            [((phase,), value) for phase, value in counters.connections_timed_out.items()],
            ("phase",),
        )
        yield counter(
            SERVICE,
            "slow_connections_closed_total",
            "WebSockets closed because their outbound queue overflowed.",
            counters.slow_connections_closed,
        )
        yield counter(
            SERVICE,
            "load_reports_total",
            "Client counts comm servers reported, which least-clients selection uses.",
            counters.load_reports,
        )
        yield counter(
            SERVICE,
            "turn_credentials_issued_total",
            "Short-lived TURN credentials handed out at GET /ice-servers.",
            counters.turn_credentials_issued,
        )
        yield counter(
            SERVICE,
            "turn_credentials_refused_total",
            "GET /ice-servers requests that got no TURN credentials (HTTP 401 or 429), by reason.",
            [((reason,), value) for reason, value in counters.turn_credentials_refused.items()],
            ("reason",),
        )


def coordinator_registry(coordinator: Coordinator) -> CollectorRegistry:
    """The registry the coordinator serves at ``/metrics``."""
    return service_registry(SERVICE, CoordinatorCollector(coordinator))


def add_metrics_route(app: FastAPI, coordinator: Coordinator) -> CollectorRegistry:
    """Serve the coordinator's metrics at ``GET /metrics`` on its own port."""
    registry = coordinator_registry(coordinator)
    app.add_route("/metrics", metrics_endpoint(registry), methods=["GET"], include_in_schema=False)
    return registry
