"""PodDisruptionBudgets and the optional Prometheus-operator ServiceMonitor.

A voluntary disruption (node drain, cluster upgrade) evicts at most one comm
server of each kind at a time, so only one server's clients reconnect at
once. The coordinator gets no budget: with a single replica, any budget
would block node drains forever.
"""

from __future__ import annotations

from broker_operator.manifests.pods import Manifest
from broker_operator.naming import ClusterRef, Component
from broker_operator.spec import BrokerClusterSpec

SERVICE_MONITOR_API = "monitoring.coreos.com/v1"


def disruption_budget(ref: ClusterRef, component: Component) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": ref.metadata(ref.object_name(component), component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": ref.selector_labels(component)},
        },
    }


def service_monitor(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """Scrapes the coordinator's Service and every comm server through the headless one."""
    monitor = spec.metrics.service_monitor
    metadata = ref.metadata(ref.service_monitor, "metrics")
    labels = metadata["labels"]
    assert isinstance(labels, dict)
    labels.update(monitor.labels)
    return {
        "apiVersion": SERVICE_MONITOR_API,
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": ref.instance_labels()},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": monitor.interval}],
        },
    }
