"""Prometheus on the host scrapes the broker's pods on the real node.

The operator (a local process with ``deploy/rbac.yaml``'s token, serving this
test's namespace) runs a BrokerCluster of two comm servers and a coordinator on
the node, with ``metrics.enabled`` left at its default: the pods carry the
``prometheus.io/scrape``, ``prometheus.io/port`` and ``prometheus.io/path``
annotations (docs/kubernetes.md). The docs give no scrape configuration; this
uses the conventional one for those annotations (Prometheus' example job
``kubernetes-pods``: keep pods whose ``scrape`` is ``true``, take the path and
port from the annotations, copy the pod's labels, its namespace and its name).

Debian's Prometheus is built without Kubernetes discovery (its NEWS: "Kubernetes
support has been completely removed"; ``kubernetes_sd_configs`` is refused as
an unknown field). So the test does what that discovery does, as it would:
it lists the namespace's pods through the API server with the token of a
ServiceAccount that may only get, list and watch pods there, and the cluster's
CA, and hands Prometheus the targets with the labels Kubernetes discovery gives
(``__meta_kubernetes_*``, one target per declared container port at the pod's
address) through ``file_sd_configs``; the relabeling is Prometheus' own. The
pods are reached at their pod addresses (the host routes the pod range to the
node's bridge).

This proves that the annotations the operator writes are enough for such a
Prometheus: every pod is one target, up, at the annotated port and path; and
named series of the coordinator's and the comm servers' families
(docs/metrics.md) come from each pod, carrying its ``pod`` label:
``webrtc_broker_build_info`` of each service, ``webrtc_broker_coordinator_ready``
and ``webrtc_broker_coordinator_servers`` counting both comm servers, and each
comm server's ``webrtc_broker_commserver_registered`` and
``webrtc_broker_commserver_coordinator_connected``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.naming import COMMSERVER, COORDINATOR
from tests.k8s.clients import NAME, KubeBroker, OperatorRun, broker_cluster_body
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import Node
from tests.k8s.support import installed_identity
from tests.k8s.workloads import Phases, wait_running
from tests.metrics.prometheus_server import Prometheus, prometheus_with_config
from tests.operator.support import until

pytestmark = pytest.mark.timeout(420)

ACCOUNT = "prometheus"
SCRAPE_INTERVAL = "2s"


def annotation_relabeling() -> list[dict[str, Any]]:
    """The conventional relabeling for ``prometheus.io/*`` pod annotations (Prometheus'
    own example configuration for Kubernetes, job ``kubernetes-pods``)."""
    return [
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
            "action": "replace",
            "target_label": "__metrics_path__",
            "regex": "(.+)",
        },
        {
            "source_labels": [
                "__address__",
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
            ],
            "action": "replace",
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]


def sanitized(name: str) -> str:
    """A label or annotation key as Kubernetes discovery names its meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Target groups with the labels Prometheus' Kubernetes discovery (role ``pod``) gives:
    one target per declared container port at the pod's address, with the pod's
    namespace, name, labels and annotations as ``__meta_kubernetes_*`` labels."""
    groups = []
    for pod in pods:
        meta = pod["metadata"]
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": pod["status"]["podIP"],
            **{
                f"__meta_kubernetes_pod_label_{sanitized(k)}": v
                for k, v in (meta.get("labels") or {}).items()
            },
            **{
                f"__meta_kubernetes_pod_annotation_{sanitized(k)}": v
                for k, v in (meta.get("annotations") or {}).items()
            },
        }
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or [{}]:
                address = pod["status"]["podIP"]
                if "containerPort" in port:
                    address = f"{address}:{port['containerPort']}"
                groups.append(
                    {
                        "targets": [address],
                        "labels": {
                            **labels,
                            "__meta_kubernetes_pod_container_name": container["name"],
                        },
                    }
                )
    return groups


def scrape_config(targets_file: Path) -> dict[str, Any]:
    """The job ``kubernetes-pods`` with :func:`annotation_relabeling`, its targets from
    ``targets_file`` (what Kubernetes discovery would give; see :func:`discover`)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "2s"}],
                "relabel_configs": annotation_relabeling(),
            }
        ],
    }


def discover(plane: ControlPlane, namespace: str, token: str) -> list[dict[str, Any]]:
    """The namespace's pods as Kubernetes discovery reads them: through the API server,
    with the ServiceAccount's token and the cluster's CA (what ``kubernetes_sd_configs``
    is given), as target groups."""
    with plane.client(token=token) as reader:
        answer = reader.get(f"/api/v1/namespaces/{namespace}/pods")
        assert answer.status_code == 200, answer.text
        pods = [p for p in answer.json()["items"] if p["status"].get("podIP")]
        # The account may list pods of this namespace only.
        assert reader.get("/api/v1/namespaces/default/pods").status_code == 403
    return pod_targets(pods)


def pod_reader(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """A ServiceAccount allowed to get, list and watch the pods of ``namespace`` only."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    return [
        (
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"metadata": {"name": ACCOUNT}},
        ),
        (
            f"{rbac}/namespaces/{namespace}/roles",
            {
                "metadata": {"name": ACCOUNT},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
                ],
            },
        ),
        (
            f"{rbac}/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": ACCOUNT},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": ACCOUNT,
                },
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
            },
        ),
    ]


async def targets_of(prometheus: Prometheus) -> dict[str, dict[str, Any]]:
    """Active targets by their ``pod`` label."""
    active = (await prometheus.api("targets"))["activeTargets"]
    return {t["labels"].get("pod", ""): t for t in active}


async def by_pod(prometheus: Prometheus, expr: str) -> dict[str, float]:
    return await prometheus.values(expr, "pod")


async def test_prometheus_scrapes_every_pod_by_its_scrape_annotations(
    control_plane: ControlPlane, node: Node, broker_image: str, tmp_path: Path
) -> None:
    phases = Phases("prometheus")
    with installed_identity(control_plane, tmp_path) as identity:
        namespace = identity.clusters_namespace
        operator = await asyncio.to_thread(OperatorRun.start, identity, tmp_path, namespace)
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        with control_plane.client(timeout=30) as admin:
            broker = KubeBroker(
                control_plane, admin, namespace, node.address, tmp_path, node.socket
            )
            try:
                for collection, body in pod_reader(namespace):
                    answer = admin.post(collection, json=body)
                    assert answer.status_code == 201, answer.text
                token = control_plane.service_account_token(namespace, ACCOUNT, create=False)
                # One coordinator: the test reads its series by pod (HA has its own test).
                body = broker_cluster_body(broker_image, replicas=2, coordinators=1)
                answer = admin.post(path, json=body)
                assert answer.status_code == 201, answer.text
                await until(broker.find_node_port, timeout=120, interval=0.5)
                aliases = await broker.wait_servers(2)
                await asyncio.to_thread(wait_running, admin, namespace, NAME, timeout=120)
                coordinator = [p["metadata"]["name"] for p in await broker.pods(COORDINATOR)]
                servers = sorted(aliases)
                pods = {*coordinator, *servers}
                assert len(coordinator) == 1, coordinator
                for pod in [*await broker.pods(COORDINATOR), *await broker.pods(COMMSERVER)]:
                    annotations = pod["metadata"].get("annotations", {})
                    print(
                        f"{pod['metadata']['name']} at {pod['status']['podIP']}: "
                        f"{ {k: v for k, v in annotations.items() if 'prometheus' in k} }"
                    )
                phases.mark("cluster running (1 coordinator, 2 comm servers)")

                targets_file = tmp_path / "pods.json"
                groups = discover(control_plane, namespace, token)
                targets_file.write_text(json.dumps(groups, indent=2))
                print(f"{len(groups)} target groups discovered: {[g['targets'] for g in groups]}")
                config = scrape_config(targets_file)
                async with prometheus_with_config(tmp_path, config) as prometheus:
                    await scraped(prometheus, pods, coordinator[0], servers, phases)
                print(phases.summary())
            except BaseException:
                print(await broker.describe())
                raise
            finally:
                await broker.aclose()
                code = await asyncio.to_thread(operator.stop)
                log = operator.log()
                print(f"operator exit code {code}")
                assert "Traceback" not in log, log[-4000:]


async def scraped(
    prometheus: Prometheus, pods: set[str], coordinator: str, servers: list[str], phases: Phases
) -> None:
    """Every pod an up target, and the named series from each, by its ``pod`` label."""
    last: list[Any] = [None]

    async def all_up() -> bool:
        found = await targets_of(prometheus)
        last[0] = {
            pod: (t["health"], t["scrapeUrl"], t.get("lastError")) for pod, t in found.items()
        }
        return set(found) == pods and all(t["health"] == "up" for t in found.values())

    try:
        await until(all_up, timeout=90, interval=1)
    except AssertionError:
        raise AssertionError(
            f"targets {last[0]}, wanted one up per pod {sorted(pods)}\n"
            f"--- prometheus log\n{prometheus.log()[-4000:]}"
        ) from None
    for pod, (health, url, _) in sorted(last[0].items()):
        print(f"target {pod}: {health} {url}")
    phases.mark("every pod discovered and scraped")

    wanted = {
        "webrtc_broker_build_info": {pod: 1.0 for pod in pods},
        'webrtc_broker_build_info{service="coordinator"}': {coordinator: 1.0},
        'webrtc_broker_build_info{service="commserver"}': {pod: 1.0 for pod in servers},
        "webrtc_broker_coordinator_ready": {coordinator: 1.0},
        'webrtc_broker_coordinator_servers{role="server"}': {coordinator: 2.0},
        "webrtc_broker_commserver_registered": {pod: 1.0 for pod in servers},
        "webrtc_broker_commserver_coordinator_connected": {pod: 1.0 for pod in servers},
    }
    for expr, expected in wanted.items():
        await prometheus.eventually_equal(expr, expected, by="pod", timeout=30)
        print(f"{expr}: {expected}")
    # Each series also carries the pod's own labels (the relabeling's labelmap).
    result = await prometheus.query("webrtc_broker_commserver_registered")
    for series in result:
        labels = series["metric"]
        assert labels["namespace"], labels
        assert labels["app_kubernetes_io_component"] == COMMSERVER, labels
    phases.mark("named series of every pod found")
