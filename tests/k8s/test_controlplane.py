"""The local control plane is real Kubernetes: etcd, API server, controllers, scheduler.

Each test works in a namespace of its own, so a control plane started with
``make k8s-up`` can be reused across runs.
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s import hostnet
from tests.k8s.build import KUBERNETES_VERSION
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import poll, run_kubectl, wait_established
from tests.operator.support import CRD_FILE, EXAMPLE_FILE, broker_cluster, load_yaml

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


def until(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    return poll(probe, timeout=timeout, what=what, interval=0.25)


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    with control_plane.client() as http:
        yield http


@pytest.fixture
def namespace(admin: httpx.Client) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    answer = admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert answer.status_code == 201, answer.text
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def crd_installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The project's CRD, applied by kubectl 1.33 and Established by the API server."""
    home = tmp_path_factory.mktemp("kubectl-home")
    out = run_kubectl(control_plane, home, "apply", "-f", str(CRD_FILE))
    assert f"customresourcedefinition.apiextensions.k8s.io/{PLURAL}.{GROUP}" in out
    wait_established(control_plane, home)


def test_server_is_the_pinned_release(admin: httpx.Client) -> None:
    version = admin.get("/version").json()
    assert version["gitVersion"] == KUBERNETES_VERSION
    assert admin.get("/readyz?verbose").status_code == 200
    # Authorization is RBAC (and Node): an anonymous request is not even authenticated.
    with httpx.Client(base_url=str(admin.base_url), verify=False) as anonymous:
        assert anonymous.get("/api/v1/namespaces").status_code == 401


def test_api_server_is_on_its_own_address_in_the_reserved_range(
    control_plane: ControlPlane, admin: httpx.Client
) -> None:
    """Pods will reach the API server at the address the ``kubernetes`` Service lists."""
    address = urlsplit(control_plane.server).hostname
    assert address is not None
    if address == hostnet.LOOPBACK:
        pytest.skip("no interface could be made for the API server here (it needs root)")
    assert ipaddress.ip_address(address) in ipaddress.ip_network(hostnet.RESERVED)
    endpoints = admin.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == [address]
    service = admin.get("/api/v1/namespaces/default/services/kubernetes").json()
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(
        hostnet.RESERVED
    )
    # An address of the range that nothing answers goes nowhere: the blackhole route.
    routes = subprocess.run(
        ["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True, check=True
    )
    assert hostnet.RESERVED in routes.stdout.split(), routes.stdout


def test_crd_schema_and_cel_rules_are_enforced(
    control_plane: ControlPlane, crd_installed: None, namespace: str, tmp_path: Path
) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    with control_plane.client() as http:
        # A CEL rule (x-kubernetes-validations) of the CRD: a real 422 with its message.
        bad = broker_cluster("bad", autoscaling={"minReplicas": 5, "maxReplicas": 2})
        answer = http.post(path, json=bad)
        assert answer.status_code == 422, answer.text
        status = answer.json()
        assert status["reason"] == "Invalid"
        assert "autoscaling.minReplicas must not exceed maxReplicas" in status["message"]

        # The rule on metadata.name, and an OpenAPI schema bound (minimum 1).
        long_name = broker_cluster("x" * 41)
        answer = http.post(path, json=long_name)
        assert answer.status_code == 422, answer.text
        assert "metadata.name must be at most 40 characters" in answer.json()["message"]
        zero = broker_cluster("zero", autoscaling={"minReplicas": 0})
        answer = http.post(path, json=zero)
        assert answer.status_code == 422, answer.text
        assert "spec.autoscaling.minReplicas" in answer.json()["message"]

        # Strict field validation refuses an unknown field (400, a decoding error, not 422);
        # by default it is pruned with a warning.
        unknown = broker_cluster("unknown", color="blue")
        answer = http.post(path, params={"fieldValidation": "Strict"}, json=unknown)
        assert answer.status_code == 400, answer.text
        assert answer.json()["reason"] == "BadRequest"
        assert 'unknown field "spec.color"' in answer.json()["message"]
        answer = http.post(path, json=unknown)
        assert answer.status_code == 201, answer.text
        assert 'unknown field \\"spec.color\\"' in answer.headers.get("warning", "")
        assert "color" not in answer.json()["spec"]

    # The example, applied by kubectl, is stored with the schema's defaults filled in.
    home = tmp_path
    out = run_kubectl(control_plane, home, "apply", "-n", namespace, "-f", str(EXAMPLE_FILE))
    assert f"brokercluster.{GROUP}/demo created" in out
    with control_plane.client() as http:
        stored: dict[str, Any] = http.get(f"{path}/demo").json()
    example = load_yaml(EXAMPLE_FILE)[0]
    assert stored["spec"]["commServers"]["replicas"] == example["spec"]["commServers"]["replicas"]
    assert stored["spec"]["metrics"]["serviceMonitor"]["enabled"] is False  # a default
    assert stored["metadata"]["generation"] == 1


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "webrtc-broker:test"}]},
            },
        },
    }


