"""kubectl 1.33 against the real API server: install deploy/, then use the example as users do.

``kubectl apply -f deploy/`` installs the CRD, the operator's namespace,
ServiceAccount, ClusterRole and binding, and its Deployment (whose pod the
real controllers create and the scheduler leaves Pending: there is no node).
The operator then runs as a local process with a token of that very
ServiceAccount, so RBAC is the one deploy/ grants, and serves a namespace of
this test's own, where the example BrokerCluster is applied. What kubectl
shows comes from the server: the CRD's printer columns (server-side
printing), its short name, the scale subresource reaching the StatefulSet,
strict field validation refusing a typo, and the garbage collector removing
what the operator made once the BrokerCluster is deleted.

deploy/ names its cluster-wide objects (the namespace ``webrtc-broker``, the
ClusterRole and binding ``webrtc-broker-operator``) without any suffix, so
the fixture removes them before (leftovers of an interrupted run) and after
the test. It never deletes the CRD: deleting it deletes every BrokerCluster
of every namespace, including those of other tests sharing the control
plane, and each of them installs the same CRD anyway (``install_crd``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import RBAC_FILE, run_kubectl, unique, wait_established
from tests.operator.support import DEPLOY, EXAMPLE_FILE, OperatorProcess, load_yaml, until

pytestmark = pytest.mark.timeout(300)

ACCOUNT = next(doc for doc in load_yaml(RBAC_FILE) if doc["kind"] == "ServiceAccount")
OPERATOR_NAMESPACE: str = ACCOUNT["metadata"]["namespace"]
OPERATOR_ACCOUNT: str = ACCOUNT["metadata"]["name"]
NAME = load_yaml(EXAMPLE_FILE)[0]["metadata"]["name"]
# Kinds the operator creates with an owner reference to the BrokerCluster.
OWNED = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
}


@pytest.fixture
def namespace(control_plane: ControlPlane, tmp_path: Path) -> Iterator[str]:
    """A namespace of this test's own for the example BrokerCluster."""
    name = unique("kubectl")
    run_kubectl(control_plane, tmp_path, "create", "namespace", name)
    try:
        yield name
    finally:
        run_kubectl(control_plane, tmp_path, "delete", "namespace", name, "--wait=false")


def owned_by(admin: httpx.Client, namespace: str, uid: str) -> set[tuple[str, str]]:
    """(kind, name) of the objects in ``namespace`` with an owner reference to ``uid``."""
    found = set()
    for kind, path in OWNED.items():
        for item in admin.get(path.format(ns=namespace)).json()["items"]:
            refs = item["metadata"].get("ownerReferences", [])
            if any(ref["uid"] == uid for ref in refs):
                found.add((kind, item["metadata"]["name"]))
    return found


@dataclass(frozen=True)
class Kubectl:
    """kubectl as the admin, with a home of its own (its discovery cache)."""

    plane: ControlPlane
    home: Path

    def __call__(self, *args: str, check: bool = True) -> str:
        return run_kubectl(self.plane, self.home, *args, check=check)


def apply_deploy(kubectl: Kubectl) -> None:
    """``kubectl apply -f deploy/``: every object created (the CRD may be there already:
    other tests install the same file)."""
    out = kubectl("apply", "-f", str(DEPLOY))
    crd_line = f"customresourcedefinition.apiextensions.k8s.io/{PLURAL}.{GROUP} "
    assert any(
        line.startswith(crd_line) and line.split()[-1] in ("created", "configured", "unchanged")
        for line in out.splitlines()
    ), out
    for line in (
        f"namespace/{OPERATOR_NAMESPACE} created",
        f"deployment.apps/{OPERATOR_ACCOUNT} created",
        f"serviceaccount/{OPERATOR_ACCOUNT} created",
        f"clusterrole.rbac.authorization.k8s.io/{OPERATOR_ACCOUNT} created",
        f"clusterrolebinding.rbac.authorization.k8s.io/{OPERATOR_ACCOUNT} created",
    ):
        assert line in out, out
    # Applying again changes nothing (the last-applied annotation matches the file).
    assert "unchanged" in kubectl("apply", "-f", str(RBAC_FILE))
    wait_established(kubectl.plane, kubectl.home)


async def operator_pod_pending(admin: httpx.Client) -> None:
    """The operator's Deployment is accepted; the controllers make its pod, which stays
    Pending, unschedulable: there is no node."""

    def pending_pod() -> dict[str, Any] | None:
        pods = admin.get(
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods",
            params={"labelSelector": "app.kubernetes.io/component=operator"},
        ).json()["items"]
        for pod in pods:
            scheduled = [
                c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"
            ]
            if scheduled and scheduled[0]["status"] == "False":
                return dict(pod)
        return None

    pod = await until(pending_pod, timeout=90, interval=0.5)
    assert pod["status"]["phase"] == "Pending", pod["status"]
    assert pod["spec"]["serviceAccountName"] == OPERATOR_ACCOUNT


