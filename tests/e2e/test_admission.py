"""Who gets a session: the peer limit, AUTH first, server secrets, client credentials."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import (
    TIMEOUT,
    connected,
    counter,
    eventually_equal,
    receive,
    subscribe,
    wait_status,
)
from tests.rawpeer import RawPeer
from tests.support import Cluster, eventually
from webrtc_broker.client import AuthenticationError, BrokerClient, ServerFullError
from webrtc_broker.wire import broker_pb2 as pb

SECRET = "s3cret-for-tests"


async def test_full_server_refuses_the_next_client(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1", "--max-peers", "1")
    s1 = await cluster.alias_of("s1")
    async with connected(cluster, "alice", server="s1") as (alice,):
        # A full server still meshes with a server that joins later.
        await cluster.start_server("s2")
        await cluster.wait_mesh("s1", 1)
        await cluster.wait_mesh("s2", 1)
        with pytest.raises(ServerFullError):
            await BrokerClient.connect(cluster.url, "carol", server=s1, timeout=TIMEOUT)
        status = await cluster.server_status("s1")
        assert counter(status, "sessions", "refused:server_full") == 1
        assert (status["clients"], status["servers"], status["pending"]) == (1, 1, 0)

        # The first client is undisturbed: it relays both ways with a client on s2.
        async with connected(cluster, "bob", server="s2") as (bob,):
            assert await alice.ping() > 0
            await subscribe(alice, ["room"])
            await subscribe(bob, ["room"])
            await wait_status(cluster, "s1", "server_topics", 1)
            await wait_status(cluster, "s2", "server_topics", 1)
            alice.publish("room", "still here")
            assert (await receive(bob)).body == b"still here"
            bob.publish("room", "hello alice")
            assert (await receive(alice)).body == b"hello alice"

    # A slot frees up when the client leaves.
    await wait_status(cluster, "s1", "clients", 0)
    async with connected(cluster, "carol", server="s1") as (carol,):
        assert await carol.ping() > 0


async def test_a_client_free_to_choose_passes_over_a_full_server(cluster: Cluster) -> None:
    """Without a server asked for, a refusal sends the client to the next server listed.

    The coordinator alternates its first choice (round-robin, in alias order), so
    the full server comes first for at least one of the two clients. Every WELCOME
    takes a turn, the one a refused client reconnects with too, so how many are
    refused depends on the order of the servers' (self-chosen) aliases.
    """
    await cluster.start_coordinator("--selector", "round-robin")
    await cluster.start_server("s1", "--max-peers", "1")
    await cluster.start_server("s2")
    await cluster.wait_mesh("s1", 1)
    s1, s2 = await cluster.alias_of("s1"), await cluster.alias_of("s2")
    async with connected(cluster, "alice", server="s1"):  # turn 0
        async with connected(cluster, "bob", "carol") as clients:
            assert [client.server_alias for client in clients] == [s2, s2]
        status = await cluster.server_status("s1")
        # s1 first in alias order: bob (turn 1) gets s2, carol (turn 2) s1, refused, then
        # s2 (turn 3). Otherwise bob (turn 1) gets s1, refused, then s2 (turn 2), and
        # carol (turn 3) s1 again, refused, then s2.
        refusals = 1 if s1 < s2 else 2
        assert counter(status, "sessions", "refused:server_full") == refusals
        assert status["clients"] == 1

    # With a single full server there is nowhere else to go: the refusal is the answer.
    await cluster.stop(cluster.servers["s2"])
    await wait_status(cluster, "s1", "servers", 0)
    await wait_status(cluster, "s1", "clients", 0)
    async with connected(cluster, "dave", server="s1"):
        with pytest.raises(ServerFullError):
            await BrokerClient.connect(cluster.url, "erin", timeout=TIMEOUT)
        status = await cluster.server_status("s1")
        # One more, not two.
        assert counter(status, "sessions", "refused:server_full") == refusals + 1


async def test_first_reliable_frame_must_be_auth(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "alice", "bob", server="s1") as (alice, bob):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        rude = await RawPeer.connect(cluster.url)
        try:
            # Frames on the unreliable channel before AUTH are ignored, not fatal.
            rude.send(pb.PingMessage(type=pb.PING, time=1.0).SerializeToString(), reliable=False)
            topic = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"no auth")
            rude.send(topic.SerializeToString())
            refusal = await rude.refusal()
            assert (refusal.reason, refusal.from_alias) == (pb.AUTH_FAILED, rude.server_alias)
            assert b"AUTH" in refusal.data
            await rude.wait_closed()
        finally:
            await rude.close()

        status = await wait_status(cluster, "s1", "clients", 2)
        assert counter(status, "sessions", "refused:auth_failed") == 1
        assert counter(status, "drops", "before_auth") >= 1
        assert counter(status, "deliveries", "client") == 0  # "no auth" reached nobody
        assert status["pending"] == 0

        alice.publish("room", "undisturbed")
        got = await receive(bob)
        assert (got.sender, got.body) == (alice.alias, b"undisturbed")
        assert alice.session is not None
        assert alice.session.closed.is_set() is False


async def test_sdk_reports_refused_credentials(cluster: Cluster) -> None:
    # A server that checks clients needs the server secret (anyone could pose as one).
    await cluster.start_coordinator("--server-secret", SECRET)
    await cluster.start_server(
        "s1", "--allow", "alice", "--server-secret", SECRET, module="tests.allowlist_commserver"
    )
    with pytest.raises(AuthenticationError, match="unknown credentials"):
        await BrokerClient.connect(cluster.url, "mallory", timeout=TIMEOUT)
    async with connected(cluster, "alice") as (alice,):
        assert await alice.ping() > 0
    status = await cluster.server_status("s1")
    assert counter(status, "sessions", "refused:auth_failed") == 1
    assert counter(status, "sessions", "established:client") == 1


async def test_server_secret_is_checked(cluster: Cluster) -> None:
    await cluster.start_coordinator("--server-secret", SECRET)
    await cluster.start_server("s1", "--server-secret", SECRET)
    await cluster.start_server("s2", "--server-secret", SECRET)
    await cluster.wait_mesh("s1", 1)
    await cluster.wait_mesh("s2", 1)

    # A comm server with the wrong secret is not even registered by the coordinator.
    await cluster.start_server("wrong", "--server-secret", "guess", wait=False)

    # A client that claims to be a server is refused (the coordinator told s1 its role).
    s1 = await cluster.alias_of("s1")
    impostor = await RawPeer.connect(cluster.url, server=s1)
    try:
        impostor.send_server_auth(SECRET)
        refusal = await impostor.refusal()
        assert (refusal.reason, refusal.from_alias) == (pb.AUTH_FAILED, s1)
        await impostor.wait_closed()
    finally:
        await impostor.close()

    # A peer registered as a server, whose AUTH to a comm server has the wrong secret.
    impostor = await RawPeer.connect(cluster.url, server=s1, server_secret=SECRET)
    try:
        impostor.send_server_auth("guess")
        refusal = await impostor.refusal()
        assert (refusal.reason, refusal.from_alias) == (pb.AUTH_FAILED, s1)
        assert b"secret" in refusal.data
        await impostor.wait_closed()
    finally:
        await impostor.close()

    status = await cluster.server_status("s1")
    assert counter(status, "sessions", "refused:auth_failed") == 2
    assert (status["servers"], status["pending"]) == (1, 0)

    wrong = cluster.servers["wrong"]

    async def wrong_was_refused() -> bool:
        return "HTTP 403" in wrong.log()

    async def registered() -> list[str]:
        return sorted(server["name"] for server in (await cluster.coordinator_status())["servers"])

    await eventually(wrong_was_refused)
    # The raw peer's registration ends with its WebSocket; "wrong" never had one.
    await eventually_equal(registered, ["s1", "s2"])

    # Clients need no server secret, and the mesh relays for them.
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s1", "server_topics", 1)
        alice.publish("room", "through the authenticated mesh")
        assert (await receive(bob)).body == b"through the authenticated mesh"
