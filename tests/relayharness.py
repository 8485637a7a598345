"""A comm server's relay without a network: the real :class:`commserver.relay.Relay`
with fake sessions, for unit tests of its rules and for fuzzing it.

A fake session counts what it is sent instead of keeping it (fuzzing sends
many frames and must measure the relay's memory, not the harness's); the last
few frames are kept for assertions.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import cast

from commserver.limits import PeerLimits
from commserver.peer import Peer
from commserver.relay import Relay, ServerIdentity
from commserver.stats import RelayStats
from webrtc_broker.auth import OpenClientAuthenticator, ServerSecret
from webrtc_broker.rtc import FlushScheduler, Session, SessionEnd
from webrtc_broker.rtc.handshake import Handshake, PeerState
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.subscription import subscription_frame

SERVER_SECRET = "relay-harness-server-secret"


class FakeSession:
    """What the relay uses of :class:`webrtc_broker.rtc.Session`, counting what it sends."""

    def __init__(self) -> None:
        self.sent = 0
        self.sent_bytes = 0
        self.last: deque[tuple[bytes, bool]] = deque(maxlen=8)
        self.close_reason = ""

    def send(self, frame: bytes, *, reliable: bool, immediate: bool = False) -> None:
        self.sent += 1
        self.sent_bytes += len(frame)
        self.last.append((frame, reliable))

    def enable_batching(self, scheduler: FlushScheduler, max_bytes: int) -> None:
        """Batching is the writer's business; the relay's output is the same frames."""

    def close_soon(self, reason: str, end: SessionEnd = SessionEnd.CLOSED) -> None:
        self.close_reason = reason

    async def wait_closed(self) -> None:
        """Closing is immediate here."""


@dataclass
class RelayHarness:
    relay: Relay
    stats: RelayStats
    rejected: list[tuple[Peer, str]] = field(default_factory=list)
    _next_alias: int = 100

    def peer(self, *, expected_role: pb.Role.ValueType = pb.CLIENT) -> Peer:
        """A new, unauthenticated session (as after CONNECT), announced with ``expected_role``."""
        self._next_alias += 1
        session = cast(Session, FakeSession())
        return Peer(
            alias=self._next_alias,
            handshake=Handshake(session, PeerState.CONNECTING),  # signalling done
            initiated_by_us=False,
            expected_role=expected_role,
        )

    def client(self, credentials: bytes = b"client", capabilities: int = 0) -> Peer:
        """An authenticated client."""
        peer = self.peer()
        auth = pb.AuthMessage(
            type=pb.AUTH, role=pb.CLIENT, body=credentials, capabilities=capabilities
        )
        self.relay.handle(peer, auth.SerializeToString(), True)
        assert peer.established, self.rejected
        return peer

    def server(self, server_id: str, capabilities: int = 0) -> Peer:
        """An authenticated comm server (it knows the secret)."""
        peer = self.peer(expected_role=pb.COMMUNICATION_SERVER)
        body = json.dumps({"id": server_id, "name": server_id, "secret": SERVER_SECRET})
        auth = pb.AuthMessage(
            type=pb.AUTH,
            role=pb.COMMUNICATION_SERVER,
            body=body.encode(),
            capabilities=capabilities,
        )
        self.relay.handle(peer, auth.SerializeToString(), True)
        assert peer.established, self.rejected
        return peer

    def subscribe(self, peer: Peer, topics: list[str]) -> None:
        self.relay.handle(peer, subscription_frame(topics), True)

    def publish(self, peer: Peer, topic: str, body: bytes, *, reliable: bool = True) -> None:
        frame = pb.TopicMessage(type=pb.TOPIC, topic=topic, body=body).SerializeToString()
        self.relay.handle(peer, frame, reliable)


def session_of(peer: Peer) -> FakeSession:
    session = peer.session
    assert isinstance(session, FakeSession)
    return session


def make_harness(limits: PeerLimits | None = None, *, hub: bool = False) -> RelayHarness:
    """A relay with the default (or given) limits and a server secret, so that
    nobody becomes a server by chance."""
    stats = RelayStats()
    harness = RelayHarness(relay=cast(Relay, None), stats=stats)

    def on_authenticated(peer: Peer) -> bool:
        peer.move(PeerState.ESTABLISHED)
        return True

    def reject_peer(peer: Peer, reason: str) -> None:
        harness.rejected.append((peer, reason))

    role = pb.COMMUNICATION_SERVER_HUB if hub else pb.COMMUNICATION_SERVER
    harness.relay = Relay(
        me=ServerIdentity(
            role,
            "harness",
            "harness",
            ServerSecret(SERVER_SECRET),
            pb.CAPABILITY_TOPIC_NAMES,
        ),
        authenticator=OpenClientAuthenticator(),
        stats=stats,
        limits=limits or PeerLimits(),
        on_authenticated=on_authenticated,
        reject_peer=reject_peer,
    )
    return harness


def assert_tables_consistent(relay: Relay) -> None:
    """Both topic tables index the same (peer, topic) pairs both ways, with no empty
    entries, and what the relay advertised is what its clients want."""
    for table in (relay.clients, relay.servers):
        by_peer = table._by_peer
        pairs_by_topic = {(p, t) for t, peers in table.by_topic.items() for p in peers}
        pairs_by_peer = {(p, t) for p, topics in by_peer.items() for t in topics}
        assert pairs_by_topic == pairs_by_peer
        assert all(table.by_topic.values())
        assert all(by_peer.values())
    wanted = relay.clients.topics()
    if relay.is_hub:
        wanted |= relay.servers.topics()
    assert relay._advertised == wanted
