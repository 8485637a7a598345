"""Helpers for tests whose pods run on the real node: a BrokerCluster that lands there,
waiting for pods (with what went wrong when they do not come), timing of phases.

The node is tainted (``tests.k8s.node.TAINT``) so that the pods of tests without
a node stay Pending; what must run there carries :data:`TOLERATIONS`. Nothing is
pulled from a registry: pods use the broker's image imported into the node's
containerd (the ``broker_image`` fixture) with ``imagePullPolicy: IfNotPresent``.

When a wait runs out, the error says what the namespace's pods are doing (phase,
conditions, container states and restarts), the namespace's events and the last
lines of each container's log (and of its previous run, after a restart): what
``kubectl describe`` and ``kubectl logs`` would tell a user.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.node import TOLERATION
from tests.operator.support import example

T = TypeVar("T")
TOLERATIONS: list[dict[str, str]] = [dict(TOLERATION)]
PULL_POLICY = "IfNotPresent"  # the image is in the node's containerd; there is no registry
LOG_LINES = 60


def clusters_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def node_broker_cluster(image: str, name: str | None = None) -> dict[str, Any]:
    """The example BrokerCluster (deploy/examples/) adapted to the node: the broker's
    image, and the node's taint tolerated by the coordinator and the comm servers."""
    body = copy.deepcopy(example())
    if name is not None:
        body["metadata"]["name"] = name
    spec = body["spec"]
    spec["image"] = image
    spec["imagePullPolicy"] = PULL_POLICY
    for part in ("coordinator", "commServers"):
        spec.setdefault(part, {})["tolerations"] = copy.deepcopy(TOLERATIONS)
    return body


@dataclass
class Phases:
    """Wall time of a test's phases, printed as each ends (``pytest -s`` shows them)."""

    what: str
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0
    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, phase: str) -> float:
        """End ``phase``: prints its duration and the time since the start."""
        now = time.monotonic() - self.started
        took = now - self.last
        self.last = now
        self.marks.append((phase, took))
        print(f"[{self.what}] {phase}: {took:.1f} s (at {now:.1f} s)", flush=True)
        return took

    def summary(self) -> str:
        parts = ", ".join(f"{phase} {took:.1f} s" for phase, took in self.marks)
        return f"[{self.what}] {parts}; total {self.last:.1f} s"


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in obj.get("status", {}).get("conditions", []) or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def pod_scheduled(pod: dict[str, Any]) -> bool:
    found = _condition(pod, "PodScheduled")
    return bool(found and found["status"] == "True")


def pod_ready(pod: dict[str, Any]) -> bool:
    found = _condition(pod, "Ready")
    return bool(found and found["status"] == "True")


