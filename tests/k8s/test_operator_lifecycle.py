"""The operator's whole life cycle of a BrokerCluster, on the real API server.

Each test runs ``webrtc-broker operator`` as a process with the token of
``deploy/rbac.yaml``'s ServiceAccount (RBAC enforced), serving one namespace
of the test's own, and changes BrokerClusters as ``kubectl`` would (the
admin's client). What it checks: creation makes the owned objects and the
status; replica changes and the scale subresource reach the StatefulSet; the
server's own validation keeps invalid specs away from the operator; a restart
duplicates and rewrites nothing; deletion is the garbage collector's, with or
without the operator; drift is corrected; Hub topology, ServiceMonitors and
objects of someone else's; the metrics and health endpoints; the autoscaler.

The real controllers run, but no node does: pods are created and stay
Pending. So the status is asserted as it is without a node (``Ready`` False,
``Progressing`` True, no ready server, the pods the StatefulSet controller
made counted). Readiness with running pods is covered by the process-kubelet
end-to-end test (``test_process_kubelet_e2e.py``), which runs the pods'
containers as local processes.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp.web
import httpx
import pytest

from broker_operator import GROUP, VERSION
from tests.k8s.brokerclusters import (
    OWNED_KINDS,
    Namespace,
    env_of,
    operator_resyncs,
    owned_idents,
    replicas,
    running_operator,
    scrape,
)
from tests.k8s.support import OperatorIdentity
from tests.operator.support import broker_cluster, condition, condition_status, until
from tests.support import free_port

pytestmark = pytest.mark.timeout(240)

OWNED = owned_idents("demo")
WRITES = ("create", "update", "patch", "delete", "deletecollection")


@pytest.fixture
def admin(operator_identity: OperatorIdentity) -> Iterator[httpx.Client]:
    with operator_identity.plane.client() as client:
        yield client


@pytest.fixture
def ns(operator_identity: OperatorIdentity, admin: httpx.Client) -> Namespace:
    return Namespace(admin, operator_identity.clusters_namespace)


async def test_create_makes_owned_objects_and_status(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path):
        uid = ns.create(broker_cluster())["metadata"]["uid"]
        await until(lambda: ns.all_exist(OWNED), timeout=60)

        def reported() -> dict[str, Any] | None:
            current = ns.cluster()
            # The StatefulSet controller made both pods (Parallel), Pending without a node.
            status = current.get("status") or {}
            return current if status.get("conditions") and status.get("replicas") == 2 else None

        current = await until(reported, timeout=60)
    for ident in OWNED:
        item = ns.get(*ident)
        assert item is not None
        assert item["metadata"]["ownerReferences"] == [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "BrokerCluster",
                "name": "demo",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = item["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "webrtc-broker-operator"

    status = current["status"]
    assert status["observedGeneration"] == 1
    assert status["coordinatorEndpoint"] == f"ws://demo-coordinator.{ns.name}.svc:9090"
    assert status["servers"] == 2
    assert status["readyServers"] == 0
    assert status["coordinatorReady"] is False
    assert status["phase"] == "Progressing"
    assert "app.kubernetes.io/component=commserver" in status["selector"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}
    assert condition_status(current, "Ready") == "False"
    assert condition_status(current, "Progressing") == "True"
    assert condition_status(current, "Degraded") == "False"
    assert "finalizers" not in current["metadata"], "no finalizer: deletion never waits for us"
    reasons = {(e["type"], e["reason"]) for e in ns.events(uid)}
    assert ("Normal", "Applied") in reasons
    sts = ns.get("apps", "statefulsets", "demo-commserver")
    assert sts is not None and sts["spec"]["replicas"] == 2


async def test_replica_change_and_scale_update_the_statefulset(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path):
        ns.create(broker_cluster())
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        answer = ns.patch({"spec": {"commServers": {"replicas": 3}}})
        assert answer.status_code == 200, answer.text
        await until(lambda: replicas(ns) == 3, timeout=60)
        await until(lambda: ns.cluster().get("status", {}).get("servers") == 3, timeout=60)
        assert ns.cluster()["status"]["observedGeneration"] == 2

        # What `kubectl scale brokercluster demo --replicas 4` does: the scale subresource.
        answer = ns.patch({"spec": {"replicas": 4}}, subresource="scale")
        assert answer.status_code == 200, answer.text
        assert ns.cluster()["spec"]["commServers"]["replicas"] == 4
        await until(lambda: replicas(ns) == 4, timeout=60)


async def test_invalid_spec_is_refused_by_the_server_and_changes_nothing(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    """The CRD's CEL rule refuses the patch; the operator's own check of the same rule
    (for servers that do not evaluate CEL) is unreachable here and unit-tested in
    test_logic.py. What must hold: nothing the operator made changes."""
    async with running_operator(operator_identity, tmp_path) as operator:
        ns.create(broker_cluster())
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        await until(lambda: condition(ns.cluster(), "Degraded"), timeout=60)
        await operator_resyncs(operator, 1)
        before = {ident: ns.get(*ident) for ident in OWNED}

        answer = ns.patch({"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}})
        assert answer.status_code == 422, answer.text
        assert "autoscaling.minReplicas must not exceed maxReplicas" in answer.text
        await operator_resyncs(operator, 3)
    current = ns.cluster()
    assert current["metadata"]["generation"] == 1
    assert condition_status(current, "Degraded") == "False"
    after = {ident: ns.get(*ident) for ident in OWNED}
    assert {i: _identity(o) for i, o in after.items()} == {
        i: _identity(o) for i, o in before.items()
    }


def _identity(item: dict[str, Any] | None) -> tuple[str, int] | None:
    """An object's uid and spec generation: the same object, its spec unchanged."""
    if item is None:
        return None
    return item["metadata"]["uid"], int(item["metadata"].get("generation", 0))


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"mode": "SharedSecret"}, "auth.secretRef is required when auth.mode is SharedSecret"),
        (
            {"clients": {"mode": "JWT"}},
            "auth.clients.secretRef is required when auth.clients.mode is JWT",
        ),
    ],
)
async def test_invalid_new_cluster_creates_nothing(
    operator_identity: OperatorIdentity,
    ns: Namespace,
    tmp_path: Path,
    auth: dict[str, Any],
    message: str,
) -> None:
    async with running_operator(operator_identity, tmp_path) as operator:
        answer = ns.admin.post(ns.path(GROUP, "brokerclusters"), json=broker_cluster(auth=auth))
        assert answer.status_code == 422, answer.text
        assert message in answer.text
        await operator_resyncs(operator, 2)
    for group, _, plural in OWNED_KINDS:
        items = ns.admin.get(ns.path(group, plural)).json()["items"]
        assert items == [], items
    assert ns.admin.get(ns.path(GROUP, "brokerclusters")).json()["items"] == []


