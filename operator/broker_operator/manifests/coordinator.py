"""The coordinator: a Deployment of ``spec.coordinator.replicas``, its two Services, a budget.

Replicas share no store (docs/protocol.md, "Coordinator replicas"): each
knows only the clients and comm servers connected to it, so every comm server
links to every replica. It finds them through a headless Service
(:func:`peers_service`) that publishes every replica's address, ready or
not; clients use the ordinary Service (:func:`service`), which routes only to
ready replicas. A client's WebSocket stays on the replica it reached, and a
replica that goes takes only its own WebSockets: established sessions do not
pass through any coordinator.

Rollouts add one new replica before removing an old one (``maxSurge: 1``,
``maxUnavailable: 0``). With comm servers in the spec, a replica is ready only
once a comm server has linked to it (``READY_NEEDS_SERVER``), so a rollout
waits until the servers have found the new replica before it takes an old one
away, and clients are never sent to a replica with no server to offer. A
budget (:func:`disruption_budget`) lets a drain evict one replica at a time;
the scheduler is asked to keep replicas on different nodes.
"""

from __future__ import annotations

from broker_operator.manifests import extras, pods, turn
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import COORDINATOR, COORDINATOR_PORT, ClusterRef
from broker_operator.spec import BrokerClusterSpec

PREFIX = "WEBRTC_BROKER_COORDINATOR_"
PORT_NAME = "http"
LEAVE_SECONDS = 3
"""Seconds a stopping replica keeps serving before it is told to stop (a preStop sleep).

A pod being deleted is taken out of its Service's endpoints at once, but
every node's proxy learns of it a moment later; until then new WebSockets
still arrive. Were SIGTERM sent at once, the replica would refuse them
(HTTP 503) and a client with one URL, the Service's, would see the refusal.
"""
GRACE_SECONDS = 15
"""Room for :data:`LEAVE_SECONDS` and the coordinator's own drain (10 s by default)."""
HOSTNAME_KEY = "kubernetes.io/hostname"

ALIAS_SPACES = 1000
"""Client aliases of replica ``r`` are ``r`` modulo this (the most spaces there are);
see :func:`alias_env` for why the replica id is left to chance."""


def alias_env() -> list[Manifest]:
    """``ALIAS_SPACES=1000`` and no ``REPLICA_ID``: each replica draws its space at random.

    A Deployment's pods are interchangeable and have no ordinal to derive a
    distinct id from (a StatefulSet's have, but cannot surge a new replica
    before removing an old one). Distinct ids are not needed for safety, only
    distinct starts: replica ``r`` hands out its start time in milliseconds
    times 1000, plus ``r``, plus steps of 1000, so two replicas that drew the
    same id (one chance in 1000 per pair) have counters that began 1000 apart
    per millisecond between their starts, in steps of 1000. The earlier one
    reaches the later one's first alias only after handing out more aliases
    than milliseconds passed between the two starts, and a clash then matters
    only if the client that got the alias from the later replica is still
    connected. Starts always differ: the scheduler and kubelet start pods one
    by one, milliseconds to seconds apart on a new Deployment, and a rollout
    (``maxSurge: 1``) starts one replica only after the previous one is ready.
    """
    return [pods.env_value(f"{PREFIX}ALIAS_SPACES", str(ALIAS_SPACES))]


def readiness_env(spec: BrokerClusterSpec) -> list[Manifest]:
    """``READY_NEEDS_SERVER=true`` when the spec runs comm servers.

    A replica then turns ready only once a comm server has linked to it: the
    Service sends clients only to replicas with a server to offer, and a
    rollout waits for the servers to find the new replica. A cluster without
    comm servers (``replicas: 0``, no autoscaling) leaves it off, or no
    replica would ever be ready.
    """
    if not spec.has_servers:
        return []
    return [pods.env_value(f"{PREFIX}READY_NEEDS_SERVER", "true")]


