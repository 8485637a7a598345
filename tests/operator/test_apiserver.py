"""The emulator against what the Kubernetes API documents (API concepts, garbage collection).

Each behaviour the operator's tests rely on is checked here over HTTP, so
that a passing operator test means the operator would behave the same on a
real API server, as far as these behaviours go.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.operator.apiserver import ApiServer
from tests.operator.support import broker_cluster, server_url

pytestmark = pytest.mark.timeout(30)

CRS = "/apis/webrtc-broker.io/v1alpha1/namespaces/default/brokerclusters"
SERVICES = "/api/v1/namespaces/default/services"
MERGE = {"Content-Type": "application/merge-patch+json"}


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        status, data = await self.call(method, path, body, **kw)
        assert status in (200, 201), (status, data)
        return data


@pytest.fixture
async def api(apiserver: ApiServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, server_url(apiserver))


def service(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, **meta},
        "spec": {"ports": [{"port": 80}]},
    }


async def test_discovery(api: Api) -> None:
    core = await api.ok("GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    assert "services" in {r["name"] for r in core["resources"]}
    groups = {g["name"] for g in (await api.ok("GET", "/apis"))["groups"]}
    assert {"apps", "policy", "webrtc-broker.io"} <= groups
    ours = await api.ok("GET", "/apis/webrtc-broker.io/v1alpha1")
    resources = {r["name"]: r for r in ours["resources"]}
    assert resources["brokerclusters"]["kind"] == "BrokerCluster"
    assert resources["brokerclusters"]["namespaced"] is True
    assert resources["brokerclusters/scale"]["kind"] == "Scale"
    assert "brokerclusters/status" in resources
    assert (await api.call("GET", "/apis/nothing.io/v1"))[0] == 404


async def test_create_get_and_errors(api: Api) -> None:
    status, created = await api.call("POST", SERVICES, service("a"))
    assert status == 201
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert created["spec"]["clusterIP"].startswith("10.96.")
    fetched = await api.ok("GET", f"{SERVICES}/a")
    assert fetched["metadata"]["uid"] == meta["uid"]
    assert (await api.call("POST", SERVICES, service("a")))[0] == 409
    status, error = await api.call("GET", f"{SERVICES}/missing")
    assert (status, error["kind"], error["reason"]) == (404, "Status", "NotFound")
    status, error = await api.call("POST", "/api/v1/namespaces/nowhere/services", service("b"))
    assert status == 404 and 'namespaces "nowhere" not found' in error["message"]
    bad = service("c")
    bad["spec"]["portz"] = []
    status, error = await api.call("POST", SERVICES, bad)
    assert status == 422 and "portz" in error["message"]


async def test_resource_versions_and_generation(api: Api) -> None:
    first = await api.ok("POST", SERVICES, service("a"))
    rv = int(first["metadata"]["resourceVersion"])
    labelled = await api.ok(
        "PATCH", f"{SERVICES}/a", {"metadata": {"labels": {"x": "1"}}}, headers=MERGE
    )
    assert int(labelled["metadata"]["resourceVersion"]) > rv
    assert labelled["metadata"]["generation"] == 1, "metadata changes keep the generation"
    same = await api.ok(
        "PATCH", f"{SERVICES}/a", {"metadata": {"labels": {"x": "1"}}}, headers=MERGE
    )
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    changed = await api.ok(
        "PATCH",
        f"{SERVICES}/a",
        {"spec": {"ports": [{"port": 81}]}, "metadata": {"labels": {"x": None}}},
        headers=MERGE,
    )
    assert changed["metadata"]["generation"] == 2
    assert "labels" not in changed["metadata"] or "x" not in changed["metadata"]["labels"]
    stale = {"metadata": {"resourceVersion": str(rv)}, "spec": {"ports": [{"port": 82}]}}
    assert (await api.call("PATCH", f"{SERVICES}/a", stale, headers=MERGE))[0] == 409
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": str(rv)}]
    json_patch = {"Content-Type": "application/json-patch+json"}
    assert (await api.call("PATCH", f"{SERVICES}/a", test_op, headers=json_patch))[0] == 422


async def test_status_and_scale_subresources(api: Api) -> None:
    await api.ok("POST", CRS, broker_cluster())
    ignored = await api.ok("PATCH", f"{CRS}/demo", {"status": {"phase": "Running"}}, headers=MERGE)
    assert "status" not in ignored, "the main resource ignores status"
    written = await api.ok(
        "PATCH",
        f"{CRS}/demo/status",
        {"status": {"phase": "Running", "replicas": 2, "selector": "a=b"}, "spec": {"image": "x"}},
        headers=MERGE,
    )
    assert written["status"]["phase"] == "Running"
    assert written["spec"]["image"] != "x", "the status subresource ignores the spec"
    assert written["metadata"]["generation"] == 1
    scale = await api.ok("GET", f"{CRS}/demo/scale")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2, "the CRD's default, through specReplicasPath"
    assert scale["status"] == {"replicas": 2, "selector": "a=b"}
    await api.ok("PATCH", f"{CRS}/demo/scale", {"spec": {"replicas": 5}}, headers=MERGE)
    current = await api.ok("GET", f"{CRS}/demo")
    assert current["spec"]["commServers"]["replicas"] == 5
    assert current["metadata"]["generation"] == 2


async def test_custom_resources_are_defaulted_pruned_and_validated(api: Api) -> None:
    body = broker_cluster()
    body["spec"]["unknownField"] = 1
    created = await api.ok("POST", CRS, body)
    assert "unknownField" not in created["spec"], "pruned"
    assert created["spec"]["topology"] == {"mode": "Mesh", "hubs": 1}, "defaulted"
    strict = broker_cluster("strict")
    strict["spec"]["unknownField"] = 1
    status, error = await api.call("POST", f"{CRS}?fieldValidation=Strict", strict)
    assert status == 422 and 'unknown field "unknownField"' in error["message"]
    status, error = await api.call("POST", CRS, broker_cluster("bad", commServers={"replicas": -3}))
    assert status == 422
    assert "spec.commServers.replicas: -3 is less than the minimum of 0" in error["message"]


async def test_list_and_watch(api: Api, apiserver: ApiServer) -> None:
    await api.ok("POST", SERVICES, service("a", labels={"app": "x"}))
    await api.ok("POST", SERVICES, service("b", labels={"app": "y"}))
    listed = await api.ok("GET", f"{SERVICES}?labelSelector=app%3Dx")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    since = listed["metadata"]["resourceVersion"]

    async def changes() -> None:
        await asyncio.sleep(0.2)
        await api.ok("PATCH", f"{SERVICES}/a", {"metadata": {"labels": {"v": "2"}}}, headers=MERGE)
        await api.ok("DELETE", f"{SERVICES}/a")

    task = asyncio.create_task(changes())
    seen = []
    url = f"{api.base}{SERVICES}?watch=true&resourceVersion={since}&timeoutSeconds=2"
    async with api.session.get(url) as response:
        async for line in response.content:
            if line.strip():
                seen.append(json.loads(line))
    await task
    assert [e["type"] for e in seen] == ["MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
    assert versions == sorted(versions) and versions[0] > int(since)

    url = f"{api.base}{SERVICES}?watch=true&timeoutSeconds=1"
    async with api.session.get(url) as response:
        initial = [json.loads(line) for line in (await response.read()).splitlines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [("ADDED", "b")]


async def test_deletion_finalizers_and_garbage_collection(api: Api) -> None:
    owner = await api.ok("POST", CRS, broker_cluster())
    ref = {
        "apiVersion": "webrtc-broker.io/v1alpha1",
        "kind": "BrokerCluster",
        "name": "demo",
        "uid": owner["metadata"]["uid"],
    }
    child = await api.ok("POST", SERVICES, service("child", ownerReferences=[ref]))
    grandchild_ref = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": "child",
        "uid": child["metadata"]["uid"],
    }
    await api.ok("POST", SERVICES, service("grandchild", ownerReferences=[grandchild_ref]))
    await api.ok("POST", SERVICES, service("kept", ownerReferences=[ref], finalizers=["test/hold"]))
    await api.ok("DELETE", f"{CRS}/demo")
    assert (await api.call("GET", f"{CRS}/demo"))[0] == 404
    assert (await api.call("GET", f"{SERVICES}/child"))[0] == 404
    assert (await api.call("GET", f"{SERVICES}/grandchild"))[0] == 404, "transitively"
    held = await api.ok("GET", f"{SERVICES}/kept")
    assert held["metadata"]["deletionTimestamp"], "a finalizer holds the object"
    await api.ok("PATCH", f"{SERVICES}/kept", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await api.call("GET", f"{SERVICES}/kept"))[0] == 404

    owner = await api.ok("POST", CRS, broker_cluster())
    ref["uid"] = owner["metadata"]["uid"]
    await api.ok("POST", SERVICES, service("orphan", ownerReferences=[ref]))
    await api.ok("DELETE", f"{CRS}/demo?propagationPolicy=Orphan")
    orphan = await api.ok("GET", f"{SERVICES}/orphan")
    assert "ownerReferences" not in orphan["metadata"]

    # A controller that creates a child of an owner deleted meanwhile gets 201, and the
    # garbage collector deletes the dangling dependent.
    late = await api.ok("POST", SERVICES, service("late", ownerReferences=[ref]))
    assert late["metadata"]["name"] == "late"
    assert (await api.call("GET", f"{SERVICES}/late"))[0] == 404


async def test_test_reactions_go_first(api: Api, apiserver: ApiServer) -> None:
    """kmock's DSL still works in front of the store: tests can inject API failures."""
    apiserver["get", "/api/v1/namespaces/default/services/flaky"] << 503
    await api.ok("POST", SERVICES, service("flaky"))
    assert (await api.call("GET", f"{SERVICES}/flaky"))[0] == 503
    assert (await api.call("GET", f"{SERVICES}/flaky"))[0] == 503