def _timestamp(event: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])


async def test_restart_creates_no_duplicates(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path) as first:
        uid = ns.create(broker_cluster())["metadata"]["uid"]
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        await until(lambda: condition(ns.cluster(), "Ready"), timeout=60)
        await operator_resyncs(first, 2)
    snapshot = ns.owned(uid)
    applied = len(ns.reasons(uid, "Applied"))
    restarted = datetime.datetime.now(datetime.UTC)
    async with running_operator(operator_identity, tmp_path) as second:
        await operator_resyncs(second, 3)
    again = ns.owned(uid)
    assert sorted(again) == sorted(snapshot)
    assert {i for i in again if i[1] == "secrets"} == {("", "secrets", "demo-server-secret")}
    for ident, item in again.items():
        # The same objects (uid), their spec never changed (generation).
        before = snapshot[ident]["metadata"]
        assert item["metadata"]["uid"] == before["uid"], ident
        assert item["metadata"].get("generation") == before.get("generation"), ident
    # The controllers keep writing the workloads' status, so resourceVersions move; the
    # audit log tells whether the restarted operator wrote any of its objects.
    second_run = [e for e in operator_identity.audit_events() if _timestamp(e) >= restarted]
    assert {e["verb"] for e in second_run} >= {"get", "list", "watch"}, "its requests are seen"
    writes = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"))
        for e in second_run
        if e["verb"] in WRITES
        and e.get("responseStatus", {}).get("code", 0) < 300  # a create met by 409: no write
        and e.get("objectRef", {}).get("namespace") == ns.name
        and e["objectRef"].get("resource") not in ("events", "brokerclusters")
    ]
    assert writes == []
    assert len(ns.reasons(uid, "Applied")) == applied


async def test_delete_cleans_up_even_without_the_operator(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path) as operator:
        uid = ns.create(broker_cluster())["metadata"]["uid"]
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        ns.delete()
        # The garbage collector removes what the BrokerCluster owned, in the background.
        await until(lambda: not ns.owned(uid), timeout=90)
        await operator_resyncs(operator, 2)
        assert ns.none_exist(OWNED), "nothing was recreated"

        uid = ns.create(broker_cluster())["metadata"]["uid"]
        await until(lambda: ns.all_exist(OWNED), timeout=60)
    # The operator is gone: no finalizer holds the deletion.
    ns.delete()
    assert ns.admin.get(ns.path(GROUP, "brokerclusters", "demo")).status_code == 404
    await until(lambda: not ns.owned(uid), timeout=90)


