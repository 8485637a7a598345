"""Signalling from other parties, through the coordinator, against the session state machine.

The comm server runs in process with its coordinator connection replaced by
a list of the frames it sends; the client side is a real aiortc peer
connection, so offers and answers are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from commserver.lifecycle import CloseReason
from commserver.peer import Peer
from commserver.server import CommServer
from tests.support import eventually
from webrtc_broker.config import CommServerConfig
from webrtc_broker.limits import MAX_CANDIDATE_BYTES
from webrtc_broker.rtc.handshake import PeerState, Signal
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import frame_type

CLIENT = 700
CANDIDATE = json.dumps(
    {"candidate": "candidate:1 1 udp 2122260223 198.18.0.9 40000 typ host", "sdpMid": "0"}
).encode()


@contextlib.asynccontextmanager
async def offline_server(config: CommServerConfig) -> AsyncIterator[tuple[CommServer, list[bytes]]]:
    """A comm server registered as alias 1, whose frames to the coordinator are kept."""
    cs = CommServer(config)
    sent: list[bytes] = []
    cs.link.send = sent.append  # type: ignore[method-assign, assignment]
    cs.link.connected.set()
    cs.alias = 1
    try:
        yield cs, sent
    finally:
        await cs.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[CommServer, list[bytes]]]:
    async with offline_server(CommServerConfig(name="s1", max_pending=3, max_candidates=8)) as it:
        yield it


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async def probe() -> bool:
        return predicate()

    await eventually(probe, timeout=timeout, interval=0.02)


def state_of(peer: Peer) -> PeerState:
    """The state now (a function, so that type checkers do not narrow it across awaits)."""
    return peer.state


async def frame(cs: CommServer, message: pb.ConnectMessage | pb.WebRtcMessage) -> None:
    await cs._on_coordinator_frame(message.SerializeToString())


async def connect(cs: CommServer, alias: int) -> None:
    await frame(cs, pb.ConnectMessage(type=pb.CONNECT, from_alias=alias, from_role=pb.CLIENT))


async def signal(cs: CommServer, kind: pb.MessageType.ValueType, alias: int, data: bytes) -> None:
    await frame(cs, pb.WebRtcMessage(type=kind, from_alias=alias, to_alias=cs.alias, data=data))


async def offer_to(sent: list[bytes], alias: int) -> bytes:
    async def offered() -> bytes | None:
        for data in sent:
            if frame_type(data) == pb.WEBRTC_OFFER:
                message = pb.WebRtcMessage.FromString(data)
                if message.to_alias == alias:
                    return message.data
        return None

    offer: bytes = await eventually(offered, timeout=10, interval=0.02)
    return offer


async def real_answer(offer: bytes) -> tuple[RTCPeerConnection, bytes]:
    pc = RTCPeerConnection()
    body = json.loads(offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}).encode()
    return pc, answer


async def test_answers_in_the_wrong_state_are_refused_and_counted(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, sent = server
    await connect(cs, CLIENT)
    peer = cs.peers[CLIENT]
    # Before our offer exists, an answer is out of turn (and so is an offer, always).
    await signal(cs, pb.WEBRTC_ANSWER, CLIENT, b'{"type": "answer", "sdp": ""}')
    await signal(cs, pb.WEBRTC_OFFER, CLIENT, b"{}")
    offer = await offer_to(sent, CLIENT)
    assert peer.state is PeerState.AWAITING_ANSWER
    pc, answer = await real_answer(offer)
    try:
        await signal(cs, pb.WEBRTC_ANSWER, CLIENT, answer)
        assert state_of(peer) is PeerState.CONNECTING
        for _ in range(3):  # the same answer again: refused, the session goes on
            await signal(cs, pb.WEBRTC_ANSWER, CLIENT, answer)
        refused = cs.stats.refused_signals
        assert refused[(PeerState.OFFERING, Signal.ANSWER)] == 1
        assert refused[(PeerState.OFFERING, Signal.OFFER)] == 1
        assert refused[(PeerState.CONNECTING, Signal.ANSWER)] == 3
        assert cs.stats.drops["signalling_wrong_state"] == 5
        assert state_of(peer) is PeerState.CONNECTING and cs.peers[CLIENT] is peer
        await until(peer.session.opened.done)
    finally:
        await pc.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'{"type": "answer", "sdp": "v=0\\r\\ngarbage"}',
        b'{"type": "answer", "sdp": ""}',
        b'{"type": "offer", "sdp": "v=0"}',
    ],
)
async def test_a_broken_answer_costs_only_its_session(
    server: tuple[CommServer, list[bytes]], answer: bytes
) -> None:
    cs, sent = server
    await connect(cs, CLIENT)
    await offer_to(sent, CLIENT)
    peer = cs.peers[CLIENT]
    await signal(cs, pb.WEBRTC_ANSWER, CLIENT, answer)
    await until(lambda: peer.state is PeerState.CLOSED)  # applied beside the reader
    assert peer.close_reason is CloseReason.BAD_SIGNALLING
    assert cs.stats.drops["bad_signalling"] == 1
    await until(lambda: CLIENT not in cs.peers)
    # The coordinator link handled it; the next client is offered a session as usual.
    await connect(cs, CLIENT + 1)
    await offer_to(sent, CLIENT + 1)
    assert cs.stats.sessions["failed:bad_signalling"] == 1


async def test_candidates_have_a_budget_per_session(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, sent = server
    await connect(cs, CLIENT)
    await offer_to(sent, CLIENT)
    await signal(cs, pb.WEBRTC_ICE_CANDIDATE, CLIENT, b"x" * (MAX_CANDIDATE_BYTES + 1))
    for _ in range(20):
        await signal(cs, pb.WEBRTC_ICE_CANDIDATE, CLIENT, CANDIDATE)
    await until(lambda: cs.stats.drops["candidates_over_budget"] == 1 + 12)
    assert len(cs.peers[CLIENT].session._held_candidates) == 8
    assert cs.peers[CLIENT].state is PeerState.AWAITING_ANSWER


async def test_a_full_pending_table_evicts_the_oldest_unanswered_session(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, sent = server
    await connect(cs, 1001)
    pc, answer = await real_answer(await offer_to(sent, 1001))
    try:
        await signal(cs, pb.WEBRTC_ANSWER, 1001, answer)  # answered: evicted last
        for alias in (1002, 1003):
            await connect(cs, alias)
            await offer_to(sent, alias)
        sessions = {alias: cs.peers[alias] for alias in (1001, 1002, 1003)}
        await connect(cs, 1004)  # the table is full: 1002, the oldest unanswered, goes
        assert sessions[1002].close_reason is CloseReason.EVICTED
        await connect(cs, 1005)
        assert sessions[1003].close_reason is CloseReason.EVICTED
        assert sessions[1001].state is not PeerState.CLOSED
        assert sum(1 for p in cs.peers.values() if p.pending) <= 3
        await asyncio.sleep(0.05)
        assert cs.stats.sessions["failed:evicted"] == 2
        # No CONNECTION_REFUSED: nobody was turned away.
        assert not [f for f in sent if frame_type(f) == pb.CONNECTION_REFUSED]
    finally:
        await pc.close()


async def test_pending_sessions_do_not_count_against_max_peers() -> None:
    config = CommServerConfig(name="s1", max_peers=1, max_pending=10)
    async with offline_server(config) as (cs, sent):
        for alias in range(2000, 2005):
            await connect(cs, alias)
        assert not [f for f in sent if frame_type(f) == pb.CONNECTION_REFUSED]
        assert sum(1 for p in cs.peers.values() if p.pending) == 5


async def test_load_reports_count_client_set_ups_under_way() -> None:
    """A replica forgets the CONNECTs it relayed when a report arrives: the report must
    count a client whose set-up is under way, or the next client follows it here."""
    async with offline_server(CommServerConfig(name="s1")) as (cs, _sent):

        def reported() -> float:
            return pb.PingMessage.FromString(cs._load_report()).time

        assert reported() == 0
        await connect(cs, 2000)
        await connect(cs, 2001)
        assert [peer.pending for peer in cs.peers.values()] == [True, True]
        assert cs.client_count == 0  # established: none yet
        assert reported() == 2


async def test_a_broken_candidate_held_before_the_answer_does_not_fail_the_answer(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, sent = server
    await connect(cs, CLIENT)
    offer = await offer_to(sent, CLIENT)
    peer = cs.peers[CLIENT]
    await signal(cs, pb.WEBRTC_ICE_CANDIDATE, CLIENT, b'{"candidate": "garbage"}')
    await signal(cs, pb.WEBRTC_ICE_CANDIDATE, CLIENT, b'{"candidate": "candidate:1 1 udp"}')
    pc, answer = await real_answer(offer)
    try:
        await signal(cs, pb.WEBRTC_ANSWER, CLIENT, answer)
        assert state_of(peer) is PeerState.CONNECTING
        await until(lambda: peer.session.candidates_refused == 2)
        await until(peer.session.opened.done)
        assert not peer.session.opened.exception()
    finally:
        await pc.close()


async def test_a_repeated_connect_while_pending_is_dropped(
    server: tuple[CommServer, list[bytes]],
) -> None:
    cs, _sent = server
    await connect(cs, CLIENT)
    first = cs.peers[CLIENT]
    for _ in range(5):
        await connect(cs, CLIENT)
    assert cs.peers[CLIENT] is first and first.pending
    assert cs.stats.drops["connect_while_pending"] == 5


async def test_session_set_ups_have_a_budget_per_server() -> None:
    config = CommServerConfig(name="s1", setup_rate=0.001, setup_burst=3)
    async with offline_server(config) as (cs, sent):
        for alias in range(3000, 3005):
            await connect(cs, alias)
        refusals = [
            pb.ConnectionRefusedMessage.FromString(f)
            for f in sent
            if frame_type(f) == pb.CONNECTION_REFUSED
        ]
        assert [r.to_alias for r in refusals] == [3003, 3004]
        assert all(r.reason == pb.SERVER_FULL for r in refusals)
        assert cs.stats.sessions["refused:setup_rate"] == 2
        # Servers are not clients: they mesh whatever the clients' budget.
        await frame(
            cs, pb.ConnectMessage(type=pb.CONNECT, from_alias=9, from_role=pb.COMMUNICATION_SERVER)
        )
        assert 9 in cs.peers
