"""Every object the operator makes, and everything in deploy/, against the official schemas.

The schemas are ``kubernetes-validate``'s strict ones (unknown fields are
errors) for the newest Kubernetes version it ships. Spec variants cover
every branch of :mod:`broker_operator.manifests`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from broker_operator.manifests import desired_objects, key_of
from broker_operator.naming import ClusterRef
from broker_operator.spec import parse_spec
from tests.operator import schemas
from tests.operator.support import DEPLOY, IMAGE, crd_schema, example, load_yaml
from tests.support import ROOT
from webrtc_broker.config import CommServerConfig, CoordinatorConfig

REF = ClusterRef("demo", "team-a", "0b5e7a3c-1111-2222-3333-444455556666")

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "registry"}],
        "coordinator": {
            "selector": "round-robin",
            "serviceType": "LoadBalancer",
            "serviceAnnotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
            "logLevel": "debug",
            "nodeSelector": {"example.org/pool": "control"},
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
        },
        "commServers": {
            "replicas": 5,
            "maxPeers": 2000,
            "batchWindowMilliseconds": 0,
            "batchMode": "Window",
            "drainSeconds": 30,
            "httpPort": 9200,
            "network": {"mode": "HostNetwork"},
            "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
            "nodeSelector": {"example.org/pool": "brokers", "kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "brokers"},
                {
                    "key": "example.org/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                },
            ],
        },
        "topology": {"mode": "Hub", "hubs": 2},
        "auth": {
            "mode": "SharedSecret",
            "secretRef": {"name": "broker", "key": "token"},
            "clients": {"mode": "JWT", "secretRef": {"name": "client-tokens", "key": "jwt"}},
        },
        "iceServers": [
            {"urls": ["stun:stun.example.org:3478"]},
            {
                "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
                "credentialsSecretRef": {"name": "turn"},
            },
        ],
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
    },
    "no-metrics": {"metrics": {"enabled": False}, "commServers": {"replicas": 0}},
    "node-port": {
        "commServers": {
            "replicas": 3,
            "network": {"mode": "NodePort", "nodePortBase": 31000, "udpPort": 7600},
        },
        "topology": {"mode": "Hub", "hubs": 1},
        "turn": {
            "mode": "External",
            "urls": ["turn:turn.example.org:3478?transport=udp"],
            "secretRef": {"name": "turn-secret"},
        },
    },
    "load-balancer": {
        "commServers": {
            "replicas": 2,
            "network": {
                "mode": "LoadBalancer",
                "serviceAnnotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            },
        },
        "turn": {
            "mode": "Managed",
            "secretRef": {"name": "turn-secret", "key": "shared"},
            "managed": {
                "serviceType": "NodePort",
                "allowedPeerNetworks": ["10.244.0.0/16", "fd00:10:244::/56"],
                "tlsSecretRef": {"name": "turn-tls"},
                "nodeSelector": {"example.org/pool": "edge"},
            },
        },
    },
}


def objects(variant: str) -> list[dict[str, Any]]:
    return desired_objects(REF, parse_spec(REF.name, {"image": IMAGE, **VARIANTS[variant]}))


def by_kind(items: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for item in items:
        if item["kind"] == kind and (name is None or item["metadata"]["name"] == name):
            return item
    raise KeyError((kind, name))


def test_validates_against_kubernetes_version() -> None:
    major, minor, _ = (int(p) for p in schemas.kubernetes_version().split("."))
    assert (major, minor) >= (1, 33)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_is_valid_and_owned(variant: str) -> None:
    items = objects(variant)
    assert len({key_of(item) for item in items}) == len(items)
    for item in items:
        if item["kind"] == "ServiceMonitor":
            assert service_monitor_problems(item) == []
        else:
            assert schemas.validate_official(item) == [], item["kind"]
        meta = item["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [REF.owner_reference()]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "webrtc-broker-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
        assert len(meta["name"]) <= 63


def service_monitor_problems(item: dict[str, Any]) -> list[str]:
    """No official schema ships for the Prometheus operator's CRD: check the fields it needs."""
    problems = []
    if item["apiVersion"] != "monitoring.coreos.com/v1":
        problems.append("apiVersion")
    if not item["spec"]["selector"].get("matchLabels"):
        problems.append("selector")
    for endpoint in item["spec"]["endpoints"]:
        if set(endpoint) - {"port", "path", "interval"} or not re.match(
            r"^\d+(ms|s|m|h)$", endpoint["interval"]
        ):
            problems.append(f"endpoint {endpoint}")
    return problems


