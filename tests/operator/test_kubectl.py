"""The real kubectl against the emulator: install deploy/, then use the example as users do.

kubectl 1.33 talks to the emulator as to any API server (discovery, OpenAPI
v3 for server-side field validation, client-side apply, the scale
subresource, server-side printing with the CRD's printer columns). The
operator runs alongside, so what kubectl shows is what the operator did.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.operator.apiserver import ApiServer
from tests.operator.kubectl import kubectl
from tests.operator.support import DEPLOY, EXAMPLE_FILE, OperatorProcess, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kubectl_binary() -> Path:
    return kubectl()


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    async def __call__(self, *args: str, check: bool = True) -> str:
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        text = output.decode()
        if check:
            assert process.returncode == 0, f"kubectl {' '.join(args)}:\n{text}"
        return text


@pytest.fixture
def run(kubectl_binary: Path, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl_binary, kubeconfig, tmp_path)


async def test_kubectl_installs_deploy_and_the_example(
    run: Kubectl, apiserver: ApiServer, operator: OperatorProcess
) -> None:
    # The CRD is already there (the operator needs it to start): apply updates it.
    out = await run("apply", "-f", str(DEPLOY))
    for line in (
        "customresourcedefinition.apiextensions.k8s.io/brokerclusters.webrtc-broker.io",
        "namespace/webrtc-broker created",
        "deployment.apps/webrtc-broker-operator created",
        "serviceaccount/webrtc-broker-operator created",
        "clusterrole.rbac.authorization.k8s.io/webrtc-broker-operator created",
        "clusterrolebinding.rbac.authorization.k8s.io/webrtc-broker-operator created",
    ):
        assert line in out, out
    assert "unchanged" in await run("apply", "-f", str(DEPLOY / "rbac.yaml"))

    assert "brokercluster.webrtc-broker.io/demo created" in await run(
        "apply", "-f", str(EXAMPLE_FILE)
    )
    await until(lambda: run("get", "statefulset", "demo-commserver", check=False), timeout=30)

    async def phase() -> str:
        return await run("get", "brokercluster", "demo", "-o", "jsonpath={.status.phase}")

    assert await until(phase) == "Progressing"
    table = await run("get", "brokerclusters")
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "SERVERS", "READY", "PHASE", "ENDPOINT", "AGE"]
    assert row.split()[:5] == [
        "demo",
        "2",
        "0",
        "Progressing",
        "ws://demo-coordinator.default.svc:9090",
    ]

    assert "scaled" in await run("scale", "brokercluster", "demo", "--replicas=3")

    async def sts_replicas() -> bool:
        out = await run("get", "statefulset", "demo-commserver", "-o", "jsonpath={.spec.replicas}")
        return out == "3"

    await until(sts_replicas, timeout=30)

    # A typo is refused by the server (kubectl asks for strict field validation).
    bad = EXAMPLE_FILE.read_text().replace("maxPeers:", "maxPeer:")
    bad_file = Path(run.env["HOME"]) / "bad.yaml"
    bad_file.write_text(bad)
    out = await run("apply", "-f", str(bad_file), check=False)
    assert 'unknown field "maxPeer"' in out, out

    assert 'brokercluster.webrtc-broker.io "demo" deleted' in await run(
        "delete", "-f", str(EXAMPLE_FILE)
    )
    assert "NotFound" in await run("get", "statefulset", "demo-commserver", check=False)
    assert "NotFound" in await run("get", "deployment", "demo-coordinator", check=False)
