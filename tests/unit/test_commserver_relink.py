"""Remaking lost server links, and not remaking refused ones.

After a coordinator restart two servers may link again while their old link
lives on; the target refuses the duplicate. Its data channels can close on
the initiator before the refusal (sent through the coordinator) arrives, so
the initiator first schedules a relink; the refusal must cancel it, or the
pair keeps making and dropping links.

The comm server runs in process here, its coordinator connection replaced by
a list of the frames it sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import cast

import pytest

import commserver.server
from commserver.lifecycle import CloseReason
from commserver.peer import Peer
from commserver.server import DUPLICATE_LINK, CommServer
from tests.relayharness import FakeSession
from tests.support import eventually
from webrtc_broker.config import CommServerConfig
from webrtc_broker.rtc import Session, SessionEnd
from webrtc_broker.rtc.handshake import Handshake, PeerState
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import frame_type
from webrtc_broker.wire.subscription import subscription_frame

REMOTE = 4242


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[CommServer, list[bytes]]]:
    monkeypatch.setattr(commserver.server, "RELINK_DELAY", 0.05)
    server = CommServer(CommServerConfig(name="s1"))
    sent: list[bytes] = []
    monkeypatch.setattr(server.link, "send", sent.append)
    server.link.connected.set()
    server.alias = 1
    try:
        yield server, sent
    finally:
        await server.close()


def connects_to(sent: list[bytes], alias: int) -> int:
    frames = [pb.ConnectMessage.FromString(f) for f in sent if frame_type(f) == pb.CONNECT]
    return sum(1 for frame in frames if frame.to_alias == alias)


async def lose_link(server: CommServer) -> None:
    """A link we made closes from the remote end, before it was established."""
    server._connect_to_server(REMOTE)
    await server.peers[REMOTE].session.close("reliable channel closed", SessionEnd.CHANNEL_CLOSED)


async def test_a_lost_link_is_remade(server: tuple[CommServer, list[bytes]]) -> None:
    cs, sent = server
    await lose_link(cs)
    assert connects_to(sent, REMOTE) == 1

    async def relinked() -> bool:
        return connects_to(sent, REMOTE) == 2

    await eventually(relinked, timeout=5, interval=0.02)


async def test_a_refusal_cancels_the_relink(server: tuple[CommServer, list[bytes]]) -> None:
    cs, sent = server
    await lose_link(cs)
    refusal = pb.ConnectionRefusedMessage(
        type=pb.CONNECTION_REFUSED,
        from_alias=REMOTE,
        to_alias=cs.alias,
        reason=pb.UNKNOWN_REASON,
        data=DUPLICATE_LINK.encode(),
    )
    await cs._on_coordinator_frame(refusal.SerializeToString())
    await asyncio.sleep(20 * commserver.server.RELINK_DELAY)
    assert connects_to(sent, REMOTE) == 1, "relinked to a server that refused the link"
    assert REMOTE not in cs.peers


async def test_a_pending_link_that_is_refused_closes_and_stays_closed(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, sent = server
    cs._connect_to_server(REMOTE)
    session = cs.peers[REMOTE].session
    refusal = pb.ConnectionRefusedMessage(
        type=pb.CONNECTION_REFUSED, from_alias=REMOTE, to_alias=cs.alias, data=b"\nfake log line"
    )
    await cs._on_coordinator_frame(refusal.SerializeToString())
    await session.wait_closed()
    assert session.close_reason == "refused: ?fake log line"
    await asyncio.sleep(20 * commserver.server.RELINK_DELAY)
    assert connects_to(sent, REMOTE) == 1


async def test_a_stray_refusal_changes_nothing(server: tuple[CommServer, list[bytes]]) -> None:
    cs, sent = server
    refusal = pb.ConnectionRefusedMessage(
        type=pb.CONNECTION_REFUSED,
        from_alias=REMOTE,
        to_alias=cs.alias,
        reason=pb.ConnectionRefusedReason.ValueType(99),
    )
    await cs._on_coordinator_frame(refusal.SerializeToString())
    assert cs.stats.drops == {}
    assert sent == []


async def test_a_refused_duplicate_link_is_never_routed(
    server: tuple[CommServer, list[bytes]],
) -> None:
    """A second link from a server we already have is refused at its AUTH, and nothing
    it sends afterwards (subscriptions, topics) reaches the relay's tables."""
    cs, sent = server
    secret = cs.relay.me.secret.credentials().decode()
    auth = pb.AuthMessage(
        type=pb.AUTH,
        role=pb.COMMUNICATION_SERVER,
        body=json.dumps({"id": "other", "name": "other", "secret": secret}).encode(),
    ).SerializeToString()
    first, second = (
        Peer(
            alias=alias,
            handshake=Handshake(cast(Session, FakeSession()), PeerState.CONNECTING),
            initiated_by_us=False,
            expected_role=pb.COMMUNICATION_SERVER,
        )
        for alias in (REMOTE, REMOTE + 1)
    )
    for peer in (first, second):
        cs.peers[peer.alias] = peer
        cs.relay.handle(peer, auth, True)
    assert first.established and cs.relay.server_peers == {first}
    assert second.state is PeerState.CLOSED
    assert second.close_reason is CloseReason.DUPLICATE_LINK
    cs.relay.handle(second, subscription_frame(["stolen"]), True)
    topic = pb.TopicMessage(type=pb.TOPIC, topic="stolen", body=b"x").SerializeToString()
    cs.relay.handle(second, topic, True)
    assert "stolen" not in cs.relay.servers.by_topic
    assert cs.stats.deliveries["server"] == 0
    refusals = [f for f in sent if frame_type(f) == pb.CONNECTION_REFUSED]
    assert len(refusals) == 1
