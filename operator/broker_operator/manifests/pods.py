"""Pieces shared by every pod the operator makes.

Every container runs the one image with its own arguments, as a non-root
user, with a read-only root filesystem and no capabilities; Python still
gets a writable ``/tmp`` (an in-memory ``emptyDir``). Probes hit the
services' real ``/healthz`` (alive: the event loop answers) and ``/readyz``
(ready: a coordinator that accepts peers, a comm server registered with the
coordinator and not draining).
"""

from __future__ import annotations

import json
from typing import Any

from broker_operator.manifests.secret import server_secret_source
from broker_operator.naming import ClusterRef
from broker_operator.spec import BrokerClusterSpec, IceServerSpec

Manifest = dict[str, Any]

RUN_AS = 10001
"""The image's unprivileged user and group (see the Dockerfile)."""

ENTRYPOINT = ["webrtc-broker"]
TMP_VOLUME = "tmp"


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def tmp_volume() -> Manifest:
    return {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}


def tmp_mount() -> Manifest:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def probes(port: str) -> Manifest:
    """Liveness and readiness on the named container port."""
    return {
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
    }


def env_value(name: str, value: str) -> Manifest:
    return {"name": name, "value": value}


def env_secret(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def server_secret_env(ref: ClusterRef, spec: BrokerClusterSpec, variable: str) -> list[Manifest]:
    """The server secret from its Secret: the user's, or the one the operator generates.

    Always set: without it anyone who reaches the coordinator could register
    as a comm server, and the services refuse client authentication without it.
    """
    name, key = server_secret_source(ref, spec)
    return [env_secret(variable, name, key)]


def client_auth_env(spec: BrokerClusterSpec, prefix: str) -> list[Manifest]:
    """``<prefix>CLIENT_AUTH=jwt`` and the token key from its Secret, for ``JWT`` only.

    ``None`` sets nothing: the services' default is to accept any client.
    """
    clients = spec.auth.clients
    ref = clients.secret_ref
    if clients.mode != "JWT" or ref is None:
        return []
    return [
        env_value(f"{prefix}CLIENT_AUTH", "jwt"),
        env_secret(f"{prefix}CLIENT_JWT_SECRET", ref.name, ref.key),
    ]


def _ice_entry(index: int, server: IceServerSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"urls": list(server.urls)}
    if server.credentials_secret_ref is not None:
        # Expanded by the kubelet from the variables defined before this one:
        # the credentials never pass through the operator or the pod spec.
        entry["username"] = f"$(ICE_SERVER_{index}_USERNAME)"
        entry["credential"] = f"$(ICE_SERVER_{index}_CREDENTIAL)"
    return entry


def ice_servers_env(spec: BrokerClusterSpec, variable: str) -> list[Manifest]:
    """The ICE servers as the JSON list the services read, credentials from Secrets.

    Kubernetes expands ``$(NAME)`` in an env value from variables defined
    earlier in the same container, so each credential is its own
    ``secretKeyRef`` variable and the JSON refers to it. Credentials must not
    contain ``"`` or ``\\`` (they would break the JSON); TURN credentials are
    usually tokens, so this is documented rather than worked around.
    """
    if not spec.ice_servers:
        return []
    env: list[Manifest] = []
    for index, server in enumerate(spec.ice_servers):
        ref = server.credentials_secret_ref
        if ref is not None:
            env.append(env_secret(f"ICE_SERVER_{index}_USERNAME", ref.name, ref.username_key))
            env.append(env_secret(f"ICE_SERVER_{index}_CREDENTIAL", ref.name, ref.credential_key))
    entries = [_ice_entry(i, server) for i, server in enumerate(spec.ice_servers)]
    env.append(env_value(variable, json.dumps(entries, separators=(",", ":"))))
    return env


def metrics_annotations(spec: BrokerClusterSpec, port: int) -> dict[str, str]:
    """The conventional scrape annotations, for Prometheus set-ups without the operator."""
    if not spec.metrics.enabled:
        return {}
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def image_fields(spec: BrokerClusterSpec) -> Manifest:
    return {"image": spec.image, "imagePullPolicy": spec.image_pull_policy}


def pull_secrets(spec: BrokerClusterSpec) -> list[Manifest]:
    return [{"name": ref.name} for ref in spec.image_pull_secrets]
