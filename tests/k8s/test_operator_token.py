"""The operator keeps working when its ServiceAccount token is rotated and the old one revoked.

In a pod, the operator's token is a bound ServiceAccount token in a projected
file that the kubelet rewrites before it expires; a token also stops working
at once when the object it is bound to is deleted. Here the operator reads
its token from a file (``tokenFile`` in its kubeconfig, as in a pod), the
test writes a new token there and revokes the old one by deleting the Secret
it was bound to (the real API server then answers it 401), and the operator
must go on reconciling: a spec change reaches the StatefulSet and the resync
puts back a Service deleted behind its back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.support import OperatorIdentity
from tests.operator.support import OperatorProcess, example, until

pytestmark = pytest.mark.timeout(180)


def bound_token(admin: httpx.Client, identity: OperatorIdentity, secret: str) -> str:
    """A token of the operator's ServiceAccount, valid while Secret ``secret`` exists."""
    path = f"/api/v1/namespaces/{identity.namespace}/secrets"
    answer = admin.post(path, json={"metadata": {"name": secret}})
    assert answer.status_code == 201, answer.text
    uid = answer.json()["metadata"]["uid"]
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid},
        },
    }
    token_path = f"/api/v1/namespaces/{identity.namespace}/serviceaccounts/{identity.account}/token"
    answer = admin.post(token_path, json=request)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["status"]["token"])


async def test_a_rotated_and_revoked_token_is_read_again(
    operator_identity: OperatorIdentity, tmp_path: Path
) -> None:
    plane = operator_identity.plane
    namespace = operator_identity.clusters_namespace
    token_file = tmp_path / "token"
    kubeconfig = plane.write_token_file_kubeconfig(tmp_path / "operator.kubeconfig", token_file)
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", resync=1.0, namespaces=(namespace,)
    )
    body = example()
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    crs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    statefulset = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}-commserver"
    service = f"/api/v1/namespaces/{namespace}/services/{name}-coordinator"
    with plane.client() as admin:
        first = bound_token(admin, operator_identity, "operator-token-1")
        token_file.write_text(first)
        try:
            await operator.start()
            assert admin.post(crs, json=body).status_code == 201
            await until(lambda: admin.get(statefulset).status_code == 200, timeout=60)

            # Rotate: the new token in the file, the old one revoked.
            token_file.write_text(bound_token(admin, operator_identity, "operator-token-2"))
            secrets = f"/api/v1/namespaces/{operator_identity.namespace}/secrets"
            assert admin.delete(f"{secrets}/operator-token-1").status_code == 200
            with plane.client(token=first) as revoked:
                await until(lambda: revoked.get("/api").status_code == 401, timeout=30)

            # kopf's handler (a spec change) and the resync (a deleted Service) both work on.
            patch = {"spec": {"commServers": {"replicas": 3}}}
            answer = admin.patch(
                f"{crs}/{name}",
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert answer.status_code == 200, answer.text
            assert admin.delete(service).status_code == 200

            def replicas() -> Any:
                return admin.get(statefulset).json()["spec"]["replicas"] == 3

            await until(replicas, timeout=60)
            await until(lambda: admin.get(service).status_code == 200, timeout=60)
            assert operator.process is not None and operator.process.returncode is None
        finally:
            code = await operator.stop()
    log = operator.log()
    assert code == 0, log
    assert "Traceback" not in log, log
