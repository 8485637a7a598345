"""The operator when the API server fails, through the fault-injecting proxy of ``apiproxy.py``.

The operator (``deploy/rbac.yaml``'s token, serving the test's namespace)
talks to the real API server through the proxy; a test makes chosen
requests fail and then lets them through again: a refused write is a
``Degraded`` cluster with nothing deleted, which recovers once writes
succeed; watch streams broken mid-way are opened again by kopf, which keeps
reacting to changes; an API server that answers nothing but 503 for a while
does not end the operator, which reconciles what changed meanwhile once the
server answers again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from tests.k8s.apiproxy import ApiProxy, Call
from tests.k8s.brokerclusters import Namespace, env_of, operator_resyncs, owned_idents
from tests.k8s.support import OperatorIdentity
from tests.operator.support import OperatorProcess, broker_cluster, condition, until

pytestmark = pytest.mark.timeout(240)

OWNED = owned_idents("demo")


@pytest.fixture
async def proxy(operator_identity: OperatorIdentity) -> AsyncIterator[ApiProxy]:
    async with ApiProxy(operator_identity.plane) as running:
        yield running


@pytest.fixture
def ns(operator_identity: OperatorIdentity) -> Iterator[Namespace]:
    with operator_identity.plane.client() as admin:
        yield Namespace(admin, operator_identity.clusters_namespace)


@pytest.fixture
async def operator(
    operator_identity: OperatorIdentity,
    proxy: ApiProxy,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[OperatorProcess]:
    """The operator with deploy/rbac.yaml's token, through ``proxy``, serving the test's
    namespace; its log's end is printed when the test fails."""
    plane = operator_identity.plane
    token = plane.service_account_token(
        operator_identity.namespace, operator_identity.account, create=False
    )
    suffix = uuid.uuid4().hex[:6]
    process = OperatorProcess(
        proxy.kubeconfig(tmp_path / f"proxy-{suffix}.kubeconfig", token),
        tmp_path / f"operator-{suffix}.log",
        resync=1.0,
        namespaces=(operator_identity.clusters_namespace,),
    )
    try:
        await process.start()
        yield process
    finally:
        await process.stop()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(process.log()[-8000:])


def degraded_status(ns: Namespace, wanted: str) -> bool:
    found = condition(ns.cluster(), "Degraded")
    return found is not None and found["status"] == wanted


async def test_api_failures_degrade_and_recover(
    proxy: ApiProxy, operator: OperatorProcess, ns: Namespace
) -> None:
    ns.create(broker_cluster())
    await until(lambda: ns.all_exist(OWNED), timeout=60)
    await until(lambda: degraded_status(ns, "False"), timeout=60)

    def refused(call: Call) -> bool:
        return call.method == "PATCH" and call.path.endswith("/statefulsets/demo-commserver")

    rule = proxy.answer(refused, 500)
    answer = ns.patch({"spec": {"commServers": {"maxPeers": 7}}})
    assert answer.status_code == 200, answer.text
    await until(lambda: degraded_status(ns, "True"), timeout=60)
    found = condition(ns.cluster(), "Degraded")
    assert found is not None and found["reason"] == "ApplyFailed", found
    assert "500" in found["message"], found
    assert rule.hits >= 1
    assert ns.all_exist(OWNED), "nothing deleted"

    proxy.remove(rule)
    await until(lambda: degraded_status(ns, "False"), timeout=90)
    sts = ns.get("apps", "statefulsets", "demo-commserver")
    assert sts is not None
    max_peers = [v for k, v in env_of(sts).items() if k.endswith("MAX_PEERS")]
    assert max_peers == ["7"]
    assert operator.process is not None and operator.process.returncode is None


def resync_list(call: Call) -> bool:
    """The resync loop's own list of BrokerClusters (kopf's requests say ``kopf/``)."""
    return call.method == "GET" and call.path.endswith(f"/{PLURAL}") and not call.watch


async def test_broken_watches_are_opened_again(
    proxy: ApiProxy, operator: OperatorProcess, ns: Namespace
) -> None:
    # The resync loop sees no BrokerCluster: only kopf's watch can tell of a new one.
    hidden = proxy.answer(
        lambda call: resync_list(call) and not call.from_kopf,
        200,
        {"kind": "BrokerClusterList", "apiVersion": f"{GROUP}/{VERSION}", "items": []},
    )
    await until(lambda: hidden.hits >= 1, timeout=30)
    for round_ in range(3):
        watches = [c for c in proxy.calls if c.watch and c.path.endswith(f"/{PLURAL}")]
        assert watches, "kopf watches BrokerClusters"
        assert proxy.cut_watches(lambda call: call.path.endswith(f"/{PLURAL}")) >= 1
        name = f"cut-{round_}"
        ns.create(broker_cluster(name))
        await until(lambda name=name: ns.all_exist(owned_idents(name)), timeout=60)  # type: ignore[misc]
        reopened = [c for c in proxy.calls if c.watch and c.path.endswith(f"/{PLURAL}")]
        assert len(reopened) > len(watches)
    assert operator.process is not None and operator.process.returncode is None


async def test_an_api_server_answering_503_for_a_while_is_outlived(
    proxy: ApiProxy, operator: OperatorProcess, ns: Namespace
) -> None:
    ns.create(broker_cluster())
    await until(lambda: ns.all_exist(OWNED), timeout=60)
    outage = proxy.answer(lambda call: True, 503)
    proxy.cut_watches()
    # While nothing answers, the cluster changes.
    answer = ns.patch({"spec": {"commServers": {"replicas": 3}}})
    assert answer.status_code == 200, answer.text
    await until(lambda: outage.hits >= 10, timeout=60)
    await asyncio.sleep(3)  # a few failed resyncs and watch retries
    assert operator.process is not None and operator.process.returncode is None
    proxy.remove(outage)

    def replicas() -> int:
        sts = ns.get("apps", "statefulsets", "demo-commserver")
        return int(sts["spec"]["replicas"]) if sts else -1

    await until(lambda: replicas() == 3, timeout=90)
    await until(lambda: degraded_status(ns, "False"), timeout=90)
    await operator_resyncs(operator, 2)
    assert operator.process.returncode is None
