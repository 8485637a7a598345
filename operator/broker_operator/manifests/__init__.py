"""From a spec to the objects it needs: pure functions, no API calls.

:func:`desired_objects` is the whole of what a ``BrokerCluster`` should look
like in the cluster; :func:`optional_objects` names the objects that some
specs have and others not, so that the reconciler can delete them when a
spec stops asking for them (a hub StatefulSet after switching to mesh, a
ServiceMonitor after turning it off, a managed TURN server, the coordinators'
budget after going down to one replica). Per-pod Services
come and go with the replica count: the reconciler finds them by label
(:data:`commserver.POD_SERVICE_LABEL`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_operator.manifests import commserver, coordinator, extras, turn
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import COMMSERVER, COORDINATOR, HUB, TURN, ClusterRef
from broker_operator.spec import BrokerClusterSpec

__all__ = ["Manifest", "ObjectKey", "desired_objects", "key_of", "optional_objects"]


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Which object: enough to find it through the API."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def key_of(manifest: Manifest) -> ObjectKey:
    meta = manifest["metadata"]
    return ObjectKey(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def desired_objects(ref: ClusterRef, spec: BrokerClusterSpec) -> list[Manifest]:
    """Every object this cluster needs, in the order to create them.

    Services come before the workloads that use them (the coordinators' peers
    name must resolve when comm servers start); the coordinator before the comm
    servers that dial it.
    """
    objects = []
    if spec.turn.mode == "Managed":
        objects += [turn.service(ref, spec), turn.deployment(ref, spec)]
    objects += [
        coordinator.service(ref, spec),
        coordinator.peers_service(ref),
        coordinator.deployment(ref, spec),
    ]
    budget = coordinator.disruption_budget(ref, spec)
    if budget is not None:
        objects.append(budget)
    objects.append(commserver.headless_service(ref, spec))
    if spec.topology.mode == "Hub":
        objects.append(commserver.statefulset(ref, spec, HUB))
        objects.append(extras.disruption_budget(ref, HUB))
    # Per-pod Services first: a pod's port is reachable once it starts advertising it.
    objects.extend(commserver.pod_services(ref, spec))
    objects.append(commserver.statefulset(ref, spec, COMMSERVER))
    objects.append(extras.disruption_budget(ref, COMMSERVER))
    if spec.metrics.enabled and spec.metrics.service_monitor.enabled:
        objects.append(extras.service_monitor(ref, spec))
    return objects


def optional_objects(ref: ClusterRef) -> list[ObjectKey]:
    """Objects that only some specs have; the reconciler deletes those no longer desired."""
    ns = ref.namespace
    return [
        ObjectKey("policy/v1", "PodDisruptionBudget", ns, ref.object_name(COORDINATOR)),
        ObjectKey("apps/v1", "StatefulSet", ns, ref.object_name(HUB)),
        ObjectKey("policy/v1", "PodDisruptionBudget", ns, ref.object_name(HUB)),
        ObjectKey(extras.SERVICE_MONITOR_API, "ServiceMonitor", ns, ref.service_monitor),
        ObjectKey("apps/v1", "Deployment", ns, ref.object_name(TURN)),
        ObjectKey("v1", "Service", ns, ref.object_name(TURN)),
    ]
