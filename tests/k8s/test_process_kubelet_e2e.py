"""End to end on the real control plane: the operator's pods, run as processes, carry messages.

The operator (with ``deploy/rbac.yaml``'s identity, serving the test's
namespace) turns a BrokerCluster into a Deployment and a StatefulSet; the
real controllers make their pods, the real scheduler binds them to the node
a :class:`ProcessKubelet` registered, and that "kubelet" runs each container
as a local process exactly as the pod specifies it (command, args, env with
Secrets and ``$(VAR)`` references, ports, probes), reporting the pods'
status through the API. This proves that:

- the operator's pods are schedulable on a single node (nothing in their
  affinity, resources or security context keeps them Pending);
- what the pod specs ask for, resolved as a kubelet would, makes a working
  cluster: the probes pass, and two SDK clients exchange messages through
  two comm servers;
- the status follows what the kubelet reports: the StatefulSet's and
  Deployment's controllers count the pods ready, and the BrokerCluster
  becomes ``Running`` and ``Ready``;
- a comm server deleted through the API exits on SIGTERM by itself within
  its pod's grace period, and the StatefulSet controller then makes the pod
  again, which runs and becomes ready.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.naming import COORDINATOR_PORT
from tests.e2e.helpers import receive, subscribe
from tests.k8s.processkubelet import Pod, ProcessKubelet
from tests.k8s.support import OperatorIdentity
from tests.operator.support import broker_cluster, condition_status, until
from webrtc_broker.client import BrokerClient

pytestmark = pytest.mark.timeout(300)

SECRET = "s3cr3t-server-token"


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


async def test_process_kubelet_runs_the_operators_pods(
    operator_identity: OperatorIdentity, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    namespace = operator_identity.clusters_namespace
    plane = operator_identity.plane
    spec = {
        # One coordinator: process pods share 127.0.0.1, so its peers Service leads to one
        # replica (see processkubelet); replicas of their own are test_coordinator_ha_e2e's.
        "coordinator": {"replicas": 1},
        "commServers": {"replicas": 2, "drainSeconds": 2, "batchWindowMilliseconds": 5},
        "auth": {"mode": "SharedSecret", "secretRef": {"name": "broker-auth", "key": "token"}},
        # Loopback only: nothing may leave this machine, even once servers use ICE servers.
        "iceServers": [
            {"urls": ["turn:127.0.0.1:3478"], "credentialsSecretRef": {"name": "turn"}},
        ],
    }
    operator = operator_identity.operator(tmp_path, namespaces=(namespace,))
    kubelet = ProcessKubelet(plane, namespace, tmp_path)
    with plane.client() as admin:
        try:
            for body in (
                secret("broker-auth", token=SECRET),
                secret("turn", username="alice", credential="p4ss"),
            ):
                answer = admin.post(f"/api/v1/namespaces/{namespace}/secrets", json=body)
                assert answer.status_code == 201, answer.text
            await kubelet.start()
            # The node lifecycle controller lifts the not-ready taint of a new node.
            await until(kubelet.node_ready, timeout=60, interval=0.5)
            await operator.start()
            crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
            answer = admin.post(crs, json=broker_cluster(**spec))
            assert answer.status_code == 201, answer.text

            coordinator, *servers = await until(
                lambda: running(kubelet, servers=2), timeout=120, interval=0.5
            )
            url = check_resolved(admin, kubelet, coordinator, servers)
            for pod in (coordinator, *servers):
                await until(lambda pod=pod: probes_pass(kubelet, pod), timeout=60)  # type: ignore[misc]
            await until_ready(admin, namespace)

            await exchange(kubelet, url, servers)

            await delete_and_replace(kubelet, servers[1])
            await until_ready(admin, namespace)

            assert all(pod.liveness_failures == 0 for pod in kubelet.pods.values())
            assert not kubelet.errors, kubelet.errors
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(kubelet.describe())
                print(kubelet.logs())
                print(operator.log()[-4000:])
            code = await operator.stop()
            await kubelet.close()
        assert admin.get(f"/api/v1/nodes/{kubelet.node}").status_code == 404
    assert code == 0, operator.log()
    assert "Traceback" not in operator.log(), operator.log()


def check_resolved(
    admin: httpx.Client, kubelet: ProcessKubelet, coordinator: Pod, servers: list[Pod]
) -> str:
    """What the pod specs asked for, resolved as a kubelet would; the coordinator's URL."""
    assert [pod.name for pod in servers] == ["demo-commserver-0", "demo-commserver-1"]
    bound = admin.get(f"/api/v1/namespaces/{coordinator.namespace}/pods/{coordinator.name}")
    assert bound.json()["spec"]["nodeName"] == kubelet.node
    assert coordinator.env["WEBRTC_BROKER_COORDINATOR_SERVER_SECRET"] == SECRET
    assert json.loads(coordinator.env["WEBRTC_BROKER_COORDINATOR_ICE_SERVERS"]) == [
        {"urls": ["turn:127.0.0.1:3478"], "username": "alice", "credential": "p4ss"}
    ]
    assert servers[0].env["WEBRTC_BROKER_COMMSERVER_SERVER_SECRET"] == SECRET
    assert servers[0].env["WEBRTC_BROKER_COMMSERVER_BATCH_WINDOW"] == "0.005"
    # The comm servers find the coordinator through its peers Service (the A records
    # become that Service's listener here); clients dial its client Service.
    peers = kubelet.service_url("demo-coordinator-peers", COORDINATOR_PORT)
    urls = json.loads(servers[0].env["WEBRTC_BROKER_COMMSERVER_COORDINATOR_URLS"])
    assert urls == [peers], servers[0].env
    assert "WEBRTC_BROKER_COMMSERVER_COORDINATOR_DNS" not in servers[0].env
    url = kubelet.service_url("demo-coordinator", COORDINATOR_PORT)
    assert "demo-commserver-0" in servers[0].argv  # --name $(POD_NAME)
    assert servers[0].grace_seconds == 2 + 5
    return url


