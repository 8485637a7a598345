"""The generated server secret, on the real API server.

A BrokerCluster that names no Secret of its own gets one the operator makes
(see ``tests/operator/test_server_secret.py`` for what the manifests read
from it): created once, owned by the cluster, never read back or changed,
its value in no Event and no log line; a cluster that names a Secret gets
none; and a generated Secret removed behind the operator's back is made
again once the operator checks again. The operator runs with
``deploy/rbac.yaml``'s token (which grants ``create`` on Secrets, not
``get``), serving the test's namespace. The last test runs the pods as
processes (``processkubelet.py``) with client tokens on and no secret of the
user's: they start, and a server without the secret is refused.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker_operator.kube import KubeClient
from broker_operator.manifests.secret import GENERATED_KEY
from broker_operator.metrics import OperatorStats
from broker_operator.naming import COORDINATOR_PORT
from broker_operator.reconcile import SECRET_RECHECK_SECONDS, Reconciler
from tests.e2e.helpers import receive, subscribe
from tests.k8s.brokerclusters import Namespace, operator_resyncs, owned_idents, running_operator
from tests.k8s.processkubelet import Pod, ProcessKubelet
from tests.k8s.support import OperatorIdentity
from tests.operator.support import broker_cluster, until
from webrtc_broker.client import BrokerClient
from webrtc_broker.config import OperatorConfig
from webrtc_broker.tokens import issue_token

pytestmark = pytest.mark.timeout(240)

OWNED = owned_idents("demo")
SECRET = ("", "secrets", "demo-server-secret")


@pytest.fixture
def ns(operator_identity: OperatorIdentity) -> Iterator[Namespace]:
    with operator_identity.plane.client() as admin:
        yield Namespace(admin, operator_identity.clusters_namespace)


async def test_the_operator_creates_it_once_and_never_changes_it(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path) as operator:
        uid = ns.create(broker_cluster())["metadata"]["uid"]
        made = await until(lambda: ns.get(*SECRET), timeout=60)
        assert [ref["uid"] for ref in made["metadata"]["ownerReferences"]] == [uid]
        assert made["type"] == "Opaque"
        value = made["data"][GENERATED_KEY]

        answer = ns.patch({"spec": {"commServers": {"replicas": 3}}})
        assert answer.status_code == 200, answer.text
        await until(lambda: ns.cluster().get("status", {}).get("servers") == 3, timeout=60)
        await operator_resyncs(operator, 3)
        again = ns.get(*SECRET)
        log = operator.log()
    assert again is not None and again["data"][GENERATED_KEY] == value
    assert again["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    notes = " ".join(event["message"] for event in ns.events(uid))
    assert f"created Secret {ns.name}/demo-server-secret" in notes
    plain = base64.b64decode(value).decode()
    assert plain not in notes and plain not in log and value not in log
    # Never read back: the operator's only requests about Secrets are creates.
    verbs = {
        e["verb"]
        for e in operator_identity.audit_events()
        if e.get("objectRef", {}).get("resource") == "secrets"
        and e["objectRef"].get("namespace") == ns.name
    }
    assert verbs == {"create"}, verbs


async def test_a_secret_removed_behind_its_back_is_made_again(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    """A create that conflicts may meet the Secret of a deleted cluster of the same name,
    which the garbage collector removes a moment later: the operator asks again after
    SECRET_RECHECK_SECONDS. A reconciler in this process, with the operator's token and
    a clock the test moves, stands in for the operator's process."""
    plane = operator_identity.plane
    token = plane.service_account_token(
        operator_identity.namespace, operator_identity.account, create=False
    )
    info = kopf.ConnectionInfo(
        server=plane.server, ca_path=str(plane.pki / "ca.crt"), token=token, scheme="Bearer"
    )
    client = KubeClient(info)
    now = [1000.0]
    reconciler = Reconciler(client, OperatorStats(), OperatorConfig(), clock=lambda: now[0])
    try:
        body = ns.create(broker_cluster())
        outcome = await reconciler.reconcile(body)
        assert outcome.problem is None, outcome
        assert ns.get(*SECRET) is not None
        answer = ns.admin.delete(ns.path(*SECRET))
        assert answer.status_code == 200, answer.text
        await reconciler.reconcile(body)
        assert ns.get(*SECRET) is None  # not asked yet
        now[0] += SECRET_RECHECK_SECONDS + 1
        outcome = await reconciler.reconcile(body)
        assert ns.get(*SECRET) is not None
        assert f"created Secret {ns.name}/demo-server-secret" in outcome.changes
    finally:
        await client.close()


