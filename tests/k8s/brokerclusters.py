"""Helpers for the operator's tests on the real API server: BrokerClusters, what the
operator made of them, its Events and its metrics, in one test's namespace.

Everything here reads and writes through the admin's client, as ``kubectl``
would; the operator under test runs as a process with ``deploy/rbac.yaml``'s
token (:func:`running_operator`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.support import OperatorIdentity
from tests.operator.support import OperatorProcess, until

MERGE = {"Content-Type": "application/merge-patch+json"}

Ident = tuple[str, str, str]  # (API group, plural, name)

OWNED_KINDS = [
    ("", "v1", "services"),
    ("", "v1", "secrets"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("policy", "v1", "poddisruptionbudgets"),
]
"""Every kind the operator makes (ServiceMonitors only where their API exists)."""


def owned_idents(name: str = "demo") -> list[Ident]:
    """What the operator makes for a default BrokerCluster ``name`` (besides its Secret)."""
    return [
        ("", "services", f"{name}-coordinator"),
        ("", "services", f"{name}-coordinator-peers"),
        ("", "services", f"{name}-commserver"),
        ("apps", "deployments", f"{name}-coordinator"),
        ("apps", "statefulsets", f"{name}-commserver"),
        ("policy", "poddisruptionbudgets", f"{name}-coordinator"),
        ("policy", "poddisruptionbudgets", f"{name}-commserver"),
    ]


def _root(group: str, version: str = "v1") -> str:
    return "/api/v1" if group == "" else f"/apis/{group}/{version}"


@dataclass
class Namespace:
    """One test's namespace, seen through the admin's client."""

    admin: httpx.Client
    name: str

    def path(self, group: str, plural: str, name: str = "", subresource: str = "") -> str:
        version = VERSION if group == GROUP else "v1"
        path = f"{_root(group, version)}/namespaces/{self.name}/{plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    # --- BrokerClusters --------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.admin.post(self.path(GROUP, PLURAL), json=body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def cluster(self, name: str = "demo") -> dict[str, Any]:
        answer = self.admin.get(self.path(GROUP, PLURAL, name))
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def patch(
        self, patch: dict[str, Any], name: str = "demo", subresource: str = ""
    ) -> httpx.Response:
        """A merge patch of BrokerCluster ``name`` (its answer: the server may refuse)."""
        return self.admin.patch(
            self.path(GROUP, PLURAL, name, subresource), json=patch, headers=MERGE
        )

    def delete(self, name: str = "demo") -> None:
        answer = self.admin.delete(self.path(GROUP, PLURAL, name))
        assert answer.status_code in (200, 202), answer.text

    # --- other objects ---------------------------------------------------------

    def get(self, group: str, plural: str, name: str) -> dict[str, Any] | None:
        answer = self.admin.get(self.path(group, plural, name))
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def all_exist(self, idents: list[Ident]) -> bool:
        return all(self.get(*ident) is not None for ident in idents)

    def none_exist(self, idents: list[Ident]) -> bool:
        return all(self.get(*ident) is None for ident in idents)

    def owned(self, uid: str) -> dict[Ident, dict[str, Any]]:
        """Every object of the operator's kinds that names ``uid`` as an owner."""
        found = {}
        for group, version, plural in OWNED_KINDS:
            path = f"{_root(group, version)}/namespaces/{self.name}/{plural}"
            for item in self.admin.get(path).json()["items"]:
                refs = item["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    found[(group, plural, item["metadata"]["name"])] = item
        return found

    def events(self, uid: str) -> list[dict[str, Any]]:
        """Events about the object ``uid``."""
        items = self.admin.get(f"/api/v1/namespaces/{self.name}/events").json()["items"]
        return [e for e in items if e["involvedObject"].get("uid") == uid]

    def reasons(self, uid: str, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.events(uid) if e["reason"] == reason]


def replicas(ns: Namespace, name: str = "demo-commserver") -> int:
    """A StatefulSet's ``spec.replicas`` (-1 while it does not exist)."""
    sts = ns.get("apps", "statefulsets", name)
    return int(sts["spec"]["replicas"]) if sts else -1


def env_of(workload: dict[str, Any]) -> dict[str, str | None]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# --- the operator ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_operator(
    identity: OperatorIdentity, workdir: Path, *, resync: float = 1.0, **options: Any
) -> AsyncIterator[OperatorProcess]:
    """The operator with ``deploy/rbac.yaml``'s token, serving the identity's namespace
    only (tests run side by side on one server); its log's end is printed on failure."""
    options.setdefault("namespaces", (identity.clusters_namespace,))
    operator = identity.operator(workdir, resync=resync, **options)
    try:
        await operator.start()
        yield operator
    except BaseException:
        print(operator.log()[-8000:])
        raise
    finally:
        await operator.stop()


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=3) as client:
        return (await client.get(f"http://127.0.0.1:{port}/metrics")).text


def resyncs(text: str) -> float:
    found = re.search(r"^webrtc_broker_operator_resyncs_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


async def operator_resyncs(operator: OperatorProcess, rounds: int, timeout: float = 60) -> None:
    """Wait until the operator has finished ``rounds`` more resync rounds."""
    start = resyncs(await scrape(operator.metrics_port))

    async def done() -> bool:
        return resyncs(await scrape(operator.metrics_port)) >= start + rounds

    await until(done, timeout=timeout, interval=0.2)