async def until_ready(admin: httpx.Client, namespace: str) -> None:
    """The real controllers count the pods the kubelet reports ready; the operator follows."""
    apps = f"/apis/apps/v1/namespaces/{namespace}"

    def workloads_ready() -> bool:
        sts = admin.get(f"{apps}/statefulsets/demo-commserver").json()["status"]
        deploy = admin.get(f"{apps}/deployments/demo-coordinator").json()["status"]
        return bool(sts.get("readyReplicas") == 2 and deploy.get("availableReplicas") == 1)

    await until(workloads_ready, timeout=60, interval=0.5)
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    def cluster_running() -> dict[str, Any] | None:
        obj: dict[str, Any] = admin.get(f"{crs}/demo").json()
        return obj if (obj.get("status") or {}).get("phase") == "Running" else None

    obj = await until(cluster_running, timeout=60, interval=0.5)
    assert condition_status(obj, "Ready") == "True", obj["status"]


async def delete_and_replace(kubelet: ProcessKubelet, leaving: Pod) -> None:
    """Deleted through the API: SIGTERM, a drain, an exit of its own within the grace period,
    the kubelet's final delete; then the StatefulSet controller makes the pod again."""
    answer = await kubelet.api.delete(f"/api/v1/namespaces/{leaving.namespace}/pods/{leaving.name}")
    assert answer.status_code == 200, answer.text
    await until(lambda: leaving.deleted, timeout=leaving.grace_seconds + 30)
    assert leaving.exit is not None
    assert not leaving.exit.killed, leaving.log()[-2000:]  # SIGKILL: the grace period ran out
    assert leaving.exit.code == 0, leaving.log()[-2000:]

    def replaced() -> Pod | None:
        again = [p for p in kubelet.running(leaving.name) if p.ready]
        return again[0] if again and again[0].uid != leaving.uid else None

    await until(replaced, timeout=120, interval=0.5)


def running(kubelet: ProcessKubelet, servers: int) -> list[Pod] | None:
    """The coordinator's pod and the comm servers' pods, once all run here."""
    coordinators = kubelet.running("demo-coordinator-")
    found = kubelet.running("demo-commserver-")
    if len(coordinators) != 1 or len(found) != servers:
        return None
    return [*coordinators, *found]


async def probes_pass(kubelet: ProcessKubelet, pod: Pod) -> bool:
    return await kubelet.probe(pod, "livenessProbe") and await kubelet.probe(pod, "readinessProbe")


async def exchange(kubelet: ProcessKubelet, url: str, servers: list[Pod]) -> None:
    """Two clients, one on each comm server, exchange a message each way."""
    alice = await BrokerClient.connect(url, "alice", timeout=30)
    bob = await BrokerClient.connect(url, "bob", timeout=30)
    try:
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await until(lambda: both_servers_meshed(kubelet, servers), timeout=30)
        alice.publish("room", b"hello from alice", reliable=True)
        got = await receive(bob, timeout=20)
        assert (got.sender, got.body) == (alice.alias, b"hello from alice")
        bob.publish("room", b"hello from bob", reliable=True)
        got = await receive(alice, timeout=20)
        assert (got.sender, got.body) == (bob.alias, b"hello from bob")
    finally:
        await alice.close()
        await bob.close()


async def both_servers_meshed(kubelet: ProcessKubelet, servers: list[Pod]) -> bool:
    """Each comm server has one of the clients, a link to the other and its subscription."""
    for pod in servers:
        response = await kubelet.http.get(f"http://127.0.0.1:{pod.ports['http']}/status")
        status = response.json()
        if (status["servers"], status["clients"], status["server_topics"]) != (1, 1, 1):
            return False
    return True
