"""Helpers for tests against the real control plane: kubectl, the CRD, the operator's identity.

Tests share one control plane (a session fixture, or one started with
``make k8s-up``), so each works in namespaces of its own and gives every
cluster-wide object it creates a unique name; ``operator_identity`` installs
``deploy/rbac.yaml`` that way and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from broker_operator import GROUP, PLURAL
from tests.k8s.cluster import ControlPlane
from tests.operator.kubectl import kubectl
from tests.operator.support import CRD_FILE, DEPLOY, OperatorProcess, load_yaml

RBAC_FILE = DEPLOY / "rbac.yaml"

RBAC_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


def run_kubectl(plane: ControlPlane, home: Path, *args: str, check: bool = True) -> str:
    """kubectl as the admin; its output (stdout and stderr), asserted to succeed if ``check``."""
    result = subprocess.run(
        [str(kubectl()), *args],
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{output}"
    return output


def install_crd(plane: ControlPlane, home: Path) -> None:
    """``deploy/crd.yaml`` applied and Established (applying it again changes nothing)."""
    run_kubectl(plane, home, "apply", "-f", str(CRD_FILE))
    wait_established(plane, home)


CONDITIONS_NOT_YET = ".status.conditions accessor error: <nil>"
"""What kubectl 1.33's ``wait --for=condition=...`` says, and exits 1 on, when the object
has no conditions at all yet: a CRD in the moment before the API server's controller
first writes its status."""


def wait_established(plane: ControlPlane, home: Path, timeout: float = 60.0) -> None:
    """``kubectl wait --for=condition=Established`` on the project's CRD, asked again
    while the CRD has no conditions yet (which kubectl reports as an error, not a wait)."""
    wait = ("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")

    def established() -> str | None:
        out = run_kubectl(plane, home, *wait, f"--timeout={timeout:g}s", check=False)
        if CONDITIONS_NOT_YET in out:
            return None
        assert "condition met" in out, f"kubectl {' '.join(wait)}:\n{out}"
        return out

    poll(established, timeout=timeout, what="the CRD Established", interval=0.5)


T = TypeVar("T")


def poll(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy; fail
    saying ``what`` was not reached, with its last value (synchronous: for fixtures and
    tests that use blocking clients)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or probe}; last {value!r}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rbac_objects(suffix: str) -> tuple[str, list[dict[str, Any]]]:
    """deploy/rbac.yaml with its namespace and cluster-wide names made unique to one run."""
    documents = [copy.deepcopy(doc) for doc in load_yaml(RBAC_FILE)]
    account = next(doc for doc in documents if doc["kind"] == "ServiceAccount")
    namespace = f"{account['metadata']['namespace']}-{suffix}"
    for doc in documents:
        meta = doc["metadata"]
        if doc["kind"] == "ServiceAccount":
            meta["namespace"] = namespace
        else:
            meta["name"] = f"{meta['name']}-{suffix}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
            for subject in doc["subjects"]:
                subject["namespace"] = namespace
    return namespace, documents


@dataclass(frozen=True)
class OperatorIdentity:
    """deploy/rbac.yaml installed for one test, and a namespace for its BrokerClusters."""

    plane: ControlPlane
    namespace: str
    """The operator's own namespace (its ServiceAccount's)."""
    account: str
    clusters_namespace: str

    @property
    def username(self) -> str:
        """The name the audit log gives the operator's requests."""
        return f"system:serviceaccount:{self.namespace}:{self.account}"

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with a fresh token of the ServiceAccount."""
        token = self.plane.service_account_token(self.namespace, self.account, create=False)
        return self.plane.write_token_kubeconfig(path, token)

    def operator(self, workdir: Path, *, resync: float = 1.0, **options: Any) -> OperatorProcess:
        """The operator as a process with this identity (not started)."""
        kubeconfig = self.kubeconfig(workdir / f"{self.account}-{uuid.uuid4().hex[:6]}.kubeconfig")
        log = workdir / f"operator-{uuid.uuid4().hex[:6]}.log"
        return OperatorProcess(kubeconfig, log, resync=resync, **options)

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events of this identity's requests."""
        return [e for e in self.plane.audit_events() if e["user"].get("username") == self.username]


