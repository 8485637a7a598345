"""Clients outside the cluster talk through the broker's pods on the real node.

The operator (a local process with ``deploy/rbac.yaml``'s token, serving this
module's namespace) makes a BrokerCluster whose pods run in containers on the
node (its taint tolerated through ``spec.*.tolerations``; the broker's image
imported into the node's containerd): the coordinator behind a NodePort
Service, comm servers at their pod addresses (``network.mode: PodIP``). The
clients run on the host, outside the pod network: they reach the coordinator
through the NodePort on the node's address and open WebRTC sessions with the
comm servers' pod addresses. This proves that:

1. two Python SDK clients land on different comm-server pods and exchange
   reliable and unreliable messages both ways across them; so do Debian's
   Chromium (the browser SDK served by the coordinator through the NodePort)
   and a Python client on the other pod;
2. ``kubectl scale bkc`` to 3 then back to 1, under a publisher sending
   numbered reliable messages throughout: a subscriber whose session lives
   throughout gets every message whose ``publish`` returned, in order, once; a
   subscriber on a server that joins or stays meanwhile misses nothing while
   the mesh grows; the clients of the removed servers move to the one left,
   with their subscriptions;
3. a comm-server pod lost, deleted through the API (it drains) or its
   container's process killed on the node (no drain, only silence): its
   clients are back on another server within what the SDK promises (the
   drain or the keepalive's timeout, then one reconnect attempt), the others
   neither reconnect nor lose a message; the StatefulSet makes the pod again
   (the kubelet restarts the killed container) and the server rejoins the mesh.

Every test prints its numbers (connect times, messages, reconnects, durations).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from broker_operator.naming import COMMSERVER
from tests.browser.pages import BrowserClient, ConsoleLog, PageHost
from tests.e2e.helpers import inbox_size, receive, subscribe, until_routed
from tests.k8s.clients import (
    DRAIN_SECONDS,
    NAME,
    Deployed,
    Feed,
    KubeBroker,
    Publisher,
    broker_cluster_body,
    broker_from_host,
    browser_client,
    chromium,
    deployed_cluster,
)
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import Node
from tests.operator.support import until
from webrtc_broker.client import BrokerClient
from webrtc_broker.client.client import Keepalive, Reconnect

# The first test also waits for the cluster's pods (image import, start, probes).
pytestmark = pytest.mark.timeout(600)

CONNECT_TIMEOUT = 30.0
EXCHANGED = 20
"""Messages each way per kind in the exchanges of test 1."""
RATE = 20.0
"""Numbered reliable messages per second during scaling and pod loss."""


@pytest.fixture(scope="module")
def deployed(
    control_plane: ControlPlane,
    node: Node,
    broker_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployed]:
    """The operator and one BrokerCluster (2 comm servers) for the module's tests."""
    workdir = tmp_path_factory.mktemp("clients-e2e")
    body = broker_cluster_body(broker_image, replicas=2)
    with deployed_cluster(control_plane, node.address, node.socket, workdir, body) as deployed:
        yield deployed


@pytest.fixture
async def broker(deployed: Deployed, request: pytest.FixtureRequest) -> AsyncIterator[KubeBroker]:
    """The BrokerCluster seen from the host; pods, events and logs printed on failure."""
    async with broker_from_host(deployed, request) as kube:
        yield kube


async def connect(broker: KubeBroker, name: str, server: int | None = None) -> BrokerClient:
    started = time.monotonic()
    client = await BrokerClient.connect(broker.url, name, server=server, timeout=CONNECT_TIMEOUT)
    print(
        f"{name}: connected in {time.monotonic() - started:.2f} s to server {client.server_alias}"
    )
    return client


def other_than(servers: Iterable[int], alias: int | None) -> int:
    """A server alias that is not ``alias``."""
    return next(other for other in servers if other != alias)


@contextlib.asynccontextmanager
async def closing(*clients: BrokerClient) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for client in clients:
            await client.close()


async def drain(client: BrokerClient) -> None:
    while inbox_size(client):
        await client.receive()


# --- 1. the exchange ----------------------------------------------------------


