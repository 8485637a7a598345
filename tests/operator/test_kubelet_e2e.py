"""End to end: the operator's own manifests, run as processes, carry messages between clients.

The operator (real kopf, against the emulator) turns a BrokerCluster into a
Deployment and a StatefulSet; :class:`Kubelet` runs their containers as
local processes exactly as specified there (command, args, env with a
Secret and ``$(VAR)`` references, ports, probes). The probes must pass, two
SDK clients must exchange messages through two comm servers, the status the
operator reports must follow what the "kubelet" reports, and a comm server
must exit within its pod's grace period on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from tests.e2e.helpers import receive, subscribe
from tests.operator.apiserver import ApiServer
from tests.operator.apiserver.store import MERGE
from tests.operator.kubelet import Kubelet, Pod
from tests.operator.support import (
    OperatorProcess,
    broker_cluster,
    condition_status,
    until,
)
from tests.operator.test_operator_kopf import cluster, create_cluster, obj
from webrtc_broker.client import BrokerClient

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cr3t-server-token"


def secret(name: str, **data: str) -> dict[str, object]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


async def test_kubelet_runs_the_operators_manifests(
    apiserver: ApiServer,
    operator: OperatorProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store = apiserver.store
    secrets = store.kind("", "v1", "secrets")
    store.create(secrets, "default", secret("broker-auth", token=SECRET))
    store.create(secrets, "default", secret("turn", username="alice", credential="p4ss"))
    spec = {
        "commServers": {"replicas": 2, "drainSeconds": 2, "batchWindowMilliseconds": 5},
        "auth": {"mode": "SharedSecret", "secretRef": {"name": "broker-auth", "key": "token"}},
        # Loopback only: nothing may leave this machine, even once servers use ICE servers.
        "iceServers": [
            {"urls": ["turn:127.0.0.1:3478"], "credentialsSecretRef": {"name": "turn"}},
        ],
    }
    create_cluster(store, broker_cluster(**spec))
    await until(lambda: obj(store, "apps", "statefulsets", "demo-commserver"))
    await until(lambda: obj(store, "apps", "deployments", "demo-coordinator"))

    kubelet = Kubelet(store, "default", tmp_path)
    try:
        pods = kubelet.schedule()
        assert sorted(p.name for p in pods) == [
            "demo-commserver-0",
            "demo-commserver-1",
            "demo-coordinator-7d9f-0",
        ]
        coordinator = next(p for p in pods if p.name.startswith("demo-coordinator"))
        servers = [p for p in pods if p.name.startswith("demo-commserver")]
        # What the manifests asked for, resolved as a kubelet would.
        assert coordinator.env["WEBRTC_BROKER_COORDINATOR_SERVER_SECRET"] == SECRET
        assert json.loads(coordinator.env["WEBRTC_BROKER_COORDINATOR_ICE_SERVERS"]) == [
            {"urls": ["turn:127.0.0.1:3478"], "username": "alice", "credential": "p4ss"}
        ]
        assert servers[0].env["WEBRTC_BROKER_COMMSERVER_SERVER_SECRET"] == SECRET
        assert servers[0].env["WEBRTC_BROKER_COMMSERVER_BATCH_WINDOW"] == "0.005"
        coordinator_port = coordinator.ports["http"]
        assert f"ws://127.0.0.1:{coordinator_port}" in servers[0].argv
        assert "demo-commserver-0" in servers[0].argv  # --name $(POD_NAME)
        assert servers[0].grace_seconds == 2 + 5

        await kubelet.start(coordinator)
        for pod in servers:
            await kubelet.start(pod)
        for pod in pods:
            await until(lambda pod=pod: probes_pass(kubelet, pod), timeout=40)  # type: ignore[misc]

        await report_ready(apiserver, replicas=2)
        await until(lambda: cluster(store)["status"]["phase"] == "Running")
        assert condition_status(cluster(store), "Ready") == "True"

        await exchange(kubelet, f"ws://127.0.0.1:{coordinator_port}", servers)

        took = await kubelet.stop(servers[1])
        assert servers[1].process is not None
        assert servers[1].process.returncode == 0, servers[1].log()[-2000:]
        assert took < servers[1].grace_seconds
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(kubelet.describe())
            print(kubelet.logs())
        await kubelet.close()


async def probes_pass(kubelet: Kubelet, pod: Pod) -> bool:
    return await kubelet.probe(pod, "livenessProbe") and await kubelet.probe(pod, "readinessProbe")


async def exchange(kubelet: Kubelet, url: str, servers: list[Pod]) -> None:
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


async def both_servers_meshed(kubelet: Kubelet, servers: list[Pod]) -> bool:
    """Each comm server has one of the clients, a link to the other and its subscription."""
    for pod in servers:
        response = await kubelet.http.get(f"http://127.0.0.1:{pod.ports['http']}/status")
        status = response.json()
        if (status["servers"], status["clients"], status["server_topics"]) != (1, 1, 1):
            return False
    return True


async def report_ready(apiserver: ApiServer, replicas: int) -> None:
    """What the StatefulSet and Deployment controllers write once the probes pass."""
    store = apiserver.store
    for plural, name, count in (
        ("statefulsets", "demo-commserver", replicas),
        ("deployments", "demo-coordinator", 1),
    ):
        current = obj(store, "apps", plural, name)
        assert current is not None
        status = {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": count,
            "readyReplicas": count,
            "updatedReplicas": count,
            "availableReplicas": count,
        }
        if plural == "statefulsets":
            status |= {"currentRevision": "rev-1", "updateRevision": "rev-1"}
        kind = store.kind("apps", "v1", plural)
        store.patch(
            kind, "default", name, {"status": status}, content_type=MERGE, subresource="status"
        )
    await asyncio.sleep(0)
