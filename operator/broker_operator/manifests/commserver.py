"""Comm servers: StatefulSets (servers, and hubs in hub topology) behind one headless Service.

A StatefulSet gives every comm server a stable name (``<cluster>-commserver-0``)
that it registers with at the coordinator and that Prometheus and people see;
the headless Service gives each pod a DNS name. Servers are independent of
one another, so pods start and stop in parallel. Each links to every
coordinator replica, found through the coordinators' headless Service
(:func:`.coordinator.comm_server_env`), and is ready while one link is
registered.

Shutdown is a drain: on SIGTERM a comm server stops accepting sessions,
tells its clients to move and exits within ``drainSeconds``; the pod's grace
period is that plus a margin, so the kubelet never kills a draining server.

Outside ``PodIP`` mode every server binds one UDP port (``network.udpPort``)
and advertises an address browsers outside the cluster can reach
(:func:`advertising`): the node's (``HostNetwork``), the node's with the
pod's own NodePort (``NodePort``: pod ``i`` of the StatefulSet gets
``nodePortBase + i`` through a Service of its own), or its own load
balancer's (``LoadBalancer``). Hubs only talk to servers inside the cluster,
so they keep the pod network in the per-pod Service modes.
"""

from __future__ import annotations

from broker_operator.manifests import coordinator, pods
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import COMMSERVER, HUB, ClusterRef, Component
from broker_operator.spec import BrokerClusterSpec, NetworkMode

PREFIX = "WEBRTC_BROKER_COMMSERVER_"
PORT_NAME = "http"
UDP_PORT_NAME = "rtc"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
"""The StatefulSet controller's label with the pod's ordinal (Kubernetes 1.28 and later)."""
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
"""The StatefulSet controller's label with the pod's name: a per-pod Service's selector."""
POD_SERVICE_LABEL = "webrtc-broker.io/pod-service"
"""On per-pod Services: the reconciler lists them by it to delete those scaled away."""
ADVERTISE_ANNOTATION = "webrtc-broker.io/advertise-address"
"""On comm-server pods in LoadBalancer mode: ``HOST:PORT`` of the pod's load balancer,
written by the operator from its Service's ``status.loadBalancer.ingress``."""
PODINFO_VOLUME = "podinfo"
PODINFO_PATH = "/etc/webrtc-broker/pod"
ADVERTISE_FILE = f"{PODINFO_PATH}/advertise-address"

NODE_PORT_SCRIPT = (
    'index="${POD_INDEX:-${POD_NAME##*-}}"; '
    "port=$((NODE_PORT_BASE + index)); "
    'case "$HOST_IP" in *:*) host="[$HOST_IP]" ;; *) host="$HOST_IP" ;; esac; '
    'exec "$0" "$@" --advertise-address "$host:$port"'
)
"""NodePort mode: the advertised port is ``nodePortBase`` plus the pod's ordinal, which a
StatefulSet's one pod template cannot spell and the kubelet's ``$(VAR)`` expansion cannot
add, so POSIX shell arithmetic does it (the image's ``/bin/sh``), then ``exec``s the comm
server with the arguments unchanged. The ordinal comes from the pod-index label, or the
pod name's suffix on clusters older than 1.28 (where the label is missing)."""

LOAD_BALANCER_SCRIPT = (
    f"file={ADVERTISE_FILE}; "
    'until [ -s "$file" ]; do '
    'echo "waiting for $file: the operator writes it once the load balancer of this pod has an '
    'address" >&2; sleep 5; done; '
    'exec "$0" "$@" --advertise-address "$(cat "$file")"'
)
"""LoadBalancer mode: the address exists only once the load balancer has one; the operator
annotates the pod with it and the downward API shows the annotation as a file, which this
waits for before starting the comm server (a startup probe keeps the kubelet patient)."""
GRACE_MARGIN_SECONDS = 5
HOSTNAME_KEY = "kubernetes.io/hostname"
COMMSERVER_LABEL = "webrtc-broker.io/commserver"
HOST_NETWORK_LABEL = "webrtc-broker.io/host-network"
"""On pods in the node's network namespace: what their required anti-affinity selects."""


