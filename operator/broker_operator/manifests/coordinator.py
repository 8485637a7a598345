"""The coordinator: one Deployment with a single replica, and its Service.

The coordinator keeps its registry of servers and clients in memory, so it
runs as exactly one replica and is replaced with the ``Recreate`` strategy:
two coordinators side by side would split the cluster in two. Comm servers
reconnect with backoff while it restarts (docs/reliability.md).
"""

from __future__ import annotations

from broker_operator.manifests import pods, turn
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import COORDINATOR, COORDINATOR_PORT, ClusterRef
from broker_operator.spec import BrokerClusterSpec

PREFIX = "WEBRTC_BROKER_COORDINATOR_"
PORT_NAME = "http"
GRACE_SECONDS = 15


def container(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    env = [
        pods.env_value(f"{PREFIX}SELECTOR", spec.coordinator.selector),
        pods.env_value(f"{PREFIX}LOG_LEVEL", spec.coordinator.log_level),
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
        "resources": spec.coordinator.resources.as_manifest(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.tmp_mount()],
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
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ref.metadata(name, COORDINATOR),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": ref.selector_labels(COORDINATOR)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def service(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
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
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": COORDINATOR_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
