"""Coordinator replicas without a shared store: every comm server links to each of them.

Two coordinator processes (alias spaces 0 and 1 of 10) and comm servers linked
to both: clients of different replicas meet through the mesh, a replica's
death costs nothing established and nothing new, its restart is joined again,
and the replicas' client aliases never meet. The units below check the alias
spaces, the comm server's merging of links and its choice between crossed
CONNECTs without processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest

from commserver.coordinator_link import CoordinatorLink
from commserver.coordinators import (
    CoordinatorLinks,
    LinkSlot,
    LinkState,
    coordinator_url,
    resolve_addresses,
)
from commserver.server import CommServer
from coordinator.registry import MAX_CLIENT_ALIAS, AliasAllocator, Registry
from tests.coordinator.harness import make_config, running_coordinator
from tests.e2e.helpers import (
    counter,
    eventually_equal,
    receive,
    subscribe,
    until_routed,
)
from tests.support import STARTUP_TIMEOUT, Cluster, Proc, eventually, free_port
from webrtc_broker.client import BrokerClient
from webrtc_broker.config import CommServerConfig
from webrtc_broker.supervise import Supervisor
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import frame_type
from webrtc_broker.wire.aliases import SERVER_ALIASES

SPACES = 10
SERVERS = ("s1", "s2")


# -- processes ---------------------------------------------------------------


class Replicas:
    """Coordinator A is the cluster's own; B is a second process on another port."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.b_port = free_port()
        self.b: Proc | None = None

    @property
    def a_url(self) -> str:
        return self.cluster.url

    @property
    def b_url(self) -> str:
        return f"ws://127.0.0.1:{self.b_port}"

    def http(self, url: str) -> str:
        return url.replace("ws://", "http://")

    async def start_a(self) -> None:
        await self.cluster.start_coordinator("--alias-spaces", str(SPACES), "--replica-id", "0")

    async def start_b(self) -> None:
        args = ["coordinator", "--port", str(self.b_port), "--alias-spaces", str(SPACES)]
        proc = Proc("coordinator-b", [*args, "--replica-id", "1"], self.cluster.workdir / "b.log")
        self.b = await self.cluster._spawn(proc)

        async def ready() -> bool:
            response = await self.cluster.http.get(f"{self.http(self.b_url)}/readyz")
            return response.status_code == 200

        await eventually(ready, timeout=30)

    async def start_server(self, name: str, *urls: str) -> None:
        """A comm server linked to A and to ``urls``."""
        links = (self.cluster.url, *urls)
        extra = [arg for url in links for arg in ("--coordinator-url", url)]
        await self.cluster.start_server(name, *extra, "--load-report-interval", "0.2")

    async def status(self, url: str) -> dict[str, Any]:
        response = await self.cluster.http.get(f"{self.http(url)}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def registered(self, url: str) -> list[str]:
        return sorted(server["name"] for server in (await self.status(url))["servers"])

    async def links(self, name: str) -> dict[str, str]:
        status = await self.cluster.server_status(name)
        return {link["url"]: link["state"] for link in status["coordinators"]}

    async def ready(self, name: str) -> int:
        port = self.cluster.servers[name].http_port
        return (await self.cluster.http.get(f"http://127.0.0.1:{port}/readyz")).status_code

    async def close(self) -> None:
        if self.b is not None:
            await self.cluster.stop(self.b)


@contextlib.asynccontextmanager
async def replicas(cluster: Cluster) -> AsyncIterator[Replicas]:
    both = Replicas(cluster)
    try:
        await both.start_a()
        await both.start_b()
        yield both
    finally:
        await both.close()


PROBE = b"-1"
"""What :func:`until_routed` publishes; late copies of it are skipped."""


async def next_body(client: BrokerClient) -> bytes:
    while (body := (await receive(client)).body) == PROBE:
        pass
    return body


async def next_bodies(client: BrokerClient, count: int) -> list[bytes]:
    return [await next_body(client) for _ in range(count)]


@contextlib.asynccontextmanager
async def client(url: str, name: str, server: int) -> AsyncIterator[BrokerClient]:
    broker = await BrokerClient.connect(url, name, server=server)
    try:
        yield broker
    finally:
        await broker.close()


async def test_clients_of_two_replicas_meet_and_outlive_one(cluster: Cluster) -> None:
    async with replicas(cluster) as r:
        for name in SERVERS:
            await r.start_server(name, r.b_url)
        for url in (r.a_url, r.b_url):
            await eventually_equal(partial(r.registered, url), list(SERVERS), timeout=30)
        for name in SERVERS:
            await cluster.wait_mesh(name, 1)
        aliases = {name: await cluster.alias_of(name) for name in SERVERS}
        b_aliases = {s["name"]: s["alias"] for s in (await r.status(r.b_url))["servers"]}
        assert b_aliases == aliases  # one alias per server, at every replica
        both = {r.a_url: "registered", r.b_url: "registered"}
        for name in SERVERS:
            await eventually_equal(partial(r.links, name), both)

        async with (
            client(r.a_url, "alice", aliases["s1"]) as alice,
            client(r.b_url, "bob", aliases["s2"]) as bob,
        ):
            assert alice.alias % SPACES == 0 and bob.alias % SPACES == 1
            await subscribe(alice, ["room"])
            await subscribe(bob, ["room"])
            await until_routed(alice, bob, "room")
            await until_routed(bob, alice, "room")
            alice.publish("room", "from A")
            assert await next_body(bob) == b"from A"
            bob.publish("room", "from B")
            assert await next_body(alice) == b"from B"

            # Each replica relays only its own clients' CONNECTs; the servers' reports
            # tell B about alice, whose CONNECT went through A.
            async def s1_clients_at_b() -> int:
                servers = (await r.status(r.b_url))["servers"]
                return next(int(s["clients"]) for s in servers if s["name"] == "s1")

            await eventually_equal(s1_clients_at_b, 1)

            assert cluster.coordinator is not None
            await cluster.stop(cluster.coordinator, kill=True)
            for name in SERVERS:
                await eventually_equal(partial(r.links, name), {**both, r.a_url: "connecting"})
                assert await r.ready(name) == 200  # through B
                assert (await cluster.server_status(name))["registered"] is True

            # Established sessions keep flowing: every reliable message arrives, in order.
            for index in range(50):
                alice.publish("room", f"{index}")
            assert await next_bodies(bob, 50) == [f"{index}".encode() for index in range(50)]
            bob.publish("room", "still here", reliable=False)
            assert await next_body(alice) == b"still here"

            # A new client comes in through B.
            async with client(r.b_url, "carol", aliases["s1"]) as carol:
                await subscribe(carol, ["room"])
                await until_routed(bob, carol, "room")
                bob.publish("room", "to carol")
                assert await next_body(carol) == b"to carol"
                assert await next_body(alice) == b"to carol"

            # A comes back: the servers register with it again, under the same aliases.
            await r.start_a()
            await eventually_equal(partial(r.registered, r.a_url), list(SERVERS), timeout=30)
            assert {name: await cluster.alias_of(name) for name in SERVERS} == aliases
            for name in SERVERS:
                await eventually_equal(partial(r.links, name), both)
                status = await cluster.server_status(name)
                assert status["servers"] == 1
                assert counter(status, "sessions", "failed:duplicate_link") == 0
            async with client(r.a_url, "dave", aliases["s2"]) as dave:
                await subscribe(dave, ["room"])
                await until_routed(alice, dave, "room")
                alice.publish("room", "to dave")
                assert await next_body(dave) == b"to dave"
                assert await next_body(bob) == b"to dave"


async def test_a_server_that_reaches_one_replica_serves(cluster: Cluster) -> None:
    async with replicas(cluster) as r:
        unreachable = f"ws://127.0.0.1:{free_port()}"
        await r.start_server("s1", r.b_url)
        await r.start_server("lonely", unreachable)
        await cluster.wait_mesh("lonely", 1)
        await eventually_equal(
            partial(r.links, "lonely"), {r.a_url: "registered", unreachable: "connecting"}
        )
        assert await r.ready("lonely") == 200
        assert await r.registered(r.b_url) == ["s1"]
        s1 = await cluster.alias_of("s1")
        lonely = await cluster.alias_of("lonely")
        async with (
            client(r.a_url, "alice", lonely) as alice,
            client(r.b_url, "bob", s1) as bob,
        ):
            await subscribe(alice, ["t"])
            await subscribe(bob, ["t"])
            await until_routed(bob, alice, "t")
            bob.publish("t", "across")
            assert await next_body(alice) == b"across"


async def test_aliases_of_two_replicas_never_collide() -> None:
    async with (
        running_coordinator(make_config(alias_spaces=SPACES, replica_id=0)) as a,
        running_coordinator(make_config(alias_spaces=SPACES, replica_id=1)) as b,
    ):
        seen: dict[int, set[int]] = {0: set(), 1: set()}
        for _ in range(100):
            for replica, coordinator in ((0, a), (1, b)):
                peer = await coordinator.client()
                seen[replica].add(peer.alias)
                await peer.ws.close()
        assert len(seen[0]) == len(seen[1]) == 100
        assert not seen[0] & seen[1]
        for replica, aliases in seen.items():
            assert {alias % SPACES for alias in aliases} == {replica}
            assert max(aliases) < MAX_CLIENT_ALIAS
        assert (await a.status())["replica"] == 0 and (await b.status())["replica"] == 1


async def test_ready_needs_server() -> None:
    async with running_coordinator(make_config(ready_needs_server=True)) as coordinator:
        assert (await coordinator.get("/readyz")).status_code == 503
        server = await coordinator.comm_server("s1")
        assert (await coordinator.get("/readyz")).status_code == 200
        await server.ws.close()

        async def unready() -> bool:
            return (await coordinator.get("/readyz")).status_code == 503

        await eventually(unready)


async def test_load_reports_replace_relayed_counts() -> None:
    async with running_coordinator(make_config(selector="least-clients")) as coordinator:
        busy = await coordinator.comm_server("busy")
        idle = await coordinator.comm_server("idle")
        await busy.send(pb.PingMessage(type=pb.PING, time=500))
        await idle.send(pb.PingMessage(type=pb.PING, time=3))

        async def counts() -> dict[str, int]:
            return {s["name"]: s["clients"] for s in (await coordinator.status())["servers"]}

        await eventually_equal(counts, {"busy": 500, "idle": 3})
        newcomer = await coordinator.client()
        assert newcomer.servers[0] == idle.alias
        await newcomer.connect_to(idle.alias)
        await eventually_equal(counts, {"busy": 500, "idle": 4})  # relayed since the report
        await idle.send(pb.PingMessage(type=pb.PING, time=float("nan")))  # dropped
        await idle.send(pb.PingMessage(type=pb.PING, time=-1))  # dropped
        await idle.send(pb.PingMessage(type=pb.PING, time=10))
        await eventually_equal(counts, {"busy": 500, "idle": 10})
        dropped = coordinator.coordinator.counters.frames_dropped
        assert dropped["malformed"] == 2
        await newcomer.send(pb.PingMessage(type=pb.PING, time=0))  # a client's: not a report

        async def refused() -> bool:
            return dropped.get("unexpected_type", 0) == 1

        await eventually(refused)
        assert (await counts())["idle"] == 10
        for peer in (busy, idle, newcomer):
            await peer.ws.close()


# -- units -----------------------------------------------------------------------


def test_alias_spaces_are_disjoint_whatever_the_start() -> None:
    starts = [1_700_000_000_000_000, 1_700_000_000_007_000, 1_799_999_999_999_000]
    spaces = 8
    handed: dict[int, set[int]] = {}
    for replica in range(spaces):
        for start in starts:  # restarts of the same replica
            allocator = AliasAllocator(start, spaces=spaces, replica=replica)
            got = {allocator.allocate() for _ in range(1000)}
            assert {alias % spaces for alias in got} == {replica}
            handed.setdefault(replica, set()).update(got)
    for one in range(spaces):
        for other in range(one + 1, spaces):
            assert not handed[one] & handed[other]


def test_alias_spaces_refuse_what_would_overlap() -> None:
    for spaces, replica in ((3, 0), (10, 10), (10, -1), (0, 0)):
        with pytest.raises(ValueError):
            AliasAllocator(1000, spaces=spaces, replica=replica)
    allocator = AliasAllocator(MAX_CLIENT_ALIAS - 2, spaces=2, replica=0)
    assert allocator.allocate() == MAX_CLIENT_ALIAS - 2
    with pytest.raises(OverflowError):
        allocator.allocate()
    assert SERVER_ALIASES.start == MAX_CLIENT_ALIAS  # clients below, servers from there
    assert AliasAllocator.for_replica(10, None).replica in range(10)


def test_a_default_registry_is_one_space() -> None:
    registry = Registry(AliasAllocator(5000).allocate)
    assert [registry.allocate_alias() for _ in range(3)] == [5000, 5001, 5002]


class FakeLink:
    """A coordinator link that never connects; what :class:`CoordinatorLinks` reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[bytes] = []
        self.connects = 0
        self.dropped = 0

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def run(self) -> None:
        await asyncio.Event().wait()


def fake_links(
    urls: tuple[str, ...] = (), dns: str | None = None
) -> tuple[CoordinatorLinks, dict[str, FakeLink], list[LinkSlot], Supervisor]:
    made: dict[str, FakeLink] = {}
    lost: list[LinkSlot] = []

    def make(url: str, *_: Any) -> CoordinatorLink:
        made[url] = FakeLink(url)
        return made[url]  # type: ignore[return-value]

    async def on_frame(_data: bytes, _slot: LinkSlot) -> None:
        return None

    async def never_resolves(_host: str, _port: int) -> list[str]:
        await asyncio.Event().wait()  # the tests hand addresses over themselves
        return []

    supervisor = Supervisor("test", on_fatal=lambda failure: None)
    links = CoordinatorLinks(
        make_link=make,
        supervisor=supervisor,
        on_frame=on_frame,
        on_lost=lost.append,
        urls=urls,
        dns=dns,
        dns_port=9090,
        resolver=never_resolves,
    )
    return links, made, lost, supervisor


async def test_a_server_finds_an_ipv6_coordinator_by_name(cluster: Cluster) -> None:
    """A name with only IPv6 addresses (here the literal ``::1``, which has no IPv4
    one) still gives the server its coordinator, through a bracketed URL."""
    async with running_coordinator(make_config(host="::1")) as coordinator:
        await cluster.start_server(
            "s1", "--coordinator-dns", "::1", "--coordinator-dns-port", str(coordinator.port),
            wait=False,
        )  # fmt: skip

        async def registered() -> int | None:
            servers = (await coordinator.status())["servers"]
            return int(servers[0]["alias"]) if servers else None

        alias = await eventually(registered, timeout=STARTUP_TIMEOUT)
        status = await cluster.server_status("s1")
        links = {link["url"]: link["state"] for link in status["coordinators"]}
        assert links == {f"ws://[::1]:{coordinator.port}": "registered"}
        async with client(coordinator.url(""), "alice", alias) as alice:
            await alice.ping()


async def test_a_dns_name_resolves_to_ipv4_or_else_ipv6_never_both() -> None:
    assert await resolve_addresses("127.0.0.1", 9090) == ["127.0.0.1"]
    assert await resolve_addresses("::1", 9090) == ["::1"]
    with pytest.raises(socket.gaierror):
        await resolve_addresses("no-such-name.invalid", 9090)
    assert coordinator_url("10.0.0.1", 9090) == "ws://10.0.0.1:9090"
    assert coordinator_url("fd00::7", 9090) == "ws://[fd00::7]:9090"


async def test_links_follow_the_dns_name() -> None:
    links, _made, lost, supervisor = fake_links(("ws://static:1",), dns="replicas.example")
    try:
        links.start()
        await links.apply_addresses(["10.0.0.1", "10.0.0.2"])
        assert set(links.slots) == {"ws://static:1", "ws://10.0.0.1:9090", "ws://10.0.0.2:9090"}
        links.welcomed(links.slots["ws://10.0.0.2:9090"], [77])
        assert links.connected.is_set()
        await links.apply_addresses(["10.0.0.1"])  # .2 vanished: its link goes
        assert set(links.slots) == {"ws://static:1", "ws://10.0.0.1:9090"}
        assert [slot.url for slot in lost] == ["ws://10.0.0.2:9090"]
        assert not links.connected.is_set() and links.listed_servers() == set()
        await links.apply_addresses([])  # a static URL stays whatever DNS says
        assert set(links.slots) == {"ws://static:1"}
    finally:
        await supervisor.close()


async def test_answers_go_back_through_the_replica_they_came_from() -> None:
    links, made, _lost, supervisor = fake_links(("ws://a:1", "ws://b:1"))
    try:
        links.start()
        a, b = links.slots["ws://a:1"], links.slots["ws://b:1"]
        links.welcomed(a, [10])
        links.welcomed(b, [10, 20])
        assert links.listed_servers() == {10, 20}
        links.note_route(555, b)
        offer = pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=555, data=b"x")
        links.send(offer.SerializeToString())
        connect = pb.ConnectMessage(type=pb.CONNECT, to_alias=20)
        links.send(connect.SerializeToString())
        assert [frame_type(f) for f in made["ws://b:1"].sent] == [pb.WEBRTC_OFFER, pb.CONNECT]
        assert made["ws://a:1"].sent == []
        b.state = LinkState.CONNECTING  # b drops: what was routed through it goes through a
        links.send(offer.SerializeToString())
        assert [frame_type(f) for f in made["ws://a:1"].sent] == [pb.WEBRTC_OFFER]
        links.broadcast(b"report")
        assert made["ws://a:1"].sent[-1] == b"report" and b"report" not in made["ws://b:1"].sent
    finally:
        await supervisor.close()


@contextlib.asynccontextmanager
async def offline_server(alias: int) -> AsyncIterator[tuple[CommServer, list[bytes]]]:
    server = CommServer(CommServerConfig(name="s", coordinator_urls=["ws://a:1", "ws://b:1"]))
    sent: list[bytes] = []
    server.link.send = sent.append  # type: ignore[method-assign, assignment]
    server.link.connected.set()
    server.alias = alias
    try:
        yield server, sent
    finally:
        await server.close()


CROSSED = pb.ConnectMessage(
    type=pb.CONNECT, from_alias=50, to_alias=0, from_role=pb.COMMUNICATION_SERVER
).SerializeToString()


@pytest.mark.parametrize(("ours", "we_answer"), [(10, True), (90, False)])
async def test_crossed_connects_make_one_session(ours: int, we_answer: bool) -> None:
    """Replicas that listed the pair in opposite orders: both ends sent CONNECT."""
    async with offline_server(ours) as (server, sent):
        server._connect_to_server(50)
        await server._on_coordinator_frame(CROSSED)
        peer = server.peers[50]
        assert peer.initiated_by_us is not we_answer
        crossed = server.stats.drops.get("connect_crossed", 0)
        assert crossed == (0 if we_answer else 1)

        async def offered() -> bool:
            return any(frame_type(f) == pb.WEBRTC_OFFER for f in sent)

        if we_answer:
            await eventually(offered)


async def test_a_server_listed_by_two_replicas_is_linked_once() -> None:
    async with offline_server(10) as (server, sent):
        welcome = pb.WelcomeMessage(type=pb.WELCOME, alias=10, available_servers=[50, 60])
        a, b = LinkSlot(url="ws://a:1", task="a"), LinkSlot(url="ws://b:1", task="b")
        await server._on_coordinator_frame(welcome.SerializeToString(), a)
        welcome.available_servers.append(70)
        await server._on_coordinator_frame(welcome.SerializeToString(), b)
        connects = [pb.ConnectMessage.FromString(f) for f in sent if frame_type(f) == pb.CONNECT]
        assert sorted(c.to_alias for c in connects) == [50, 60, 70]
        assert a.listed | b.listed == {50, 60, 70}
        assert a.state is b.state is LinkState.REGISTERED