async def python_exchange(sender: BrokerClient, receiver: BrokerClient, label: str) -> None:
    """``EXCHANGED`` reliable messages arrive all, in order, from ``sender``; of as many
    unreliable ones at least one does (the unreliable channel may drop)."""
    for i in range(EXCHANGED):
        sender.publish("room", f"{label}-r{i}".encode(), reliable=True)
    got = [await receive(receiver, timeout=30) for _ in range(EXCHANGED)]
    assert [(m.sender, m.body, m.reliable) for m in got] == [
        (sender.alias, f"{label}-r{i}".encode(), True) for i in range(EXCHANGED)
    ]
    for i in range(EXCHANGED):
        sender.publish("room", f"{label}-u{i}".encode(), reliable=False)
    unreliable = [await receive(receiver, timeout=30)]
    with contextlib.suppress(TimeoutError):
        while len(unreliable) < EXCHANGED:
            unreliable.append(await receive(receiver, timeout=2))
    assert all(m.sender == sender.alias and not m.reliable for m in unreliable), unreliable
    assert {m.body for m in unreliable} <= {f"{label}-u{i}".encode() for i in range(EXCHANGED)}
    print(f"{label}: reliable {EXCHANGED}/{EXCHANGED}, unreliable {len(unreliable)}/{EXCHANGED}")


async def test_outside_clients_exchange_messages_across_two_pods(broker: KubeBroker) -> None:
    started = time.monotonic()
    aliases = await broker.wait_servers(2)
    print(f"2 comm servers ready, registered and meshed after {time.monotonic() - started:.1f} s")
    print(f"coordinator at {broker.url}; servers {aliases}")
    names = {alias: name for name, alias in aliases.items()}

    alice = await connect(broker, "alice")
    # Bob asks for the other pod: with two coordinator replicas behind the Service,
    # the replica bob reaches may not have heard of alice yet (servers report their
    # client counts every few seconds), so least-clients alone could pick her pod.
    bob = await connect(broker, "bob", server=other_than(names, alice.server_alias))
    async with closing(alice, bob):
        assert {alice.server_alias, bob.server_alias} == set(names), (alice, bob, names)

        async def one_client_each() -> bool:
            status = await broker.coordinator_status()
            return all(s["clients"] == 1 for s in status["servers"])

        await until(one_client_each, timeout=30, interval=0.3)
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await until_routed(alice, bob, "room")
        await until_routed(bob, alice, "room")
        await python_exchange(alice, bob, "alice")
        await python_exchange(bob, alice, "bob")
        assert (alice.reconnects, bob.reconnects) == (0, 0)

    console = ConsoleLog()
    try:
        async with PageHost.running() as host, chromium(console) as browser:
            page, took = await browser_client(browser, host, broker, console, "carol")
            print(f"carol (Chromium): connected in {took:.2f} s to server {page.server}")
            assert page.server in names
            dave = await connect(broker, "dave", server=other_than(names, page.server))
            async with closing(dave):
                await browser_exchange(page, dave)
            await page.close()
    except BaseException:
        print(console.dump())
        raise


async def browser_exchange(page: BrowserClient, dave: BrokerClient) -> None:
    """Chromium and a Python client on another pod: reliable and unreliable both ways."""
    await page.subscribe(["room"])
    await subscribe(dave, ["room"])

    async def routed_to_dave() -> bool:
        await page.publish("room", "probe")
        with contextlib.suppress(TimeoutError):
            await receive(dave, timeout=0.3)
            return True
        return False

    async def routed_to_page() -> bool:
        dave.publish("room", b"probe")
        await asyncio.sleep(0.3)
        return await page.inbox_size() > 0

    await until(routed_to_dave, timeout=30)
    await until(routed_to_page, timeout=30)
    await asyncio.sleep(0.5)  # probes still in flight arrive, then go
    await drain(dave)
    await page.page.evaluate("() => window.inbox.splice(0)")

    # Browser -> Python.
    await page.publish_many("room", [f"carol-r{i}" for i in range(EXCHANGED)])
    got = [await receive(dave, timeout=30) for _ in range(EXCHANGED)]
    assert [(m.sender, m.body, m.reliable) for m in got] == [
        (page.alias, f"carol-r{i}".encode(), True) for i in range(EXCHANGED)
    ]
    await page.publish_many("room", [f"carol-u{i}" for i in range(EXCHANGED)], reliable=False)
    unreliable = [await receive(dave, timeout=30)]
    with contextlib.suppress(TimeoutError):
        while len(unreliable) < EXCHANGED:
            unreliable.append(await receive(dave, timeout=2))
    assert all(m.sender == page.alias and not m.reliable for m in unreliable), unreliable
    print(f"carol -> dave: reliable {EXCHANGED}/{EXCHANGED}, unreliable {len(unreliable)}")

    # Python -> browser.
    for i in range(EXCHANGED):
        dave.publish("room", f"dave-r{i}".encode(), reliable=True)
    received = await page.receive(EXCHANGED, timeout_ms=30_000)
    assert [(m["sender"], m["text"], m["reliable"]) for m in received] == [
        (dave.alias, f"dave-r{i}", True) for i in range(EXCHANGED)
    ]
    for i in range(EXCHANGED):
        dave.publish("room", f"dave-u{i}".encode(), reliable=False)
    first = await page.receive(1, timeout_ms=30_000)
    await asyncio.sleep(2)  # let the rest of the unreliable ones arrive, to count them
    rest = await page.page.evaluate("() => window.inbox.splice(0)")
    unreliable_texts = [m["text"] for m in first + rest]
    assert all(not m["reliable"] and m["sender"] == dave.alias for m in first + rest)
    assert set(unreliable_texts) <= {f"dave-u{i}" for i in range(EXCHANGED)}
    print(f"dave -> carol: reliable {EXCHANGED}/{EXCHANGED}, unreliable {len(unreliable_texts)}")
    assert dave.reconnects == 0
    assert await page.page.evaluate("() => window.reconnects.length") == 0


