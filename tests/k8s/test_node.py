"""The node is real: pods run in containers, with their own addresses, Services and DNS.

Against the node ``make k8s-up`` grows (``tests/k8s/node/``; started here
and removed afterwards when none runs): a pod of the test image
(``probe``, built here) becomes Ready on the Node through its readiness
probe, runs in containerd with an address of the pod range; the pods of a
Deployment reach each other through a ClusterIP Service by its DNS name
(CoreDNS and kube-proxy); a NodePort Service answers the host on the node's
address; a name outside the cluster does not resolve (there is no upstream);
a pod reaches the API server through the ``kubernetes`` Service with its
ServiceAccount token. The test's objects live in a namespace of its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.k8s.cluster import SERVICE_CIDR, ControlPlane
from tests.k8s.node import DNS_IP, NODE_NAME, POD_CIDR, TOLERATION, Node
from tests.k8s.support import poll

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
REPLICAS = 2


def until(probe: Callable[[], T | None], timeout: float = 120.0, what: str = "") -> T:
    return poll(probe, timeout=timeout, what=what, interval=0.5)


def host_get(url: str) -> httpx.Response:
    # No proxy from the environment: these addresses are on this machine.
    return httpx.get(url, timeout=20, trust_env=False)


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    with control_plane.client(timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def namespace(admin: httpx.Client, node: Node) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    admin.post("/api/v1/namespaces", json={"metadata": {"name": name}}).raise_for_status()
    try:
        yield name
    finally:
        admin.delete(f"/api/v1/namespaces/{name}")


def pod_spec(node: Node) -> dict[str, Any]:
    return {
        # The node's taint keeps the other tests' pods off it; these tolerate it.
        "tolerations": [TOLERATION],
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "probe",
                "image": node.probe_image,
                "imagePullPolicy": "Never",  # built here; there is no registry
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080},
                    "periodSeconds": 1,
                },
            }
        ],
    }


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def echo(admin: httpx.Client, node: Node, namespace: str) -> list[dict[str, Any]]:
    """A Deployment of the probe image behind a ClusterIP Service ``echo`` and a NodePort
    Service ``echo-node``; its ready pods."""
    labels = {"app": "echo"}
    admin.post(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        json={
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec(node)},
            },
        },
    ).raise_for_status()
    for name, kind in (("echo", "ClusterIP"), ("echo-node", "NodePort")):
        admin.post(
            f"/api/v1/namespaces/{namespace}/services",
            json={
                "metadata": {"name": name},
                "spec": {
                    "type": kind,
                    "selector": labels,
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            },
        ).raise_for_status()

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = admin.get(
            f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": "app=echo"}
        ).json()["items"]
        return pods if len(pods) == REPLICAS and all(ready(p) for p in pods) else None

    return until(ready_pods, what="the Deployment's pods Ready")


def probe(pod: dict[str, Any], path: str, **params: str) -> httpx.Response:
    """Ask the probe program in ``pod``, from the host, at the pod's own address."""
    return httpx.get(
        f"http://{pod['status']['podIP']}:8080{path}", params=params, timeout=20, trust_env=False
    )


def test_pod_runs_in_a_container_and_becomes_ready(
    admin: httpx.Client, node: Node, namespace: str
) -> None:
    answer = admin.post(
        f"/api/v1/namespaces/{namespace}/pods",
        json={"metadata": {"name": "single"}, "spec": pod_spec(node)},
    )
    answer.raise_for_status()

    def ready_pod() -> dict[str, Any] | None:
        pod: dict[str, Any] = admin.get(f"/api/v1/namespaces/{namespace}/pods/single").json()
        return pod if ready(pod) else None

    # Ready comes from the kubelet's readiness probe against the container's port.
    pod = until(ready_pod, what="the pod Ready")
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    assert "running" in status["state"]
    assert status["imageID"], "the runtime reports the image it ran"
    # The program answers at the pod's address, with the pod's name as host name.
    assert probe(pod, "/name").text == "single"
    nodes = admin.get(f"/api/v1/nodes/{NODE_NAME}").json()
    addresses = {a["type"]: a["address"] for a in nodes["status"]["addresses"]}
    # The node's address is ours, inside 198.18.0.0/15, never the machine's network's.
    assert ipaddress.ip_address(addresses["InternalIP"]) in ipaddress.ip_network("198.18.0.0/15")


def test_deployment_pods_reach_each_other_through_a_service_by_name(
    admin: httpx.Client, namespace: str, echo: list[dict[str, Any]]
) -> None:
    names = {pod["metadata"]["name"] for pod in echo}
    service = admin.get(f"/api/v1/namespaces/{namespace}/services/echo").json()
    for pod in echo:
        # The short name through the pod's search path; CoreDNS answers the ClusterIP.
        resolved = probe(pod, "/resolve", name="echo").json()
        assert resolved == {"addresses": [service["spec"]["clusterIP"]]}
        assert ipaddress.ip_address(resolved["addresses"][0]) in ipaddress.ip_network(SERVICE_CIDR)
        seen: set[str] = set()

        def every_pod_answered(pod: dict[str, Any] = pod, seen: set[str] = seen) -> bool:
            answer = probe(pod, "/fetch", url=f"http://echo.{namespace}.svc.cluster.local/name")
            # Until kube-proxy has the new endpoints, the Service refuses connections.
            if answer.status_code == 200 and answer.json()["status"] == 200:
                seen.add(answer.json()["body"])
            return seen >= names

        # kube-proxy picks a backend at random: each pod reaches every pod (itself too).
        until(every_pod_answered, what=f"{pod['metadata']['name']} reaching every pod")
        assert seen == names


def test_node_port_answers_the_host(
    admin: httpx.Client, node: Node, namespace: str, echo: list[dict[str, Any]]
) -> None:
    service = admin.get(f"/api/v1/namespaces/{namespace}/services/echo-node").json()
    port = service["spec"]["ports"][0]["nodePort"]

    def answer() -> httpx.Response | None:
        with contextlib.suppress(httpx.TransportError):  # until kube-proxy has the port
            return host_get(f"http://{node.address}:{port}/name")
        return None

    reply = until(answer, what=f"an answer on {node.address}:{port}")
    assert reply.status_code == 200
    assert reply.text in {pod["metadata"]["name"] for pod in echo}


def test_names_outside_the_cluster_do_not_resolve(echo: list[dict[str, Any]]) -> None:
    pod = echo[0]
    # The resolver in the pod is the cluster's DNS, and it answers cluster names...
    assert probe(pod, "/resolve", name="kubernetes.default").json() == {
        "addresses": [str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))]
    }
    # ...but nothing else: there is no upstream.
    answer = probe(pod, "/resolve", name="example.com")
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert "no such host" in error
    assert DNS_IP in error


def test_pod_reaches_the_api_server_through_the_kubernetes_service(
    namespace: str, echo: list[dict[str, Any]]
) -> None:
    answer = probe(echo[0], "/apiserver")
    assert answer.status_code == 200, answer.text
    relayed = answer.json()
    # https://kubernetes.default.svc, its certificate checked with the pod's CA, and
    # the pod's ServiceAccount token accepted by the API server.
    assert relayed["status"] == 201, relayed
    review = json.loads(relayed["body"])
    assert review["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:default"
    )
