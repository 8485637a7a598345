"""The broker installed as users install it, its pods running in containers on the real node.

Both ways of installing it, against the control plane and its node
(``tests/k8s/node/``), with the broker's image built from the Dockerfile and
imported into the node's containerd (``broker_image``); every pod tolerates
the node's taint, as a user's pods tolerate the taint of the nodes kept for
them:

1. ``kubectl apply -f deploy/``, then the operator's Deployment adapted with
   ``kubectl patch`` (the image, the toleration): the operator runs in a pod
   with deploy/'s ServiceAccount and ClusterRole, becomes Ready through its
   probe and reconciles the example BrokerCluster (with the image and the
   tolerations): the coordinator's replicas (as many as its spec asks for) and
   both comm servers run in containers and
   become Ready, and ``kubectl get bkc`` shows ``2 2 Running`` with the
   coordinator's endpoint.
2. ``helm install`` of the chart with the image, pull policy and tolerations
   (operator, BrokerCluster, test pod) as values; once the BrokerCluster is
   Running, ``helm test`` runs the chart's test pod, whose probe connects two
   SDK clients through the coordinator and round-trips a message across the
   comm servers, inside the cluster; ``helm uninstall`` then removes the
   release and the garbage collector the broker's pods.

The operator of deploy/ serves every namespace, and the control plane is
shared with other tests running their own operators on their own
BrokerClusters; so the test adds ``--namespace`` with its own namespace to
the operator's arguments (as the chart does with ``operator.watchNamespaces``),
keeping deploy/'s ClusterRole: only its BrokerCluster is reconciled by it.
deploy/'s cluster-wide names are fixed, so, as in ``test_kubectl.py``, they
are removed before and after (never the CRD, which every test shares).

Each phase's duration is printed (``-s``): pods scheduled, Ready, the
BrokerCluster Running, ``helm test``. A wait that runs out fails with the
pods' phases and conditions, the namespace's events and the containers' logs.
Measured on the project's shared 2-core machine, node and image ready: 15 to 25 s
per test (broker pods Ready 7 to 12 s, ``helm test`` 5 to 7 s).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from broker_operator import GROUP
from tests.helm.chart import CHART, HelmResult, run_helm
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import NODE_NAME
from tests.k8s.support import install_crd, unique
from tests.k8s.test_kubectl import (
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    Kubectl,
    apply_deploy,
)
from tests.k8s.workloads import (
    PULL_POLICY,
    TOLERATIONS,
    Phases,
    clusters_path,
    describe,
    list_pods,
    node_broker_cluster,
    pod_ready,
    pod_scheduled,
    wait_for,
    wait_namespace_gone,
    wait_pods,
    wait_running,
)

# Generous: a cold start of every container on a busy 2-core machine; measured
# phases are printed. The waits below fail with the pods' state long before.
pytestmark = pytest.mark.timeout(900)

SCHEDULE_TIMEOUT = 60.0
READY_TIMEOUT = 240.0
RUNNING_TIMEOUT = 120.0
GONE_TIMEOUT = 120.0
HELM_TEST_TIMEOUT = 300
SERVERS = 2
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


def component(name: str, part: str) -> str:
    """The label selector of one component's pods of the BrokerCluster ``name``."""
    return f"app.kubernetes.io/instance={name},app.kubernetes.io/component={part}"


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    with control_plane.client(timeout=30) as http:
        yield http


@pytest.fixture
def namespace(control_plane: ControlPlane, admin: httpx.Client) -> Iterator[str]:
    """A namespace for the BrokerCluster; deleted afterwards, waiting until its pods are
    gone from the node (the next test's pods then have the node to themselves)."""
    name = unique("install")
    admin.post("/api/v1/namespaces", json={"metadata": {"name": name}}).raise_for_status()
    try:
        yield name
    finally:
        wait_namespace_gone(admin, name, timeout=GONE_TIMEOUT)


def on_the_node(pods: list[dict[str, Any]], image: str) -> None:
    """Each pod is bound to the node and its containers run there, of the broker's image."""
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == NODE_NAME, (name, pod["spec"].get("nodeName"))
        for status in pod["status"]["containerStatuses"]:
            assert status["containerID"].startswith("containerd://"), (name, status)
            assert "running" in status["state"], (name, status["state"])
            assert status["image"] == image, (name, status["image"])
            assert status["restartCount"] == 0, (name, status)


def coordinator_replicas(admin: httpx.Client, namespace: str, name: str) -> int:
    """``spec.coordinator.replicas`` as the API server stored it (the CRD's default
    when the BrokerCluster leaves it out; 2 in deploy/'s example and the chart's values)."""
    answer = admin.get(f"{clusters_path(namespace)}/{name}")
    answer.raise_for_status()
    return int(answer.json()["spec"]["coordinator"]["replicas"])