@contextlib.contextmanager
def created_as_admin(
    plane: ControlPlane, namespaces: list[str], objects: list[tuple[str, dict[str, Any]]]
) -> Iterator[None]:
    """The namespaces, then each (collection path, object) created by the admin; the
    namespaces deleted again afterwards (and with them what was created in them), and
    the cluster-wide objects too."""
    created: list[str] = []
    with plane.client() as admin:
        try:
            for name in namespaces:
                answer = admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
                assert answer.status_code == 201, answer.text
                created.append(f"/api/v1/namespaces/{name}")
            for path, body in objects:
                answer = admin.post(path, json=body)
                assert answer.status_code == 201, answer.text
                created.append(f"{path}/{body['metadata']['name']}")
            yield
        finally:
            for path in reversed(created):
                admin.delete(path)


@contextlib.contextmanager
def installed_identity(
    plane: ControlPlane, home: Path, *, crd: bool = True
) -> Iterator[OperatorIdentity]:
    """deploy/rbac.yaml (unique names) and a namespace for clusters; the CRD too if ``crd``."""
    if crd:
        install_crd(plane, home)
    suffix = uuid.uuid4().hex[:8]
    operator_ns, documents = rbac_objects(suffix)
    clusters_ns = f"brokers-{suffix}"
    objects = [(RBAC_PATHS[doc["kind"]].format(namespace=operator_ns), doc) for doc in documents]
    account = next(doc for doc in documents if doc["kind"] == "ServiceAccount")
    with created_as_admin(plane, [operator_ns, clusters_ns], objects):
        yield OperatorIdentity(plane, operator_ns, account["metadata"]["name"], clusters_ns)


@pytest.fixture
def operator_identity(control_plane: ControlPlane, tmp_path: Path) -> Iterator[OperatorIdentity]:
    """The CRD, deploy/rbac.yaml in a namespace of its own, a namespace for clusters."""
    with installed_identity(control_plane, tmp_path) as identity:
        yield identity


DEPLOY_FILES = [DEPLOY / name for name in ("operator.yaml", "rbac.yaml", "namespace.yaml")]
"""Everything of deploy/ but the CRD: shared by every test, never deleted (deleting it
would delete every BrokerCluster of the control plane)."""


def remove_deploy(plane: ControlPlane, home: Path) -> None:
    """deploy/'s objects but the CRD deleted, and their namespace gone (its controller
    finalizes it: asynchronous)."""
    files = [arg for path in DEPLOY_FILES for arg in ("-f", str(path))]
    run_kubectl(plane, home, "delete", "--ignore-not-found", "--wait=false", *files)
    namespace = next(doc for doc in load_yaml(RBAC_FILE) if doc["kind"] == "ServiceAccount")[
        "metadata"
    ]["namespace"]
    with plane.client() as admin:
        # Synchronous: this runs in fixtures, outside the test's event loop.
        deadline = time.monotonic() + 120
        while admin.get(f"/api/v1/namespaces/{namespace}").status_code != 404:
            assert time.monotonic() < deadline, f"namespace {namespace} not deleted"
            time.sleep(0.5)


@pytest.fixture
def deploy_home(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    """A home for kubectl; deploy/'s fixed-name objects absent before and removed after
    (their names are fixed: tests that apply deploy/ must run one at a time)."""
    remove_deploy(control_plane, tmp_path)
    try:
        yield tmp_path
    finally:
        remove_deploy(control_plane, tmp_path)


def events_about(admin: httpx.Client, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events whose involved object is ``name`` in ``namespace``."""
    items: list[dict[str, Any]] = admin.get(f"/api/v1/namespaces/{namespace}/events").json()[
        "items"
    ]
    return [e for e in items if e["involvedObject"].get("name") == name]
