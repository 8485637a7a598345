"""PodDisruptionBudgets and the optional Prometheus-operator ServiceMonitor.

A voluntary disruption (node drain, cluster upgrade) evicts at most one comm
server of each kind at a time, so only one server's clients reconnect at
once, and at most one coordinator replica, so the others keep taking clients.
A single coordinator replica gets no budget: it would block node drains
forever (see :func:`.coordinator.disruption_budget`).
"""

from __future__ import annotations

from broker_operator.manifests.pods import Manifest
from broker_operator.naming import ClusterRef, Component
from broker_operator.spec import BrokerClusterSpec

SERVICE_MONITOR_API = "monitoring.coreos.com/v1"
DISCOVERY_LABEL = "webrtc-broker.io/discovery"
"""On Services only for finding pods (the coordinators' peers Service), not scraped."""


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
    """Scrapes the coordinator's Service and every comm server through the headless one.

    The coordinators' peers Service reaches the same pods as their client Service
    and is left out (:data:`DISCOVERY_LABEL`): each pod is scraped once.
    """
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
            "selector": {
                "matchLabels": ref.instance_labels(),
                "matchExpressions": [{"key": DISCOVERY_LABEL, "operator": "DoesNotExist"}],
            },
            "endpoints": [{"port": "http", "path": "/metrics", "interval": monitor.interval}],
        },
    }
