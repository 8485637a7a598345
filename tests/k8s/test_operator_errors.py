"""What the operator does when the real API server refuses its writes.

Not every refusal passes: a request the server judged (a ResourceQuota's or
another admission check's 403, a 422) gets the same answer on every retry.
Against the real server, with ``deploy/rbac.yaml``'s identity (RBAC
enforced), this proves that:

* an admission denial (a quota of zero Services) is reported as
  ``Degraded``/``ApplyRejected`` with the server's own message and a Warning
  Event, the other objects are still made, and the refused object is not
  tried again on every resync, only once the spec's generation changes;
* a namespace being deleted (held in ``Terminating`` by a
  ValidatingAdmissionPolicy that refuses to delete the BrokerCluster, so the
  operator keeps serving it while its objects go) is reported as
  ``NamespaceTerminating`` and the operator stops trying to create objects
  there;
* a StatefulSet whose immutable ``serviceName`` differs from what the
  operator renders (as an older operator version made it) is replaced: deleted
  with ``propagationPolicy=Orphan`` (in the audit log) and created again with
  the new field, its pods kept and adopted.

The audit log tells what the operator requested and how often.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.applying import with_last_applied
from broker_operator.manifests import desired_objects
from broker_operator.naming import ClusterRef
from broker_operator.spec import parse_spec
from tests.k8s.support import OperatorIdentity, events_about
from tests.operator.support import condition, example, until

pytestmark = pytest.mark.timeout(240)

RESYNC = 1.0
RESYNCS = 5
MERGE = {"Content-Type": "application/merge-patch+json"}


def paths(namespace: str) -> tuple[str, str, str]:
    """The BrokerClusters', apps' and core API paths of ``namespace``."""
    return (
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        f"/apis/apps/v1/namespaces/{namespace}",
        f"/api/v1/namespaces/{namespace}",
    )


def new_cluster(namespace: str) -> dict[str, Any]:
    body = example()
    body["metadata"]["namespace"] = namespace
    return body


def degraded(admin: httpx.Client, path: str) -> dict[str, Any] | None:
    """The ``Degraded`` condition when it is True."""
    obj = admin.get(path).json()
    found = condition(obj, "Degraded")
    return found if found is not None and found["status"] == "True" else None


def requests_of(
    identity: OperatorIdentity, namespace: str, verb: str, resource: str
) -> list[dict[str, Any]]:
    """The operator's ``verb`` requests on ``resource`` in ``namespace`` (audit log)."""
    return [
        e
        for e in identity.audit_events()
        if e["verb"] == verb
        and e.get("objectRef", {}).get("namespace") == namespace
        and e["objectRef"].get("resource") == resource
    ]