async def test_drift_is_corrected_and_status_follows_workloads(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path):
        uid = ns.create(broker_cluster())["metadata"]["uid"]
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        answer = ns.admin.patch(
            ns.path("apps", "statefulsets", "demo-commserver"),
            json={"spec": {"replicas": 7}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.status_code == 200, answer.text
        await until(lambda: replicas(ns) == 2, timeout=60)
        # An owned object deleted by hand is made again (a new object).
        service = ns.get("", "services", "demo-coordinator")
        assert service is not None
        ns.admin.delete(ns.path("", "services", "demo-coordinator"))

        def remade() -> bool:
            again = ns.get("", "services", "demo-coordinator")
            return again is not None and again["metadata"]["uid"] != service["metadata"]["uid"]

        await until(remade, timeout=60)
        again = ns.get("", "services", "demo-coordinator")
        assert again is not None
        assert [r["uid"] for r in again["metadata"]["ownerReferences"]] == [uid]

        # The status follows what the StatefulSet controller reports: both pods exist
        # (the replicas patched to 7 are gone again), none is ready without a node.
        def settled() -> dict[str, Any] | None:
            sts = ns.get("apps", "statefulsets", "demo-commserver") or {}
            current = ns.cluster()
            made = sts.get("status", {}).get("replicas")
            return current if made == 2 and current["status"].get("replicas") == 2 else None

        current = await until(settled, timeout=90)
    assert current["status"]["readyServers"] == 0
    assert current["status"]["coordinatorReady"] is False
    assert current["status"]["phase"] == "Progressing"
    assert condition_status(current, "Ready") == "False"
    assert condition_status(current, "Progressing") == "True"


async def test_topology_and_foreign_objects(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path):
        # An object with the operator's name that it does not own: left alone, reported.
        answer = ns.admin.post(
            ns.path("", "services"),
            json={"metadata": {"name": "other-coordinator"}, "spec": {"ports": [{"port": 80}]}},
        )
        assert answer.status_code == 201, answer.text
        ns.create(broker_cluster("other"))

        def conflict() -> dict[str, Any] | None:
            found = condition(ns.cluster("other"), "Degraded")
            return found if found and found["status"] == "True" else None

        found = await until(conflict, timeout=60)
        assert found["reason"] == "NameConflict"
        assert "not owned" in found["message"]
        foreign = ns.get("", "services", "other-coordinator")
        assert foreign is not None and "ownerReferences" not in foreign["metadata"]

        uid = ns.create(broker_cluster(topology={"mode": "Hub", "hubs": 2}))["metadata"]["uid"]
        hub = await until(lambda: ns.get("apps", "statefulsets", "demo-hub"), timeout=60)
        assert hub["spec"]["replicas"] == 2
        assert env_of(hub)["WEBRTC_BROKER_COMMSERVER_ROLE"] == "hub"
        await until(lambda: ns.get("policy", "poddisruptionbudgets", "demo-hub"), timeout=60)
        assert ("apps", "statefulsets", "demo-hub") in ns.owned(uid)

        answer = ns.patch({"spec": {"topology": {"mode": "Mesh"}}})
        assert answer.status_code == 200, answer.text
        await until(lambda: ns.get("apps", "statefulsets", "demo-hub") is None, timeout=60)
        await until(
            lambda: ns.get("policy", "poddisruptionbudgets", "demo-hub") is None, timeout=60
        )
        assert condition_status(ns.cluster(), "Degraded") == "False"


async def test_coordinator_replicas_and_their_budget_follow_the_spec(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    """Two replicas by default with a budget; one has none (it would block drains), and
    the budget left from two is deleted; three bring it back."""
    budget = ("policy", "poddisruptionbudgets", "demo-coordinator")
    deployment = ("apps", "deployments", "demo-coordinator")

    def coordinators(count: int) -> dict[str, Any] | None:
        found = ns.get(*deployment)
        return found if found is not None and found["spec"]["replicas"] == count else None

    async with running_operator(operator_identity, tmp_path):
        ns.create(broker_cluster())
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        made = await until(lambda: coordinators(2), timeout=60)
        assert made["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        peers = ns.get("", "services", "demo-coordinator-peers")
        assert peers is not None and peers["spec"]["clusterIP"] == "None"
        assert peers["spec"]["publishNotReadyAddresses"] is True
        servers = ns.get("apps", "statefulsets", "demo-commserver")
        assert servers is not None
        env = env_of(servers)
        assert env["WEBRTC_BROKER_COMMSERVER_COORDINATOR_DNS"] == (
            f"demo-coordinator-peers.{ns.name}.svc"
        )
        await until(lambda: ns.cluster().get("status", {}).get("coordinators") == 2, timeout=60)
        assert ns.cluster()["status"]["readyCoordinators"] == 0, "no node here"

        answer = ns.patch({"spec": {"coordinator": {"replicas": 1}}})
        assert answer.status_code == 200, answer.text
        await until(lambda: coordinators(1), timeout=60)
        await until(lambda: ns.get(*budget) is None, timeout=60)
        await until(lambda: ns.cluster().get("status", {}).get("coordinators") == 1, timeout=60)

        answer = ns.patch({"spec": {"coordinator": {"replicas": 3}}})
        assert answer.status_code == 200, answer.text
        await until(lambda: coordinators(3), timeout=60)
        created = await until(lambda: ns.get(*budget), timeout=60)
        assert created["spec"]["maxUnavailable"] == 1
        assert condition_status(ns.cluster(), "Degraded") == "False"


SERVICE_MONITORS = "servicemonitors.monitoring.coreos.com"
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": SERVICE_MONITORS},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


async def test_service_monitor_follows_the_spec_once_its_api_exists(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    """The ServiceMonitor CRD is cluster-wide and its name fixed: this test installs it
    for a few seconds and removes it. Another test that needs the API missing and runs
    at that moment on the same server sees it (tests/k8s/test_operator_resync.py)."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    admin = ns.admin
    assert admin.get(f"{crds}/{SERVICE_MONITORS}").status_code == 404, "left by another run?"
    async with running_operator(operator_identity, tmp_path):
        uid = ns.create(broker_cluster(metrics={"serviceMonitor": {"enabled": True}}))
        uid = uid["metadata"]["uid"]
        # No ServiceMonitor API yet: a warning, not a failure.
        await until(lambda: ns.reasons(uid, "ServiceMonitorUnavailable"), timeout=60)
        assert condition_status(ns.cluster(), "Degraded") == "False"
        answer = admin.post(crds, json=SERVICE_MONITOR_CRD)
        assert answer.status_code == 201, answer.text
        try:
            monitor = await until(
                lambda: ns.get("monitoring.coreos.com", "servicemonitors", "demo"), timeout=60
            )
            assert [r["uid"] for r in monitor["metadata"]["ownerReferences"]] == [uid]
            answer = ns.patch({"spec": {"metrics": {"serviceMonitor": {"enabled": False}}}})
            assert answer.status_code == 200, answer.text
            await until(
                lambda: ns.get("monitoring.coreos.com", "servicemonitors", "demo") is None,
                timeout=60,
            )
            assert condition_status(ns.cluster(), "Degraded") == "False"
        finally:
            admin.delete(f"{crds}/{SERVICE_MONITORS}")


async def test_metrics_and_health_endpoints(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path) as operator:
        ns.create(broker_cluster())
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        await operator_resyncs(operator, 1)
        async with httpx.AsyncClient(timeout=5) as client:
            health = await client.get(f"http://127.0.0.1:{operator.health_port}/healthz")
        text = await scrape(operator.metrics_port)
    assert health.status_code == 200
    assert 'webrtc_broker_operator_reconciles_total{result="ok"}' in text
    # Every object of OWNED and the generated server secret.
    created = len(OWNED) + 1
    assert f'webrtc_broker_operator_objects_applied_total{{action="created"}} {created}.0' in text
    assert 'webrtc_broker_operator_clusters{phase="Progressing"} 1.0' in text
    assert 'webrtc_broker_build_info{service="operator"' in text


@pytest.fixture
async def fake_coordinator() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A coordinator ``/status`` whose answer the test sets (``state["status"]``): the
    real one would run in a pod, and no pod runs without a node."""
    state: dict[str, Any] = {"status": {"servers": [], "clients": 0}}

    async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(state["status"])

    app = aiohttp.web.Application()
    app.router.add_get("/status", status)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/status", state
    finally:
        await runner.cleanup()


async def test_autoscaler_moves_replicas_within_bounds(
    operator_identity: OperatorIdentity,
    ns: Namespace,
    tmp_path: Path,
    fake_coordinator: tuple[str, dict[str, Any]],
) -> None:
    url, state = fake_coordinator
    state["status"] = {
        "servers": [{"alias": 1, "name": "demo-commserver-0", "role": "server", "clients": 1200}],
        "clients": 1200,
    }
    spec = {
        "commServers": {"replicas": 1},
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetClientsPerServer": 500,
            "scaleDownDelaySeconds": 0,
        },
    }
    async with running_operator(operator_identity, tmp_path, status_url=url):
        uid = ns.create(broker_cluster(**spec))["metadata"]["uid"]
        await until(lambda: replicas(ns) == 3, timeout=60)
        current = ns.cluster()
        assert current["spec"]["commServers"]["replicas"] == 3
        await until(
            lambda: ns.cluster().get("status", {}).get("autoscaler", {}).get("clients") == 1200,
            timeout=60,
        )
        assert ns.reasons(uid, "Scaled")

        state["status"] = {"servers": [], "clients": 6000}
        await until(lambda: replicas(ns) == 5, timeout=60)  # capped at maxReplicas
        state["status"] = {"servers": [], "clients": 0}
        await until(lambda: replicas(ns) == 1, timeout=60)  # down to minReplicas
