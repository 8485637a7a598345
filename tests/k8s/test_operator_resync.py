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
from tests.k8s.support import OperatorIdentity, events_about
from tests.operator.support import example, until

pytestmark = pytest.mark.timeout(180)

RESYNC = 1.0
RESYNCS = 5


async def test_canonicalised_quantities_are_not_patched_again(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    control_plane = operator_identity.plane
    operator = operator_identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
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
        for e in operator_identity.audit_events()
        if e["verb"] == "patch"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e["objectRef"].get("resource") in ("deployments", "statefulsets")
    ]
    assert patches == [], f"{patches}\n{log}"
    applied = [e["message"] for e in events if e["reason"] == "Applied"]
    assert not [m for m in applied if m.startswith("updated")], applied
    assert all(e.get("count", 1) == 1 for e in events if e["reason"] == "Applied"), events


async def test_missing_service_monitor_api_is_told_once_per_generation(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    namespace = operator_identity.clusters_namespace
    control_plane = operator_identity.plane
    operator = operator_identity.operator(tmp_path, resync=RESYNC, namespaces=(namespace,))
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
