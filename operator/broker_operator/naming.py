"""Names and labels of everything made for one ``BrokerCluster``.

Names are derived from the resource's name only, so that a restarted
operator finds the objects it made before instead of making new ones.
Selector labels are a fixed subset of the labels: a Deployment's or
StatefulSet's selector is immutable, so nothing that can change (such as a
version) may ever be part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_operator import API_VERSION, KIND

APP = "webrtc-broker"
MANAGED_BY = "webrtc-broker-operator"
COORDINATOR_PORT = 9090

COORDINATOR = "coordinator"
COMMSERVER = "commserver"
HUB = "hub"
SERVER_SECRET = "server-secret"
TURN = "turn"
Component = str


@dataclass(frozen=True)
class ClusterRef:
    """Identity of one ``BrokerCluster``: enough to name and own its objects."""

    name: str
    namespace: str
    uid: str

    def object_name(self, component: Component) -> str:
        return f"{self.name}-{component}"

    @property
    def coordinator_service(self) -> str:
        return self.object_name(COORDINATOR)

    @property
    def coordinator_peers_service(self) -> str:
        """The coordinators' headless Service: every replica's address, ready or not,
        which the comm servers resolve to link to each replica."""
        return f"{self.object_name(COORDINATOR)}-peers"

    def coordinator_peers_host(self) -> str:
        """The host name the comm servers resolve (one A record per replica)."""
        return f"{self.coordinator_peers_service}.{self.namespace}.svc"

    @property
    def headless_service(self) -> str:
        """The governing Service of both comm-server StatefulSets (servers and hubs)."""
        return self.object_name(COMMSERVER)

    @property
    def service_monitor(self) -> str:
        return self.name

    @property
    def turn_service(self) -> str:
        """The managed coturn's Deployment and Service."""
        return self.object_name(TURN)

    @property
    def server_secret(self) -> str:
        """The Secret holding the server secret the operator generates (see
        :mod:`broker_operator.manifests.secret`)."""
        return self.object_name(SERVER_SECRET)

    def coordinator_endpoint(self) -> str:
        """What clients elsewhere in the cluster dial (shown in the status)."""
        return f"ws://{self.coordinator_service}.{self.namespace}.svc:{COORDINATOR_PORT}"

    def selector_labels(self, component: Component) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": APP,
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
        }

    def labels(self, component: Component) -> dict[str, str]:
        return {
            **self.selector_labels(component),
            "app.kubernetes.io/part-of": APP,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }

    def instance_labels(self) -> dict[str, str]:
        """Labels shared by every object of this cluster, whatever its component."""
        return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": self.name}

    def label_selector(self, component: Component) -> str:
        """The pods of ``component`` as a label-selector string (scale subresource, HPA)."""
        return ",".join(f"{k}={v}" for k, v in self.selector_labels(component).items())

    def owner_reference(self) -> dict[str, object]:
        """Makes Kubernetes' garbage collector delete the object with the resource."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, component: Component) -> dict[str, object]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner_reference()],
        }
