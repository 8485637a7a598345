"""Plain-int counters of what the coordinator did, for a later Prometheus export.

The relay path runs once per signalling frame, so it only does ``d[key] += 1``
on dicts whose keys all exist from the start: no locks, no label lookups, no
client library on the hot path. An exporter reads these dicts at scrape time
and turns them into counter samples. Every key is present from construction so
that a series reads 0 instead of being missing before its first event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from webrtc_broker.wire import codec

# The frame types the coordinator forwards, keyed by wire value; the names are
# the protocol's names so that metric labels match docs/protocol.md.
RELAYED_TYPES: dict[int, str] = {
    codec.MessageType.CONNECT: "CONNECT",
    codec.MessageType.WEBRTC_OFFER: "WEBRTC_OFFER",
    codec.MessageType.WEBRTC_ANSWER: "WEBRTC_ANSWER",
    codec.MessageType.WEBRTC_ICE_CANDIDATE: "WEBRTC_ICE_CANDIDATE",
    codec.MessageType.CONNECTION_REFUSED: "CONNECTION_REFUSED",
}

CONNECTION_ROLES = ("client", "server", "hub")


class DropReason(StrEnum):
    """Why a received frame was not forwarded."""

    MALFORMED = "malformed"  # not a decodable broker frame (codec.FrameError)
    TEXT_FRAME = "text_frame"  # the protocol is binary-only
    UNEXPECTED_TYPE = "unexpected_type"  # a valid frame the coordinator does not relay
    UNKNOWN_ALIAS = "unknown_alias"  # nobody connected has that alias
    FORBIDDEN_ROUTE = "forbidden_route"  # client to client, or a peer to itself
    QUEUE_FULL = "queue_full"  # the receiver's outbound queue overflowed
    TARGET_BUSY = "target_busy"  # client frames already fill their share of a server's queue
    RATE_LIMITED = "rate_limited"  # above the sender's signalling budget (connection or subject)
    TOO_MANY_PENDING = "too_many_pending"  # a client's CONNECT above max_pending_connects
    TOO_LARGE = "too_large"  # a message above max_message_bytes; the socket is closed (1009)
    INTERNAL_ERROR = "internal_error"  # a bug; logged, the connection survives


class RefusalReason(StrEnum):
    """Why a WebSocket was refused before its upgrade."""

    BAD_ROLE = "bad_role"
    BAD_SERVER_SECRET = "bad_server_secret"
    BAD_CLIENT_CREDENTIALS = "bad_client_credentials"
    SHUTTING_DOWN = "shutting_down"
    TOO_MANY_CONNECTIONS = "too_many_connections"  # max_clients client WebSockets are open
    TOO_MANY_FROM_ADDRESS = "too_many_from_address"  # max_clients_per_address from this address
    BAD_ALIAS = "bad_alias"  # a server proposed an alias outside SERVER_ALIASES
    ALIAS_TAKEN = "alias_taken"  # a server proposed an alias another peer holds


class TurnRefusal(StrEnum):
    """Why ``GET /ice-servers`` issued no TURN credentials."""

    NO_TOKEN = "no_token"  # client tokens are on and none was presented (HTTP 401)
    BAD_TOKEN = "bad_token"  # the token presented did not verify (HTTP 401)
    RATE_LIMITED = "rate_limited"  # above turn_issue_rate for the address or subject (HTTP 429)


class TimeoutPhase(StrEnum):
    """Where a connection was when the coordinator closed it for taking too long."""

    HANDSHAKE = "handshake"  # the HTTP request (or WebSocket upgrade) was not complete in time
    IDLE = "idle"  # a client sent nothing relayable before a server offered it a session


@dataclass(slots=True)
class CoordinatorCounters:
    """Monotonic counters; the current population is read from the registry instead."""

    frames_relayed: dict[str, int] = field(
        default_factory=lambda: {name: 0 for name in RELAYED_TYPES.values()}
    )
    frames_dropped: dict[str, int] = field(
        default_factory=lambda: {reason.value: 0 for reason in DropReason}
    )
    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONNECTION_ROLES, 0))
    connections_refused: dict[str, int] = field(
        default_factory=lambda: {reason.value: 0 for reason in RefusalReason}
    )
    connections_timed_out: dict[str, int] = field(
        default_factory=lambda: {phase.value: 0 for phase in TimeoutPhase}
    )
    slow_connections_closed: int = 0
    load_reports: int = 0
    """Client counts comm servers reported (docs/protocol.md, "Load reports")."""
    turn_credentials_issued: int = 0
    turn_credentials_refused: dict[str, int] = field(
        default_factory=lambda: {reason.value: 0 for reason in TurnRefusal}
    )