def printed_tables(kubectl: Kubectl, namespace: str) -> None:
    """Server-side printing: the CRD's printer columns, by plural and by short name."""
    endpoint = f"ws://{NAME}-coordinator.{namespace}.svc:9090"
    for resource in ("brokerclusters", "bkc"):
        table = kubectl("get", resource, "-n", namespace)
        header, row = table.splitlines()[:2]
        assert header.split() == ["NAME", "SERVERS", "READY", "PHASE", "ENDPOINT", "AGE"]
        assert row.split()[:5] == [NAME, "2", "0", "Progressing", endpoint], table


def typo_refused(kubectl: Kubectl, admin: httpx.Client, namespace: str, tmp_path: Path) -> None:
    """A typo is refused by the server (kubectl asks for strict field validation), and
    the stored object is unchanged."""
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(EXAMPLE_FILE.read_text().replace("maxPeers:", "maxPeer:"))
    out = kubectl("apply", "-n", namespace, "-f", str(bad_file), check=False)
    assert 'unknown field "spec.commServers.maxPeer"' in out, out
    stored = admin.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{NAME}").json()
    assert stored["spec"]["commServers"]["maxPeers"] == 1000, stored["spec"]
    assert "maxPeer" not in stored["spec"]["commServers"]


def delete_example(kubectl: Kubectl, admin: httpx.Client, namespace: str) -> Callable[[], bool]:
    """``kubectl delete`` of the example; a check that the garbage collector (a
    controller, so asynchronously) deleted what the operator made, by owner reference."""
    stored = admin.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{NAME}").json()
    uid = stored["metadata"]["uid"]
    owned = owned_by(admin, namespace, uid)
    assert {
        ("Deployment", f"{NAME}-coordinator"),
        ("StatefulSet", f"{NAME}-commserver"),
        ("Service", f"{NAME}-coordinator"),
    } <= owned, owned
    out = kubectl("delete", "-n", namespace, "-f", str(EXAMPLE_FILE))
    assert f'brokercluster.{GROUP} "{NAME}" deleted' in out, out

    def collected() -> bool:
        paths = [f"{OWNED[kind].format(ns=namespace)}/{name}" for kind, name in owned]
        return all(admin.get(path).status_code == 404 for path in paths)

    return collected


async def test_kubectl_installs_deploy_and_the_example(
    control_plane: ControlPlane, deploy_home: Path, namespace: str, tmp_path: Path
) -> None:
    kubectl = Kubectl(control_plane, deploy_home)
    apply_deploy(kubectl)
    with control_plane.client() as admin:
        await operator_pod_pending(admin)
        # The operator as a process, with the token of the ServiceAccount deploy/ made.
        token = control_plane.service_account_token(
            OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, create=False
        )
        kubeconfig = control_plane.write_token_kubeconfig(tmp_path / "operator.kubeconfig", token)
        operator = OperatorProcess(
            kubeconfig, tmp_path / "operator.log", resync=1.0, namespaces=(namespace,)
        )
        try:
            await operator.start()
            out = kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_FILE))
            assert f"brokercluster.{GROUP}/{NAME} created" in out, out
            apps = f"/apis/apps/v1/namespaces/{namespace}"
            await until(
                lambda: admin.get(f"{apps}/statefulsets/{NAME}-commserver").status_code == 200,
                timeout=60,
                interval=0.5,
            )

            def phase() -> str:
                return kubectl(
                    "get", "brokercluster", NAME, "-n", namespace, "-o", "jsonpath={.status.phase}"
                )

            assert await until(phase, timeout=60, interval=0.5) == "Progressing"
            printed_tables(kubectl, namespace)

            # The scale subresource: kubectl writes spec.commServers.replicas, the
            # operator carries it to the StatefulSet.
            out = kubectl("scale", "bkc", NAME, "-n", namespace, "--replicas=3")
            assert f"brokercluster.{GROUP}/{NAME} scaled" in out, out

            def sts_replicas() -> bool:
                sts = admin.get(f"{apps}/statefulsets/{NAME}-commserver").json()
                return bool(sts["spec"]["replicas"] == 3)

            await until(sts_replicas, timeout=60, interval=0.5)
            typo_refused(kubectl, admin, namespace, tmp_path)
            await until(delete_example(kubectl, admin, namespace), timeout=90, interval=0.5)
            out = kubectl("get", "statefulset", f"{NAME}-commserver", "-n", namespace, check=False)
            assert "NotFound" in out, out
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log
