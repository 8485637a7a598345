"""A rollout that cannot progress ends ``Degraded``, with the reason the controllers give.

Against the real control plane (real Deployment and StatefulSet controllers,
real scheduler, ResourceQuota admission), with ``deploy/rbac.yaml``'s
identity: a BrokerCluster whose ``spec.progressDeadlineSeconds`` is short

* with a ResourceQuota of zero pods in its namespace, the controllers fail to
  create pods (FailedCreate events, the Deployment's ReplicaFailure): past the
  deadline the BrokerCluster reports ``Degraded``/``PodCreationFailed`` with the
  quota's message, ``Progressing=False``/``ProgressDeadlineExceeded``, and a
  Warning Event;
* without a quota but asking for more CPU than any node has (or with no node
  at all), its pods are created and stay Pending, unscheduled: past the
  deadline, ``Degraded``/``PodsUnschedulable``, with the scheduler's message.

(Pods the kubelet cannot run, ``PodsFailing``, need a node that takes them:
the test node is tainted for the tests made for it, and BrokerCluster pods
carry no toleration, so that case is covered by ``tests/operator/test_logic.py``.)

The coordinator Deployment carries the same deadline as its own
``progressDeadlineSeconds``. RBAC refuses none of the operator's requests
(it lists Warning events only once the deadline has passed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.support import OperatorIdentity, events_about
from tests.operator.support import condition, example, until

pytestmark = pytest.mark.timeout(240)

RESYNC = 1.0
DEADLINE = 3
DECISION = "authorization.k8s.io/decision"


def degraded(admin: httpx.Client, path: str) -> dict[str, Any] | None:
    obj = admin.get(path).json()
    found = condition(obj, "Degraded")
    return found if found is not None and found["status"] == "True" else None


async def stalled_cluster(
    identity: OperatorIdentity,
    tmp_path: Path,
    *,
    quota: dict[str, str] | None,
    spec: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Run a BrokerCluster with a short deadline (and ``spec`` on top of the example's)
    until it is Degraded: the BrokerCluster, its coordinator Deployment and the events
    about it."""
    namespace = identity.clusters_namespace
    plane = identity.plane
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    core = f"/api/v1/namespaces/{namespace}"
    body = example()
    body["metadata"]["namespace"] = namespace
    body["spec"]["progressDeadlineSeconds"] = DEADLINE
    body["spec"].update(spec or {})
    name = body["metadata"]["name"]
    operator = identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
    with plane.client() as admin:
        if quota is not None:
            answer = admin.post(
                f"{core}/resourcequotas",
                json={"metadata": {"name": "no-pods"}, "spec": {"hard": quota}},
            )
            assert answer.status_code == 201, answer.text
            await until(
                lambda: admin.get(f"{core}/resourcequotas/no-pods").json().get("status"),
                timeout=60,
            )
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            await until(lambda: degraded(admin, f"{crs}/{name}"), timeout=120)
            # Degraded may first say only that pods are not ready; the controllers'
            # reasons follow as their events arrive.
            wanted = "PodCreationFailed" if quota is not None else "PodsUnschedulable"
            await until(
                lambda: (d := degraded(admin, f"{crs}/{name}")) and d["reason"] == wanted,
                timeout=120,
            )
            obj = admin.get(f"{crs}/{name}").json()
            deployment = admin.get(
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}-coordinator"
            ).json()
            events = events_about(admin, namespace, name)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    refused = [
        (e["verb"], e.get("requestURI"))
        for e in identity.audit_events()
        if e.get("annotations", {}).get(DECISION) == "forbid"
    ]
    assert not refused, refused
    return obj, deployment, events


async def test_pods_refused_by_a_quota_make_the_rollout_degraded(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    obj, deployment, events = await stalled_cluster(
        operator_identity, tmp_path, quota={"pods": "0"}
    )
    found = condition(obj, "Degraded")
    print("Degraded:", found)
    assert found is not None
    assert found["reason"] == "PodCreationFailed", found
    assert "exceeded quota" in found["message"], found
    assert "no-pods" in found["message"], found
    assert obj["status"]["phase"] == "Degraded", obj["status"]
    progressing = condition(obj, "Progressing")
    assert progressing is not None
    assert progressing["status"] == "False", progressing
    assert progressing["reason"] == "ProgressDeadlineExceeded", progressing
    assert deployment["spec"]["progressDeadlineSeconds"] == DEADLINE, deployment["spec"]
    warnings = [e for e in events if e["type"] == "Warning" and e["reason"] == "PodCreationFailed"]
    assert warnings and "exceeded quota" in warnings[-1]["message"], events


async def test_unschedulable_pods_make_the_rollout_degraded(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    # No node has a thousand CPUs, whether the control plane runs a node or none.
    unfit = {"resources": {"requests": {"cpu": "1000", "memory": "128Mi"}}}
    obj, deployment, events = await stalled_cluster(
        operator_identity, tmp_path, quota=None, spec={"coordinator": unfit, "commServers": unfit}
    )
    found = condition(obj, "Degraded")
    print("Degraded:", found)
    assert found is not None
    assert found["reason"] == "PodsUnschedulable", found
    assert "pending" in found["message"], found
    # The scheduler's own words.
    assert "nodes are available" in found["message"] or "no nodes" in found["message"], found
    assert obj["status"]["phase"] == "Degraded", obj["status"]
    assert deployment["spec"]["progressDeadlineSeconds"] == DEADLINE, deployment["spec"]
    assert any(e["reason"] == "PodsUnschedulable" for e in events), events
