"""The chart as Kubernetes will see it: lint, official schemas, the CRD's schema, no drift.

Everything ``helm template`` renders is validated like the operator's own
objects (:mod:`tests.operator.schemas`: kubernetes-validate's strict
schemas, the newest version it ships). The BrokerCluster is checked against
the CRD's schema and then parsed by the operator's spec model, and the
objects the operator would make from it are validated too: chart, resource
and operator agree end to end.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker_operator.manifests import desired_objects
from broker_operator.naming import ClusterRef
from broker_operator.spec import MAX_NAME_LENGTH, parse_spec
from tests.helm.chart import CHART, NAMESPACE, VALUES_ALL, find, kinds, render, run_helm
from tests.operator import schemas
from tests.operator.support import CRD_FILE, crd_schema
from tests.support import ROOT

CUSTOM_KINDS = {"BrokerCluster", "ServiceMonitor"}
"""Kinds without an official schema; checked against their CRD (or by hand) instead."""

MINIMAL = (
    "brokerCluster.enabled=false",
    "serviceAccount.create=false",
    "serviceAccount.name=existing",
    "rbac.create=false",
    "tests.enabled=false",
    "operator.metrics.scrapeAnnotations=false",
)

VARIANTS: dict[str, tuple[tuple[Path, ...], tuple[str, ...]]] = {
    "defaults": ((), ()),
    "everything": ((VALUES_ALL,), ()),
    "minimal": ((), MINIMAL),
    "load-balancer": ((), ("brokerCluster.spec.coordinator.serviceType=LoadBalancer",)),
}


def rendered(variant: str) -> list[dict[str, Any]]:
    files, sets = VARIANTS[variant]
    return render(files, sets)


@pytest.mark.parametrize("values", [(), (VALUES_ALL,)], ids=["defaults", "everything"])
def test_lint_strict_passes(values: tuple[Path, ...]) -> None:
    args = [arg for path in values for arg in ("--values", str(path))]
    result = run_helm("lint", "--strict", "--namespace", NAMESPACE, str(CHART), *args)
    assert result.returncode == 0, result.output
    assert "1 chart(s) linted, 0 chart(s) failed" in result.output
    assert "[WARNING]" not in result.output and "[ERROR]" not in result.output, result.output


def test_variants_render_what_they_switch_on() -> None:
    assert kinds(rendered("defaults")) == [
        "BrokerCluster",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Pod",
        "ServiceAccount",
    ]
    assert kinds(rendered("everything")) == [
        "BrokerCluster",
        "ConfigMap",
        "Deployment",
        "Pod",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert kinds(rendered("minimal")) == ["Deployment"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_objects_are_valid_kubernetes(variant: str) -> None:
    items = rendered(variant)
    for item in items:
        meta = item["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
        assert len(meta["name"]) <= 63
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["helm.sh/chart"] == "webrtc-broker-0.1.0"
        if item["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert meta.get("namespace"), f"{item['kind']} {meta['name']} has no namespace"
        if item["kind"] in CUSTOM_KINDS:
            continue
        assert schemas.validate_official(item) == [], (item["kind"], meta["name"])


def service_monitor_problems(monitor: dict[str, Any]) -> list[str]:
    """The ServiceMonitor fields the Prometheus operator needs (it has no official schema here)."""
    problems = []
    spec = monitor["spec"]
    if monitor["apiVersion"] != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion {monitor['apiVersion']}")
    if set(spec) - {"selector", "namespaceSelector", "endpoints"}:
        problems.append(f"unexpected fields {sorted(spec)}")
    if not spec["selector"].get("matchLabels"):
        problems.append("no selector")
    if not spec.get("namespaceSelector", {}).get("matchNames"):
        problems.append("no namespaceSelector")
    for endpoint in spec["endpoints"]:
        if set(endpoint) - {"port", "path", "interval"}:
            problems.append(f"endpoint fields {sorted(endpoint)}")
        if not re.fullmatch(r"\d+(ms|s|m|h)", str(endpoint.get("interval", ""))):
            problems.append(f"interval {endpoint.get('interval')!r}")
    return problems


def test_service_monitor_scrapes_the_operator() -> None:
    items = rendered("everything")
    monitor = find(items, "ServiceMonitor")
    assert service_monitor_problems(monitor) == []
    service = find(items, "Service")
    deployment = find(items, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint == {"port": port["name"], "path": "/metrics", "interval": "15s"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] in container_ports
    assert port["port"] == container_ports["metrics"] == 9080


@pytest.mark.parametrize("variant", ["defaults", "everything", "load-balancer"])
def test_broker_cluster_is_accepted_by_the_crd_and_the_operator(variant: str) -> None:
    cluster = find(rendered(variant), "BrokerCluster")
    assert cluster["apiVersion"] == "webrtc-broker.io/v1alpha1"
    assert schemas.validate_custom(crd_schema(), cluster) == []
    name = cluster["metadata"]["name"]
    assert len(name) <= MAX_NAME_LENGTH
    # What the API server stores (defaults filled in), as the operator reads it.
    stored = schemas.apply_defaults(crd_schema(), copy.deepcopy(cluster))
    spec = parse_spec(name, stored["spec"])
    ref = ClusterRef(name, NAMESPACE, "00000000-0000-0000-0000-000000000001")
    for item in desired_objects(ref, spec):
        if item["kind"] != "ServiceMonitor":
            assert schemas.validate_official(item) == [], item["kind"]


def test_default_broker_cluster_is_the_crd_default_with_the_chart_image() -> None:
    cluster = find(rendered("defaults"), "BrokerCluster")
    assert cluster["metadata"]["name"] == "demo-webrtc-broker"
    defaulted = schemas.apply_defaults(crd_schema(), {"spec": {"image": "webrtc-broker:0.1.0"}})
    # Empty maps and lists in values.yaml are there to be discoverable; they change nothing.
    spec = cluster["spec"]
    assert spec["coordinator"].pop("serviceAnnotations") == {}
    assert spec.pop("iceServers") == []
    assert spec["metrics"]["serviceMonitor"].pop("labels") == {}
    assert spec["commServers"]["network"].pop("serviceAnnotations") == {}
    assert spec["turn"].pop("urls") == []
    for component in ("coordinator", "commServers"):
        assert spec[component].pop("nodeSelector") == {}
        assert spec[component].pop("tolerations") == []
    assert spec == defaulted["spec"]


def test_chart_crd_is_deploy_crd() -> None:
    files = sorted((CHART / "crds").iterdir())
    assert [f.name for f in files] == ["brokerclusters.webrtc-broker.io.yaml"]
    assert files[0].read_bytes() == CRD_FILE.read_bytes(), (
        "charts/webrtc-broker/crds/ differs from deploy/crd.yaml: copy deploy/crd.yaml over it"
    )


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    deployment = find(rendered("defaults"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"webrtc-broker:{project['version']}"


def test_packaged_chart_carries_the_crd_and_the_readme(tmp_path: Path) -> None:
    result = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.output
    (archive,) = tmp_path.glob("webrtc-broker-*.tgz")
    listing = run_helm("show", "crds", str(archive))
    assert listing.returncode == 0, listing.output
    assert listing.stdout.removeprefix("---\n").strip() == CRD_FILE.read_text().strip()
    readme = run_helm("show", "readme", str(archive))
    assert "## Values" in readme.stdout
