"""The operator's own Prometheus metrics, served by ``webrtc_broker.metrics.serve_metrics``.

As in the other services, the code counts into plain ints and a collector
builds the families at scrape time. Labels come from fixed sets (results,
actions, phases); never a resource's name, which is unbounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from broker_operator.conditions import DEGRADED, PROGRESSING, RUNNING
from webrtc_broker.metrics import counter, gauge, service_registry

SERVICE = "operator"
RESULTS = ("ok", "invalid", "error")
ACTIONS = ("created", "updated", "deleted")
PHASES = (RUNNING, PROGRESSING, DEGRADED)
DIRECTIONS = ("up", "down")
TASKS = ("resync", "metrics")
"""The tasks :mod:`.runner` supervises beside kopf."""


@dataclass
class OperatorStats:
    """Counts the reconciler and autoscaler bump; phases by resource (namespace, name)."""

    reconciles: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    scalings: Counter[str] = field(default_factory=Counter)
    resyncs: int = 0
    phases: dict[tuple[str, str], str] = field(default_factory=dict)

    def forget(self, namespace: str, name: str) -> None:
        self.phases.pop((namespace, name), None)


class OperatorCollector:
    def __init__(
        self, stats: OperatorStats, restarts: Callable[[], Mapping[str, int]] | None = None
    ) -> None:
        self._stats = stats
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield counter(
            SERVICE,
            "reconciles_total",
            "Reconciles of BrokerClusters by result (invalid: the spec was refused).",
            [((r,), stats.reconciles[r]) for r in RESULTS],
            ("result",),
        )
        yield counter(
            SERVICE,
            "objects_applied_total",
            "Owned objects created, patched or deleted by the operator.",
            [((a,), stats.applied[a]) for a in ACTIONS],
            ("action",),
        )
        yield counter(
            SERVICE,
            "autoscaler_scalings_total",
            "Replica changes made by the autoscaler.",
            [((d,), stats.scalings[d]) for d in DIRECTIONS],
            ("direction",),
        )
        yield counter(
            SERVICE,
            "resyncs_total",
            "Rounds of the periodic resync over every BrokerCluster.",
            stats.resyncs,
        )
        restarts = self._restarts() if self._restarts is not None else {}
        yield counter(
            SERVICE,
            "task_restarts_total",
            "Restarts of the operator's supervised tasks after they failed.",
            [((t,), restarts.get(t, 0)) for t in TASKS],
            ("task",),
        )
        phases = Counter(stats.phases.values())
        yield gauge(
            SERVICE,
            "clusters",
            "BrokerClusters served by this operator, by phase.",
            [((p,), phases[p]) for p in PHASES],
            ("phase",),
        )


def operator_registry(
    stats: OperatorStats, restarts: Callable[[], Mapping[str, int]] | None = None
) -> CollectorRegistry:
    """The registry ``/metrics`` serves; ``restarts`` reads the supervisor's restart counts."""
    return service_registry(SERVICE, OperatorCollector(stats, restarts))
