"""``deploy/namespaced/``: the operator serving one namespace with a Role, nothing cluster-wide.

The files load and agree with each other (the Role and RoleBinding are in
the namespace the operator Deployment passes with ``--namespace``, the rules
are ``deploy/rbac.yaml``'s). Against the real API server (RBAC enforced), the
operator run with exactly that Role's ServiceAccount, serving that
namespace, reconciles a BrokerCluster: the audit log shows no request refused
and none on a cluster-scoped resource, and every (resource, verb) it used is
one the Role grants.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import RBAC_FILE, OperatorIdentity, created_as_admin, install_crd
from tests.k8s.test_operator_rbac import granted_pairs, used_pairs
from tests.operator.support import (
    DEPLOY,
    condition_status,
    example,
    load_yaml,
    namespace_rules,
    until,
)

pytestmark = pytest.mark.timeout(180)

NAMESPACED = DEPLOY / "namespaced"
DECISION = "authorization.k8s.io/decision"


def documents(name: str) -> list[dict[str, Any]]:
    return load_yaml(NAMESPACED / name)


def test_namespaced_files_agree() -> None:
    rbac = documents("rbac.yaml")
    kinds = sorted(doc["kind"] for doc in rbac)
    assert kinds == ["Role", "RoleBinding", "ServiceAccount"], kinds
    (role,) = [doc for doc in rbac if doc["kind"] == "Role"]
    (binding,) = [doc for doc in rbac if doc["kind"] == "RoleBinding"]
    (account,) = [doc for doc in rbac if doc["kind"] == "ServiceAccount"]
    (served,) = [doc["metadata"]["name"] for doc in documents("namespace.yaml")]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == served
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    cluster_role = next(doc for doc in load_yaml(RBAC_FILE) if doc["kind"] == "ClusterRole")
    assert role["rules"] == namespace_rules(cluster_role["rules"])
    (deployment,) = documents("operator.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert deployment["metadata"]["namespace"] == account["metadata"]["namespace"]
    args = pod["containers"][0]["args"]
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--namespace"] == [served]


@pytest.fixture
def namespaced_identity(control_plane: ControlPlane, tmp_path: Path) -> Iterator[OperatorIdentity]:
    """deploy/namespaced/rbac.yaml with its two namespaces made unique to this test."""
    install_crd(control_plane, tmp_path)
    suffix = uuid.uuid4().hex[:8]
    operator_ns, clusters_ns = f"webrtc-broker-{suffix}", f"brokers-{suffix}"
    docs = [copy.deepcopy(doc) for doc in documents("rbac.yaml")]
    paths = {
        "ServiceAccount": f"/api/v1/namespaces/{operator_ns}/serviceaccounts",
        "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{clusters_ns}/roles",
        "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{clusters_ns}/rolebindings",
    }
    for doc in docs:
        doc["metadata"]["namespace"] = (
            operator_ns if doc["kind"] == "ServiceAccount" else clusters_ns
        )
        for subject in doc.get("subjects", []):
            subject["namespace"] = operator_ns
    account = next(doc for doc in docs if doc["kind"] == "ServiceAccount")
    objects = [(paths[doc["kind"]], doc) for doc in docs]
    with created_as_admin(control_plane, [operator_ns, clusters_ns], objects):
        yield OperatorIdentity(control_plane, operator_ns, account["metadata"]["name"], clusters_ns)


async def test_operator_reconciles_with_the_namespaced_role(
    namespaced_identity: OperatorIdentity, tmp_path: Path
) -> None:
    identity = namespaced_identity
    namespace = identity.clusters_namespace
    body = example()
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    operator = identity.operator(tmp_path, namespaces=(namespace,))
    with identity.plane.client() as admin:
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            made = [
                f"{apps}/deployments/{name}-coordinator",
                f"{apps}/statefulsets/{name}-commserver",
                f"/api/v1/namespaces/{namespace}/services/{name}-coordinator",
            ]

            def all_made() -> bool:
                return all(admin.get(path).status_code == 200 for path in made)

            await until(all_made, timeout=60)

            def reported() -> dict[str, Any] | None:
                obj: dict[str, Any] = admin.get(f"{crs}/{name}").json()
                status = obj.get("status") or {}
                return obj if status.get("phase") and status.get("conditions") else None

            obj = await until(reported, timeout=60)
            assert condition_status(obj, "Degraded") == "False", obj["status"]
            await asyncio.sleep(3)  # a few resyncs (one a second)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    events = identity.audit_events()
    assert events, "no request of the operator in the audit log"
    refused = [
        (e["verb"], e.get("requestURI"), e["responseStatus"].get("code"))
        for e in events
        if e.get("annotations", {}).get(DECISION) == "forbid"
        or e.get("responseStatus", {}).get("code") == 403
    ]
    assert not refused, f"{refused}\n{log}"
    cluster_wide = [
        (e["verb"], e.get("requestURI"))
        for e in events
        if "resource" in (e.get("objectRef") or {}) and not e["objectRef"].get("namespace")
    ]
    assert not cluster_wide, cluster_wide
    (role,) = [doc for doc in documents("rbac.yaml") if doc["kind"] == "Role"]
    used = used_pairs(events)
    assert used <= granted_pairs(role["rules"]), sorted(used - granted_pairs(role["rules"]))
