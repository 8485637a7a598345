"""TURN: the coordinator's settings for it, and coturn when the operator runs it (``Managed``).

The coordinator hands clients short-lived TURN credentials derived from a
shared secret (TURN REST, coturn's ``use-auth-secret``), so the secret
reaches the coordinator and coturn through ``secretKeyRef`` and never the
clients. A managed coturn relays only towards ``allowedPeerNetworks`` (the
cluster's pod network, where the comm servers are): everything else is a
denied peer, so a client holding credentials cannot use the relay to reach
other addresses of the cluster or beyond.

coturn reads the secret from a configuration file that a small shell script
writes into the pod's in-memory ``/tmp`` from the environment, so the secret
is not on coturn's command line (visible to every process on the node).
"""

from __future__ import annotations

import ipaddress
import json

from broker_operator.manifests import pods
from broker_operator.manifests.pods import Manifest
from broker_operator.naming import TURN, ClusterRef
from broker_operator.spec import BrokerClusterSpec, ManagedTurnSpec

TURN_PORT = 3478
TLS_PORT = 5349
TLS_VOLUME = "tls"
TLS_PATH = "/etc/coturn/tls"
SECRET_VARIABLE = "TURN_SECRET"
CONFIG_FILE = "/tmp/turnserver.conf"

SCRIPT = (
    "umask 077; "
    f'printf "static-auth-secret=%s\\n" "${SECRET_VARIABLE}" > {CONFIG_FILE}; '
    f'exec "$0" -c {CONFIG_FILE} "$@"'
)
"""Writes the secret where coturn reads it, then ``exec``s ``turnserver`` with the flags."""

EVERY_IPV4 = "0.0.0.0-255.255.255.255"
EVERY_IPV6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def turn_urls(ref: ClusterRef, spec: BrokerClusterSpec) -> list[str]:
    """Where clients reach TURN: the URLs given, else the managed Service's cluster name."""
    turn = spec.turn
    if turn.urls or turn.mode != "Managed":
        return list(turn.urls)
    host = f"{ref.turn_service}.{ref.namespace}.svc"
    return [f"turn:{host}:{TURN_PORT}?transport=udp", f"turn:{host}:{TURN_PORT}?transport=tcp"]


def coordinator_env(ref: ClusterRef, spec: BrokerClusterSpec, prefix: str) -> list[Manifest]:
    """``<prefix>TURN_URLS`` (JSON), ``TURN_SECRET`` from its Secret and ``TURN_TTL``."""
    turn = spec.turn
    if turn.mode == "None" or turn.secret_ref is None:
        return []
    return [
        pods.env_value(f"{prefix}TURN_URLS", json.dumps(turn_urls(ref, spec))),
        pods.env_secret(f"{prefix}TURN_SECRET", turn.secret_ref.name, turn.secret_ref.key),
        pods.env_value(f"{prefix}TURN_TTL", str(turn.ttl_seconds)),
    ]


def peer_range(network: str) -> str:
    """A CIDR as coturn's ``FIRST-LAST`` range (older coturn reads no CIDR)."""
    parsed = ipaddress.ip_network(network)
    return f"{parsed.network_address}-{parsed.broadcast_address}"


def turnserver_args(ref: ClusterRef, managed: ManagedTurnSpec) -> list[str]:
    args = [
        "--use-auth-secret",
        f"--realm={ref.name}.{ref.namespace}",
        f"--listening-port={TURN_PORT}",
        f"--min-port={managed.relay_port_min}",
        f"--max-port={managed.relay_port_max}",
        "--fingerprint",
        "--no-cli",
        "--no-tcp-relay",
        "--no-multicast-peers",
        "--log-file=stdout",
        "--pidfile=/tmp/turnserver.pid",
        "--userdb=/tmp/turndb",  # unused with a static secret; its default is read-only here
        f"--denied-peer-ip={EVERY_IPV4}",
        f"--denied-peer-ip={EVERY_IPV6}",
        *(f"--allowed-peer-ip={peer_range(n)}" for n in managed.allowed_peer_networks),
    ]
    if managed.tls_secret_ref is not None:
        args += [
            f"--tls-listening-port={TLS_PORT}",
            f"--cert={TLS_PATH}/tls.crt",
            f"--pkey={TLS_PATH}/tls.key",
        ]
    else:
        args += ["--no-tls", "--no-dtls"]
    return args


def _ports(managed: ManagedTurnSpec) -> list[tuple[str, int, str]]:
    ports = [("turn-udp", TURN_PORT, "UDP"), ("turn-tcp", TURN_PORT, "TCP")]
    if managed.tls_secret_ref is not None:
        ports.append(("turns", TLS_PORT, "TCP"))
    return ports


def deployment(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    managed = spec.turn.managed
    secret = spec.turn.secret_ref
    assert managed is not None and secret is not None
    container: Manifest = {
        "name": TURN,
        "image": managed.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["sh", "-c", SCRIPT, "turnserver"],
        "args": turnserver_args(ref, managed),
        "env": [pods.env_secret(SECRET_VARIABLE, secret.name, secret.key)],
        "ports": [
            {"name": name, "containerPort": port, "protocol": protocol}
            for name, port, protocol in _ports(managed)
        ],
        "livenessProbe": {"tcpSocket": {"port": TURN_PORT}, "periodSeconds": 10},
        "readinessProbe": {"tcpSocket": {"port": TURN_PORT}, "periodSeconds": 5},
        "resources": managed.resources.as_manifest(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.tmp_mount()],
    }
    volumes = [pods.tmp_volume()]
    if managed.tls_secret_ref is not None:
        container["volumeMounts"].append(
            {"name": TLS_VOLUME, "mountPath": TLS_PATH, "readOnly": True}
        )
        volumes.append(
            {
                "name": TLS_VOLUME,
                "secret": {"secretName": managed.tls_secret_ref.name, "defaultMode": 0o440},
            }
        )
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pods.pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = pods.pull_secrets(spec)
    pod_spec.update(managed.pod_fields())
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ref.metadata(ref.turn_service, TURN),
        "spec": {
            "replicas": managed.replicas,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": ref.selector_labels(TURN)},
            "template": {"metadata": {"labels": ref.labels(TURN)}, "spec": pod_spec},
        },
    }


def service(ref: ClusterRef, spec: BrokerClusterSpec) -> Manifest:
    """coturn's listening ports; the relay ports stay inside: only comm servers use them."""
    managed = spec.turn.managed
    assert managed is not None
    metadata = ref.metadata(ref.turn_service, TURN)
    if managed.service_annotations:
        metadata["annotations"] = dict(managed.service_annotations)
    service_spec: Manifest = {
        "type": managed.service_type,
        "selector": ref.selector_labels(TURN),
        "ports": [
            {"name": name, "port": port, "targetPort": name, "protocol": protocol}
            for name, port, protocol in _ports(managed)
        ],
    }
    if managed.service_type != "ClusterIP":
        # A TURN allocation lives on one coturn: a client's packets must stay with it.
        service_spec["sessionAffinity"] = "ClientIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service_spec}
