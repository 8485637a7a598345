"""What the templates say, against deploy/ and the programs that read it.

The chart and ``kubectl apply -f deploy/`` must install the same operator
with the same rights: RBAC rules and the operator's container are compared
with deploy/'s. Arguments are parsed by the real ``webrtc-broker operator``
and ``probe`` commands, so a flag the CLI does not know fails here rather
than in a crash-looping pod.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker_operator.cli import operator as operator_command
from broker_operator.manifests import desired_objects
from broker_operator.naming import ClusterRef
from broker_operator.spec import parse_spec
from tests.helm.chart import CHART, NAMESPACE, VALUES_ALL, find, notes, render
from tests.operator import schemas
from tests.operator.support import DEPLOY, crd_schema, load_yaml, namespace_rules
from webrtc_broker.cli import main as main_command
from webrtc_broker.config import OperatorConfig


def deploy_object(kind: str) -> dict[str, Any]:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in load_yaml(path):
            if doc["kind"] == kind:
                return doc
    raise KeyError(kind)


def container(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    pod = spec["template"]["spec"] if "template" in spec else spec
    (only,) = pod["containers"]
    result: dict[str, Any] = only
    return result


def parse_operator_args(args: list[str]) -> OperatorConfig:
    """The operator's settings from its container args, parsed by the real click command."""
    assert args[0] == "operator"
    context = operator_command.make_context("operator", args[1:])
    given = {k: v for k, v in context.params.items() if v not in (None, ())}
    return OperatorConfig(**given)


