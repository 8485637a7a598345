"""Every cluster's comm servers prove a server secret: the user's, or one the operator makes.

Without one, anyone who reaches the coordinator registers as a comm server and
is handed clients, their tokens and every topic; with client tokens on, the
services refuse to start without it. So a ``BrokerCluster`` that names no
Secret gets a generated one: created once by the operator, owned by the
cluster, never read back or changed. The last test runs the operator's pods as
processes with client tokens on and no secret of the user's: they start, and a
server without the secret is refused.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import kopf
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker_operator.kube import KubeClient
from broker_operator.manifests import desired_objects
from broker_operator.manifests.secret import GENERATED_KEY, generated_secret
from broker_operator.metrics import OperatorStats
from broker_operator.naming import ClusterRef
from broker_operator.reconcile import SECRET_RECHECK_SECONDS, Reconciler
from broker_operator.spec import parse_spec
from tests.e2e.helpers import receive, subscribe
from tests.operator.apiserver import ApiServer
from tests.operator.kubelet import Kubelet
from tests.operator.support import OperatorProcess, broker_cluster, server_url, until
from tests.operator.test_kubelet_e2e import probes_pass, secret
from tests.operator.test_operator_kopf import all_owned, cluster, create_cluster, events, obj
from tests.operator.test_operator_kopf import patch_cluster as patch
from webrtc_broker.client import BrokerClient
from webrtc_broker.config import OperatorConfig
from webrtc_broker.tokens import issue_token

pytestmark = pytest.mark.timeout(120)

REF = ClusterRef("demo", "default", "uid-1")
WORKLOADS = {
    "Deployment": "WEBRTC_BROKER_COORDINATOR_SERVER_SECRET",
    "StatefulSet": "WEBRTC_BROKER_COMMSERVER_SERVER_SECRET",
}
JWT_KEY = "operator-test-client-token-key-0123456789"


def server_secret_refs(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Where every workload reads its server secret from, as (Secret, key)."""
    refs = set()
    for item in desired_objects(REF, parse_spec("demo", {"image": "img", **spec})):
        if item["kind"] not in WORKLOADS:
            continue
        (container,) = item["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        source = env[WORKLOADS[item["kind"]]]["valueFrom"]["secretKeyRef"]
        refs.add((source["name"], source["key"]))
    return refs


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"auth": {"clients": {"mode": "JWT", "secretRef": {"name": "tokens"}}}},
        {"topology": {"mode": "Hub"}},
    ],
)
def test_without_a_named_secret_every_workload_reads_the_generated_one(
    spec: dict[str, Any],
) -> None:
    assert server_secret_refs(spec) == {("demo-server-secret", GENERATED_KEY)}


def test_a_named_secret_is_used_instead() -> None:
    spec = {"auth": {"mode": "SharedSecret", "secretRef": {"name": "mine", "key": "token"}}}
    assert server_secret_refs(spec) == {("mine", "token")}


def test_a_generated_secret_is_random_owned_and_unrecorded() -> None:
    first, second = generated_secret(REF), generated_secret(REF)
    values = [base64.b64decode(s["data"][GENERATED_KEY]).decode() for s in (first, second)]
    assert values[0] != values[1]
    assert all(re.fullmatch(r"[\w-]{43}", value) for value in values)  # 32 random bytes
    meta = first["metadata"]
    assert meta["name"] == "demo-server-secret"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"  # deleted with the cluster
    assert "annotations" not in meta  # the value is in no last-applied record


async def test_the_operator_creates_it_once_and_never_changes_it(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    uid = create_cluster(store, broker_cluster())["metadata"]["uid"]
    await until(lambda: all_owned(store))
    made = obj(store, "", "secrets", "demo-server-secret")
    assert made is not None
    assert [ref["uid"] for ref in made["metadata"]["ownerReferences"]] == [uid]
    value = made["data"][GENERATED_KEY]

    patch(store, {"spec": {"commServers": {"replicas": 3}}})
    await until(lambda: cluster(store)["status"].get("servers") == 3)
    await asyncio.sleep(1.5)  # a few resyncs (every 0.5 s in the tests)
    again = obj(store, "", "secrets", "demo-server-secret")
    assert again is not None and again["data"][GENERATED_KEY] == value
    assert again["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    notes = " ".join(event["message"] for event in events(store, uid))
    assert "created Secret default/demo-server-secret" in notes
    plain = base64.b64decode(value).decode()
    assert plain not in notes and plain not in operator.log() and value not in operator.log()


async def test_a_secret_removed_behind_its_back_is_made_again(apiserver: ApiServer) -> None:
    """A create that conflicts may meet the Secret of a deleted cluster of the same name,
    which the garbage collector removes a moment later: the operator asks again."""
    store = apiserver.store
    secrets = store.kind("", "v1", "secrets")
    client = KubeClient(kopf.ConnectionInfo(server=server_url(apiserver)))
    now = [1000.0]
    reconciler = Reconciler(client, OperatorStats(), OperatorConfig(), clock=lambda: now[0])
    try:
        body = create_cluster(store, broker_cluster())
        assert (await reconciler.reconcile(body)).problem is None
        assert obj(store, "", "secrets", "demo-server-secret") is not None
        store.delete(secrets, "default", "demo-server-secret")
        await reconciler.reconcile(body)
        assert obj(store, "", "secrets", "demo-server-secret") is None  # not asked yet
        now[0] += SECRET_RECHECK_SECONDS + 1
        outcome = await reconciler.reconcile(body)
        assert obj(store, "", "secrets", "demo-server-secret") is not None
        assert "created Secret default/demo-server-secret" in outcome.changes
    finally:
        await client.close()


async def test_no_secret_is_made_for_a_cluster_that_names_one(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    store = apiserver.store
    auth = {"mode": "SharedSecret", "secretRef": {"name": "mine"}}
    create_cluster(store, broker_cluster(auth=auth))
    await until(lambda: all_owned(store))
    await asyncio.sleep(1.0)
    assert obj(store, "", "secrets", "demo-server-secret") is None


async def test_client_tokens_and_no_secret_of_the_users_run_and_admit_no_rogue(
    apiserver: ApiServer, operator: OperatorProcess, tmp_path: Path
) -> None:
    store = apiserver.store
    store.create(store.kind("", "v1", "secrets"), "default", secret("tokens", secret=JWT_KEY))
    spec = {
        "commServers": {"replicas": 2, "drainSeconds": 1},
        "auth": {"clients": {"mode": "JWT", "secretRef": {"name": "tokens"}}},
    }
    create_cluster(store, broker_cluster(**spec))
    await until(lambda: obj(store, "apps", "statefulsets", "demo-commserver"))
    await until(lambda: obj(store, "apps", "deployments", "demo-coordinator"))
    kubelet = Kubelet(store, "default", tmp_path)
    try:
        pods = kubelet.schedule()
        for pod in pods:
            await kubelet.start(pod)
        for pod in pods:
            await until(lambda pod=pod: probes_pass(kubelet, pod), timeout=40)  # type: ignore[misc]
        coordinator = next(p for p in pods if p.name.startswith("demo-coordinator"))
        url = f"ws://127.0.0.1:{coordinator.ports['http']}"
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
    finally:
        await kubelet.close()