def brokers_ready(
    admin: httpx.Client,
    namespace: str,
    name: str,
    phases: Phases,
    *,
    also: tuple[str, ...] = (),
    servers: int = SERVERS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The coordinator pods (as many as the spec asks for) and the comm servers
    scheduled, then Ready (two phases); the Ready coordinators and comm servers."""
    parts = (("coordinator", coordinator_replicas(admin, namespace, name)), ("commserver", servers))
    for part, count in parts:
        wait_pods(
            admin,
            namespace,
            component(name, part),
            count,
            condition=pod_scheduled,
            timeout=SCHEDULE_TIMEOUT + RUNNING_TIMEOUT,  # the operator makes them first
            what="scheduled",
            namespaces=also,
        )
    phases.mark("broker pods made and scheduled")
    coordinators, comm_servers = (
        wait_pods(
            admin,
            namespace,
            component(name, part),
            count,
            condition=pod_ready,
            timeout=READY_TIMEOUT,
            what="Ready",
            namespaces=also,
        )
        for part, count in parts
    )
    phases.mark("broker pods Ready")
    return coordinators, comm_servers


def operator_ready(
    admin: httpx.Client, namespace: str, selector: str, phases: Phases
) -> dict[str, Any]:
    """The operator's single pod scheduled on the node, then Ready (two phases)."""
    wait_pods(
        admin,
        namespace,
        selector,
        1,
        condition=pod_scheduled,
        timeout=SCHEDULE_TIMEOUT,
        what="scheduled",
    )
    phases.mark("operator pod scheduled")
    (pod,) = wait_pods(
        admin, namespace, selector, 1, condition=pod_ready, timeout=READY_TIMEOUT, what="Ready"
    )
    phases.mark("operator pod Ready")
    return pod


def no_traceback(admin: httpx.Client, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    log = admin.get(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/log").text
    assert "Traceback" not in log, log


def test_kubectl_apply_deploy_runs_the_broker_on_the_node(
    control_plane: ControlPlane,
    broker_image: str,  # the node's fixture too: the image is imported there
    admin: httpx.Client,
    deploy_home: Path,
    namespace: str,
) -> None:
    phases = Phases("kubectl")
    kubectl = Kubectl(control_plane, deploy_home)
    apply_deploy(kubectl)
    # As a user adapts deploy/ to a cluster: one patch, so one rollout (Recreate).
    patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": broker_image},
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/imagePullPolicy",
            "value": PULL_POLICY,
        },
        {"op": "add", "path": "/spec/template/spec/tolerations", "value": TOLERATIONS},
        # Only this test's namespace (see the docstring); the ClusterRole stays.
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--namespace"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": namespace},
    ]
    out = kubectl(
        "patch",
        "deployment",
        OPERATOR_ACCOUNT,
        "-n",
        OPERATOR_NAMESPACE,
        "--type=json",
        "-p",
        json.dumps(patch),
    )
    assert f"deployment.apps/{OPERATOR_ACCOUNT} patched" in out, out
    phases.mark("deploy/ applied and patched")
    operator = operator_ready(admin, OPERATOR_NAMESPACE, OPERATOR_SELECTOR, phases)
    assert operator["spec"]["serviceAccountName"] == OPERATOR_ACCOUNT
    on_the_node([operator], broker_image)

    body = node_broker_cluster(broker_image)
    name = body["metadata"]["name"]
    cluster_file = deploy_home / "brokercluster.yaml"
    cluster_file.write_text(yaml.safe_dump(body))
    out = kubectl("apply", "-n", namespace, "-f", str(cluster_file))
    assert f"brokercluster.{GROUP}/{name} created" in out, out
    coordinators, servers = brokers_ready(
        admin, namespace, name, phases, also=(OPERATOR_NAMESPACE,)
    )
    on_the_node([*coordinators, *servers], broker_image)
    status = wait_running(
        admin, namespace, name, timeout=RUNNING_TIMEOUT, namespaces=(OPERATOR_NAMESPACE,)
    )
    phases.mark("BrokerCluster Running")
    assert status["readyServers"] == SERVERS, status
    assert status["readyCoordinators"] == len(coordinators) >= 1, status

    # Server-side printing of the CRD's columns, as a user sees the cluster.
    table = kubectl("get", "bkc", "-n", namespace)
    header, row, *_ = table.splitlines()
    assert header.split() == ["NAME", "SERVERS", "READY", "PHASE", "ENDPOINT", "AGE"], table
    endpoint = f"ws://{name}-coordinator.{namespace}.svc:9090"
    assert row.split()[:5] == [name, "2", "2", "Running", endpoint], table

    # The same operator pod did it all, without a restart or a traceback.
    (still,) = list_pods(admin, OPERATOR_NAMESPACE, OPERATOR_SELECTOR)
    assert still["metadata"]["uid"] == operator["metadata"]["uid"]
    on_the_node([still], broker_image)
    no_traceback(admin, still)

    out = kubectl("delete", "bkc", name, "-n", namespace)
    assert f'brokercluster.{GROUP} "{name}" deleted' in out, out
    # The garbage collector removes the workloads, and with them the pods.
    wait_for(
        lambda: not list_pods(admin, namespace, f"app.kubernetes.io/instance={name}"),
        timeout=GONE_TIMEOUT,
        what="the broker's pods gone after the BrokerCluster's deletion",
        admin=admin,
        namespaces=(namespace,),
    )
    phases.mark("BrokerCluster deleted, pods gone")
    print(phases.summary())


