"""Comm servers: StatefulSets (servers, and hubs in hub topology) behind one headless Service.

A StatefulSet gives every comm server a stable name (``<cluster>-commserver-0``)
that it registers with at the coordinator and that Prometheus and people see;
the headless Service gives each pod a DNS name. Servers are independent of
one another, so pods start and stop in parallel.

Shutdown is a drain: on SIGTERM a comm server stops accepting sessions,
tells its clients to move and exits within ``drainSeconds``; the pod's grace
period is that plus a margin, so the kubelet never kills a draining server.
"""

from __future__ import annotations

from broker_operator.manifests import pods
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import COMMSERVER, HUB, ClusterRef, Component
from broker_operator.spec import BrokerClusterSpec

PREFIX = "WEBRTC_BROKER_COMMSERVER_"
PORT_NAME = "http"
GRACE_MARGIN_SECONDS = 5
HOSTNAME_KEY = "kubernetes.io/hostname"
COMMSERVER_LABEL = "webrtc-broker.io/commserver"


def grace_seconds(spec: BrokerClusterSpec) -> int:
    return spec.comm_servers.drain_seconds + GRACE_MARGIN_SECONDS


def batch_window(milliseconds: int) -> str:
    """The window in seconds, as the comm server reads it (``10`` -> ``"0.01"``)."""
    return f"{milliseconds / 1000:g}"


def container(ref: ClusterRef, spec: BrokerClusterSpec, role: str) -> Manifest:
    servers = spec.comm_servers
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        pods.env_value(f"{PREFIX}ROLE", role),
        pods.env_value(f"{PREFIX}MAX_PEERS", str(servers.max_peers)),
        pods.env_value(f"{PREFIX}BATCH_WINDOW", batch_window(servers.batch_window_milliseconds)),
        pods.env_value(f"{PREFIX}DRAIN_SECONDS", str(servers.drain_seconds)),
        pods.env_value(f"{PREFIX}LOG_LEVEL", servers.log_level),
        *pods.server_secret_env(ref, spec, f"{PREFIX}SERVER_SECRET"),
        *pods.client_auth_env(spec, PREFIX),
        *pods.ice_servers_env(spec, f"{PREFIX}ICE_SERVERS"),
    ]
    return {
        "name": COMMSERVER,
        **pods.image_fields(spec),
        "command": list(pods.ENTRYPOINT),
        "args": [
            "commserver",
            "--coordinator-url",
            ref.coordinator_url(),
            "--name",
            "$(POD_NAME)",
            "--http-host",
            "0.0.0.0",
            "--http-port",
            str(servers.http_port),
        ],
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": servers.http_port, "protocol": "TCP"}],
        **pods.probes(PORT_NAME),
        "resources": servers.resources.as_manifest(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.tmp_mount()],
    }


def _affinity(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """Spread comm servers over nodes; on the host network two per node would share ports."""
    selector = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/instance", "operator": "In", "values": [ref.name]},
            {"key": "app.kubernetes.io/component", "operator": "In", "values": [COMMSERVER, HUB]},
        ]
    }
    term = {"labelSelector": selector, "topologyKey": HOSTNAME_KEY}
    if spec.comm_servers.network.mode == "HostNetwork":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def pod_spec(ref: ClusterRef, spec: BrokerClusterSpec, role: str) -> Manifest:
    out: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "securityContext": pods.pod_security_context(),
        "affinity": _affinity(ref, spec),
        "containers": [container(ref, spec, role)],
        "volumes": [pods.tmp_volume()],
    }
    if spec.comm_servers.network.mode == "HostNetwork":
        # The node's addresses become the ICE host candidates browsers can reach;
        # cluster DNS must still resolve the coordinator's Service.
        out["hostNetwork"] = True
        out["dnsPolicy"] = "ClusterFirstWithHostNet"
    if spec.image_pull_secrets:
        out["imagePullSecrets"] = pods.pull_secrets(spec)
    # Hubs run where the servers run: they are comm servers in another role.
    out.update(spec.comm_servers.pod_fields())
    return out


def statefulset(ref: ClusterRef, spec: BrokerClusterSpec, component: Component) -> Manifest:
    """The servers' StatefulSet (``component`` = commserver) or the hubs' (``hub``)."""
    role = "hub" if component == HUB else "server"
    replicas = spec.topology.hubs if component == HUB else server_replicas(spec)
    template_meta: Manifest = {"labels": pod_labels(ref, component)}
    annotations = pods.metrics_annotations(spec, spec.comm_servers.http_port)
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": ref.metadata(ref.object_name(component), component),
        "spec": {
            "replicas": replicas,
            "serviceName": ref.headless_service,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": ref.selector_labels(component)},
            "template": {"metadata": template_meta, "spec": pod_spec(ref, spec, role)},
        },
    }


def server_replicas(spec: BrokerClusterSpec) -> int:
    """The servers' replica count, kept within the autoscaler's bounds when it is on."""
    replicas = spec.comm_servers.replicas
    scaling = spec.autoscaling
    if scaling.enabled:
        return min(max(replicas, scaling.min_replicas), scaling.max_replicas)
    return replicas


def pod_labels(ref: ClusterRef, component: Component) -> dict[str, str]:
    """The component's labels plus one that servers and hubs share, for the headless Service."""
    return {**ref.labels(component), COMMSERVER_LABEL: "true"}


def headless_service(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """DNS names for every comm-server pod, ready or not (Prometheus, debugging)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ref.metadata(ref.headless_service, COMMSERVER),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"app.kubernetes.io/instance": ref.name, COMMSERVER_LABEL: "true"},
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": spec.comm_servers.http_port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