def container(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    env = [
        pods.env_value(f"{PREFIX}SELECTOR", spec.coordinator.selector),
        pods.env_value(f"{PREFIX}LOG_LEVEL", spec.coordinator.log_level),
        *alias_env(),
        *readiness_env(spec),
        *pods.server_secret_env(ref, spec, f"{PREFIX}SERVER_SECRET"),
        *pods.client_auth_env(spec, PREFIX),
        *pods.ice_servers_env(spec, f"{PREFIX}ICE_SERVERS"),
        *turn.coordinator_env(ref, spec, PREFIX),
    ]
    return {
        "name": COORDINATOR,
        **pods.image_fields(spec),
        "command": list(pods.ENTRYPOINT),
        "args": ["coordinator", "--host", "0.0.0.0", "--port", str(COORDINATOR_PORT)],
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": COORDINATOR_PORT, "protocol": "TCP"}],
        **pods.probes(PORT_NAME),
        "lifecycle": {"preStop": {"sleep": {"seconds": LEAVE_SECONDS}}},
        "resources": spec.coordinator.resources.as_manifest(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.tmp_mount()],
    }


def spread(ref: ClusterRef) -> Manifest:
    """Prefer a node per replica: a node lost then takes one replica, not all.

    Preferred, not required: on a cluster with fewer nodes than replicas (or
    during a rollout's surge) the replicas still run, side by side.
    """
    term = {
        "labelSelector": {"matchLabels": ref.selector_labels(COORDINATOR)},
        "topologyKey": HOSTNAME_KEY,
    }
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def deployment(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    name = ref.object_name(COORDINATOR)
    template_meta: Manifest = {"labels": ref.labels(COORDINATOR)}
    annotations = pods.metrics_annotations(spec, COORDINATOR_PORT)
    if annotations:
        template_meta["annotations"] = annotations
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": pods.pod_security_context(),
        "containers": [container(ref, spec)],
        "volumes": [pods.tmp_volume()],
    }
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = pods.pull_secrets(spec)
    pod_spec.update(spec.coordinator.pod_fields())
    # The placement fields carry no affinity today; one the user gives would win.
    pod_spec.setdefault("affinity", spread(ref))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ref.metadata(name, COORDINATOR),
        "spec": {
            "replicas": spec.coordinator.replicas,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": ref.selector_labels(COORDINATOR)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def _port() -> Manifest:
    return {"name": PORT_NAME, "port": COORDINATOR_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}


def service(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """What clients dial: one address for every replica, routed to ready ones only."""
    metadata = ref.metadata(ref.coordinator_service, COORDINATOR)
    if spec.coordinator.service_annotations:
        metadata["annotations"] = dict(spec.coordinator.service_annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": spec.coordinator.service_type,
            "selector": ref.selector_labels(COORDINATOR),
            "ports": [_port()],
        },
    }


def peers_service(ref: ClusterRef) -> Manifest:
    """What comm servers resolve: an A record per replica, ready or not.

    Not-ready addresses must be there: a replica becomes ready only once a
    comm server has linked to it (:func:`readiness_env`), which it cannot do
    before it finds the replica.
    """
    metadata = ref.metadata(ref.coordinator_peers_service, COORDINATOR)
    # Left out by the ServiceMonitor: the client Service reaches the same pods.
    labels = metadata["labels"]
    assert isinstance(labels, dict)
    labels[extras.DISCOVERY_LABEL] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": ref.selector_labels(COORDINATOR),
            "ports": [_port()],
        },
    }


def disruption_budget(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest | None:
    """One replica at a time may be evicted; none for a single replica.

    With one replica any budget either blocks node drains for ever or allows
    the eviction anyway, so there is none, and a drain of its node is a
    coordinator outage until the replica starts elsewhere.
    """
    if spec.coordinator.replicas < 2:
        return None
    return extras.disruption_budget(ref, COORDINATOR)


def comm_server_env(ref: ClusterRef, prefix: str) -> list[Manifest]:
    """How a comm server finds every replica: the peers Service's A records."""
    return [
        pods.env_value(f"{prefix}COORDINATOR_DNS", ref.coordinator_peers_host()),
        pods.env_value(f"{prefix}COORDINATOR_DNS_PORT", str(COORDINATOR_PORT)),
    ]
