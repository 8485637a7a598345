"""The ``BrokerCluster`` spec as typed models, with the CRD's defaults and rules.

The API server validates and defaults a resource against the CRD's schema
before the operator sees it, so on a real cluster most of these checks never
fail. They are repeated here for two reasons: a spec can still be impossible
in ways a schema cannot say (or that only CEL rules say, which older API
servers skip), and the operator must never act on a spec it does not fully
understand. Whatever fails here becomes a ``Degraded`` condition with the
messages below, and the operator changes nothing in the cluster.

The models mirror ``deploy/crd.yaml`` field for field; a test walks both and
fails if a field, default, enum or bound differs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

MAX_NAME_LENGTH = 40
"""Longest ``BrokerCluster`` name: ``<name>-coordinator`` must stay a valid
StatefulSet/Deployment name whose pods' ``controller-revision-hash`` label
(``<statefulset>-<10 chars>``) fits in 63 characters."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
ICE_URL = r"^(stun|stuns|turn|turns):[^\s]+$"
TURN_URL = r"^(turn|turns):[^\s]+$"
CIDR = r"^[0-9a-fA-F.:]+/[0-9]{1,3}$"
DURATION = r"^[0-9]+(ms|s|m|h)$"
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
"""A label (or taint) key: an optional DNS-subdomain prefix and ``/``, then a name."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_LENGTH = 317
"""253 for the prefix, 1 for ``/`` and 63 for the name."""
LABEL_VALUE_LENGTH = 63
MAX_NODE_SELECTOR = 32
MAX_TOLERATIONS = 32

LogLevel = Literal["debug", "info", "warning", "error"]
Quantity = int | Annotated[str, Field(pattern=QUANTITY)]


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class LocalObjectReference(Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field("secret", min_length=1, max_length=253, pattern=SECRET_KEY)


class IceCredentialsRef(Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    username_key: str = Field("username", min_length=1, max_length=253, pattern=SECRET_KEY)
    credential_key: str = Field("credential", min_length=1, max_length=253, pattern=SECRET_KEY)


class Resources(Model):
    """Container resources; quantities are checked by the API server when pods are made."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    def as_manifest(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = {k: str(v) for k, v in self.requests.items()}
        if self.limits:
            out["limits"] = {k: str(v) for k, v in self.limits.items()}
        return out


class Toleration(Model):
    """A core/v1 ``Toleration``: which node taints a pod accepts.

    ``Equal`` (the default) matches a taint with this key and value; ``Exists``
    matches any value of the key, or every taint when the key is left out.
    No effect matches every effect.
    """

    key: str | None = Field(None, min_length=1, max_length=LABEL_KEY_LENGTH, pattern=LABEL_KEY)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(None, max_length=LABEL_VALUE_LENGTH, pattern=LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _operator_rules(self) -> Toleration:
        # The CRD's CEL rules, in its words, and the pod API's own rules: a pod
        # with such a toleration would be refused only when its workload makes it.
        if self.operator == "Equal" and self.key is None:
            raise ValueError("a toleration with operator Equal needs a key")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self

    def as_manifest(self) -> dict[str, str | int]:
        """The pod spec's toleration: the fields given, and the operator always."""
        fields = self.model_dump(by_alias=True, exclude_none=True)
        if not fields.get("value"):
            fields.pop("value", None)
        return fields


LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_LENGTH, pattern=LABEL_VALUE)]
NodeSelector = Annotated[dict[str, LabelValue], Field(max_length=MAX_NODE_SELECTOR)]
Tolerations = Annotated[list[Toleration], Field(max_length=MAX_TOLERATIONS)]


class Placement(Model):
    """Where a component's pods may run; empty fields leave the scheduler's defaults."""

    node_selector: NodeSelector = Field(default_factory=dict)
    tolerations: Tolerations = Field(default_factory=list)

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, selector: dict[str, str]) -> dict[str, str]:
        # The CRD cannot check map keys without costly CEL; the API server would
        # refuse the workload, so the operator says it first, readably.
        bad = [
            key for key in selector if len(key) > LABEL_KEY_LENGTH or not re.match(LABEL_KEY, key)
        ]
        if bad:
            raise ValueError(
                f"not label keys ([prefix/]name, letters, digits, '-', '_', '.'): {bad}"
            )
        return selector

    def pod_fields(self) -> dict[str, object]:
        """``nodeSelector`` and ``tolerations`` for a pod spec, each only when set:
        pods of clusters that set neither stay exactly as they were."""
        out: dict[str, object] = {}
        if self.node_selector:
            out["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            out["tolerations"] = [t.as_manifest() for t in self.tolerations]
        return out


COORDINATOR_RESOURCES = Resources(
    requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "256Mi"}
)
COMMSERVER_RESOURCES = Resources(
    requests={"cpu": "500m", "memory": "256Mi"}, limits={"memory": "1Gi"}
)

TURN_RESOURCES = Resources(requests={"cpu": "100m", "memory": "64Mi"}, limits={"memory": "256Mi"})


