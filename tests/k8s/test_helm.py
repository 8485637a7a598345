"""helm v4 installs, upgrades and uninstalls the chart on the real API server.

``helm install`` of ``charts/webrtc-broker`` into a namespace of the test's
own: every object of the release is accepted by the server (schemas,
admission; the CRD from ``crds/`` when it is absent: helm never replaces one
that exists, and the control plane is shared, so whoever came first installed
it), and the operator's Deployment gets a pod from the real controllers (it
stays Pending: there is no node, so nothing waits for readiness). ``helm
upgrade`` with changed values reaches the live Deployment and BrokerCluster;
``helm uninstall --wait`` removes every object of the release, the
cluster-wide ones included, and leaves the CRD.

The chart's namespaced mode (``operator.watchNamespaces``) grants a Role and
RoleBinding in each named namespace instead of a ClusterRole: the operator
runs as a process with the token of the chart's ServiceAccount, serving only
that namespace, and reconciles the chart's BrokerCluster. The audit log then
shows that RBAC refused none of its requests (so the operator needs nothing
cluster-wide there) and that its (resource, verb) pairs are exactly those the
Role grants, save the allowances of ``test_operator_rbac.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker_operator import GROUP, PLURAL, VERSION
from tests.helm.chart import CHART, run_helm
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import RBAC_FILE, unique
from tests.k8s.test_operator_rbac import check_requests, granted_pairs
from tests.operator.support import (
    OperatorProcess,
    condition_status,
    load_yaml,
    namespace_rules,
    until,
)

pytestmark = pytest.mark.timeout(300)

CRD_NAME = f"{PLURAL}.{GROUP}"
PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
    "BrokerCluster": f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}/{{name}}",
}


def path_of(obj: dict[str, Any], release_namespace: str) -> str:
    meta = obj["metadata"]
    return PATHS[obj["kind"]].format(ns=meta.get("namespace", release_namespace), name=meta["name"])


@dataclass(frozen=True)
class Release:
    """One helm release of the chart, in a namespace of its own, as the admin."""

    plane: ControlPlane
    home: Path
    name: str
    namespace: str

    def helm(self, *args: str, check: bool = True) -> str:
        result = run_helm(
            *args, "--namespace", self.namespace, kubeconfig=self.plane.kubeconfig, home=self.home
        )
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.output}"
        return result.output

    def manifest(self) -> list[dict[str, Any]]:
        """The release's objects as helm recorded them (hooks left out)."""
        text = self.helm("get", "manifest", self.name)
        return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture
def release(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Release]:
    """A release name and namespace; whatever the test leaves installed is removed."""
    found = Release(control_plane, tmp_path / "helm-home", unique("wb"), unique("helm"))
    try:
        yield found
    finally:
        found.helm("uninstall", found.name, "--ignore-not-found", check=False)
        with control_plane.client() as admin:
            admin.delete(f"/api/v1/namespaces/{found.namespace}")


