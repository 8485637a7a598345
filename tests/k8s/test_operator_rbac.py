"""The operator, run with the identity ``deploy/rbac.yaml`` gives it, against the real server.

The API server authorizes with RBAC, so a verb the ClusterRole lacks is a
403 here (the emulator grants everything). Its audit log names every request
the operator's ServiceAccount made; the test compares those (resource, verb)
pairs with what ``deploy/rbac.yaml`` grants: everything used is granted, and
whatever is granted but unused is an allowance listed below with its reason.
The operator serves all namespaces, as ``deploy/operator.yaml`` runs it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.support import RBAC_FILE, OperatorIdentity
from tests.operator.support import condition_status, example, load_yaml, until

pytestmark = pytest.mark.timeout(180)

DECISION = "authorization.k8s.io/decision"

Pair = tuple[str, str, str]  # (API group, resource[/subresource], verb)

ALLOWANCES: dict[Pair, str] = {
    ("webrtc-broker.io", "brokerclusters/scale", "patch"): (
        "the autoscaler writes replicas; autoscaling is off in this test"
    ),
    ("webrtc-broker.io", "brokerclusters/finalizers", "update"): (
        "checked by OwnerReferencesPermissionEnforcement admission (off here), never requested"
    ),
    ("apps", "statefulsets", "delete"): "the hub StatefulSet, after switching Hub to Mesh",
    ("policy", "poddisruptionbudgets", "delete"): (
        "the hub's budget after leaving Hub mode, the coordinators' after going to one replica"
    ),
    ("", "pods", "list"): "the addresses comm servers advertise (status.advertised), outside PodIP",
    ("", "pods", "patch"): "a load balancer's address annotated on its pod, LoadBalancer mode",
    ("", "services", "delete"): "per-pod Services of pods scaled away or of a mode left",
    ("apps", "deployments", "delete"): "the managed TURN Deployment, after turn leaves Managed",
    ("monitoring.coreos.com", "servicemonitors", "create"): (
        "only when metrics.serviceMonitor is on (needs the Prometheus Operator's CRD)"
    ),
    ("monitoring.coreos.com", "servicemonitors", "patch"): "as create, on drift",
    ("monitoring.coreos.com", "servicemonitors", "delete"): "after serviceMonitor is turned off",
    ("policy", "poddisruptionbudgets", "patch"): "only when a live budget drifts from the spec",
    ("apiextensions.k8s.io", "customresourcedefinitions", "patch"): (
        "its own CRD's annotation, only when kopf missed a CRD installed after it started"
    ),
    ("", "services", "patch"): "only when a live Service drifts from the spec",
    ("apps", "deployments", "patch"): "only when the live Deployment drifts from the spec",
    ("apps", "statefulsets", "patch"): "only when the live StatefulSet drifts from the spec",
    ("", "events", "list"): (
        "Warning events, read once a rollout passes spec.progressDeadlineSeconds (600 s here)"
    ),
}


def granted_pairs(rules: list[dict[str, Any]]) -> set[Pair]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used_pairs(events: list[dict[str, Any]]) -> set[Pair]:
    pairs = set()
    for event in events:
        ref = event.get("objectRef") or {}
        if "resource" not in ref:
            continue  # a non-resource URL (/version, /api)
        resource = ref["resource"]
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        pairs.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return pairs


def check_requests(
    events: list[dict[str, Any]],
    clusters_ns: str,
    log: str,
    rules: list[dict[str, Any]] | None = None,
) -> None:
    """The operator's requests in the audit log: none refused by RBAC, no unexpected
    failure, and the (resource, verb) pairs exactly those ``rules`` grant (by default
    deploy/rbac.yaml's ClusterRole)."""
    assert events, "no request of the operator in the audit log"
    # RBAC's refusals: the authorizer's decision, recorded on each event. A 403 may also
    # come from admission (a namespace being deleted refuses new objects), with "allow".
    decisions = {e.get("annotations", {}).get(DECISION) for e in events}
    assert "allow" in decisions
    refused = [
        (e["verb"], e.get("requestURI"), e["responseStatus"].get("code"))
        for e in events
        if e.get("annotations", {}).get(DECISION) == "forbid"
    ]
    assert not refused, f"refused: {refused}\n{log}"
    # In the test's namespace every other failure is one the operator expects: 404 on a
    # get is an object not made yet (or the ServiceMonitor kind, not installed here).
    # Cluster-wide, 429 "storage is (re)initializing" answers a list of a CRD just
    # Established, and kopf retries.
    failed = sorted(
        {
            (e["verb"], e["objectRef"].get("resource", ""), e["responseStatus"]["code"])
            for e in events
            if e.get("responseStatus", {}).get("code", 0) >= 400
            and e.get("objectRef", {}).get("namespace") in (clusters_ns, None)
        }
    )
    print("answers >= 400:", failed)
    unexpected = [
        (verb, resource, code)
        for verb, resource, code in failed
        if not (verb == "get" and code == 404)
        and not (verb in ("list", "watch") and resource == PLURAL and code == 429)
    ]
    assert not unexpected, f"{failed}\n{log}"
    used = used_pairs(events)
    if rules is None:
        rules = next(doc for doc in load_yaml(RBAC_FILE) if doc["kind"] == "ClusterRole")["rules"]
    granted = granted_pairs(rules)
    print("used:", *sorted(used), sep="\n  ")
    print("granted but unused:", *sorted(granted - used), sep="\n  ")
    assert used <= granted, sorted(used - granted)
    assert granted - used <= set(ALLOWANCES), sorted(granted - used - set(ALLOWANCES))
    assert "Traceback" not in log, log


async def test_operator_reconciles_with_exactly_its_rbac(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    clusters_ns = operator_identity.clusters_namespace
    control_plane = operator_identity.plane
    body = example()
    body["metadata"]["namespace"] = clusters_ns
    name = body["metadata"]["name"]
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{clusters_ns}/{PLURAL}"
    apps = f"/apis/apps/v1/namespaces/{clusters_ns}"
    core = f"/api/v1/namespaces/{clusters_ns}"

    operator = operator_identity.operator(tmp_path)  # all namespaces, as deploy/ runs it
    with control_plane.client() as admin:
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text

            def exists(path: str) -> bool:
                return admin.get(path).status_code == 200

            await until(lambda: exists(f"{apps}/deployments/{name}-coordinator"), timeout=60)
            await until(lambda: exists(f"{apps}/statefulsets/{name}-commserver"), timeout=60)
            wanted = {f"{name}-coordinator", f"{name}-commserver"}

            def services() -> bool:
                items = admin.get(f"{core}/services").json()["items"]
                return wanted <= {item["metadata"]["name"] for item in items}

            await until(services, timeout=60)

            def reported() -> dict[str, Any] | None:
                obj: dict[str, Any] = admin.get(f"{crs}/{name}").json()
                status = obj.get("status") or {}
                return obj if status.get("phase") and status.get("conditions") else None

            obj = await until(reported, timeout=60)
            # No node: no pod runs, so the cluster is not Ready yet.
            assert condition_status(obj, "Ready") == "False", obj["status"]
            assert obj["status"]["phase"] != "Running", obj["status"]
            # A few resyncs (one a second): their requests are in the audit log too.
            await asyncio.sleep(3)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log

    check_requests(operator_identity.audit_events(), clusters_ns, log)
