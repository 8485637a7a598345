"""Resyncs against the real API server change nothing and repeat nothing.

The API server stores resource quantities in canonical form (``0.5`` as
``500m``, ``1024Mi`` as ``1Gi``): a compare of strings would patch the
workloads again on every resync, with an ``Applied`` event each time. And a
warning about a missing API (the ServiceMonitor kind, not installed here) is
posted once per generation of the BrokerCluster, not on every resync. The
audit log shows the operator's requests; the Events API what it posted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.cluster import ControlPlane
from tests.k8s.test_operator_rbac import installed  # noqa: F401  (a fixture)
from tests.operator.support import OperatorProcess, example, until

pytestmark = pytest.mark.timeout(180)

RESYNC = 1.0
RESYNCS = 5


def operator_for(
    control_plane: ControlPlane, identity: tuple[str, str, str], tmp_path: Path
) -> tuple[OperatorProcess, str]:
    """The operator as a process with deploy/rbac.yaml's identity, and that identity's name."""
    operator_ns, account, _ = identity
    token = control_plane.service_account_token(operator_ns, account, create=False)
    kubeconfig = control_plane.write_token_kubeconfig(tmp_path / "operator.kubeconfig", token)
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", resync=RESYNC)
    return operator, f"system:serviceaccount:{operator_ns}:{account}"


def events_about(admin: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get(f"/api/v1/namespaces/{namespace}/events").json()[
        "items"
    ]
    return [e for e in items if e["involvedObject"].get("name") == name]


async def test_canonicalised_quantities_are_not_patched_again(
    control_plane: ControlPlane,
    installed: tuple[str, str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, _, namespace = installed
    operator, username = operator_for(control_plane, installed, tmp_path)
    body = example()
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    written = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}}
    body["spec"]["coordinator"]["resources"] = written
    body["spec"]["commServers"]["resources"] = {
        "requests": {"cpu": "1.5", "memory": "1000k"},
        "limits": {"memory": "1.5Gi"},
    }
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    with control_plane.client() as admin:
        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text

            def reported() -> bool:
                status = admin.get(f"{crs}/{name}").json().get("status") or {}
                return bool(status.get("phase") and status.get("conditions"))

            await until(reported, timeout=60)
            await until(
                lambda: admin.get(f"{apps}/statefulsets/{name}-commserver").status_code == 200,
                timeout=60,
            )
            # The server stored the canonical forms, not what was written.
            coordinator = admin.get(f"{apps}/deployments/{name}-coordinator").json()
            stored = coordinator["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert stored == {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "2Gi"},
            }
            servers = admin.get(f"{apps}/statefulsets/{name}-commserver").json()
            stored = servers["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert stored == {
                "requests": {"cpu": "1500m", "memory": "1M"},
                "limits": {"memory": "1536Mi"},
            }
            await asyncio.sleep(RESYNC * RESYNCS)
            events = events_about(admin, namespace, name)
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    patches = [
        (e["objectRef"]["resource"], e["objectRef"].get("name"))
        for e in control_plane.audit_events()
        if e["user"].get("username") == username
        and e["verb"] == "patch"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e["objectRef"].get("resource") in ("deployments", "statefulsets")
    ]
    assert patches == [], f"{patches}\n{log}"
    applied = [e["message"] for e in events if e["reason"] == "Applied"]
    assert not [m for m in applied if m.startswith("updated")], applied
    assert all(e.get("count", 1) == 1 for e in events if e["reason"] == "Applied"), events


async def test_missing_service_monitor_api_is_told_once_per_generation(
    control_plane: ControlPlane,
    installed: tuple[str, str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, _, namespace = installed
    operator, _ = operator_for(control_plane, installed, tmp_path)
    body = example()
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    body["spec"]["metrics"] = {"enabled": True, "serviceMonitor": {"enabled": True}}
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    with control_plane.client() as admin:

        def warnings() -> list[dict[str, Any]]:
            return [
                e
                for e in events_about(admin, namespace, name)
                if e["reason"] == "ServiceMonitorUnavailable"
            ]

        try:
            await operator.start()
            answer = admin.post(crs, json=body)
            assert answer.status_code == 201, answer.text
            await until(warnings, timeout=60)
            await asyncio.sleep(RESYNC * RESYNCS)
            told = warnings()
            assert len(told) == 1 and told[0].get("count", 1) == 1, told
            # A new generation of the spec: told again, once.
            answer = admin.patch(
                f"{crs}/{name}",
                json={"spec": {"commServers": {"replicas": 3}}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert answer.status_code == 200, answer.text
            await until(lambda: len(warnings()) == 2, timeout=60)
            await asyncio.sleep(RESYNC * RESYNCS)
            assert len(warnings()) == 2, warnings()
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
