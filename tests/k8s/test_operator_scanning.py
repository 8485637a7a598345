"""The operator serves a CRD installed after it started, without waiting for a resync.

kopf learns the resources it serves by scanning the API at start; with its
scanning off it never looks again, so an operator started before the CRD
(an install that applies everything at once, or a CRD upgraded by deleting
it) would never see a BrokerCluster through kopf, only through the periodic
resync. This test needs a control plane without the CRD, so it starts one of
its own (about 10 s); the resync interval is ten minutes, so only kopf's
watch can make the StatefulSet in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import install_crd, installed_identity
from tests.operator.support import example, until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def bare_plane(control_plane: ControlPlane, tmp_path: Path) -> Iterator[ControlPlane]:
    """A second control plane, without the CRD the shared one carries."""
    plane = ControlPlane(tmp_path / "plane")
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


async def test_a_crd_installed_later_is_served_at_once(
    bare_plane: ControlPlane, tmp_path: Path
) -> None:
    with installed_identity(bare_plane, tmp_path, crd=False) as identity:
        operator = identity.operator(tmp_path, resync=600.0)
        namespace = identity.clusters_namespace
        body = example()
        body["metadata"]["namespace"] = namespace
        name = body["metadata"]["name"]
        statefulset = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}-commserver"
        try:
            await operator.start()
            install_crd(bare_plane, tmp_path)
            with bare_plane.client() as admin:
                crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
                answer = admin.post(crs, json=body)
                assert answer.status_code == 201, answer.text
                await until(lambda: admin.get(statefulset).status_code == 200, timeout=60)
        finally:
            code = await operator.stop()
        log = operator.log()
        assert code == 0, log
        forbidden = [
            (e["verb"], e.get("requestURI"))
            for e in identity.audit_events()
            if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
        ]
        assert not forbidden, f"{forbidden}\n{log}"