def test_pods_are_hardened_and_probed() -> None:
    for item in objects("everything"):
        if item["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = item["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["command"] == ["webrtc-broker"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        # Selectors are immutable: only the three fixed labels, which the pods carry.
        selector = item["spec"]["selector"]["matchLabels"]
        assert set(selector) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        }
        assert selector.items() <= item["spec"]["template"]["metadata"]["labels"].items()


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_comm_servers_follow_the_spec() -> None:
    items = objects("everything")
    servers = by_kind(items, "StatefulSet", "demo-commserver")
    hubs = by_kind(items, "StatefulSet", "demo-hub")
    assert servers["spec"]["replicas"] == 4, "clamped to autoscaling.maxReplicas"
    assert hubs["spec"]["replicas"] == 2
    pod = servers["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 35, "drainSeconds + 5"
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "commserver",
        "--name",
        "$(POD_NAME)",
        "--http-host",
        "0.0.0.0",
        "--http-port",
        "9200",
        "--udp-port",
        "7591",
        "--advertise-address",
        "$(HOST_IP)",
    ]
    env = env_of(servers)
    assert env["WEBRTC_BROKER_COMMSERVER_ROLE"] == "server"
    # Every coordinator replica, found through the peers Service (cluster DNS works on
    # the host network too: dnsPolicy ClusterFirstWithHostNet).
    assert env["WEBRTC_BROKER_COMMSERVER_COORDINATOR_DNS"] == "demo-coordinator-peers.team-a.svc"
    assert env["WEBRTC_BROKER_COMMSERVER_COORDINATOR_DNS_PORT"] == "9090"
    assert env_of(hubs)["WEBRTC_BROKER_COMMSERVER_COORDINATOR_DNS"] == (
        "demo-coordinator-peers.team-a.svc"
    )
    assert env_of(hubs)["WEBRTC_BROKER_COMMSERVER_ROLE"] == "hub"
    assert env["WEBRTC_BROKER_COMMSERVER_MAX_PEERS"] == "2000"
    assert env["WEBRTC_BROKER_COMMSERVER_BATCH_WINDOW"] == "0"
    assert env["WEBRTC_BROKER_COMMSERVER_BATCH_MODE"] == "window"
    assert env["WEBRTC_BROKER_COMMSERVER_DRAIN_SECONDS"] == "30"
    assert env["WEBRTC_BROKER_COMMSERVER_SERVER_SECRET"] == {
        "secretKeyRef": {"name": "broker", "key": "token"}
    }
    assert env["ICE_SERVER_1_USERNAME"] == {"secretKeyRef": {"name": "turn", "key": "username"}}
    assert "$(ICE_SERVER_1_CREDENTIAL)" in env["WEBRTC_BROKER_COMMSERVER_ICE_SERVERS"]
    headless = by_kind(items, "Service", "demo-commserver")
    assert headless["spec"]["clusterIP"] == "None"
    labels = servers["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    assert (
        headless["spec"]["selector"].items()
        <= hubs["spec"]["template"]["metadata"]["labels"].items()
    )
    monitor = by_kind(items, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


NODE_PORTS_TAKEN = [
    (9100, 9999, "Prometheus exporters (9100: the node exporter)"),
    (10248, 10260, "kubelet, kube-proxy, controller manager, scheduler"),
    (2379, 2380, "etcd"),
    (6443, 6443, "the API server"),
    (30000, 32767, "NodePort Services"),
    (32768, 60999, "Linux's ephemeral ports"),
]


def pod_specs(variant: str) -> dict[str, dict[str, Any]]:
    """The pod template of every workload, by workload name."""
    return {
        item["metadata"]["name"]: item["spec"]["template"]["spec"]
        for item in objects(variant)
        if item["kind"] in ("Deployment", "StatefulSet")
    }


def test_placement_reaches_every_pod_template() -> None:
    pods = pod_specs("everything")
    assert set(pods) == {"demo-coordinator", "demo-commserver", "demo-hub"}
    coordinator = pods["demo-coordinator"]
    assert coordinator["nodeSelector"] == {"example.org/pool": "control"}
    assert coordinator["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"}]
    servers = VARIANTS["everything"]["commServers"]
    for name in ("demo-commserver", "demo-hub"):
        # Hubs are comm servers in another role: they go where the servers go.
        assert pods[name]["nodeSelector"] == servers["nodeSelector"]
        assert pods[name]["tolerations"] == servers["tolerations"]
        # The scheduler's own spreading is kept next to the user's placement.
        assert "podAntiAffinity" in pods[name]["affinity"]


def test_empty_placement_leaves_the_pod_specs_as_they_were() -> None:
    """Clusters made before placement existed (or that set none) get no new pod fields,
    so the operator does not patch, and roll, their workloads."""
    explicit_empty = desired_objects(
        REF,
        parse_spec(
            REF.name,
            {
                "image": IMAGE,
                "coordinator": {"nodeSelector": {}, "tolerations": []},
                "commServers": {"nodeSelector": {}, "tolerations": []},
                "topology": {"mode": "Hub"},
            },
        ),
    )
    hub_defaults = desired_objects(
        REF, parse_spec(REF.name, {"image": IMAGE, "topology": {"mode": "Hub"}})
    )
    assert explicit_empty == hub_defaults
    for item in hub_defaults:
        if item["kind"] in ("Deployment", "StatefulSet"):
            pod = item["spec"]["template"]["spec"]
            assert "nodeSelector" not in pod
            assert "tolerations" not in pod


def test_placement_of_one_component_stays_off_the_other() -> None:
    spec = {"image": IMAGE, "commServers": {"tolerations": [{"key": "dedicated"}]}}
    pods = {
        item["metadata"]["name"]: item["spec"]["template"]["spec"]
        for item in desired_objects(REF, parse_spec(REF.name, spec))
        if item["kind"] in ("Deployment", "StatefulSet")
    }
    assert pods["demo-commserver"]["tolerations"] == [{"key": "dedicated", "operator": "Equal"}]
    assert "tolerations" not in pods["demo-coordinator"]
    assert "nodeSelector" not in pods["demo-commserver"]


def test_host_network_default_http_port_is_free_of_node_agents() -> None:
    """In HostNetwork mode the comm servers' HTTP and UDP ports are ports of the node itself."""
    spec = {"image": IMAGE, "commServers": {"network": {"mode": "HostNetwork"}}}
    items = desired_objects(REF, parse_spec(REF.name, spec))
    servers = by_kind(items, "StatefulSet", "demo-commserver")
    pod = servers["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    http, udp = container["ports"]
    port = http["containerPort"]
    assert container["args"][-6:-4] == ["--http-port", str(port)]
    assert container["args"][-4:-2] == ["--udp-port", str(udp["containerPort"])]
    assert udp["protocol"] == "UDP"
    for low, high, holder in NODE_PORTS_TAKEN:
        for taken in (port, udp["containerPort"]):
            assert not low <= taken <= high, f"{taken} is in {low}-{high} ({holder})"
    # The CRD's default is the same (the API server fills it in before the operator reads it).
    http_port = crd_schema()["properties"]["spec"]["properties"]["commServers"]["properties"][
        "httpPort"
    ]
    assert http_port["default"] == port


def test_client_jwt_auth_takes_the_key_from_the_secret() -> None:
    items = objects("everything")
    workloads = [
        (by_kind(items, "Deployment", "demo-coordinator"), "WEBRTC_BROKER_COORDINATOR_"),
        (by_kind(items, "StatefulSet", "demo-commserver"), "WEBRTC_BROKER_COMMSERVER_"),
        (by_kind(items, "StatefulSet", "demo-hub"), "WEBRTC_BROKER_COMMSERVER_"),
    ]
    for config in (CoordinatorConfig, CommServerConfig):
        assert {"client_auth", "client_jwt_secret"} <= set(config.model_fields)
    assert {p for _, p in workloads} == {
        CoordinatorConfig.model_config["env_prefix"],
        CommServerConfig.model_config["env_prefix"],
    }
    for workload, prefix in workloads:
        env = env_of(workload)
        assert env[f"{prefix}CLIENT_AUTH"] == "jwt", workload["metadata"]["name"]
        assert env[f"{prefix}CLIENT_JWT_SECRET"] == {
            "secretKeyRef": {"name": "client-tokens", "key": "jwt"}
        }
    # None (the default) sets neither variable: the services accept any client.
    for item in objects("defaults"):
        if item["kind"] in ("Deployment", "StatefulSet"):
            assert not [name for name in env_of(item) if "CLIENT_AUTH" in name or "JWT" in name]


def test_metrics_off_removes_scrape_annotations() -> None:
    items = objects("no-metrics")
    for item in items:
        if item["kind"] in ("Deployment", "StatefulSet"):
            assert "annotations" not in item["spec"]["template"]["metadata"]
    assert not any(item["kind"] == "ServiceMonitor" for item in items)
    assert (
        by_kind(objects("defaults"), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "prometheus.io/port"
        ]
        == "9090"
    )


def deploy_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(DEPLOY.glob("*.yaml")) for doc in load_yaml(path)]


def test_everything_in_deploy_is_valid() -> None:
    documents = deploy_documents()
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "ServiceAccount",
    ]
    for doc in documents:
        assert schemas.validate_official(doc) == [], doc["kind"]
    assert schemas.validate_custom(crd_schema(), example()) == []


