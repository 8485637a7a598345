"""The coordinator end to end: real uvicorn on 127.0.0.1, real WebSocket peers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

import webrtc_broker
from coordinator.counters import RELAYED_TYPES, DropReason, RefusalReason
from tests.coordinator.harness import (
    RunningCoordinator,
    TestPeer,
    make_config,
    running_coordinator,
    wait_until,
)
from webrtc_broker.auth import AuthError, Identity
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

# --- WELCOME -----------------------------------------------------------------


async def test_first_client_gets_alias_and_no_servers(coord: RunningCoordinator) -> None:
    before = time.time_ns() // 1_000_000 * 1000
    client = await coord.client()
    assert client.welcome.type == pb.WELCOME
    assert client.servers == []
    # Time-based start: above any alias of a run that started earlier, and
    # still exact as a JavaScript number.
    assert before - 10_000_000 <= client.alias < 2**53


async def test_server_is_listed_only_after_its_own_welcome(coord: RunningCoordinator) -> None:
    first = await coord.comm_server("one")
    assert first.servers == []  # never lists itself
    second = await coord.comm_server("two")
    assert second.servers == [first.alias]
    client = await coord.client()
    assert sorted(client.servers) == sorted([first.alias, second.alias])


async def test_aliases_are_unique_and_increasing(coord: RunningCoordinator) -> None:
    peers = [await coord.client() for _ in range(3)]
    peers.append(await coord.comm_server())
    peers.append(await coord.client())
    aliases = [peer.alias for peer in peers]
    assert aliases == sorted(set(aliases))
    # A disconnected peer's alias is not handed out again.
    await peers[0].ws.close()
    await wait_until(lambda: coord.coordinator.registry.get(aliases[0]) is None)
    later = await coord.client()
    assert later.alias > max(aliases)


async def test_star_around_hubs(coord: RunningCoordinator) -> None:
    plain1 = await coord.comm_server("plain1")
    hub = await coord.hub()
    assert hub.servers == [plain1.alias]  # a hub joins every server
    plain2 = await coord.comm_server("plain2")
    assert plain2.servers == [hub.alias]  # with a hub: star, not mesh
    hub2 = await coord.hub("hub2")
    assert sorted(hub2.servers) == sorted([plain1.alias, hub.alias, plain2.alias])
    client = await coord.client()
    assert sorted(client.servers) == sorted([plain1.alias, plain2.alias])  # no hubs


async def test_client_gets_hubs_when_only_hubs_exist(coord: RunningCoordinator) -> None:
    hub = await coord.hub()
    client = await coord.client()
    assert client.servers == [hub.alias]


async def test_mesh_without_hubs(coord: RunningCoordinator) -> None:
    servers = [await coord.comm_server(f"s{i}") for i in range(3)]
    newcomer = await coord.comm_server("new")
    assert newcomer.servers == [server.alias for server in servers]


async def test_least_clients_orders_by_client_count() -> None:
    async with running_coordinator(make_config(selector="least-clients")) as coord:
        busy, idle, medium = [await coord.comm_server(n) for n in ("busy", "idle", "medium")]
        clients = [await coord.client() for _ in range(3)]
        await clients[0].connect_to(busy.alias)
        await clients[1].connect_to(busy.alias)
        await clients[2].connect_to(medium.alias)
        for server, count in ((busy, 2), (medium, 1)):
            for _ in range(count):
                assert isinstance(await server.recv(), pb.ConnectMessage)
        newcomer = await coord.client()
        assert newcomer.servers == [idle.alias, medium.alias, busy.alias]


async def test_round_robin_rotates_first_choice() -> None:
    async with running_coordinator(make_config(selector="round-robin")) as coord:
        a = await coord.comm_server("a")
        b = await coord.comm_server("b")
        firsts = [(await coord.client()).servers[0] for _ in range(4)]
        assert firsts in ([a.alias, b.alias] * 2, [b.alias, a.alias] * 2)


# --- relay --------------------------------------------------------------------


def _signalling(
    kind: pb.MessageType.ValueType, to_alias: int, spoofed_from: int
) -> pb.WebRtcMessage | pb.ConnectMessage | pb.ConnectionRefusedMessage:
    if kind == pb.CONNECT:
        return pb.ConnectMessage(type=pb.CONNECT, from_alias=spoofed_from, to_alias=to_alias)
    if kind == pb.CONNECTION_REFUSED:
        return pb.ConnectionRefusedMessage(
            type=pb.CONNECTION_REFUSED,
            from_alias=spoofed_from,
            to_alias=to_alias,
            reason=pb.SERVER_FULL,
            data=b"full",
        )
    return pb.WebRtcMessage(
        type=kind, from_alias=spoofed_from, to_alias=to_alias, data=b'{"type":"offer","sdp":"v=0"}'
    )


RELAYED: list[pb.MessageType.ValueType] = [
    pb.CONNECT,
    pb.WEBRTC_OFFER,
    pb.WEBRTC_ANSWER,
    pb.WEBRTC_ICE_CANDIDATE,
    pb.CONNECTION_REFUSED,
]


@pytest.mark.parametrize("kind", RELAYED)
async def test_relay_overwrites_spoofed_from_alias(
    coord: RunningCoordinator, kind: pb.MessageType.ValueType
) -> None:
    server = await coord.comm_server()
    other_server = await coord.comm_server("other")
    client = await coord.client()
    routes: list[tuple[TestPeer, TestPeer]] = [
        (client, server),
        (server, client),
        (server, other_server),
    ]
    for sender, receiver in routes:
        sent = _signalling(kind, receiver.alias, spoofed_from=other_server.alias + 1000)
        await sender.send(sent)
        got = await receiver.recv()
        assert got.type == kind
        assert isinstance(got, type(sent))
        assert got.from_alias == sender.alias  # the spoofed alias is replaced
        assert got.to_alias == receiver.alias
        if isinstance(sent, pb.WebRtcMessage | pb.ConnectionRefusedMessage):
            assert isinstance(got, pb.WebRtcMessage | pb.ConnectionRefusedMessage)
            assert got.data == sent.data
        if isinstance(got, pb.ConnectMessage):  # the role addition is stamped, never trusted
            expected = pb.CLIENT if sender is client else pb.COMMUNICATION_SERVER
            assert got.from_role == expected
    relayed = coord.coordinator.counters.frames_relayed
    assert relayed[RELAYED_TYPES[kind]] == len(routes)


async def _assert_next_frame_is_from(receiver: TestPeer, sender: TestPeer) -> None:
    """Prove that nothing was queued for ``receiver`` before a fresh frame from ``sender``."""
    await sender.send(pb.WebRtcMessage(type=pb.WEBRTC_ICE_CANDIDATE, to_alias=receiver.alias))
    got = await receiver.recv()
    assert got.type == pb.WEBRTC_ICE_CANDIDATE
    assert isinstance(got, pb.WebRtcMessage)
    assert got.from_alias == sender.alias


async def test_client_to_client_signalling_is_dropped(coord: RunningCoordinator) -> None:
    server = await coord.comm_server()
    alice = await coord.client()
    bob = await coord.client()
    dropped = coord.coordinator.counters.frames_dropped
    await alice.connect_to(bob.alias)
    await alice.send(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=bob.alias, data=b"{}"))
    await alice.connect_to(alice.alias)  # to itself
    await wait_until(lambda: dropped[DropReason.FORBIDDEN_ROUTE] == 3)
    await _assert_next_frame_is_from(bob, server)
    await _assert_next_frame_is_from(alice, server)
    # a CONNECT that was dropped does not count as a client of anything
    assert all(s["clients"] == 0 for s in (await coord.status())["servers"])


async def test_unknown_alias_is_dropped(coord: RunningCoordinator) -> None:
    server = await coord.comm_server()
    client = await coord.client()
    await client.connect_to(server.alias + 10_000)
    await server.send(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=0))
    await wait_until(
        lambda: coord.coordinator.counters.frames_dropped[DropReason.UNKNOWN_ALIAS] == 2
    )
    await _assert_next_frame_is_from(client, server)


BAD_FRAMES: list[tuple[bytes | str, DropReason]] = [
    (b"\xff\xff\xff\xff", DropReason.MALFORMED),  # garbage
    (b"", DropReason.MALFORMED),  # empty
    (b"\x08\x63", DropReason.MALFORMED),  # type 99 does not exist
    (codec.encode(pb.PingMessage(type=pb.PING, time=1.5)), DropReason.UNEXPECTED_TYPE),
    (codec.encode(pb.TopicMessage(type=pb.TOPIC, topic="t")), DropReason.UNEXPECTED_TYPE),
    ("hello", DropReason.TEXT_FRAME),
]


async def test_bad_frames_are_dropped_and_connection_keeps_working(
    coord: RunningCoordinator,
) -> None:
    server = await coord.comm_server()
    client = await coord.client()
    offer = codec.encode(
        pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=server.alias, data=b"x" * 40)
    )
    truncated = offer[:-5]  # the data field claims more bytes than follow
    frames = [*BAD_FRAMES, (truncated, DropReason.MALFORMED)]
    for data, _ in frames:
        await client.send_raw(data)
    dropped = coord.coordinator.counters.frames_dropped
    expected = Counter(reason for _, reason in frames)
    await wait_until(lambda: all(dropped[r] == n for r, n in expected.items()))
    # still connected, still relayed, and nothing bad reached the server
    await client.send_raw(offer)
    got = await server.recv()
    assert isinstance(got, pb.WebRtcMessage)
    assert (got.type, got.from_alias, got.data) == (pb.WEBRTC_OFFER, client.alias, b"x" * 40)
    assert dropped[DropReason.INTERNAL_ERROR] == 0


async def test_oversized_message_closes_only_that_socket() -> None:
    async with running_coordinator(make_config(max_message_bytes=1024)) as coord:
        server = await coord.comm_server()
        big = await coord.client()
        small = await coord.client()
        await big.send_raw(os.urandom(4096))
        with pytest.raises(ConnectionClosed) as closed:
            await big.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009  # message too big
        await wait_until(lambda: coord.coordinator.registry.get(big.alias) is None)
        await small.connect_to(server.alias)
        got = await server.recv()
        assert got.type == pb.CONNECT
        assert isinstance(got, pb.ConnectMessage)
        assert got.from_alias == small.alias
        # a message just under the limit is fine
        await small.send(
            pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=server.alias, data=b"y" * 900)
        )
        assert isinstance(await server.recv(), pb.WebRtcMessage)


# --- authentication -------------------------------------------------------------


async def _refused_status(coord: RunningCoordinator, path: str, **kwargs: object) -> int:
    query = kwargs.pop("query", None)
    headers = kwargs.pop("headers", None)
    with pytest.raises(InvalidStatus) as refused:
        await coord.open(path, query, headers)  # type: ignore[arg-type]
    return refused.value.response.status_code


async def test_server_secret_is_required_and_checked() -> None:
    async with running_coordinator(make_config(server_secret="s3cret")) as coord:
        role = {"role": "COMMUNICATION_SERVER"}
        assert await _refused_status(coord, "/discover", query=role) == 403
        assert await _refused_status(coord, "/discover", query={**role, "token": "nope"}) == 403
        wrong_header = {"Authorization": "Bearer nope"}
        assert await _refused_status(coord, "/discover", query=role, headers=wrong_header) == 403
        refused = coord.coordinator.counters.connections_refused
        assert refused[RefusalReason.BAD_SERVER_SECRET] == 3
        assert (await coord.status())["servers"] == []
        assert coord.coordinator.counters.connections["server"] == 0

        by_query = await coord.comm_server("q", token="s3cret")
        by_header = await coord.comm_server("h", headers={"Authorization": "Bearer s3cret"})
        assert by_header.servers == [by_query.alias]
        names = [s["name"] for s in (await coord.status())["servers"]]
        assert names == ["q", "h"]


async def test_without_secret_any_server_is_accepted(coord: RunningCoordinator) -> None:
    server = await coord.comm_server(token="whatever")
    assert server.alias > 0


@pytest.mark.parametrize("query", [{}, {"role": "CLIENT"}, {"role": "communication_server"}])
async def test_discover_requires_a_server_role(
    coord: RunningCoordinator, query: dict[str, str]
) -> None:
    assert await _refused_status(coord, "/discover", query=query) == 400
    assert coord.coordinator.counters.connections_refused[RefusalReason.BAD_ROLE] == 1
    assert coord.coordinator.registry.server_count == 0


class TokenAuthenticator:
    def authenticate(self, credentials: bytes) -> Identity:
        if credentials != b"letmein":
            raise AuthError("bad token")
        return Identity(b"user")


async def test_client_authenticator_is_consulted() -> None:
    config = make_config(server_secret="s3cret")
    async with running_coordinator(config, authenticator=TokenAuthenticator()) as coord:
        assert await _refused_status(coord, "/connect") == 403
        assert await _refused_status(coord, "/connect", query={"token": "wrong"}) == 403
        refused = coord.coordinator.counters.connections_refused
        assert refused[RefusalReason.BAD_CLIENT_CREDENTIALS] == 2
        assert coord.coordinator.registry.client_count == 0
        by_query = await coord.client(token="letmein")
        by_header = await coord.client(headers={"Authorization": "Bearer letmein"})
        assert by_header.alias > by_query.alias
        assert coord.coordinator.counters.connections["client"] == 2


# --- HTTP endpoints and lifecycle ----------------------------------------------


async def test_healthz_and_readyz(coord: RunningCoordinator) -> None:
    health = await coord.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await coord.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

    coord.coordinator.begin_shutdown()
    assert (await coord.get("/readyz")).status_code == 503
    assert (await coord.get("/healthz")).status_code == 200
    assert await _refused_status(coord, "/connect") == 503  # "not now": clients retry
    refused = coord.coordinator.counters.connections_refused
    assert refused[RefusalReason.SHUTTING_DOWN] == 1


async def test_status_counts_servers_clients_and_clients_per_server(
    coord: RunningCoordinator,
) -> None:
    server = await coord.comm_server("alpha")
    hub = await coord.hub("centre")
    clients = [await coord.client() for _ in range(3)]
    await clients[0].connect_to(server.alias)
    await clients[1].connect_to(server.alias)
    await clients[2].connect_to(hub.alias)
    # server to server CONNECT does not count as a client
    await server.connect_to(hub.alias)
    for receiver in (server, server, hub, hub):
        assert (await receiver.recv()).type == pb.CONNECT
    status = await coord.status()
    assert status == {
        "servers": [
            {"alias": server.alias, "name": "alpha", "role": "server", "clients": 2},
            {"alias": hub.alias, "name": "centre", "role": "hub", "clients": 1},
        ],
        "clients": 3,
        "version": webrtc_broker.__version__,
        "replica": 0,
        "alias_spaces": 1,
    }
    # a client that moves is counted once, at its new server
    await clients[0].connect_to(hub.alias)
    await hub.recv()
    counts = {s["alias"]: s["clients"] for s in (await coord.status())["servers"]}
    assert counts == {server.alias: 1, hub.alias: 2}
    # a client that leaves is no longer counted
    await clients[1].ws.close()
    await wait_until(lambda: coord.coordinator.registry.client_count == 2)
    status = await coord.status()
    assert {s["alias"]: s["clients"] for s in status["servers"]} == {
        server.alias: 0,
        hub.alias: 2,
    }
    assert status["clients"] == 2
    assert coord.coordinator.counters.connections == {"client": 3, "server": 1, "hub": 1}


async def test_disconnect_unregisters_server(coord: RunningCoordinator) -> None:
    leaving = await coord.comm_server("leaving")
    staying = await coord.comm_server("staying")
    client = await coord.client()
    await leaving.ws.close()
    await wait_until(lambda: coord.coordinator.registry.server_count == 1)
    assert [s["name"] for s in (await coord.status())["servers"]] == ["staying"]
    assert (await coord.client()).servers == [staying.alias]
    assert (await coord.comm_server("new")).servers == [staying.alias]
    await client.connect_to(leaving.alias)
    await wait_until(
        lambda: coord.coordinator.counters.frames_dropped[DropReason.UNKNOWN_ALIAS] == 1
    )


async def test_shutdown_closes_peers_and_empties_registry() -> None:
    async with running_coordinator() as coord:
        server = await coord.comm_server()
        client = await coord.client()
        coord.server.should_exit = True
        for peer in (server, client):
            with pytest.raises(ConnectionClosed):
                await peer.recv()
        await wait_until(lambda: not coord.coordinator.registry.peers())
        assert not coord.coordinator.ready


async def test_many_peers_relay_concurrently(coord: RunningCoordinator) -> None:
    server = await coord.comm_server()
    clients = await asyncio.gather(*(coord.client() for _ in range(20)))
    await asyncio.gather(*(c.connect_to(server.alias) for c in clients))
    senders = set()
    for _ in clients:
        got = await server.recv()
        assert isinstance(got, pb.ConnectMessage)
        senders.add(got.from_alias)
    assert senders == {c.alias for c in clients}
    assert (await coord.status())["servers"][0]["clients"] == 20


async def test_credentials_in_urls_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(server_secret="server-pass")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        async with running_coordinator(config) as coord:
            await coord.client(token="client-pass")
            await coord.comm_server(token="server-pass")
            query = {"role": "COMMUNICATION_SERVER", "token": "wrong-pass"}
            assert await _refused_status(coord, "/discover", query=query) == 403
    assert "WebSocket /connect?<redacted>" in caplog.text  # uvicorn did log the upgrade
    for secret in ("client-pass", "server-pass", "wrong-pass"):
        assert secret not in caplog.text