def grace_seconds(spec: BrokerClusterSpec) -> int:
    return spec.comm_servers.drain_seconds + GRACE_MARGIN_SECONDS


def batch_window(milliseconds: int) -> str:
    """The window in seconds, as the comm server reads it (``10`` -> ``"0.01"``)."""
    return f"{milliseconds / 1000:g}"


def network_mode(spec: BrokerClusterSpec, component: Component) -> NetworkMode:
    """The mode a component's pods run in: hubs keep the pod network with per-pod Services."""
    mode = spec.comm_servers.network.mode
    if component == HUB and spec.comm_servers.network.per_pod_services:
        return "PodIP"
    return mode


def _field_env(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def advertising(spec: BrokerClusterSpec, mode: NetworkMode) -> tuple[list[str], list[Manifest]]:
    """The wrapper (a command before the entrypoint, or none) and the env it reads."""
    network = spec.comm_servers.network
    if mode == "HostNetwork":
        return [], [_field_env("HOST_IP", "status.hostIP")]
    if mode == "NodePort":
        assert network.node_port_base is not None
        env = [
            _field_env("HOST_IP", "status.hostIP"),
            _field_env("POD_INDEX", f"metadata.labels['{POD_INDEX_LABEL}']"),
            pods.env_value("NODE_PORT_BASE", str(network.node_port_base)),
        ]
        return ["sh", "-c", NODE_PORT_SCRIPT], env
    if mode == "LoadBalancer":
        return ["sh", "-c", LOAD_BALANCER_SCRIPT], []
    return [], []


def network_args(spec: BrokerClusterSpec, mode: NetworkMode) -> list[str]:
    """``--udp-port`` outside PodIP; the node's address as is in HostNetwork mode (the
    kubelet expands ``$(HOST_IP)``; an IPv6 address without a port needs no brackets)."""
    if mode == "PodIP":
        return []
    args = ["--udp-port", str(spec.comm_servers.network.udp_port)]
    if mode == "HostNetwork":
        args += ["--advertise-address", "$(HOST_IP)"]
    return args


def container(ref: ClusterRef, spec: BrokerClusterSpec, role: str) -> Manifest:
    servers = spec.comm_servers
    mode = network_mode(spec, HUB if role == "hub" else COMMSERVER)
    wrapper, network_env = advertising(spec, mode)
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *network_env,
        *coordinator.comm_server_env(ref, PREFIX),
        pods.env_value(f"{PREFIX}ROLE", role),
        pods.env_value(f"{PREFIX}MAX_PEERS", str(servers.max_peers)),
        pods.env_value(f"{PREFIX}BATCH_WINDOW", batch_window(servers.batch_window_milliseconds)),
        pods.env_value(f"{PREFIX}BATCH_MODE", servers.batch_mode.lower()),
        pods.env_value(f"{PREFIX}DRAIN_SECONDS", str(servers.drain_seconds)),
        pods.env_value(f"{PREFIX}LOG_LEVEL", servers.log_level),
        *pods.server_secret_env(ref, spec, f"{PREFIX}SERVER_SECRET"),
        *pods.client_auth_env(spec, PREFIX),
        *pods.ice_servers_env(spec, f"{PREFIX}ICE_SERVERS"),
    ]
    ports = [{"name": PORT_NAME, "containerPort": servers.http_port, "protocol": "TCP"}]
    if mode != "PodIP":
        # On the host network this also makes the scheduler keep two servers off one node.
        ports.append(
            {"name": UDP_PORT_NAME, "containerPort": servers.network.udp_port, "protocol": "UDP"}
        )
    mounts = [pods.tmp_mount()]
    if mode == "LoadBalancer":
        mounts.append({"name": PODINFO_VOLUME, "mountPath": PODINFO_PATH, "readOnly": True})
    out: Manifest = {
        "name": COMMSERVER,
        **pods.image_fields(spec),
        "command": [*wrapper, *pods.ENTRYPOINT],
        "args": [
            "commserver",
            "--name",
            "$(POD_NAME)",
            "--http-host",
            "0.0.0.0",
            "--http-port",
            str(servers.http_port),
            *network_args(spec, mode),
        ],
        "env": env,
        "ports": ports,
        **pods.probes(PORT_NAME),
        "resources": servers.resources.as_manifest(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": mounts,
    }
    if mode == "LoadBalancer":
        # Waiting for the load balancer's address is not a hang: liveness starts after it.
        out["startupProbe"] = {
            "httpGet": {"path": "/healthz", "port": PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 720,
        }
    return out


def _affinity(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """Spread comm servers over nodes; on the host network two per node would share ports.

    The required term selects host-network pods only (:data:`HOST_NETWORK_LABEL`):
    anti-affinity holds both ways, so a term matching every comm server would keep
    the pod-network pods of a rollout away from HostNetwork mode off the nodes
    that still run host-network ones, and the rollout, which waits for them, would
    never end on a cluster without free nodes.
    """
    expressions = [
        {"key": "app.kubernetes.io/instance", "operator": "In", "values": [ref.name]},
        {"key": "app.kubernetes.io/component", "operator": "In", "values": [COMMSERVER, HUB]},
    ]
    if spec.comm_servers.network.mode == "HostNetwork":  # hubs too: they share the node
        expressions.append({"key": HOST_NETWORK_LABEL, "operator": "In", "values": ["true"]})
        term = {"labelSelector": {"matchExpressions": expressions}, "topologyKey": HOSTNAME_KEY}
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    term = {"labelSelector": {"matchExpressions": expressions}, "topologyKey": HOSTNAME_KEY}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def pod_spec(ref: ClusterRef, spec: BrokerClusterSpec, role: str) -> Manifest:
    mode = network_mode(spec, HUB if role == "hub" else COMMSERVER)
    volumes = [pods.tmp_volume()]
    if mode == "LoadBalancer":
        volumes.append(
            {
                "name": PODINFO_VOLUME,
                "downwardAPI": {
                    "items": [
                        {
                            "path": "advertise-address",
                            "fieldRef": {
                                "fieldPath": f"metadata.annotations['{ADVERTISE_ANNOTATION}']"
                            },
                        }
                    ]
                },
            }
        )
    out: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "securityContext": pods.pod_security_context(),
        "affinity": _affinity(ref, spec),
        "containers": [container(ref, spec, role)],
        "volumes": volumes,
    }
    if mode == "HostNetwork":
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
    if network_mode(spec, component) == "HostNetwork":
        template_meta["labels"][HOST_NETWORK_LABEL] = "true"
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


def pod_service_name(ref: ClusterRef, index: int) -> str:
    """The Service of comm-server pod ``index``: named like the pod itself."""
    return f"{ref.object_name(COMMSERVER)}-{index}"


def pod_services(ref: ClusterRef, spec: BrokerClusterSpec) -> list[Manifest]:
    """One NodePort or LoadBalancer Service per comm-server pod, for its UDP port.

    ``externalTrafficPolicy: Local`` sends a packet only to the node running the pod
    (the one whose address the pod advertises in NodePort mode) without source NAT:
    the server sees the client's own address, which its per-address limits count,
    and no second hop between nodes. Not-ready addresses are published: a draining
    server is not ready, yet its clients' media must still reach it until they move.
    """
    network = spec.comm_servers.network
    if not network.per_pod_services:
        return []
    services = []
    for index in range(server_replicas(spec)):
        name = pod_service_name(ref, index)
        metadata = ref.metadata(name, COMMSERVER)
        labels = metadata["labels"]
        assert isinstance(labels, dict)
        labels[POD_SERVICE_LABEL] = "true"
        if network.service_annotations:
            metadata["annotations"] = dict(network.service_annotations)
        port: Manifest = {
            "name": UDP_PORT_NAME,
            "protocol": "UDP",
            "port": network.udp_port,
            "targetPort": network.udp_port,
        }
        if network.mode == "NodePort":
            assert network.node_port_base is not None
            port["nodePort"] = network.node_port_base + index
        services.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "type": network.mode,
                    "externalTrafficPolicy": "Local",
                    "publishNotReadyAddresses": True,
                    "selector": {
                        "app.kubernetes.io/instance": ref.name,
                        POD_NAME_LABEL: name,
                    },
                    "ports": [port],
                },
            }
        )
    return services