def list_pods(admin: httpx.Client, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    params = {"labelSelector": selector} if selector else {}
    answer = admin.get(f"/api/v1/namespaces/{namespace}/pods", params=params)
    answer.raise_for_status()
    # Pods being deleted (a replaced one) are not the ones waited for.
    return [p for p in answer.json()["items"] if not p["metadata"].get("deletionTimestamp")]


def _container_state(status: dict[str, Any]) -> str:
    def one(state: dict[str, Any]) -> str:
        for kind, detail in state.items():
            extra = {k: v for k, v in detail.items() if k in ("reason", "message", "exitCode")}
            return f"{kind} {extra}" if extra else kind
        return "?"

    text = f"{status['name']}: {one(status.get('state', {}))}, ready={status.get('ready')}"
    text += f", restarts={status.get('restartCount', 0)}"
    if status.get("lastState"):
        text += f", last {one(status['lastState'])}"
    return text


def _log(admin: httpx.Client, namespace: str, pod: str, container: str, previous: bool) -> str:
    params: dict[str, Any] = {"container": container, "tailLines": LOG_LINES}
    if previous:
        params["previous"] = "true"
    try:
        answer = admin.get(f"/api/v1/namespaces/{namespace}/pods/{pod}/log", params=params)
    except httpx.HTTPError as exc:
        return f"(no log: {exc})"
    return answer.text if answer.status_code == 200 else f"(no log: {answer.status_code})"


def describe(admin: httpx.Client, namespace: str) -> str:
    """The namespace's pods (phase, conditions, containers), events, and container logs."""
    lines = [f"--- namespace {namespace}: pods"]
    try:
        pods = admin.get(f"/api/v1/namespaces/{namespace}/pods").json().get("items", [])
        events = admin.get(f"/api/v1/namespaces/{namespace}/events").json().get("items", [])
    except (httpx.HTTPError, ValueError) as exc:
        return f"--- namespace {namespace}: cannot be read: {exc}"
    for pod in pods:
        status = pod.get("status", {})
        lines.append(
            f"{pod['metadata']['name']} on {pod['spec'].get('nodeName') or '(no node)'}: "
            f"{status.get('phase')}"
        )
        for item in status.get("conditions", []) or []:
            reason = " ".join(filter(None, (item.get("reason"), item.get("message"))))
            lines.append(f"  {item['type']}={item['status']} {reason}".rstrip())
        for container in status.get("containerStatuses", []) or []:
            lines.append(f"  {_container_state(container)}")
    lines.append(f"--- namespace {namespace}: events")
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    for event in events:
        target = event.get("involvedObject", {})
        lines.append(
            f"{event.get('type')} {event.get('reason')} {target.get('kind')}/{target.get('name')}"
            f" (x{event.get('count', 1)}): {event.get('message', '').strip()}"
        )
    for pod in pods:
        name = pod["metadata"]["name"]
        for container in pod.get("status", {}).get("containerStatuses", []) or []:
            if "waiting" in container.get("state", {}) and not container.get("restartCount"):
                continue  # never ran: nothing logged
            lines.append(f"--- log {name}/{container['name']} (last {LOG_LINES} lines)")
            lines.append(_log(admin, namespace, name, container["name"], previous=False))
            if container.get("restartCount"):
                lines.append(f"--- previous log {name}/{container['name']}")
                lines.append(_log(admin, namespace, name, container["name"], previous=True))
    return "\n".join(lines)


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    admin: httpx.Client,
    namespaces: Iterable[str],
    interval: float = 1.0,
) -> T:
    """Poll ``check`` until it returns something truthy; else fail saying ``what`` was
    not reached, with the last value and :func:`describe` of each namespace."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            report = "\n".join(describe(admin, ns) for ns in namespaces)
            raise AssertionError(f"not within {timeout:.0f} s: {what}; last {value!r}\n{report}")
        time.sleep(interval)


def wait_pods(
    admin: httpx.Client,
    namespace: str,
    selector: str,
    count: int,
    *,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    namespaces: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``count`` pods of ``selector`` satisfying ``condition`` (e.g. :func:`pod_ready`)."""

    def found() -> list[dict[str, Any]] | None:
        pods = list_pods(admin, namespace, selector)
        return pods if len(pods) == count and all(condition(p) for p in pods) else None

    return wait_for(
        found,
        timeout=timeout,
        what=f"{count} pod(s) {selector} in {namespace} {what}",
        admin=admin,
        namespaces=[namespace, *namespaces],
    )


def cluster_status(admin: httpx.Client, namespace: str, name: str) -> dict[str, Any]:
    answer = admin.get(f"{clusters_path(namespace)}/{name}")
    answer.raise_for_status()
    status: dict[str, Any] = answer.json().get("status") or {}
    return status


def wait_running(
    admin: httpx.Client,
    namespace: str,
    name: str,
    *,
    timeout: float,
    namespaces: Iterable[str] = (),
) -> dict[str, Any]:
    """The BrokerCluster's status once its phase is ``Running``."""

    last: list[dict[str, Any]] = [{}]

    def running() -> dict[str, Any] | None:
        last[0] = cluster_status(admin, namespace, name)
        return last[0] if last[0].get("phase") == "Running" else None

    try:
        return wait_for(
            running,
            timeout=timeout,
            what=f"BrokerCluster {namespace}/{name} Running",
            admin=admin,
            namespaces=[namespace, *namespaces],
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- its last status: {last[0]}") from None


def wait_namespace_gone(admin: httpx.Client, namespace: str, timeout: float = 120.0) -> None:
    """The namespace deleted and finalized (its pods gone from the node)."""
    admin.delete(f"/api/v1/namespaces/{namespace}")
    deadline = time.monotonic() + timeout
    while admin.get(f"/api/v1/namespaces/{namespace}").status_code != 404:
        if time.monotonic() > deadline:
            raise AssertionError(f"namespace {namespace} not deleted within {timeout:.0f} s")
        time.sleep(1)