# --- helm ---------------------------------------------------------------------


def chart_values(image: str, namespace: str) -> dict[str, Any]:
    """Values putting every pod of the release on the node: the image imported there,
    the node's taint tolerated by the operator, the BrokerCluster and the test pod."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": PULL_POLICY},
        # Only the release's namespace (a Role there), like the other tests' operators.
        "operator": {"tolerations": TOLERATIONS, "watchNamespaces": [namespace]},
        "brokerCluster": {
            "spec": {
                "coordinator": {"tolerations": TOLERATIONS},
                "commServers": {"tolerations": TOLERATIONS},
            }
        },
        "tests": {"tolerations": TOLERATIONS},
    }


@dataclass(frozen=True)
class Release:
    """A helm release of the chart: its name, namespace and helm's home."""

    plane: ControlPlane
    name: str
    namespace: str
    home: Path

    def __call__(self, *args: str, timeout: float = 120) -> HelmResult:
        return run_helm(
            *args,
            "--namespace",
            self.namespace,
            kubeconfig=self.plane.kubeconfig,
            home=self.home,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.output}"
        return result.output


@pytest.fixture
def release(control_plane: ControlPlane, admin: httpx.Client, tmp_path: Path) -> Iterator[Release]:
    """A release name and namespace; whatever the test leaves is uninstalled, and the
    namespace deleted, waiting until its pods are gone from the node."""
    found = Release(control_plane, unique("wb"), unique("helm"), tmp_path / "helm-home")
    try:
        yield found
    finally:
        found("uninstall", found.name, "--ignore-not-found", "--wait", "--timeout", "120s")
        wait_namespace_gone(admin, found.namespace, timeout=GONE_TIMEOUT)


def test_helm_install_and_helm_test_round_trip_on_the_node(
    broker_image: str,  # the node's fixture too: the image is imported there
    admin: httpx.Client,
    release: Release,
    tmp_path: Path,
) -> None:
    phases = Phases("helm")
    namespace = release.namespace
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(chart_values(broker_image, namespace)))
    # helm installs crds/ only where the CRD is absent and never upgrades it; the control
    # plane may hold an older one (without the placement fields, which it would prune),
    # so the CRD is applied first, as the chart's README says for upgrades.
    install_crd(release.plane, tmp_path)
    out = release.ok(
        "install", release.name, str(CHART), "--create-namespace", "--values", str(values)
    )
    assert "STATUS: deployed" in out, out
    phases.mark("helm install")
    manifest = release.ok("get", "manifest", release.name)
    objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
    (cluster,) = [o for o in objects if o["kind"] == "BrokerCluster"]
    name = cluster["metadata"]["name"]
    assert cluster["spec"]["image"] == broker_image, cluster["spec"]
    operator = operator_ready(
        admin, namespace, f"app.kubernetes.io/instance={release.name},{OPERATOR_SELECTOR}", phases
    )
    on_the_node([operator], broker_image)
    coordinators, servers = brokers_ready(admin, namespace, name, phases)
    on_the_node([*coordinators, *servers], broker_image)
    status = wait_running(admin, namespace, name, timeout=RUNNING_TIMEOUT)
    phases.mark("BrokerCluster Running")
    assert status["readyServers"] == SERVERS, status
    assert status["readyCoordinators"] == len(coordinators) >= 1, status

    # The chart's test pod: two clients through the coordinator, a message round trip.
    # Without --logs: the pod is deleted once it succeeds (hook-succeeded), before
    # helm (before 4.1) asks for its log; a failed one stays, and describe() shows it.
    result = release(
        "test", release.name, "--timeout", f"{HELM_TEST_TIMEOUT}s", timeout=HELM_TEST_TIMEOUT + 60
    )
    phases.mark("helm test")
    assert result.returncode == 0, f"helm test:\n{result.output}\n{describe(admin, namespace)}"
    print(result.output)
    suite = [line.split() for line in result.output.splitlines()]
    assert ["TEST", "SUITE:", f"{release.name}-webrtc-broker-test-roundtrip"] in suite, (
        result.output
    )
    assert ["Phase:", "Succeeded"] in suite, result.output

    out = release.ok("uninstall", release.name, "--wait", "--timeout", "120s")
    assert f'release "{release.name}" uninstalled' in out, out
    assert admin.get(f"{clusters_path(namespace)}/{name}").status_code == 404
    wait_for(
        lambda: not list_pods(admin, namespace),
        timeout=GONE_TIMEOUT,
        what="every pod of the release gone after helm uninstall",
        admin=admin,
        namespaces=(namespace,),
    )
    phases.mark("helm uninstall, pods gone")
    print(phases.summary())