class CoordinatorSpec(Placement):
    """The coordinator replicas: no shared store, clients' aliases from disjoint spaces
    (docs/protocol.md, "Coordinator replicas"); every comm server links to each."""

    replicas: int = Field(2, ge=1, le=16)
    selector: Literal["random", "round-robin", "least-clients"] = "least-clients"
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    service_annotations: dict[str, str] = Field(default_factory=dict)
    resources: Resources = COORDINATOR_RESOURCES
    log_level: LogLevel = "info"


NetworkMode = Literal["PodIP", "HostNetwork", "NodePort", "LoadBalancer"]

DEFAULT_UDP_PORT = 7591
"""The one UDP port of every comm server outside PodIP mode: next to the HTTP port, so
outside the ports node agents hold and Linux's ephemeral range (see ``DEFAULT_HTTP_PORT``)."""

NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
"""Kubernetes' default NodePort range (``--service-node-port-range``)."""


class NetworkSpec(Model):
    """How browsers outside the cluster reach the comm servers' UDP port.

    ``PodIP``: candidates of the pod's own address (clients in the cluster, or through
    TURN). The other modes bind one UDP port (``udpPort``) and advertise an address
    outside the pod network: the node's (``HostNetwork``), the node's with a per-pod
    NodePort (``NodePort``), or a per-pod load balancer's (``LoadBalancer``).
    """

    mode: NetworkMode = "PodIP"
    udp_port: int = Field(DEFAULT_UDP_PORT, ge=1024, le=65535)
    node_port_base: int | None = Field(None, ge=NODE_PORT_MIN, le=NODE_PORT_MAX)
    service_annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _node_port_needs_base(self) -> NetworkSpec:
        if self.mode == "NodePort" and self.node_port_base is None:
            raise ValueError("network.nodePortBase is required when network.mode is NodePort")
        return self

    @property
    def per_pod_services(self) -> bool:
        """True when every comm-server pod gets a Service of its own."""
        return self.mode in ("NodePort", "LoadBalancer")


DEFAULT_HTTP_PORT = 7590
"""The comm servers' HTTP port: a node's port in HostNetwork mode, so not one a node agent
holds (9100 is Prometheus' node exporter; 9100-9999 are Prometheus exporters', 10248-10260
the kubelet's and control plane's, 30000-32767 NodePorts) nor in Linux's ephemeral range."""


class CommServersSpec(Placement):
    replicas: int = Field(2, ge=0, le=256)
    max_peers: int = Field(1000, ge=1, le=100000)
    batch_window_milliseconds: int = Field(10, ge=0, le=1000)
    batch_mode: Literal["Idle", "Window"] = "Idle"
    drain_seconds: int = Field(10, ge=0, le=3600)
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=1024, le=65535)
    network: NetworkSpec = NetworkSpec()
    resources: Resources = COMMSERVER_RESOURCES
    log_level: LogLevel = "info"


class TopologySpec(Model):
    mode: Literal["Mesh", "Hub"] = "Mesh"
    hubs: int = Field(1, ge=1, le=16)


class ClientAuthSpec(Model):
    mode: Literal["None", "JWT"] = "None"
    secret_ref: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _jwt_needs_ref(self) -> ClientAuthSpec:
        if self.mode == "JWT" and self.secret_ref is None:
            raise ValueError("auth.clients.secretRef is required when auth.clients.mode is JWT")
        return self


class AuthSpec(Model):
    mode: Literal["None", "SharedSecret"] = "None"
    secret_ref: SecretKeyRef | None = None
    clients: ClientAuthSpec = ClientAuthSpec()

    @model_validator(mode="after")
    def _secret_needs_ref(self) -> AuthSpec:
        if self.mode == "SharedSecret" and self.secret_ref is None:
            raise ValueError("auth.secretRef is required when auth.mode is SharedSecret")
        return self


class IceServerSpec(Model):
    urls: list[str] = Field(min_length=1, max_length=8)
    credentials_secret_ref: IceCredentialsRef | None = None

    @model_validator(mode="after")
    def _url_schemes(self) -> IceServerSpec:
        bad = [url for url in self.urls if not re.match(ICE_URL, url)]
        if bad:
            raise ValueError(f"URLs must start with stun:, stuns:, turn: or turns: {bad}")
        return self


class ServiceMonitorSpec(Model):
    enabled: bool = False
    interval: str = Field("30s", pattern=DURATION)
    labels: dict[str, str] = Field(default_factory=dict)


class MetricsSpec(Model):
    enabled: bool = True
    service_monitor: ServiceMonitorSpec = ServiceMonitorSpec()


class AutoscalingSpec(Model):
    enabled: bool = False
    min_replicas: int = Field(1, ge=1, le=256)
    max_replicas: int = Field(10, ge=1, le=256)
    target_clients_per_server: int = Field(500, ge=1, le=100000)
    scale_down_delay_seconds: int = Field(300, ge=0, le=86400)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must not exceed "
                f"maxReplicas ({self.max_replicas})"
            )
        return self


