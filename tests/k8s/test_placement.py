"""Placement on the real server: tolerations and nodeSelector decide where the pods land.

The node of ``make k8s-up`` is tainted (``tests.k8s.node.TAINT``), as nodes
kept for brokers are. A BrokerCluster whose coordinator and comm servers
(hubs included) carry the matching toleration and a nodeSelector for the node's hostname
label gets its pods bound to that node by the real scheduler; one without
the toleration stays Pending, and the scheduler's FailedScheduling event
names the taint. The pods need not start: binding (``spec.nodeName``) is
what placement decides. The API server itself evaluates the CRD's CEL rules
on tolerations here (the unit tests can only check their twins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s import image
from tests.k8s.node import NODE_NAME, TAINT, TOLERATION, Node
from tests.k8s.support import OperatorIdentity, events_about
from tests.operator.support import broker_cluster, until

pytestmark = pytest.mark.timeout(300)

HOSTNAME_LABEL = "kubernetes.io/hostname"

SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}
"""Room for these pods next to the other tests' on a small node: the scheduler must
not refuse them for CPU or memory, or a missing toleration would not be the reason."""


def clusters_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def placed_cluster(name: str, placement: dict[str, Any]) -> dict[str, Any]:
    """A one-server cluster of the broker's image (never pulled: the node has it, or the
    container waits with ErrImageNeverPull, which is after scheduling either way)."""
    return broker_cluster(
        name,
        image=image.reference(),
        imagePullPolicy="Never",
        coordinator={"resources": SMALL, **placement},
        commServers={"replicas": 1, "drainSeconds": 0, "resources": SMALL, **placement},
    )


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"value": "real", "effect": "NoSchedule"}, "a toleration with operator Equal needs a key"),
        (
            {"key": "webrtc-broker.test/node", "operator": "Exists", "value": "real"},
            "a toleration with operator Exists takes no value",
        ),
        (
            {"key": "webrtc-broker.test/node", "effect": "NoSchedule", "tolerationSeconds": 5},
            "tolerationSeconds needs effect NoExecute",
        ),
    ],
)
def test_the_api_server_refuses_impossible_tolerations(
    operator_identity: OperatorIdentity, toleration: dict[str, Any], message: str
) -> None:
    """The CRD's CEL rules, evaluated by the API server: the resource is refused with the
    rule's message instead of its workloads failing to make pods later."""
    namespace = operator_identity.clusters_namespace
    body = broker_cluster("refused", commServers={"tolerations": [toleration]})
    with operator_identity.plane.client() as admin:
        answer = admin.post(f"{clusters_path(namespace)}?dryRun=All", json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["message"], answer.text


def test_the_api_server_stores_placement_with_the_operator_defaulted(
    operator_identity: OperatorIdentity,
) -> None:
    namespace = operator_identity.clusters_namespace
    body = broker_cluster(
        "accepted",
        coordinator={"nodeSelector": {HOSTNAME_LABEL: NODE_NAME}},
        commServers={"tolerations": [dict(TAINT)]},
    )
    with operator_identity.plane.client() as admin:
        answer = admin.post(f"{clusters_path(namespace)}?dryRun=All", json=body)
    assert answer.status_code == 201, answer.text
    spec = answer.json()["spec"]
    assert spec["commServers"]["tolerations"] == [TOLERATION]  # operator: Equal, filled in
    assert spec["coordinator"]["nodeSelector"] == {HOSTNAME_LABEL: NODE_NAME}
    assert "tolerations" not in spec["coordinator"]


def pods_of(admin: httpx.Client, namespace: str, instance: str) -> list[dict[str, Any]]:
    answer = admin.get(
        f"/api/v1/namespaces/{namespace}/pods",
        params={"labelSelector": f"app.kubernetes.io/instance={instance}"},
    )
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def component(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["app.kubernetes.io/component"])


def container_states(pod: dict[str, Any]) -> list[str]:
    """``running``, or the reason a container waits (``ErrImageNeverPull``...)."""
    states: list[str] = []
    for status in pod.get("status", {}).get("containerStatuses") or []:
        for state, detail in (status.get("state") or {}).items():
            states.append(str((detail or {}).get("reason", state)))
    return states


async def test_tolerating_pods_land_on_the_tainted_node_and_others_stay_pending(
    operator_identity: OperatorIdentity, node: Node, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    with operator_identity.plane.client() as admin:
        node_object = admin.get(f"/api/v1/nodes/{NODE_NAME}").json()
        labels = node_object["metadata"]["labels"]
        assert TAINT in node_object["spec"].get("taints", []), node_object["spec"]
        selector = {HOSTNAME_LABEL: labels[HOSTNAME_LABEL]}
        placed = placed_cluster("placed", {"nodeSelector": selector, "tolerations": [TOLERATION]})
        # Hub topology: the hubs' StatefulSet takes the comm servers' placement too.
        placed["spec"]["topology"] = {"mode": "Hub", "hubs": 1}
        # The same node asked for, without the toleration: only the taint stands in the way.
        pending = placed_cluster("pending", {"nodeSelector": selector})
        operator = operator_identity.operator(tmp_path, namespaces=(namespace,))
        try:
            await operator.start()
            for body in (placed, pending):
                answer = admin.post(clusters_path(namespace), json=body)
                assert answer.status_code == 201, answer.text

            def bound() -> list[dict[str, Any]] | None:
                pods = pods_of(admin, namespace, "placed")
                on_node = [p for p in pods if p["spec"].get("nodeName")]
                wanted = {"coordinator", "commserver", "hub"}
                return on_node if {component(p) for p in on_node} == wanted else None

            on_node = await until(bound, timeout=120, interval=1)
            for pod in on_node:
                assert pod["spec"]["nodeName"] == NODE_NAME
                assert pod["spec"]["nodeSelector"] == selector
                assert TOLERATION in pod["spec"]["tolerations"]
                # Started, or waiting for an image the node lacks: past scheduling either way.
                print(pod["metadata"]["name"], "on", NODE_NAME, container_states(pod))

            def refused() -> dict[str, Any] | None:
                pods = pods_of(admin, namespace, "pending")
                servers = [p for p in pods if component(p) == "commserver"]
                if not servers:
                    return None
                name = servers[0]["metadata"]["name"]
                events = [
                    e
                    for e in events_about(admin, namespace, name)
                    if e["reason"] == "FailedScheduling"
                ]
                return {"pod": servers[0], "events": events} if events else None

            found = await until(refused, timeout=120, interval=1)
            pod = admin.get(
                f"/api/v1/namespaces/{namespace}/pods/{found['pod']['metadata']['name']}"
            ).json()
            assert pod["status"]["phase"] == "Pending", pod["status"]
            assert not pod["spec"].get("nodeName"), pod["spec"]
            # Admission may add tolerations of its own (not-ready, unreachable); not ours.
            assert all(t.get("key") != TAINT["key"] for t in pod["spec"].get("tolerations", []))
            messages = [e["message"] for e in found["events"]]
            print("FailedScheduling:", messages)
            # The scheduler (1.34) says "untolerated taint(s)" without naming one; the one
            # node carries the test's taint, and a node is counted under one reason only
            # (not also under a nodeSelector mismatch or a lack of CPU or memory).
            assert any("1 node(s) had untolerated taint" in m for m in messages), messages
        finally:
            code = await operator.stop()
    assert code == 0, operator.log()
    assert "Traceback" not in operator.log(), operator.log()
