"""The real operator (``webrtc-broker operator``: kopf, resync loop) against the emulator over HTTP.

Each test starts the operator as a child process with a kubeconfig that
points at the emulator, changes BrokerClusters through the emulator's store
(what ``kubectl`` would do) and watches what the operator does through the
API. The emulator plays the other controllers where a test needs them (it
writes a StatefulSet's status as the StatefulSet controller would).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.operator.apiserver import ApiServer, Store
from tests.operator.apiserver.store import MERGE
from tests.operator.support import (
    OperatorProcess,
    broker_cluster,
    condition,
    condition_status,
    operator_process,
    until,
)
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)

NS = "default"
OWNED = [
    ("", "services", "demo-coordinator"),
    ("", "services", "demo-commserver"),
    ("apps", "deployments", "demo-coordinator"),
    ("apps", "statefulsets", "demo-commserver"),
    ("policy", "poddisruptionbudgets", "demo-commserver"),
]


def obj(store: Store, group: str, plural: str, name: str, ns: str = NS) -> dict[str, Any] | None:
    return store.objects.get((group, plural, ns, name))


def owned(store: Store, uid: str) -> list[tuple[str, str, str, str]]:
    """Every object whose owner references name ``uid``."""
    return sorted(
        ident
        for ident, item in store.objects.items()
        if any(ref.get("uid") == uid for ref in item["metadata"].get("ownerReferences") or [])
    )


def cluster(store: Store, name: str = "demo") -> dict[str, Any]:
    return store.get(store.kind(GROUP, VERSION, PLURAL), NS, name)


def patch_cluster(store: Store, patch: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    kind = store.kind(GROUP, VERSION, PLURAL)
    return store.patch(kind, NS, name, patch, content_type=MERGE)


def create_cluster(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    return store.create(store.kind(GROUP, VERSION, PLURAL), NS, body)


def events(store: Store, uid: str) -> list[dict[str, Any]]:
    return [
        item
        for (_, plural, _, _), item in store.objects.items()
        if plural == "events" and item.get("involvedObject", {}).get("uid") == uid
    ]


def replicas_of(store: Store, name: str) -> int:
    """A StatefulSet's ``spec.replicas`` (-1 while it does not exist)."""
    sts = obj(store, "apps", "statefulsets", name)
    return int(sts["spec"]["replicas"]) if sts else -1


async def all_owned(store: Store) -> bool:
    return all(obj(store, *ident) is not None for ident in OWNED)


