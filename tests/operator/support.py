"""Helpers for the operator's tests: the manifests, BrokerClusters, the operator process."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from broker_operator import GROUP, VERSION
from tests.support import ROOT, eventually, free_port

DEPLOY = ROOT / "deploy"
CRD_FILE = DEPLOY / "crd.yaml"
EXAMPLE_FILE = DEPLOY / "examples" / "brokercluster.yaml"
IMAGE = "webrtc-broker:test"


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd() -> dict[str, Any]:
    return load_yaml(CRD_FILE)[0]


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def example() -> dict[str, Any]:
    return load_yaml(EXAMPLE_FILE)[0]


CLUSTER_SCOPED_RESOURCES = {("apiextensions.k8s.io", "customresourcedefinitions")}
"""What deploy/rbac.yaml's ClusterRole grants beyond the Role of a served namespace."""


def namespace_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRole's rules that a Role in a served namespace carries too: all but
    those on cluster-scoped resources (kopf's CRD scanning, only when serving all)."""
    return [
        rule
        for rule in rules
        if not any(
            (group, resource) in CLUSTER_SCOPED_RESOURCES
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        )
    ]


def broker_cluster(name: str = "demo", /, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BrokerCluster",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, **copy.deepcopy(spec)},
    }


@dataclass
class OperatorProcess:
    """``webrtc-broker operator`` as a child process, with its own ports and log."""

    kubeconfig: Path
    log_path: Path
    resync: float = 0.5
    status_url: str | None = None
    namespaces: tuple[str, ...] = ()
    """Served namespaces (``--namespace``); empty: all of them, as ``deploy/`` runs it."""
    metrics_port: int = 0
    health_port: int = 0
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn the operator and wait until kopf's liveness endpoint answers."""
        await self.spawn()

        async def healthy() -> bool:
            async with httpx.AsyncClient(timeout=2) as client:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                return (await client.get(url)).status_code == 200

        await eventually(healthy, timeout=30)

    async def spawn(self) -> None:
        """Start the process without waiting for it to be up."""
        # Ports given by the test are kept (one may be taken on purpose).
        self.metrics_port = self.metrics_port or free_port()
        self.health_port = self.health_port or free_port()
        args = [
            "operator",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--resync-seconds",
            str(self.resync),
        ]
        if self.status_url:
            args += ["--status-url", self.status_url]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "webrtc_broker", *args, stdout=log, stderr=log, env=env
            )

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def until(
    check: Callable[[], Any | Awaitable[Any]], timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll a (sync or async) check until it returns something truthy."""

    async def probe() -> Any:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        return result

    return await eventually(probe, timeout=timeout, interval=interval)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in obj.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return None


def condition_status(obj: dict[str, Any], kind: str) -> str | None:
    """``"True"``/``"False"`` of one condition, ``None`` while it is not reported."""
    found = condition(obj, kind)
    return None if found is None else str(found["status"])