def test_controllers_and_scheduler_act_on_a_deployment(admin: httpx.Client, namespace: str) -> None:
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    answer = admin.post(f"{apps}/deployments", json=deployment("web"))
    assert answer.status_code == 201, answer.text
    uid = answer.json()["metadata"]["uid"]

    def replica_sets() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = admin.get(f"{apps}/replicasets").json()["items"]
        return items

    (replica_set,) = until(replica_sets, what="the Deployment controller's ReplicaSet")
    assert replica_set["metadata"]["ownerReferences"][0]["uid"] == uid

    def pending_pods() -> list[dict[str, Any]] | None:
        pods: list[dict[str, Any]] = admin.get(f"/api/v1/namespaces/{namespace}/pods").json()[
            "items"
        ]
        # The scheduler has looked at each pod and found no node for it.
        unschedulable = [
            pod
            for pod in pods
            if any(
                c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                for c in pod["status"].get("conditions", [])
            )
        ]
        return unschedulable if len(unschedulable) == 2 else None

    pods = until(pending_pods, what="two Pending pods the scheduler found no node for")
    for pod in pods:
        assert pod["status"]["phase"] == "Pending"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == replica_set["metadata"]["uid"]
        # Admission filled in the namespace's default ServiceAccount and its token volume.
        assert pod["spec"]["serviceAccountName"] == "default"
        assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])

    # Garbage collection by the controller manager: deleting the Deployment removes the rest.
    assert admin.delete(f"{apps}/deployments/web").status_code == 200
    until(lambda: not replica_sets(), what="the ReplicaSet collected")
    until(
        lambda: not admin.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"],
        what="the pods collected",
    )


def test_rbac_refuses_an_unprivileged_service_account(
    control_plane: ControlPlane, admin: httpx.Client, namespace: str
) -> None:
    token = control_plane.service_account_token(namespace, "nobody", seconds=600)
    with control_plane.client(token=token) as user:
        review = user.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review.status_code == 201, review.text
        username = review.json()["status"]["userInfo"]["username"]
        assert username == f"system:serviceaccount:{namespace}:nobody"

        answer = user.get(f"/api/v1/namespaces/{namespace}/pods")
        assert answer.status_code == 403, answer.text
        assert answer.json()["reason"] == "Forbidden"
        assert (
            f'"system:serviceaccount:{namespace}:nobody" cannot list resource "pods"'
            in (answer.json()["message"])
        )

        # A Role bound to it grants exactly what it says, in its namespace only.
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        role = {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
        binding = {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        }
        assert admin.post(f"{rbac}/roles", json=role).status_code == 201
        assert admin.post(f"{rbac}/rolebindings", json=binding).status_code == 201
        until(
            lambda: user.get(f"/api/v1/namespaces/{namespace}/pods").status_code == 200,
            what="the RoleBinding to take effect",
        )
        assert user.get(f"/api/v1/namespaces/{namespace}/pods/x").status_code == 403  # get
        assert user.get("/api/v1/namespaces/default/pods").status_code == 403
        assert user.get("/api/v1/nodes").status_code == 403

    # The audit log names each request: who, which verb on what, and the answer.
    refused = [
        event
        for event in control_plane.audit_events()
        if event["user"].get("username") == f"system:serviceaccount:{namespace}:nobody"
        and event["verb"] == "list"
        and event.get("objectRef", {}).get("resource") == "nodes"
    ]
    assert refused
    assert refused[-1]["responseStatus"]["code"] == 403
