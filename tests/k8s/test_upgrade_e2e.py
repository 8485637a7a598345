"""A rolling upgrade of the broker's image on the real node, under traffic.

The operator (a local process with ``deploy/rbac.yaml``'s token, serving this
test's namespace) runs a BrokerCluster of two comm servers (pod addresses) and
a NodePort coordinator on the node, with the broker's image under one name (A).
The same image is tagged with a second name (B) in the node's containerd: the
content is the same, but the pod template changes, so every pod is replaced as
in a real upgrade. Clients on the host (a publisher sending numbered reliable
messages at a bounded rate, three subscribers) are connected throughout; then
``spec.image`` is changed to B. This proves that:

- every pod (the coordinator and both comm servers) ends on image B, Ready,
  and the BrokerCluster returns to ``Running`` for the new generation;
- the clients connected during the upgrade end up connected to a comm server
  of the new pods (not closed), and every subscriber receives what is
  published after the upgrade; reconnects and messages per subscriber are
  printed;
- afterwards two fresh clients exchange a message through the new pods.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.naming import COMMSERVER, COORDINATOR
from tests.e2e.helpers import receive, subscribe, until_routed
from tests.k8s import image
from tests.k8s.clients import (
    NAME,
    Feed,
    KubeBroker,
    OperatorRun,
    Publisher,
    broker_cluster_body,
    ready,
)
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import Node
from tests.k8s.support import installed_identity
from tests.k8s.workloads import Phases, wait_running
from tests.operator.support import until
from webrtc_broker.client import BrokerClient

pytestmark = pytest.mark.timeout(420)

RATE = 20.0
"""Numbered reliable messages per second throughout the upgrade."""
SUBSCRIBERS = 3
CONNECT_TIMEOUT = 30.0
UPGRADE_TIMEOUT = 150.0


def second_tag() -> str:
    """Tag B: the same repository as the imported image, another tag."""
    return f"{image.REPOSITORY}:{image.version()}-upgrade"


async def connect(broker: KubeBroker, name: str, server: int | None = None) -> BrokerClient:
    started = time.monotonic()
    client = await BrokerClient.connect(broker.url, name, server=server, timeout=CONNECT_TIMEOUT)
    took = time.monotonic() - started
    print(f"{name}: connected in {took:.2f} s to server {client.server_alias}")
    return client


async def upgraded(broker: KubeBroker, target: str, old: set[str]) -> dict[str, str] | None:
    """Every pod of the cluster a new one (no uid of ``old``), on ``target``, Ready and
    not being deleted; else None. Returns pod name -> uid."""
    coordinators = await broker.pods(COORDINATOR)
    servers = await broker.pods(COMMSERVER)
    pods = [*coordinators, *servers]
    # Pods of the old image still terminating count: the upgrade is over once they are gone.
    if len(coordinators) != 1 or len(servers) != 2:
        return None
    for pod in pods:
        images = {c["image"] for c in pod["spec"]["containers"]}
        if images != {target} or pod["metadata"]["uid"] in old or not ready(pod):
            return None
        if pod["metadata"].get("deletionTimestamp"):
            return None
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


async def start_traffic(
    broker: KubeBroker, clients: list[BrokerClient], feeds: list[Feed]
) -> Publisher:
    """A publisher and :data:`SUBSCRIBERS` subscribers of ``feed`` (appended to
    ``clients`` and ``feeds``), the publisher sending at :data:`RATE` until stopped."""
    pub = await connect(broker, "publisher")
    clients.append(pub)
    for i in range(SUBSCRIBERS):
        clients.append(await connect(broker, f"subscriber-{i}"))
    for client in clients[1:]:
        await subscribe(client, ["feed"])
        await until_routed(pub, client, "feed")
    feeds += [Feed(f"subscriber-{i}", c).start() for i, c in enumerate(clients[1:])]
    publisher = Publisher(pub, "feed", rate=RATE).start()
    await until(lambda: all(f.numbers for f in feeds), timeout=30)
    return publisher


async def upgrade(broker: KubeBroker, path: str, target: str, old: set[str]) -> int:
    """``spec.image`` changed to ``target`` (a merge patch, as ``kubectl patch`` does);
    returns once every pod is a new one on it, Ready; the BrokerCluster's new generation."""
    answer = await asyncio.to_thread(
        broker.admin.patch,
        f"{path}/{NAME}",
        json={"spec": {"image": target}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    try:
        await until(lambda: upgraded(broker, target, old), timeout=UPGRADE_TIMEOUT, interval=1)
    except AssertionError:
        print(await broker.describe())
        raise
    return int(answer.json()["metadata"]["generation"])


async def running_again(broker: KubeBroker, path: str, generation: int) -> None:
    """The BrokerCluster ``Running`` with a status of ``generation`` (the new image)."""

    async def check() -> bool:
        found = (await broker.api(f"{path}/{NAME}")).get("status") or {}
        seen = int(found.get("observedGeneration", 0))
        return found.get("phase") == "Running" and seen >= generation

    try:
        await until(check, timeout=120, interval=1)
    except AssertionError:
        print(await broker.describe())
        raise


async def back_and_receiving(
    clients: list[BrokerClient], servers: set[int], feeds: list[Feed], publisher: Publisher
) -> None:
    """Every client open, in a session with one of the new ``servers``; every subscriber
    gets what is published from now on."""

    async def all_back() -> bool:
        return all(
            not c.closed and c.session is not None and c.server_alias in servers for c in clients
        )

    try:
        await until(all_back, timeout=60, interval=0.2)
    except AssertionError:
        # Why a closed client ended (the SDK keeps it, it does not log it).
        states = [(c.closed and c._closed_reason, c.server_alias, c.reconnects) for c in clients]
        raise AssertionError(
            f"clients (closed, server, reconnects) {states}; servers {servers}; "
            f"last publish errors {publisher.errors[-3:]}"
        ) from None
    resumed = publisher.last + 1
    for feed in feeds:
        await until(lambda f=feed: max(f.numbers) >= resumed, timeout=60)  # type: ignore[misc]


def report(publisher: Publisher, feeds: list[Feed]) -> None:
    print(
        f"published {len(publisher.published)} reliable at {RATE:g}/s, "
        f"{len(publisher.errors)} publish calls refused while moving; "
        f"publisher reconnects {publisher.client.reconnects}"
    )
    for feed in feeds:
        print(
            f"{feed.name}: received {len(set(feed.numbers))}, reconnects "
            f"{feed.client.reconnects}, servers {feed.servers}, "
            f"missing runs {feed.gaps()[:10]}"
        )
        # Whatever was lost while moving, nothing arrives twice or out of order.
        assert feed.numbers == sorted(set(feed.numbers)), feed.name


async def fresh_exchange(broker: KubeBroker, clients: list[BrokerClient]) -> None:
    """Two new clients through the upgraded pods: one publishes, the other receives."""
    alice = await connect(broker, "alice")
    bob = await connect(broker, "bob")
    clients += [alice, bob]
    await subscribe(bob, ["after"])
    await until_routed(alice, bob, "after")
    alice.publish("after", b"upgraded", reliable=True)
    while (message := await receive(bob, timeout=30)).body == b"-1":
        pass  # a late copy of until_routed's probe
    assert (message.sender, message.body) == (alice.alias, b"upgraded")


async def test_rolling_upgrade_of_the_image_under_traffic(
    control_plane: ControlPlane, node: Node, broker_image: str, tmp_path: Path
) -> None:
    phases = Phases("upgrade")
    target = await asyncio.to_thread(image.tag, node.socket, second_tag(), broker_image)
    print(f"image A {broker_image}; image B {target} (the same manifest)")
    with installed_identity(control_plane, tmp_path) as identity:
        namespace = identity.clusters_namespace
        operator = await asyncio.to_thread(OperatorRun.start, identity, tmp_path, namespace)
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        clients: list[BrokerClient] = []
        feeds: list[Feed] = []
        publisher: Publisher | None = None
        with control_plane.client(timeout=30) as admin:
            broker = KubeBroker(
                control_plane, admin, namespace, node.address, tmp_path, node.socket
            )
            try:
                # One coordinator, as this test counts pods (HA has its own test).
                body = broker_cluster_body(broker_image, replicas=2, coordinators=1)
                answer = admin.post(path, json=body)
                assert answer.status_code == 201, answer.text
                await until(broker.find_node_port, timeout=120, interval=0.5)
                aliases = await broker.wait_servers(2)
                await asyncio.to_thread(wait_running, admin, namespace, NAME, timeout=120)
                phases.mark("cluster on image A running")

                publisher = await start_traffic(broker, clients, feeds)
                phases.mark(f"clients connected, on servers {[c.server_alias for c in clients]}")

                old_pods = [*await broker.pods(COORDINATOR), *await broker.pods(COMMSERVER)]
                old = {p["metadata"]["uid"] for p in old_pods}
                generation = await upgrade(broker, path, target, old)
                phases.mark("every pod replaced, on image B, Ready")
                new_aliases = await broker.wait_servers(2)
                print(f"comm servers before {aliases}, after {new_aliases}")
                await running_again(broker, path, generation)
                phases.mark("BrokerCluster Running for the new generation")

                # The clients of the old pods: each on a comm server of the new ones.
                await back_and_receiving(clients, set(new_aliases.values()), feeds, publisher)
                phases.mark("clients back on the new pods and receiving")
                await publisher.stop()
                report(publisher, feeds)
                # Both old comm servers went away: every client moved at least once.
                assert all(c.reconnects >= 1 for c in clients), [c.reconnects for c in clients]

                await fresh_exchange(broker, clients)
                phases.mark("fresh clients exchanged a message")
                print(phases.summary())
            finally:
                if publisher is not None:
                    await publisher.stop()
                for feed in feeds:
                    await feed.stop()
                for client in clients:
                    await client.close()
                await broker.aclose()
                code = await asyncio.to_thread(operator.stop)
                log = operator.log()
                print(f"operator exit code {code}")
                assert "Traceback" not in log, log[-4000:]