async def test_admission_denial_is_reported_and_the_rest_is_applied(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    plane = operator_identity.plane
    crs, apps, core = paths(namespace)
    body = new_cluster(namespace)
    name = body["metadata"]["name"]
    operator = operator_identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
    with plane.client() as admin:
        quota = {"metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}}
        answer = admin.post(f"{core}/resourcequotas", json=quota)
        assert answer.status_code == 201, answer.text
        # Admission counts against the quota once its controller has filled in the status.
        await until(
            lambda: (
                admin.get(f"{core}/resourcequotas/no-services").json().get("status", {}).get("hard")
            ),
            timeout=60,
        )
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            found = await until(lambda: degraded(admin, f"{crs}/{name}"), timeout=60)
            assert found["reason"] == "ApplyRejected", found
            # The server's own words, naming the quota.
            assert "exceeded quota" in found["message"], found
            assert "no-services" in found["message"], found
            # The Services were refused; everything after them was still made.
            made = [
                f"{apps}/deployments/{name}-coordinator",
                f"{apps}/statefulsets/{name}-commserver",
                f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}-commserver",
            ]

            def all_made() -> bool:
                return all(admin.get(path).status_code == 200 for path in made)

            await until(all_made, timeout=60)
            warnings = [
                e
                for e in events_about(admin, namespace, name)
                if e["type"] == "Warning" and e["reason"] == "ApplyRejected"
            ]
            assert warnings and "exceeded quota" in warnings[0]["message"], warnings
            # Resyncs do not ask again: each Service was tried once.
            await asyncio.sleep(RESYNC * RESYNCS)
            creates = requests_of(operator_identity, namespace, "create", "services")
            tried = sorted(e["objectRef"].get("name") or e["requestURI"] for e in creates)
            ref = ClusterRef(name, namespace, "-")
            wanted = desired_objects(ref, parse_spec(name, body["spec"]))
            services = sorted(m["metadata"]["name"] for m in wanted if m["kind"] == "Service")
            assert len(creates) == len(services) == 3, (tried, services)
            assert all(e["responseStatus"]["code"] == 403 for e in creates), creates
            # Without the quota, a new generation of the spec is tried at once.
            assert admin.delete(f"{core}/resourcequotas/no-services").status_code == 200
            answer = admin.patch(
                f"{crs}/{name}", json={"spec": {"commServers": {"replicas": 3}}}, headers=MERGE
            )
            assert answer.status_code == 200, answer.text
            await until(
                lambda: admin.get(f"{core}/services/{name}-coordinator").status_code == 200,
                timeout=60,
            )
            await until(
                lambda: admin.get(f"{core}/services/{name}-commserver").status_code == 200,
                timeout=60,
            )
            await until(lambda: degraded(admin, f"{crs}/{name}") is None, timeout=60)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture
def deletion_refused(
    operator_identity: OperatorIdentity,
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy refusing to delete BrokerClusters in the test's namespace:
    deleting the namespace then leaves it Terminating, the BrokerCluster in place."""
    namespace = operator_identity.clusters_namespace
    name = f"hold-brokerclusters-{uuid.uuid4().hex[:8]}"
    api = "/apis/admissionregistration.k8s.io/v1"
    policy = {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["DELETE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "held by a test"}],
        },
    }
    binding = {
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    with operator_identity.plane.client() as admin:
        answer = admin.post(f"{api}/validatingadmissionpolicies", json=policy)
        assert answer.status_code == 201, answer.text
        try:
            answer = admin.post(f"{api}/validatingadmissionpolicybindings", json=binding)
            assert answer.status_code == 201, answer.text
            try:
                yield
            finally:
                admin.delete(f"{api}/validatingadmissionpolicybindings/{name}")
        finally:
            admin.delete(f"{api}/validatingadmissionpolicies/{name}")


async def test_a_terminating_namespace_is_not_retried_forever(
    operator_identity: OperatorIdentity, deletion_refused: None, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    plane = operator_identity.plane
    crs, apps, _ = paths(namespace)
    body = new_cluster(namespace)
    name = body["metadata"]["name"]
    operator = operator_identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
    with plane.client() as admin:
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            await until(
                lambda: admin.get(f"{apps}/statefulsets/{name}-commserver").status_code == 200,
                timeout=60,
            )

            def policy_holds() -> bool:
                # The policy is in force once a (dry-run) delete is refused.
                answer = admin.delete(f"{crs}/{name}", params={"dryRun": "All"})
                return answer.status_code in (403, 422) and "held by a test" in answer.text

            await until(policy_holds, timeout=60)
            answer = admin.delete(f"/api/v1/namespaces/{namespace}")
            assert answer.status_code == 200, answer.text
            # The namespace controller removes the objects; the BrokerCluster stays.
            await until(
                lambda: admin.get(f"{apps}/deployments/{name}-coordinator").status_code == 404,
                timeout=120,
            )
            found = await until(
                lambda: (
                    (d := degraded(admin, f"{crs}/{name}"))
                    and d["reason"] == "NamespaceTerminating"
                    and d
                ),
                timeout=60,
            )
            assert "being terminated" in found["message"], found
            refusals = _terminating_refusals(operator_identity, namespace)
            assert refusals, "no create refused"
            # Several resyncs later, nothing more was tried.
            await asyncio.sleep(RESYNC * RESYNCS)
            again = _terminating_refusals(operator_identity, namespace)
            assert len(again) == len(refusals), [e["requestURI"] for e in again]
            assert admin.get(f"{crs}/{name}").status_code == 200
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log


def _terminating_refusals(identity: OperatorIdentity, namespace: str) -> list[dict[str, Any]]:
    """The operator's creates (Events aside) refused with 403 in ``namespace``."""
    return [
        e
        for e in identity.audit_events()
        if e["verb"] == "create"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e["objectRef"].get("resource") != "events"
        and e["responseStatus"].get("code") == 403
    ]


async def test_statefulset_with_a_changed_immutable_field_is_replaced(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    plane = operator_identity.plane
    crs, apps, core = paths(namespace)
    body = new_cluster(namespace)
    name = body["metadata"]["name"]
    sts = f"{apps}/statefulsets/{name}-commserver"
    operator = operator_identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
    with plane.client() as admin:
        try:
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            created = answer.json()
            # The StatefulSet as an older operator rendered it: another serviceName,
            # owned by the BrokerCluster, with its last-applied annotation.
            ref = ClusterRef(name, namespace, created["metadata"]["uid"])
            spec = parse_spec(name, created["spec"])
            (old,) = [
                m
                for m in desired_objects(ref, spec)
                if m["kind"] == "StatefulSet" and m["metadata"]["name"] == f"{name}-commserver"
            ]
            old["spec"]["serviceName"] = f"{name}-legacy"
            answer = admin.post(f"{apps}/statefulsets", json=with_last_applied(old))
            assert answer.status_code == 201, answer.text
            old_uid = answer.json()["metadata"]["uid"]
            selector = ",".join(
                f"{k}={v}" for k, v in old["spec"]["selector"]["matchLabels"].items()
            )

            def pods() -> dict[str, dict[str, Any]]:
                items = admin.get(f"{core}/pods", params={"labelSelector": selector}).json()
                return {p["metadata"]["uid"]: p for p in items["items"]}

            # Its controller made the pods (Pending: no node).
            before = await until(lambda: len(p := pods()) == 2 and p, timeout=60)

            await operator.start()

            def replaced() -> dict[str, Any] | None:
                live = admin.get(sts)
                if live.status_code != 200:
                    return None
                obj: dict[str, Any] = live.json()
                return obj if obj["metadata"]["uid"] != old_uid else None

            new = await until(replaced, timeout=90)
            assert new["spec"]["serviceName"] == f"{name}-commserver", new["spec"]
            assert any(r["uid"] == ref.uid for r in new["metadata"]["ownerReferences"])
            # The delete orphaned the pods: the same pods, adopted by the new StatefulSet.
            adopted = await until(
                lambda: (
                    all(
                        any(
                            r["uid"] == new["metadata"]["uid"]
                            for r in p["metadata"].get("ownerReferences", [])
                        )
                        for p in pods().values()
                    )
                    and pods()
                ),
                timeout=90,
            )
            assert set(adopted) == set(before), (sorted(before), sorted(adopted))
            deletes = requests_of(operator_identity, namespace, "delete", "statefulsets")
            assert [
                e["requestURI"] for e in deletes if "propagationPolicy=Orphan" in e["requestURI"]
            ], [e["requestURI"] for e in deletes]
            notes = [
                e["message"]
                for e in events_about(admin, namespace, name)
                if e["reason"] == "Applied" and e["message"].startswith("replaced")
            ]
            assert notes and "Orphan" in notes[0], notes
            await until(lambda: degraded(admin, f"{crs}/{name}") is None, timeout=30)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log