async def test_create_makes_owned_objects_and_status(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
    await until(lambda: all_owned(store))
    for ident in OWNED:
        item = obj(store, *ident)
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

    status = await until(lambda: cluster(store).get("status", {}).get("conditions"))
    assert status
    current = cluster(store)
    assert current["status"]["observedGeneration"] == 1
    assert current["status"]["coordinatorEndpoint"] == "ws://demo-coordinator.default.svc:9090"
    assert current["status"]["servers"] == 2
    assert current["status"]["readyServers"] == 0
    assert current["status"]["phase"] == "Progressing"
    assert "app.kubernetes.io/component=commserver" in current["status"]["selector"]
    assert {c["type"] for c in current["status"]["conditions"]} == {
        "Ready",
        "Progressing",
        "Degraded",
    }
    assert condition_status(current, "Degraded") == "False"
    assert "finalizers" not in current["metadata"], "no finalizer: deletion never waits for us"
    reasons = {(e["type"], e["reason"]) for e in events(store, uid)}
    assert ("Normal", "Applied") in reasons
    sts = obj(store, "apps", "statefulsets", "demo-commserver")
    assert sts is not None
    assert sts["spec"]["replicas"] == 2


async def test_replica_change_and_scale_update_the_statefulset(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    create_cluster(store, broker_cluster())
    await until(lambda: all_owned(store))
    patch_cluster(store, {"spec": {"commServers": {"replicas": 3}}})

    def replicas() -> int:
        sts = obj(store, "apps", "statefulsets", "demo-commserver")
        return int(sts["spec"]["replicas"]) if sts else -1

    await until(lambda: replicas() == 3)
    await until(lambda: cluster(store)["status"].get("servers") == 3)
    assert cluster(store)["status"]["observedGeneration"] == 2

    # What `kubectl scale brokercluster demo --replicas 4` does: the scale subresource.
    kind = store.kind(GROUP, VERSION, PLURAL)
    store.patch(
        kind, NS, "demo", {"spec": {"replicas": 4}}, content_type=MERGE, subresource="scale"
    )
    await until(lambda: replicas() == 4)


async def test_invalid_spec_sets_degraded_and_deletes_nothing(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
    await until(lambda: all_owned(store))
    await until(lambda: condition(cluster(store), "Degraded"))
    before = {ident: copy.deepcopy(obj(store, *ident)) for ident in OWNED}

    # Passes the CRD's OpenAPI schema but breaks its CEL rule, which older API servers
    # (and the emulator) do not evaluate: the operator must refuse it by itself.
    patch_cluster(store, {"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}})

    def degraded() -> dict[str, Any] | None:
        found = condition(cluster(store), "Degraded")
        return found if found and found["status"] == "True" else None

    found = await until(degraded)
    assert found["reason"] == "InvalidSpec"
    assert "minReplicas (5) must not exceed maxReplicas (2)" in found["message"]
    assert cluster(store)["status"]["phase"] == "Degraded"
    assert cluster(store)["status"]["observedGeneration"] == 2
    warnings = [e for e in events(store, uid) if e["reason"] == "InvalidSpec"]
    assert warnings and warnings[0]["type"] == "Warning"
    # A few resyncs later: every object is still there, untouched.
    await until(lambda: len([e for e in events(store, uid) if e["reason"] == "InvalidSpec"]) == 1)
    await operator_resyncs(operator, 3)
    assert {ident: obj(store, *ident) for ident in OWNED} == before
    assert len([e for e in events(store, uid) if e["reason"] == "InvalidSpec"]) == 1

    patch_cluster(store, {"spec": {"autoscaling": {"minReplicas": 1}}})
    await until(lambda: condition_status(cluster(store), "Degraded") == "False")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"mode": "SharedSecret"},
            "spec.auth: auth.secretRef is required when auth.mode is SharedSecret",
        ),
        (
            {"clients": {"mode": "JWT"}},
            "spec.auth.clients: auth.clients.secretRef is required when auth.clients.mode is JWT",
        ),
    ],
)
async def test_invalid_new_cluster_creates_nothing(
    apiserver: ApiServer, operator: OperatorProcess, auth: dict[str, Any], message: str
) -> None:
    store = apiserver.store
    body = broker_cluster(auth=auth)
    uid = create_cluster(store, body)["metadata"]["uid"]
    found = await until(lambda: condition(cluster(store), "Degraded"))
    assert found["status"] == "True"
    assert message in found["message"]
    assert owned(store, uid) == []


async def operator_resyncs(operator: OperatorProcess, rounds: int) -> None:
    """Wait until the operator has finished ``rounds`` more resync rounds."""

    async def count() -> float:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(f"http://127.0.0.1:{operator.metrics_port}/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("webrtc_broker_operator_resyncs_total ")
        )

    start = await count()
    await until(lambda: _at_least(count, start + rounds), timeout=30)


async def _at_least(count: Any, target: float) -> bool:
    return bool(await count() >= target)


async def test_restart_creates_no_duplicates(
    apiserver: ApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    store = apiserver.store
    async with operator_process(kubeconfig, tmp_path) as first:
        uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
        await until(lambda: all_owned(store))
        await until(lambda: condition(cluster(store), "Ready"))
        await operator_resyncs(first, 2)
    snapshot = copy.deepcopy(store.objects)
    applied_events = len([e for e in events(store, uid) if e["reason"] == "Applied"])
    async with operator_process(kubeconfig, tmp_path) as second:
        await operator_resyncs(second, 3)
    assert owned(store, uid) == sorted(
        ident
        for ident in snapshot
        if ident[1] not in ("events", "brokerclusters")
        and any(
            r.get("uid") == uid for r in snapshot[ident]["metadata"].get("ownerReferences") or []
        )
    )
    for ident in owned(store, uid):
        # Same objects (uid), not even patched (resourceVersion).
        assert store.objects[ident]["metadata"]["uid"] == snapshot[ident]["metadata"]["uid"]
        assert (
            store.objects[ident]["metadata"]["resourceVersion"]
            == snapshot[ident]["metadata"]["resourceVersion"]
        )
    assert len([e for e in events(store, uid) if e["reason"] == "Applied"]) == applied_events


async def test_delete_cleans_up_even_without_the_operator(
    apiserver: ApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    store = apiserver.store
    kind = store.kind(GROUP, VERSION, PLURAL)
    async with operator_process(kubeconfig, tmp_path) as proc:
        uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
        await until(lambda: all_owned(store))
        store.delete(kind, NS, "demo")
        assert owned(store, uid) == []
        await operator_resyncs(proc, 2)
        assert all(obj(store, *ident) is None for ident in OWNED), "nothing was recreated"

        uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
        await until(lambda: all_owned(store))
    # The operator is gone: deletion must not hang on a finalizer.
    store.delete(kind, NS, "demo")
    assert (GROUP, PLURAL, NS, "demo") not in store.objects
    assert owned(store, uid) == []


async def test_drift_is_corrected_and_status_follows_workloads(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    create_cluster(store, broker_cluster())
    await until(lambda: all_owned(store))
    sts_kind = store.kind("apps", "v1", "statefulsets")
    store.patch(sts_kind, NS, "demo-commserver", {"spec": {"replicas": 7}}, content_type=MERGE)
    await until(lambda: replicas_of(store, "demo-commserver") == 2)

    # Play the controllers: every pod ready at the latest revision.
    for plural, name, replicas in (
        ("statefulsets", "demo-commserver", 2),
        ("deployments", "demo-coordinator", 1),
    ):
        current = obj(store, "apps", plural, name)
        assert current is not None
        status = {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }
        if plural == "statefulsets":
            status |= {"currentRevision": "r1", "updateRevision": "r1"}
        store.patch(
            store.kind("apps", "v1", plural),
            NS,
            name,
            {"status": status},
            content_type=MERGE,
            subresource="status",
        )

    await until(lambda: cluster(store)["status"]["phase"] == "Running")
    current = cluster(store)
    assert current["status"]["readyServers"] == 2
    assert current["status"]["replicas"] == 2
    assert current["status"]["coordinatorReady"] is True
    assert condition_status(current, "Ready") == "True"
    assert condition_status(current, "Progressing") == "False"


async def test_topology_service_monitor_and_foreign_objects(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    # An object with the operator's name that it does not own: left alone, reported.
    store.create(
        store.kind("", "v1", "services"),
        "default",
        {"metadata": {"name": "other-coordinator"}, "spec": {"ports": [{"port": 80}]}},
    )
    create_cluster(store, broker_cluster("other"))
    found = await until(lambda: condition(cluster(store, "other"), "Degraded"))
    assert found["reason"] == "NameConflict"
    assert "not owned" in found["message"]
    assert (
        "ownerReferences"
        not in store.objects[("", "services", NS, "other-coordinator")]["metadata"]
    )

    uid = create_cluster(
        store,
        broker_cluster(
            topology={"mode": "Hub", "hubs": 2}, metrics={"serviceMonitor": {"enabled": True}}
        ),
    )["metadata"]["uid"]
    await until(lambda: obj(store, "apps", "statefulsets", "demo-hub"))
    hub = obj(store, "apps", "statefulsets", "demo-hub")
    assert hub is not None and hub["spec"]["replicas"] == 2
    env = {
        e["name"]: e.get("value") for e in hub["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WEBRTC_BROKER_COMMSERVER_ROLE"] == "hub"
    assert obj(store, "policy", "poddisruptionbudgets", "demo-hub")
    # No ServiceMonitor API yet: a warning, not a failure.
    await until(lambda: any(e["reason"] == "ServiceMonitorUnavailable" for e in events(store, uid)))
    assert condition_status(cluster(store), "Degraded") == "False"

    store.create(
        store.kind("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
        None,
        SERVICE_MONITOR_CRD,
    )
    await until(lambda: obj(store, "monitoring.coreos.com", "servicemonitors", "demo"))

    patch_cluster(
        store,
        {"spec": {"topology": {"mode": "Mesh"}, "metrics": {"serviceMonitor": {"enabled": False}}}},
    )
    await until(lambda: obj(store, "apps", "statefulsets", "demo-hub") is None)
    await until(lambda: obj(store, "monitoring.coreos.com", "servicemonitors", "demo") is None)
    assert obj(store, "policy", "poddisruptionbudgets", "demo-hub") is None


SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
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


async def test_metrics_and_health_endpoints(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    create_cluster(apiserver.store, broker_cluster())
    await operator_resyncs(operator, 1)
    async with httpx.AsyncClient(timeout=5) as client:
        health = await client.get(f"http://127.0.0.1:{operator.health_port}/healthz")
        metrics = await client.get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
    assert health.status_code == 200
    text = metrics.text
    assert 'webrtc_broker_operator_reconciles_total{result="ok"}' in text
    # The five of OWNED and the generated server secret.
    assert 'webrtc_broker_operator_objects_applied_total{action="created"} 6.0' in text
    assert 'webrtc_broker_operator_clusters{phase="Progressing"} 1.0' in text
    assert 'webrtc_broker_build_info{service="operator"' in text


@pytest.fixture
async def fake_coordinator() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A coordinator ``/status`` whose answer the test sets (``state["status"]``)."""
    state: dict[str, Any] = {"status": {"servers": [], "clients": 0}}

    async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(state["status"])

    app = aiohttp.web.Application()
    app.router.add_get("/status", status)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/status", state
    finally:
        await runner.cleanup()


async def test_autoscaler_moves_replicas_within_bounds(
    apiserver: ApiServer,
    kubeconfig: Path,
    tmp_path: Path,
    fake_coordinator: tuple[str, dict[str, Any]],
) -> None:
    url, state = fake_coordinator
    store = apiserver.store
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
    async with operator_process(kubeconfig, tmp_path, status_url=url):
        uid = create_cluster(store, broker_cluster(**spec))["metadata"]["uid"]

        def sts_replicas() -> int:
            sts = obj(store, "apps", "statefulsets", "demo-commserver")
            return int(sts["spec"]["replicas"]) if sts else -1

        await until(lambda: sts_replicas() == 3)
        current = cluster(store)
        assert current["spec"]["commServers"]["replicas"] == 3
        assert current["status"]["autoscaler"]["clients"] == 1200
        assert any(e["reason"] == "Scaled" for e in events(store, uid))

        state["status"] = {"servers": [], "clients": 6000}
        await until(lambda: sts_replicas() == 5)  # capped at maxReplicas
        state["status"] = {"servers": [], "clients": 0}
        await until(lambda: sts_replicas() == 1)  # down to minReplicas


async def test_api_failures_degrade_and_recover(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    """An API server refusing writes (here: kmock's fault injection) is a retried Degraded."""
    store = apiserver.store
    failing = {"on": False}

    def refused(request: Any) -> bool:
        return bool(
            failing["on"]
            and request.method == "PATCH"
            and request.url.path.endswith("/statefulsets/demo-commserver")
        )

    apiserver[refused] << 500
    create_cluster(store, broker_cluster())
    await until(lambda: all_owned(store))
    failing["on"] = True
    patch_cluster(store, {"spec": {"commServers": {"maxPeers": 7}}})
    await until(lambda: condition_status(cluster(store), "Degraded") == "True")
    found = condition(cluster(store), "Degraded")
    assert found is not None and found["reason"] == "ApplyFailed"
    assert obj(store, "apps", "statefulsets", "demo-commserver") is not None, "nothing deleted"

    failing["on"] = False
    await until(lambda: condition_status(cluster(store), "Degraded") == "False")

    def max_peers() -> str | None:
        sts = obj(store, "apps", "statefulsets", "demo-commserver")
        assert sts is not None
        env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        return next(str(e["value"]) for e in env if e["name"].endswith("MAX_PEERS"))

    assert max_peers() == "7"