class ManagedTurnSpec(Placement):
    """A coturn Deployment the operator runs, and the Service that exposes it."""

    image: str = Field("docker.io/coturn/coturn:4.6", min_length=1, max_length=512)
    replicas: int = Field(1, ge=1, le=16)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "LoadBalancer"
    service_annotations: dict[str, str] = Field(default_factory=dict)
    relay_port_min: int = Field(49160, ge=1024, le=65535)
    relay_port_max: int = Field(49200, ge=1024, le=65535)
    allowed_peer_networks: list[Annotated[str, Field(pattern=CIDR)]] = Field(
        min_length=1, max_length=16
    )
    tls_secret_ref: LocalObjectReference | None = None
    resources: Resources = TURN_RESOURCES

    @field_validator("allowed_peer_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ValueError(f"not a network (CIDR with host bits zero): {exc}") from None
        return networks

    @model_validator(mode="after")
    def _relay_range(self) -> ManagedTurnSpec:
        if self.relay_port_min > self.relay_port_max:
            raise ValueError("turn.managed.relayPortMin must not exceed relayPortMax")
        return self


class TurnSpec(Model):
    """TURN for clients that cannot reach the comm servers directly.

    ``External``: a TURN server of the user's at ``urls``, sharing ``secretRef``'s secret;
    ``Managed``: a coturn the operator runs (``urls`` then say how clients reach it; empty:
    its Service's cluster DNS name). The coordinator hands out short-lived credentials
    derived from the secret (TURN REST) either way.
    """

    mode: Literal["None", "External", "Managed"] = "None"
    urls: list[Annotated[str, Field(pattern=TURN_URL)]] = Field(default_factory=list, max_length=8)
    secret_ref: SecretKeyRef | None = None
    ttl_seconds: int = Field(600, ge=30, le=86400)
    managed: ManagedTurnSpec | None = None

    @model_validator(mode="after")
    def _mode_needs(self) -> TurnSpec:
        if self.mode != "None" and self.secret_ref is None:
            raise ValueError("turn.secretRef is required when turn.mode is External or Managed")
        if self.mode == "External" and not self.urls:
            raise ValueError("turn.urls are required when turn.mode is External")
        if self.mode == "Managed" and self.managed is None:
            raise ValueError("turn.managed is required when turn.mode is Managed")
        return self


DEFAULT_PROGRESS_DEADLINE = 600
"""Seconds a rollout may go without progress before it is reported ``Degraded``: the
default of a Deployment's ``progressDeadlineSeconds``, which it also sets."""


class BrokerClusterSpec(Model):
    image: str = Field(min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    coordinator: CoordinatorSpec = CoordinatorSpec()
    comm_servers: CommServersSpec = CommServersSpec()
    topology: TopologySpec = TopologySpec()
    auth: AuthSpec = AuthSpec()
    ice_servers: list[IceServerSpec] = Field(default_factory=list, max_length=8)
    metrics: MetricsSpec = MetricsSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    turn: TurnSpec = TurnSpec()
    progress_deadline_seconds: int = Field(DEFAULT_PROGRESS_DEADLINE, ge=1, le=86400)

    @model_validator(mode="after")
    def _node_ports_fit(self) -> BrokerClusterSpec:
        # Pod i takes nodePortBase + i, for every pod the autoscaler may make too.
        base = self.comm_servers.network.node_port_base
        if self.comm_servers.network.mode == "NodePort" and base is not None:
            most = self.max_server_replicas
            if base + most - 1 > NODE_PORT_MAX:
                raise ValueError(
                    f"commServers.network.nodePortBase ({base}) + {most} comm servers "
                    f"go beyond NodePort {NODE_PORT_MAX}"
                )
        return self

    @property
    def has_servers(self) -> bool:
        """True when the spec runs comm servers (the autoscaler never goes below one)."""
        return self.autoscaling.enabled or self.comm_servers.replicas >= 1

    @property
    def max_server_replicas(self) -> int:
        """The most comm servers this spec may run (the autoscaler's bound when it is on)."""
        if self.autoscaling.enabled:
            return self.autoscaling.max_replicas
        return self.comm_servers.replicas


class SpecError(Exception):
    """The resource cannot be acted on; ``messages`` say why, one per problem."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def _location(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def format_errors(error: ValidationError) -> list[str]:
    """pydantic's errors as ``spec.commServers.replicas: Input should be ...`` lines."""
    messages = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        messages.append(f"{_location(tuple(item['loc']))}: {message}")
    return messages


def parse_spec(name: str, spec: Mapping[str, Any] | None) -> BrokerClusterSpec:
    """The typed spec of the resource called ``name``, or :class:`SpecError`."""
    problems: list[str] = []
    if len(name) > MAX_NAME_LENGTH:
        problems.append(
            f"metadata.name: {name!r} is longer than {MAX_NAME_LENGTH} characters, "
            "too long for the names of the objects made from it"
        )
    try:
        parsed = BrokerClusterSpec.model_validate(dict(spec or {}))
    except ValidationError as exc:
        raise SpecError(problems + format_errors(exc)) from None
    if problems:
        raise SpecError(problems)
    return parsed
