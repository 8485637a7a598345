"""The Python SDK given several coordinator URLs goes through whichever answers.

Each test forces the order the client tries them in (the first listed
first): a first connect otherwise starts at a random one. The coordinator
that must refuse runs in this process (draining, or checking credentials),
so that the test can read what it refused; the others, and the comm servers,
are the real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.counters import RefusalReason
from tests.coordinator.harness import make_config, running_coordinator, wait_until
from tests.e2e.helpers import TIMEOUT, receive
from tests.faultproxy import FaultProxy
from tests.support import Cluster, free_port
from webrtc_broker.auth import AuthError, Identity
from webrtc_broker.client import (
    AuthenticationError,
    BrokerClient,
    BrokerError,
    CoordinatorUnavailableError,
    Reconnect,
)
from webrtc_broker.client import client as client_module
from webrtc_broker.client.client import coordinator_order

BINARY_OPCODE = 0x2
"""The opcode (low four bits of a frame's first byte, RFC 6455) of a binary WebSocket
frame: how CONNECT travels."""
FAST_RECONNECT = Reconnect(first_delay=0.05, max_delay=0.25, attempt_timeout=TIMEOUT)


class Letmein:
    def authenticate(self, credentials: bytes) -> Identity:
        if credentials != b"letmein":
            raise AuthError("bad token")
        return Identity(b"user")


@pytest.fixture
def listed_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first connect starts at the first URL listed."""
    monkeypatch.setattr(client_module._spread, "randrange", lambda _n: 0)


def test_a_reconnect_tries_the_lost_links_coordinator_last() -> None:
    urls = ["ws://a", "ws://b", "ws://c"]
    assert coordinator_order(urls, after="ws://a") == ["ws://b", "ws://c", "ws://a"]
    assert coordinator_order(urls, after="ws://c") == ["ws://a", "ws://b", "ws://c"]
    starts = {coordinator_order(urls)[0] for _ in range(200)}
    assert starts == set(urls)  # first connects spread over every replica
    for _ in range(20):
        order = coordinator_order(urls)
        assert sorted(order) == urls
        start = urls.index(order[0])
        assert order == urls[start:] + urls[:start]


async def test_a_single_url_and_an_empty_list(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with await BrokerClient.connect(cluster.url, "alice", timeout=TIMEOUT) as alice:
        assert alice.coordinator_url == cluster.url
        assert alice.coordinator_urls == (cluster.url,)
    with pytest.raises(ValueError, match="non-empty"):
        await BrokerClient.connect([], "alice")


@pytest.mark.usefixtures("listed_order")
async def test_a_coordinator_that_is_down_is_passed_over(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    down = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    urls = [down, cluster.url]
    async with await BrokerClient.connect(urls, "alice", timeout=TIMEOUT) as alice:
        assert alice.coordinator_url == cluster.url
        assert alice.server_alias == await cluster.alias_of("s1")
        assert await alice.ping(timeout=TIMEOUT) > 0


@pytest.mark.usefixtures("listed_order")
async def test_a_draining_coordinator_is_passed_over(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with running_coordinator(make_config()) as draining:
        draining.coordinator.begin_shutdown()
        refused = draining.coordinator.counters.connections_refused
        with pytest.raises(CoordinatorUnavailableError):  # alone, it says "not now"
            await BrokerClient.connect(draining.url(""), "alice", timeout=TIMEOUT)
        assert refused[RefusalReason.SHUTTING_DOWN] == 1
        urls = [draining.url(""), cluster.url]
        async with await BrokerClient.connect(urls, "alice", timeout=TIMEOUT) as alice:
            assert refused[RefusalReason.SHUTTING_DOWN] == 2  # it was asked first
            assert alice.coordinator_url == cluster.url
            assert await alice.ping(timeout=TIMEOUT) > 0


@pytest.mark.usefixtures("listed_order")
async def test_refused_credentials_are_not_tried_elsewhere() -> None:
    strict_config = make_config(server_secret="s3cret")
    async with (
        running_coordinator(strict_config, authenticator=Letmein()) as strict,
        running_coordinator(make_config()) as other,
    ):
        with pytest.raises(AuthenticationError):
            await BrokerClient.connect([strict.url(""), other.url("")], "wrong", timeout=TIMEOUT)
        refused = strict.coordinator.counters.connections_refused
        assert refused[RefusalReason.BAD_CLIENT_CREDENTIALS] == 1
        assert other.coordinator.counters.connections["client"] == 0
        assert sum(other.coordinator.counters.connections_refused.values()) == 0


@pytest.mark.usefixtures("listed_order")
async def test_a_reconnect_goes_through_the_other_coordinator(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Each coordinator has a comm server of its own; the client's coordinator and
    server die together, and it comes back through the other coordinator."""
    other = Cluster(tmp_path / "other")
    other.workdir.mkdir()
    try:
        await cluster.start_coordinator()
        await cluster.start_server("s1")
        await other.start_coordinator()
        await other.start_server("s2")
        urls = [cluster.url, other.url]
        alice = await BrokerClient.connect(urls, "alice", timeout=TIMEOUT, reconnect=FAST_RECONNECT)
        try:
            assert alice.coordinator_url == cluster.url
            alice.subscribe(["room"])
            assert cluster.coordinator is not None
            await cluster.stop(cluster.coordinator, kill=True)
            await cluster.stop(cluster.servers["s1"], kill=True)
            await wait_until(lambda: alice.reconnects == 1 or alice.closed, timeout=30)
            assert not alice.closed
            assert alice.coordinator_url == other.url
            assert alice.server_alias == await other.alias_of("s2")
            assert await alice.ping(timeout=TIMEOUT) > 0
            # Its subscription came along: a message on the other side reaches it.
            async with await BrokerClient.connect(other.url, "bob", timeout=TIMEOUT) as bob:
                bob.publish("room", b"hello")
                assert (await receive(alice)).body == b"hello"
        finally:
            await alice.close()
    finally:
        await other.close()


@pytest.mark.usefixtures("listed_order")
async def test_every_coordinator_down_raises_the_last_error() -> None:
    urls = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{free_port()}"]
    with pytest.raises(BrokerError) as failed:
        await BrokerClient.connect(urls, "alice", timeout=TIMEOUT)
    assert urls[1] in str(failed.value)
    assert not isinstance(failed.value, AuthenticationError)


async def test_a_single_url_outlives_a_coordinator_lost_during_the_set_up(
    cluster: Cluster,
) -> None:
    """Behind a Service one URL is enough: the first WebSocket is closed the moment
    the client sends CONNECT (its replica going away mid set-up), and the connect
    goes round again through the same URL instead of failing."""
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    cuts: list[bytes] = []

    def first_connect(sent: list[bytes]) -> bool:
        """The chunk after a WebSocket upgrade is the client's CONNECT frame."""
        upgrade = sent[0].startswith(b"GET ") and b"upgrade: websocket" in sent[0].lower()
        if upgrade and len(sent) == 2 and not cuts:
            cuts.append(sent[1])
            return True
        return False

    proxy = await FaultProxy("127.0.0.1", cluster.coordinator_port, cut_when=first_connect).start()
    try:
        url = f"ws://127.0.0.1:{proxy.port}"
        async with await BrokerClient.connect(url, "alice", timeout=TIMEOUT) as alice:
            assert len(cuts) == 1, "the set-up was never cut"
            assert cuts[0][0] & 0x0F == BINARY_OPCODE, "the cut chunk was not a WebSocket frame"
            assert alice.coordinator_url == url
            assert alice.server_alias == await cluster.alias_of("s1")
            assert await alice.ping(timeout=TIMEOUT) > 0
    finally:
        await proxy.close()
