"""The operator's kopf serves a CRD installed after the operator started.

kopf learns the resources it serves from the API's discovery: at start and,
serving every namespace, on every event of a CRD. A CRD appears in discovery
a moment after the event that makes it Established, so kopf can read
discovery too early and miss it; the resync then notices BrokerClusters that
kopf has not handled and touches the CRD, so kopf reads discovery again
(``broker_operator.served``). Either way kopf ends up handling the
BrokerCluster: its handler runs and kopf records what it handled in the
object's annotation. With kopf's scanning off, that never happens: only the
resync would reconcile it.

The test needs a control plane without the CRD, so it starts one of its own
(about 10 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.handlers import STORAGE_PREFIX
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import install_crd, installed_identity
from tests.operator.support import example, until

pytestmark = pytest.mark.timeout(240)

HANDLED = f"{STORAGE_PREFIX}/last-handled-configuration"
"""Written by kopf once a handler of the object succeeded."""


@pytest.fixture
def bare_plane(control_plane: ControlPlane, tmp_path: Path) -> Iterator[ControlPlane]:
    """A second control plane, without the CRD the shared one carries."""
    plane = ControlPlane(tmp_path / "plane")
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


async def test_a_crd_installed_later_is_served_by_kopf(
    bare_plane: ControlPlane, tmp_path: Path
) -> None:
    with installed_identity(bare_plane, tmp_path, crd=False) as identity:
        operator = identity.operator(tmp_path, resync=2.0)
        namespace = identity.clusters_namespace
        body = example()
        body["metadata"]["namespace"] = namespace
        name = body["metadata"]["name"]
        crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        try:
            await operator.start()
            install_crd(bare_plane, tmp_path)
            with bare_plane.client() as admin:
                answer = admin.post(crs, json=body)
                assert answer.status_code == 201, answer.text

                def handled_by_kopf() -> Any:
                    annotations = (
                        admin.get(f"{crs}/{name}").json()["metadata"].get("annotations", {})
                    )
                    return HANDLED in annotations

                try:
                    await until(handled_by_kopf, timeout=60)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{operator.log()[-6000:]}") from exc
        finally:
            code = await operator.stop()
        log = operator.log()
        assert code == 0, log
        nudged = "touching their CRD" in log
        print("kopf needed a nudge:", nudged)
        forbidden = [
            (e["verb"], e.get("requestURI"))
            for e in identity.audit_events()
            if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
        ]
        assert not forbidden, f"{forbidden}\n{log}"