# --- 2. scaling ---------------------------------------------------------------


async def until_has(feed: Feed, numbers: set[int], timeout: float = 60.0) -> None:
    try:
        await until(lambda: feed.has(numbers), timeout=timeout, interval=0.1)
    except AssertionError:
        missing = sorted(numbers - set(feed.numbers))
        raise AssertionError(f"{feed.name} misses {len(missing)}: {missing[:20]}") from None


def contiguous_from_first(feed: Feed, last: int) -> set[int]:
    """Every number from the first ``feed`` received to ``last``: once a subscription
    is routed, nothing published after may be missing."""
    return set(range(feed.numbers[0], last + 1))


def in_order_once(feed: Feed) -> None:
    assert feed.numbers == sorted(set(feed.numbers)), f"{feed.name}: duplicates or disorder"


async def everything_published(feed: Feed, publisher: Publisher) -> None:
    """``feed`` got every number whose publish returned, once, in order. Called with the
    publisher stopped, after its server echoed a PING: it has handled them all."""
    await until_has(feed, set(publisher.published))
    assert feed.numbers == publisher.published, f"{feed.name}: duplicates or disorder"


async def moved_to(client: BrokerClient, servers: set[int]) -> bool:
    """``client`` moved, and is now on one of ``servers``."""
    return client.reconnects >= 1 and client.server_alias in servers and client.session is not None


async def moved_off(client: BrokerClient, lost: int) -> bool:
    """``client`` moved, and is now on a server other than ``lost`` (a killed server's
    container restarts at once and registers under a new alias: that is another
    server too)."""
    return client.reconnects >= 1 and client.server_alias not in {0, lost} and bool(client.session)


async def coordinator_agrees(broker: KubeBroker, clients: list[BrokerClient]) -> None:
    """The coordinator's ``/status`` counts each client on the server it is on now
    (moved clients no longer on the one they left).

    The per-server counts are what each comm server reports of all its clients, so
    every replica shows the same ones, whichever the NodePort reached; the top-level
    ``clients`` is only that replica's own WebSockets, and is left out."""
    wanted = Counter(client.server_alias for client in clients)
    last: list[object] = []

    async def agrees() -> bool:
        status = await broker.coordinator_status()
        counted = {s["alias"]: s["clients"] for s in status["servers"] if s["clients"]}
        last[:] = [status]
        return counted == dict(wanted)

    try:
        await until(agrees, timeout=30, interval=0.3)
    except AssertionError:
        raise AssertionError(f"clients {dict(wanted)}; coordinator: {last}") from None


def print_moves(caplog: pytest.LogCaptureFixture) -> None:
    """What the SDK said while its clients moved (lost sessions, failed attempts)."""
    for record in caplog.records:
        if record.name.startswith("webrtc_broker.client") and "reconnect" in record.getMessage():
            print(
                f"  {time.strftime('%H:%M:%S', time.gmtime(record.created))}"
                f".{int(record.msecs):03d} {record.getMessage()}"
            )


def report(publisher: Publisher, feeds: list[Feed], names: dict[int, str]) -> None:
    print(
        f"published {len(publisher.published)} reliable at {RATE:g}/s "
        f"({len(publisher.errors)} publish errors)"
    )
    for feed in feeds:
        path = " -> ".join(names.get(alias, str(alias)) for alias in feed.servers)
        print(
            f"{feed.name}: received {len(set(feed.numbers))} "
            f"(numbers {feed.numbers[0]}..{feed.numbers[-1]}), reconnects "
            f"{feed.client.reconnects}, missed while moving {feed.gaps()}, on {path}"
        )


