"""A peer of the comm server: a client or another comm server, over one session."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from webrtc_broker.rtc import Session
from webrtc_broker.rtc.liveness import SilenceClock
from webrtc_broker.wire import broker_pb2 as pb

SERVER_ROLES = frozenset({pb.COMMUNICATION_SERVER, pb.COMMUNICATION_SERVER_HUB})


@dataclass(eq=False, slots=True)
class Peer:
    """Identity and state of one session; hashed by identity so it can live in sets."""

    alias: int
    session: Session
    initiated_by_us: bool
    """True for a server we connected to from our WELCOME: we send AUTH first."""
    role: pb.Role.ValueType = pb.UNKNOWN_ROLE
    expected_role: pb.Role.ValueType = pb.UNKNOWN_ROLE
    """The role the coordinator announced in CONNECT (0 when it did not say)."""
    identity: bytes = b""
    server_id: str = ""
    capabilities: int = 0
    """Bit set of ``pb.Capability`` values the peer announced in its AUTH."""
    authenticated: bool = False
    sent_auth: bool = False
    established: asyncio.Event = field(default_factory=asyncio.Event)
    silence: SilenceClock | None = None
    """Keepalive bookkeeping of a server link, from its first check on."""
    sent_at_check: int = 0
    """Messages we had sent it at the previous keepalive check."""
    created: float = field(default_factory=time.monotonic)
    """When the session was created (``time.monotonic``), for the set-up time metric."""
    publish_rate: float = 0.0
    """Publishes per second this peer may make (0: unlimited; set for clients at AUTH)."""
    tokens: float = 0.0
    """Publish token bucket (see :mod:`commserver.limits`): publishes it may make now..."""
    refilled: float = 0.0
    """...as of this ``time.perf_counter()`` reading."""

    @property
    def is_server(self) -> bool:
        return self.role in SERVER_ROLES

    @property
    def role_name(self) -> str:
        if self.role == pb.CLIENT:
            return "client"
        return "server" if self.is_server else "unauthenticated"

    @property
    def wants_topic(self) -> bool:
        return bool(self.capabilities & pb.CAPABILITY_TOPIC_NAMES)

    def send(self, frame: bytes, *, reliable: bool = True, immediate: bool = False) -> None:
        self.session.send(frame, reliable=reliable, immediate=immediate)