def find(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [item for item in items if item["kind"] == kind]
    return found


async def test_install_upgrade_uninstall(release: Release) -> None:
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    with release.plane.client() as admin:
        crd_before = admin.get(crd_path).status_code == 200
    # Whether helm had to create it: the control plane is shared, so it depends on
    # which tests ran before (printed, not asserted: another one may install it now).
    print("CRD", "there already: helm leaves it" if crd_before else "absent: helm creates it")
    out = release.helm("install", release.name, str(CHART), "--create-namespace")
    assert "STATUS: deployed" in out and "REVISION: 1" in out, out
    objects = release.manifest()
    assert sorted(obj["kind"] for obj in objects) == [
        "BrokerCluster",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ServiceAccount",
    ]
    with release.plane.client() as admin:
        crd = admin.get(crd_path)
        assert crd.status_code == 200, crd.text
        conditions = {c["type"]: c["status"] for c in crd.json()["status"]["conditions"]}
        assert conditions["Established"] == "True", conditions
        for obj in objects:
            live = admin.get(path_of(obj, release.namespace))
            assert live.status_code == 200, (obj["kind"], live.text)
            meta = live.json()["metadata"]
            assert meta["annotations"]["meta.helm.sh/release-name"] == release.name
            assert meta["annotations"]["meta.helm.sh/release-namespace"] == release.namespace
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"

        deployment = find(objects, "Deployment")
        deployment_path = path_of(deployment, release.namespace)
        cluster = find(objects, "BrokerCluster")
        cluster_path = path_of(cluster, release.namespace)
        binding = admin.get(path_of(find(objects, "ClusterRoleBinding"), release.namespace)).json()
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": find(objects, "ServiceAccount")["metadata"]["name"],
                "namespace": release.namespace,
            }
        ]

        # The controllers make the operator's pod; no node, so it stays Pending.
        def pending() -> bool:
            pods = admin.get(
                f"/api/v1/namespaces/{release.namespace}/pods",
                params={"labelSelector": f"app.kubernetes.io/instance={release.name}"},
            ).json()["items"]
            return any(pod["status"].get("phase") == "Pending" for pod in pods)

        await until(pending, timeout=90, interval=0.5)
        assert admin.get(cluster_path).json()["spec"]["commServers"]["replicas"] == 2

        # Changed values reach the live objects: the Deployment's arguments (a new
        # rollout, which the deployment controller numbers) and the BrokerCluster's spec.
        out = release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--set",
            "operator.resyncSeconds=30",
            "--set",
            "brokerCluster.spec.commServers.replicas=3",
        )
        assert "STATUS: deployed" in out and "REVISION: 2" in out, out
        live = admin.get(deployment_path).json()
        args = live["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--resync-seconds") + 1] == "30", args

        def rolled_out() -> bool:
            meta = admin.get(deployment_path).json()["metadata"]
            return bool(meta.get("annotations", {}).get("deployment.kubernetes.io/revision") == "2")

        await until(rolled_out, timeout=60, interval=0.5)
        live_cluster = admin.get(cluster_path).json()
        assert live_cluster["spec"]["commServers"]["replicas"] == 3, live_cluster["spec"]
        assert live_cluster["metadata"]["generation"] == 2

        # --wait is meaningful here: helm waits until the objects are gone.
        out = release.helm("uninstall", release.name, "--wait", "--timeout", "90s")
        assert f'release "{release.name}" uninstalled' in out, out
        for obj in objects:
            answer = admin.get(path_of(obj, release.namespace))
            assert answer.status_code == 404, (obj["kind"], answer.text)
        assert release.helm("list", "--short").strip() == ""
        # helm never deletes a CRD (that would delete every BrokerCluster).
        assert admin.get(crd_path).status_code == 200


async def test_namespaced_rbac_is_all_the_operator_needs(release: Release, tmp_path: Path) -> None:
    namespace = release.namespace
    release.helm(
        "install",
        release.name,
        str(CHART),
        "--create-namespace",
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
    )
    objects = release.manifest()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["BrokerCluster", "Deployment", "Role", "RoleBinding", "ServiceAccount"]
    account = find(objects, "ServiceAccount")["metadata"]["name"]
    name = find(objects, "BrokerCluster")["metadata"]["name"]
    args = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--namespace") + 1] == namespace, args
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    core = f"/api/v1/namespaces/{namespace}"

    # The operator as the chart runs it (--namespace), with the chart's ServiceAccount.
    token = release.plane.service_account_token(namespace, account, create=False)
    kubeconfig = release.plane.write_token_kubeconfig(tmp_path / "operator.kubeconfig", token)
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", resync=1.0, namespaces=(namespace,)
    )
    with release.plane.client() as admin:
        role = admin.get(path_of(find(objects, "Role"), namespace)).json()
        try:
            await operator.start()

            def exists(path: str) -> bool:
                return admin.get(path).status_code == 200

            await until(lambda: exists(f"{apps}/deployments/{name}-coordinator"), timeout=60)
            await until(lambda: exists(f"{apps}/statefulsets/{name}-commserver"), timeout=60)
            await until(lambda: exists(f"{core}/services/{name}-coordinator"), timeout=60)

            def reported() -> dict[str, Any] | None:
                obj: dict[str, Any] = admin.get(f"{crs}/{name}").json()
                status = obj.get("status") or {}
                return obj if status.get("phase") and status.get("conditions") else None

            obj = await until(reported, timeout=60)
            assert condition_status(obj, "Ready") == "False", obj["status"]
            # A few resyncs (one a second): their requests are in the audit log too.
            await asyncio.sleep(3)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log

    # The Role grants what deploy/rbac.yaml's ClusterRole grants in a namespace, so
    # check_requests' comparison with those rules is one with the Role as installed.
    cluster_role = next(doc for doc in load_yaml(RBAC_FILE) if doc["kind"] == "ClusterRole")
    rules = namespace_rules(cluster_role["rules"])
    assert granted_pairs(role["rules"]) == granted_pairs(rules)
    username = f"system:serviceaccount:{namespace}:{account}"
    events = [e for e in release.plane.audit_events() if e["user"].get("username") == username]
    outside = sorted(
        {
            (e["verb"], e.get("requestURI"))
            for e in events
            if (e.get("objectRef") or {}).get("namespace") not in (namespace, None)
            or ("resource" in (e.get("objectRef") or {}) and "namespace" not in e["objectRef"])
        }
    )
    # Namespaced mode: nothing outside the namespace (a Role grants nothing there).
    assert not outside, outside
    check_requests(events, namespace, log, rules)
