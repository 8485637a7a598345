"""A peer of the comm server: a client or another comm server, over one session."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from commserver.lifecycle import CloseReason, PeerState
from webrtc_broker.rtc import Session
from webrtc_broker.rtc.handshake import Handshake
from webrtc_broker.rtc.liveness import SilenceClock
from webrtc_broker.wire import broker_pb2 as pb

SERVER_ROLES = frozenset({pb.COMMUNICATION_SERVER, pb.COMMUNICATION_SERVER_HUB})


@dataclass(eq=False, slots=True)
class Peer:
    """Identity and state of one session; hashed by identity so it can live in sets."""

    alias: int
    handshake: Handshake
    """The session and where it is in its set-up (see :mod:`webrtc_broker.rtc.handshake`)."""
    initiated_by_us: bool
    """True for a server we connected to from our WELCOME: it offers, we answer and
    send AUTH first."""
    close_reason: CloseReason | None = None
    """Why the session ended, once it has."""
    role: pb.Role.ValueType = pb.UNKNOWN_ROLE
    expected_role: pb.Role.ValueType = pb.UNKNOWN_ROLE
    """The role the coordinator announced in CONNECT (0 when it did not say)."""
    identity: bytes = b""
    server_id: str = ""
    capabilities: int = 0
    """Bit set of ``pb.Capability`` values the peer announced in its AUTH."""
    expiry: asyncio.TimerHandle | None = None
    """Closes the session unless it is established in time (cancelled when it is)."""
    silence: SilenceClock | None = None
    """Keepalive bookkeeping, from the first check after the session is established."""
    sent_at_check: int = 0
    """Messages we had sent it at the previous keepalive check."""
    created: float = field(default_factory=time.monotonic)
    """When the session was created (``time.monotonic``), for the set-up time metric."""
    established_at: float | None = None
    """When it was established (``time.monotonic``), if it was."""
    publish_rate: float = 0.0
    """Frames per second this peer may send (0: unlimited; set for clients at AUTH)."""
    tokens: float = 0.0
    """Frame token bucket (see :mod:`commserver.limits`): frames it may send now (negative:
    in debt for a costly frame)..."""
    refilled: float = 0.0
    """...as of this ``time.perf_counter()`` reading."""

    def move(self, state: PeerState) -> None:
        """Take a forward step of the set-up (a bug raises ``IllegalTransition``)."""
        self.handshake.move(state)
        if state is PeerState.ESTABLISHED:
            self.established_at = time.monotonic()
            if self.expiry is not None:
                self.expiry.cancel()
                self.expiry = None

    def end(self, reason: CloseReason, detail: str = "") -> None:
        """Close the session for ``reason``; the first reason given is the one counted."""
        if not self.handshake.close(f"{reason}: {detail}" if detail else str(reason)):
            return
        self.close_reason = reason
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    @property
    def session(self) -> Session:
        return self.handshake.session

    @property
    def state(self) -> PeerState:
        return self.handshake.state

    @property
    def established(self) -> bool:
        return self.state is PeerState.ESTABLISHED

    @property
    def pending(self) -> bool:
        return self.state.pending

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