async def test_no_secret_is_made_for_a_cluster_that_names_one(
    operator_identity: OperatorIdentity, ns: Namespace, tmp_path: Path
) -> None:
    async with running_operator(operator_identity, tmp_path) as operator:
        auth = {"mode": "SharedSecret", "secretRef": {"name": "mine"}}
        ns.create(broker_cluster(auth=auth))
        await until(lambda: ns.all_exist(OWNED), timeout=60)
        await operator_resyncs(operator, 3)
    assert ns.get(*SECRET) is None
    secrets = ns.admin.get(ns.path("", "secrets")).json()["items"]
    assert secrets == [], [s["metadata"]["name"] for s in secrets]


JWT_KEY = "operator-test-client-token-key-0123456789"


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


async def test_client_tokens_and_no_secret_of_the_users_run_and_admit_no_rogue(
    operator_identity: OperatorIdentity,
    ns: Namespace,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """With client tokens on, the services refuse to start without a server secret: the
    generated one lets the pods (run as processes by a process kubelet) start, and a
    server without it is refused by the coordinator."""
    answer = ns.admin.post(ns.path("", "secrets"), json=secret("tokens", secret=JWT_KEY))
    assert answer.status_code == 201, answer.text
    spec = {
        # One coordinator: the process kubelet's peers Service leads to one replica.
        "coordinator": {"replicas": 1},
        "commServers": {"replicas": 2, "drainSeconds": 1},
        "auth": {"clients": {"mode": "JWT", "secretRef": {"name": "tokens"}}},
    }
    kubelet = ProcessKubelet(operator_identity.plane, ns.name, tmp_path)
    try:
        await kubelet.start()
        # The node lifecycle controller lifts the not-ready taint of a new node.
        await until(kubelet.node_ready, timeout=60, interval=0.5)
        async with running_operator(operator_identity, tmp_path):
            ns.create(broker_cluster(**spec))

            def pods() -> list[Pod] | None:
                coordinators = kubelet.running("demo-coordinator-")
                servers = kubelet.running("demo-commserver-")
                if (len(coordinators), len(servers)) != (1, 2):
                    return None
                return [*coordinators, *servers]

            running = await until(pods, timeout=120, interval=0.5)
            for pod in running:
                await until(lambda pod=pod: ready(kubelet, pod), timeout=60)  # type: ignore[misc]
            url = kubelet.service_url("demo-coordinator", COORDINATOR_PORT)
            # A server without the secret is refused; the operator's own servers got in.
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{url}/discover?role=COMMUNICATION_SERVER&name=rogue")
            assert refused.value.response.status_code == 403
            alice = await BrokerClient.connect(url, issue_token(JWT_KEY, "alice", 60), timeout=30)
            bob = await BrokerClient.connect(url, issue_token(JWT_KEY, "bob", 60), timeout=30)
            try:
                await subscribe(bob, ["room"])
                await subscribe(alice, ["room"])

                async def delivered() -> bool:
                    alice.publish_identity("room", "hello")
                    try:
                        got = await receive(bob, timeout=0.5)
                    except TimeoutError:
                        return False
                    return got.identity == b"alice"

                await until(delivered, timeout=30)
            finally:
                await alice.close()
                await bob.close()
        assert not kubelet.errors, kubelet.errors
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(kubelet.describe())
            print(kubelet.logs())
        await kubelet.close()


async def ready(kubelet: ProcessKubelet, pod: Pod) -> bool:
    """The probes pass and the kubelet has seen it (its Services route to the pod only
    then: a coordinator turns ready only once a comm server linked to it, a probe
    period or so after it started)."""
    if not pod.ready:
        return False
    return await kubelet.probe(pod, "livenessProbe") and await kubelet.probe(pod, "readinessProbe")