async def shrink_to_one(
    broker: KubeBroker, first: int, movers: list[BrokerClient], feeds: list[Feed], pub: Publisher
) -> None:
    """``kubectl scale`` to 1: the removed servers drain, ``movers`` land on ``first``
    and get what is published afterwards (their subscriptions came along)."""
    dropped = await broker.coordinator_dropped()
    started = time.monotonic()
    await broker.scale(1)
    moved_after = []
    for client in movers:
        await until(lambda c=client: moved_to(c, {first}), timeout=120, interval=0.05)  # type: ignore[misc]
        moved_after.append(time.monotonic() - started)
    await broker.wait_servers(1)
    print(
        f"scaled 3 -> 1 in {time.monotonic() - started:.1f} s; clients moved after "
        + ", ".join(f"{t:.2f} s" for t in moved_after)
    )
    # A CONNECT for a server that left the coordinator meanwhile is dropped there.
    now = await broker.coordinator_dropped()
    print(f"coordinator frames dropped meanwhile: { {k: now[k] - dropped.get(k, 0) for k in now} }")
    resumed = pub.last + 1
    for feed in feeds:
        await until(lambda f=feed: max(f.numbers) >= resumed, timeout=30)  # type: ignore[misc]


async def test_scaling_up_and_down_under_traffic(
    broker: KubeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    await broker.scale(2)
    aliases = await broker.wait_servers(2)
    first, second = (aliases[f"{NAME}-{COMMSERVER}-{i}"] for i in range(2))
    # Scaling down removes the highest ordinals: the publisher and one subscriber sit
    # on commserver-0, which stays throughout.
    pub = await connect(broker, "publisher", server=first)
    clients = [pub]
    feeds: list[Feed] = []
    publisher = Publisher(pub, "feed", rate=RATE)
    try:
        stay = await connect(broker, "stays", server=first)
        moves = await connect(broker, "moves-1", server=second)
        clients += [stay, moves]
        for client in (stay, moves):
            await subscribe(client, ["feed"])
        await until_routed(pub, moves, "feed")
        feeds += [Feed("stays", stay).start(), Feed("moves-1", moves).start()]
        publisher.start()
        await until(lambda: feeds[1].numbers, timeout=30)

        started = time.monotonic()
        await broker.scale(3)
        aliases = await broker.wait_servers(3)
        print(f"scaled 2 -> 3 in {time.monotonic() - started:.1f} s (ready, registered, meshed)")
        late = await connect(broker, "moves-2", server=aliases[f"{NAME}-{COMMSERVER}-2"])
        clients.append(late)
        await subscribe(late, ["feed"])
        feeds.append(Feed("moves-2", late).start())
        await until(lambda: feeds[2].numbers, timeout=30)

        # While the mesh grew, nothing published went missing on any server.
        await pub.ping()
        mark = publisher.last
        for feed in feeds:
            await until_has(feed, contiguous_from_first(feed, mark))
        assert [c.reconnects for c in clients] == [0, 0, 0, 0]

        await shrink_to_one(broker, first, [moves, late], feeds[1:], publisher)
        await asyncio.sleep(1)
        await publisher.stop()
        await pub.ping()

        # The subscriber whose session lived throughout: every message, in order, once.
        await everything_published(feeds[0], publisher)
        for feed in feeds:
            in_order_once(feed)
        assert publisher.errors == [], publisher.errors
        assert [c.reconnects > 0 for c in clients] == [False, False, True, True]
        assert {c.server_alias for c in clients} == {first}
        await coordinator_agrees(broker, clients)
        report(publisher, feeds, {alias: name for name, alias in aliases.items()})
        print(f"moved clients: {sum(1 for c in clients if c.reconnects)} of {len(clients)}")
        print_moves(caplog)
    finally:
        await publisher.stop()
        for feed in feeds:
            await feed.stop()
        for client in clients:
            await client.close()


# --- 3. pod loss --------------------------------------------------------------


def promise(how: str) -> float:
    """How long the SDK may take to be back on another server.

    A deleted pod's server drains: it closes its clients' sessions within
    ``drainSeconds``. A killed one says nothing: the keepalive gives it up after
    ``Keepalive.timeout`` of silence. Then the first reconnect attempt is
    immediate and takes at most ``Reconnect.attempt_timeout``.
    """
    noticed = DRAIN_SECONDS + Keepalive().timeout if how == "deleted" else Keepalive().timeout
    return noticed + Reconnect().attempt_timeout


@pytest.mark.parametrize("how", ["deleted", "killed"])
async def test_lost_pod_moves_its_clients_and_leaves_the_others_alone(
    broker: KubeBroker, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``deleted``: the pod deleted through the API (SIGTERM, drain, a new pod);
    ``killed``: its container's process SIGKILLed on the node, as by the kernel's OOM
    killer (no drain; the kubelet restarts the container in the same pod)."""
    await broker.scale(3)
    aliases = await broker.wait_servers(3)
    first, victim, third = (aliases[f"{NAME}-{COMMSERVER}-{i}"] for i in range(3))
    victim_pod = f"{NAME}-{COMMSERVER}-1"
    pub = await connect(broker, "publisher", server=first)
    clients = [pub]
    publisher = Publisher(pub, "feed", rate=RATE)
    feeds: list[Feed] = []
    try:
        far = await connect(broker, "far", server=third)  # across the mesh from the publisher
        near = await connect(broker, "near", server=first)
        lost = [await connect(broker, f"lost-{i}", server=victim) for i in range(2)]
        clients += [far, near, *lost]
        for client in (far, near, *lost):
            await subscribe(client, ["feed"])
        for client in (far, *lost):
            await until_routed(pub, client, "feed")
        named = (("far", far), ("near", near), ("lost-0", lost[0]), ("lost-1", lost[1]))
        feeds += [Feed(name, client).start() for name, client in named]
        publisher.start()
        await until(lambda: all(f.numbers for f in feeds), timeout=30)

        before = await broker.pod(victim_pod)
        assert before is not None
        lost_at = time.monotonic()
        await lose(broker, how, before, lost, victim)
        resumed = publisher.last + 1
        for feed in feeds[2:]:
            await until(lambda f=feed: max(f.numbers) >= resumed, timeout=30)  # type: ignore[misc]

        # The StatefulSet makes the pod again (the kubelet restarts the killed
        # container); the server registers anew and rejoins the mesh.
        again = await back_again(broker, how, before, lost_at)
        await asyncio.sleep(1)
        await publisher.stop()
        await pub.ping()

        # The others: no reconnect, and every message whose publish returned.
        assert [c.reconnects for c in (pub, far, near)] == [0, 0, 0]
        assert publisher.errors == [], publisher.errors
        for feed in feeds[:2]:
            await everything_published(feed, publisher)
        for feed in feeds:
            in_order_once(feed)
        await coordinator_agrees(broker, clients)
        names = {alias: name for name, alias in aliases.items()}
        report(publisher, feeds, {**names, again[victim_pod]: f"{victim_pod} (back)"})
        print_moves(caplog)
    finally:
        await publisher.stop()
        for feed in feeds:
            await feed.stop()
        for client in clients:
            await client.close()


async def lose(
    broker: KubeBroker,
    how: str,
    pod: dict[str, Any],
    clients: list[BrokerClient],
    alias: int,
) -> None:
    """Lose ``pod`` (``how``), the server ``alias``; its ``clients`` are on another
    server within the SDK's promise."""
    started = time.monotonic()
    if how == "deleted":
        await broker.delete_pod(pod["metadata"]["name"])
    else:
        await broker.kill_container(pod)
    back = []
    for client in clients:
        await until(lambda c=client: moved_off(c, alias), timeout=promise(how))  # type: ignore[misc]
        back.append(time.monotonic() - started)
    print(
        f"{pod['metadata']['name']} {how}: its clients on another server after "
        + ", ".join(f"{t:.2f} s" for t in back)
        + f" (the SDK's promise: {promise(how):g} s)"
    )


async def back_again(
    broker: KubeBroker, how: str, before: dict[str, Any], lost_at: float
) -> dict[str, int]:
    """The StatefulSet makes a deleted pod again, the kubelet restarts a killed
    container in the same pod; the server registers anew and rejoins the mesh."""
    name = before["metadata"]["name"]
    again = await broker.wait_servers(3)
    after = await broker.pod(name)
    assert after is not None
    if how == "deleted":
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
    else:
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert restarts(after) == restarts(before) + 1
    print(f"{name} back and meshed {time.monotonic() - lost_at:.1f} s after it was {how}")
    return again


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(c.get("restartCount", 0)) for c in pod["status"]["containerStatuses"])