def test_everything_in_deploy_namespaced_is_valid() -> None:
    """The one-namespace variant: a Role and RoleBinding instead of cluster-wide grants."""
    documents = [
        doc for path in sorted((DEPLOY / "namespaced").glob("*.yaml")) for doc in load_yaml(path)
    ]
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == ["Deployment", "Namespace", "Role", "RoleBinding", "ServiceAccount"]
    for doc in documents:
        assert schemas.validate_official(doc) == [], doc["kind"]


def test_coordinator_deployment_carries_the_progress_deadline() -> None:
    ref = ClusterRef("demo", "default", "uid-1")
    for given, expected in (({}, 600), ({"progressDeadlineSeconds": 30}, 30)):
        spec = parse_spec("demo", {"image": IMAGE, **given})
        (deployment,) = [m for m in desired_objects(ref, spec) if m["kind"] == "Deployment"]
        assert deployment["spec"]["progressDeadlineSeconds"] == expected


def test_a_stopping_coordinator_serves_until_the_proxies_know() -> None:
    """A preStop sleep keeps a deleted replica answering while its endpoint is withdrawn,
    inside a grace period that still leaves the process time to stop."""
    ref = ClusterRef("demo", "default", "uid-1")
    spec = parse_spec("demo", {"image": IMAGE})
    (deployment,) = [m for m in desired_objects(ref, spec) if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod["terminationGracePeriodSeconds"]
    assert schemas.validate_official(deployment) == []


def test_rbac_is_least_privilege() -> None:
    role = next(doc for doc in deploy_documents() if doc["kind"] == "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any(verb in ("*", "escalate", "bind", "impersonate") for _, _, verb in granted)
    assert not any(resource == "*" for _, resource, _ in granted)
    # Pods: listed (the advertised addresses in the status) and patched (a load balancer's
    # address as an annotation), never created, changed otherwise or deleted.
    assert {verb for _, resource, verb in granted if resource == "pods"} == {"list", "patch"}
    # Secrets: only created (the generated server secret), never read, changed or deleted.
    assert {verb for _, resource, verb in granted if resource == "secrets"} == {"create"}
    # Never done by the code: Events are only created, status and scale are only patched.
    for unused in [
        ("", "events", "patch"),
        ("webrtc-broker.io", "brokerclusters/status", "get"),
        ("webrtc-broker.io", "brokerclusters/scale", "get"),
    ]:
        assert unused not in granted
    for needed in [
        ("webrtc-broker.io", "brokerclusters", "watch"),
        ("webrtc-broker.io", "brokerclusters/status", "patch"),
        ("webrtc-broker.io", "brokerclusters/scale", "patch"),
        ("apps", "statefulsets", "create"),
        ("apps", "statefulsets", "delete"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("", "events", "create"),
        ("", "events", "list"),
        ("", "secrets", "create"),
        # Per-pod Services are listed and deleted with scaling; a managed TURN goes.
        ("", "services", "list"),
        ("", "services", "delete"),
        ("apps", "deployments", "delete"),
    ]:
        assert needed in granted


def test_operator_deployment_matches_the_image() -> None:
    deployment = next(doc for doc in deploy_documents() if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["webrtc-broker"]
    assert container["args"][0] == "operator"
    assert pod["securityContext"]["runAsUser"] == 10001
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2, "multi-stage"
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["webrtc-broker"]' in dockerfile