def test_rbac_rules_are_deploy_rules() -> None:
    expected = deploy_object("ClusterRole")["rules"]
    defaults = render()
    assert find(defaults, "ClusterRole")["rules"] == expected
    binding = find(defaults, "ClusterRoleBinding")
    account = find(defaults, "ServiceAccount")
    assert binding["roleRef"]["name"] == find(defaults, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]

    everything = render([VALUES_ALL])
    roles = [item for item in everything if item["kind"] == "Role"]
    bindings = [item for item in everything if item["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["brokers", "team-a"]
    assert all(role["rules"] == namespace_rules(expected) for role in roles)
    for rolebinding in bindings:
        assert rolebinding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "broker-operator",
        }
        assert rolebinding["subjects"] == [
            {"kind": "ServiceAccount", "name": "broker-operator-sa", "namespace": NAMESPACE}
        ]


def test_namespaced_rbac_is_deploys_namespaced_rbac() -> None:
    """With watchNamespaces, the chart grants what deploy/namespaced/ grants: the same
    rules in a Role per namespace, and nothing cluster-wide."""
    namespaced = load_yaml(DEPLOY / "namespaced" / "rbac.yaml")
    (role,) = [doc for doc in namespaced if doc["kind"] == "Role"]
    assert role["rules"] == namespace_rules(deploy_object("ClusterRole")["rules"])
    assert not [doc for doc in namespaced if doc["kind"].startswith("Cluster")]
    everything = render([VALUES_ALL])
    assert not [item for item in everything if item["kind"].startswith("Cluster")]
    roles = [item for item in everything if item["kind"] == "Role"]
    assert roles and all(item["rules"] == role["rules"] for item in roles)


def test_operator_deployment_is_deploys_operator() -> None:
    chart = find(render(), "Deployment")
    deploy = deploy_object("Deployment")
    assert chart["spec"]["replicas"] == 1
    assert chart["spec"]["strategy"] == deploy["spec"]["strategy"] == {"type": "Recreate"}
    chart_pod, deploy_pod = chart["spec"]["template"]["spec"], deploy["spec"]["template"]["spec"]
    for field in ("securityContext", "volumes", "enableServiceLinks"):
        assert chart_pod[field] == deploy_pod[field], field
    assert chart_pod["terminationGracePeriodSeconds"] == 30
    ours, theirs = container(chart), container(deploy)
    assert set(ours) == set(theirs)
    for field in set(ours) - {"image", "args"}:
        assert ours[field] == theirs[field], field
    assert ours["image"] == theirs["image"] == "webrtc-broker:0.1.0"
    assert parse_operator_args(ours["args"]) == parse_operator_args(theirs["args"])
    labels = chart["spec"]["template"]["metadata"]["labels"]
    assert chart["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = chart["spec"]["template"]["metadata"]["annotations"]
    assert annotations == deploy["spec"]["template"]["metadata"]["annotations"]


def test_operator_values_reach_the_pod() -> None:
    deployment = find(render([VALUES_ALL]), "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    ours = container(deployment)
    config = parse_operator_args(ours["args"])
    assert config.namespaces == ["brokers", "team-a"]
    assert (config.metrics_host, config.metrics_port, config.health_port) == ("0.0.0.0", 9080, 9081)
    assert config.resync_seconds == 5
    assert config.status_url == "http://{service}.{namespace}.svc.cluster.local:{port}/status"
    assert {"name": "WEBRTC_BROKER_OPERATOR_LOG_LEVEL", "value": "debug"} in ours["env"]
    assert ours["image"] == "registry.example.org/team/webrtc-broker:0.1.0-rc1"
    assert ours["imagePullPolicy"] == "Always"
    assert {p["name"]: p["containerPort"] for p in ours["ports"]} == {
        "metrics": 9080,
        "health": 9081,
    }
    assert ours["resources"]["limits"] == {"cpu": 1, "memory": "512Mi"}
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9080",
        "prometheus.io/path": "/metrics",
        "example.org/owner": "platform",
    }
    assert template["metadata"]["labels"]["team"] == "platform"
    assert pod["serviceAccountName"] == "broker-operator-sa"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "broker-critical"


def test_minimal_install_uses_the_named_account_and_no_annotations() -> None:
    items = render(
        sets=[
            "serviceAccount.create=false",
            "serviceAccount.name=existing",
            "operator.metrics.scrapeAnnotations=false",
        ]
    )
    deployment = find(items, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert not [item for item in items if item["kind"] == "ServiceAccount"]


def test_dashboard_configmap_carries_the_dashboard_file() -> None:
    configmap = find(render([VALUES_ALL]), "ConfigMap")
    meta = configmap["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"] == {"grafana_folder": "Brokers"}
    source = (CHART / "dashboards" / "webrtc-broker.json").read_text()
    (data,) = configmap["data"].values()
    assert data.strip() == source.strip()
    assert json.loads(data)["uid"] == "webrtc-broker"
    assert list(configmap["data"]) == ["webrtc-broker.json"]


def test_dashboard_label_can_follow_the_sidecar() -> None:
    items = render(sets=["dashboard.enabled=true", "dashboard.labels.grafana_dashboard=enabled"])
    labels = find(items, "ConfigMap")["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "enabled"
    assert find(items, "ConfigMap")["metadata"]["namespace"] == NAMESPACE


def test_helm_test_pod_probes_the_chart_coordinator() -> None:
    items = render()
    pod = find(items, "Pod")
    cluster = find(items, "BrokerCluster")
    ref = ClusterRef(cluster["metadata"]["name"], NAMESPACE, "uid")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    probe = container(pod)
    assert probe["image"] == "webrtc-broker:0.1.0"
    assert probe["command"] == ["webrtc-broker"]
    assert probe["args"] == [
        "probe",
        "--coordinator-url",
        ref.coordinator_endpoint(),  # what the operator puts in the resource's status
        "--timeout",
        "180",
    ]
    # Parsed by the real command, as the pod's entrypoint will.
    params = main_command.commands["probe"].make_context("probe", probe["args"][1:]).params
    assert params["coordinator_url"] == ref.coordinator_endpoint()
    assert params["timeout"] == 180.0
    security = probe["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


PLACEMENT: dict[str, Any] = {
    "nodeSelector": {"example.org/pool": "brokers"},
    "tolerations": [{"key": "dedicated", "value": "brokers", "effect": "NoSchedule"}],
}


def test_placement_reaches_the_broker_pods_and_the_test_pod(tmp_path: Path) -> None:
    values = tmp_path / "placement.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "brokerCluster": {
                    "spec": {
                        "coordinator": {"nodeSelector": {"example.org/pool": "control"}},
                        "commServers": PLACEMENT,
                        "topology": {"mode": "Hub"},
                    }
                },
                "tests": PLACEMENT,
            }
        )
    )
    items = render([values])
    cluster = find(items, "BrokerCluster")
    assert cluster["spec"]["commServers"]["nodeSelector"] == PLACEMENT["nodeSelector"]
    assert cluster["spec"]["commServers"]["tolerations"] == PLACEMENT["tolerations"]
    assert cluster["spec"]["coordinator"]["nodeSelector"] == {"example.org/pool": "control"}
    assert cluster["spec"]["coordinator"]["tolerations"] == []
    # As the API server stores the resource and the operator turns it into workloads.
    assert schemas.validate_custom(crd_schema(), cluster) == []
    stored = schemas.apply_defaults(crd_schema(), copy.deepcopy(cluster))
    ref = ClusterRef(cluster["metadata"]["name"], NAMESPACE, "uid")
    pods = {
        item["metadata"]["name"]: item["spec"]["template"]["spec"]
        for item in desired_objects(ref, parse_spec(ref.name, stored["spec"]))
        if item["kind"] in ("Deployment", "StatefulSet")
    }
    for component in ("commserver", "hub"):
        pod = pods[ref.object_name(component)]
        assert pod["nodeSelector"] == PLACEMENT["nodeSelector"]
        assert pod["tolerations"] == [{**PLACEMENT["tolerations"][0], "operator": "Equal"}]
    coordinator = pods[ref.object_name("coordinator")]
    assert coordinator["nodeSelector"] == {"example.org/pool": "control"}
    assert "tolerations" not in coordinator
    test_pod = find(items, "Pod")
    assert test_pod["spec"]["nodeSelector"] == PLACEMENT["nodeSelector"]
    assert test_pod["spec"]["tolerations"] == PLACEMENT["tolerations"]
    assert schemas.validate_official(test_pod) == []


def test_default_test_pod_has_no_placement() -> None:
    pod = find(render(), "Pod")
    assert "nodeSelector" not in pod["spec"]
    assert "tolerations" not in pod["spec"]


@pytest.mark.parametrize(
    ("sets", "url"),
    [
        (["brokerCluster.enabled=false"], None),
        (["tests.enabled=false"], None),
        (
            ["brokerCluster.enabled=false", "tests.coordinatorUrl=ws://elsewhere.team-a.svc:9090"],
            "ws://elsewhere.team-a.svc:9090",
        ),
    ],
)
def test_helm_test_pod_needs_a_coordinator(sets: list[str], url: str | None) -> None:
    pods = [item for item in render(sets=sets) if item["kind"] == "Pod"]
    if url is None:
        assert pods == []
    else:
        (pod,) = pods
        assert container(pod)["args"][2] == url


def test_autoscaling_leaves_replicas_to_the_operator() -> None:
    cluster = find(render([VALUES_ALL]), "BrokerCluster")
    assert cluster["spec"]["autoscaling"]["enabled"] is True
    assert "replicas" not in cluster["spec"]["commServers"]
    assert cluster["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert cluster["spec"]["image"] == "registry.example.org/team/webrtc-broker:0.1.0-rc1"
    assert cluster["spec"]["imagePullPolicy"] == "IfNotPresent"  # its own, not the chart's
    manual = find(render(), "BrokerCluster")
    assert manual["spec"]["commServers"]["replicas"] == 2


@pytest.mark.parametrize(
    ("values", "sets", "replicas"),
    [([], [], 2), ([VALUES_ALL], [], 3), ([], ["brokerCluster.spec.coordinator.replicas=1"], 1)],
)
def test_coordinator_replicas_reach_the_operators_objects(
    values: list[Path], sets: list[str], replicas: int
) -> None:
    cluster = find(render(values, sets=sets), "BrokerCluster")
    assert cluster["spec"]["coordinator"]["replicas"] == replicas
    stored = schemas.apply_defaults(crd_schema(), copy.deepcopy(cluster))
    ref = ClusterRef(cluster["metadata"]["name"], NAMESPACE, "uid")
    made = desired_objects(ref, parse_spec(ref.name, stored["spec"]))
    (deployment,) = [item for item in made if item["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == replicas
    budgets = [item["metadata"]["name"] for item in made if item["kind"] == "PodDisruptionBudget"]
    assert (ref.object_name("coordinator") in budgets) is (replicas >= 2)
    if not values:  # values-all.yaml points the test pod elsewhere
        # The helm test pod dials the client Service, whichever replicas are behind it.
        pod = find(render(values, sets=sets), "Pod")
        assert container(pod)["args"][2] == ref.coordinator_endpoint()


def test_client_auth_is_passed_to_the_broker_cluster() -> None:
    cluster = find(render([VALUES_ALL]), "BrokerCluster")
    assert cluster["spec"]["auth"]["clients"] == {
        "mode": "JWT",
        "secretRef": {"name": "client-tokens", "key": "jwt"},
    }
    assert find(render(), "BrokerCluster")["spec"]["auth"]["clients"] == {"mode": "None"}


def test_a_release_without_a_server_secret_gets_a_generated_one() -> None:
    """The chart names no Secret by default; its operator may create the one it generates,
    and the pods of the release's BrokerCluster read it."""
    defaults = render()
    cluster = find(defaults, "BrokerCluster")
    assert cluster["spec"]["auth"].get("mode", "None") == "None"
    assert "secretRef" not in cluster["spec"]["auth"]
    rules = find(defaults, "ClusterRole")["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]} in rules
    ref = ClusterRef(cluster["metadata"]["name"], NAMESPACE, "uid")
    workloads = desired_objects(ref, parse_spec(ref.name, cluster["spec"]))
    for workload in workloads:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            env = {e["name"]: e for e in container(workload)["env"]}
            (secret,) = [e for name, e in env.items() if name.endswith("_SERVER_SECRET")]
            assert secret["valueFrom"]["secretKeyRef"]["name"] == ref.server_secret


def test_notes_tell_how_to_reach_the_coordinator_and_the_demo_page() -> None:
    text = notes()
    for line in [
        "kubectl -n brokers get brokercluster demo-webrtc-broker",
        "ws://demo-webrtc-broker-coordinator.brokers.svc:9090",
        "kubectl -n brokers port-forward service/demo-webrtc-broker-coordinator 9090:9090",
        "demo page: http://127.0.0.1:9090/",
        "SDK: http://127.0.0.1:9090/sdk/webrtc-broker.js",
        "network.mode=HostNetwork",
        "helm test demo -n brokers",
    ]:
        assert line in text, f"{line!r} not in NOTES:\n{text}"


@pytest.mark.parametrize(
    ("sets", "expected", "absent"),
    [
        (
            ["brokerCluster.spec.coordinator.serviceType=LoadBalancer"],
            ".status.loadBalancer.ingress[0].ip",
            "port-forward service/",
        ),
        (
            ["brokerCluster.spec.coordinator.serviceType=NodePort"],
            "{.spec.ports[0].nodePort}",
            "port-forward service/",
        ),
        (
            ["brokerCluster.spec.commServers.network.mode=HostNetwork"],
            "at most one comm server runs per node",
            "pod IPs are reachable",
        ),
        (["brokerCluster.enabled=false"], "No BrokerCluster was created", "helm test"),
    ],
)
def test_notes_follow_the_values(sets: list[str], expected: str, absent: str) -> None:
    text = notes(sets=sets)
    assert expected in text, text
    assert absent not in text, text
