"""The life of one peer session at a comm server, as an explicit state machine.

A session is set up by signalling relayed through the coordinator, and every
one of those frames comes from another party: a client that may be buggy or
hostile, or a server. Each input is therefore checked against the state the
session is in, and one that does not fit (an answer to an offer we never
made, a second answer, an offer to a session we offered) is a *refused
transition*: counted, and otherwise ignored. Nothing another party sends can
raise out of the signalling path.

Who offers follows docs/protocol.md: the side that receives CONNECT creates the
channels and the offer; the side that sent CONNECT answers.

::

    CONNECT received                      CONNECT sent (to a server)
          |                                        |
       OFFERING --offer sent--> AWAITING_ANSWER  AWAITING_OFFER --offer--> ANSWERING
                                      |                                      |
                                   answer                               answer sent
                                      v                                      v
                                   CONNECTING  <-----------------------------+
                                      |  (ICE, DTLS, SCTP, channels, AUTH)
                                 authenticated
                                      v
                                  ESTABLISHED

Any state can go to CLOSED, once, with a :class:`CloseReason`.
"""

from __future__ import annotations

from enum import StrEnum


class PeerState(StrEnum):
    OFFERING = "offering"
    """CONNECT received: our offer is being created."""
    AWAITING_ANSWER = "awaiting_answer"
    """Our offer is sent; the peer must answer it."""
    AWAITING_OFFER = "awaiting_offer"
    """We sent CONNECT to a server; it must send an offer."""
    ANSWERING = "answering"
    """Applying the peer's offer and creating our answer."""
    CONNECTING = "connecting"
    """Descriptions exchanged: ICE, DTLS, SCTP, the channels, then AUTH."""
    ESTABLISHED = "established"
    """Authenticated: the session relays."""
    CLOSED = "closed"

    @property
    def pending(self) -> bool:
        """Set up but not established: counts against the pending limits, not ``max_peers``."""
        return self not in (PeerState.ESTABLISHED, PeerState.CLOSED)

    @property
    def answered(self) -> bool:
        """The peer has done its part of the signalling (it answered or offered).

        Under pressure, sessions whose peer never answered are evicted first:
        a real client answers within a round trip, a flood of CONNECTs from
        a party that does no WebRTC at all never does.
        """
        return self in (PeerState.ANSWERING, PeerState.CONNECTING)


class Signal(StrEnum):
    """The signalling inputs a session takes from the coordinator."""

    OFFER = "offer"
    ANSWER = "answer"
    CANDIDATE = "candidate"


ACCEPTED: dict[PeerState, frozenset[Signal]] = {
    PeerState.OFFERING: frozenset({Signal.CANDIDATE}),
    PeerState.AWAITING_ANSWER: frozenset({Signal.ANSWER, Signal.CANDIDATE}),
    PeerState.AWAITING_OFFER: frozenset({Signal.OFFER, Signal.CANDIDATE}),
    PeerState.ANSWERING: frozenset({Signal.CANDIDATE}),
    PeerState.CONNECTING: frozenset({Signal.CANDIDATE}),
    # Browsers may trickle a late candidate after the session is up.
    PeerState.ESTABLISHED: frozenset({Signal.CANDIDATE}),
    PeerState.CLOSED: frozenset(),
}
"""Which signal each state takes; any other is a refused transition."""

TRANSITIONS: dict[PeerState, frozenset[PeerState]] = {
    PeerState.OFFERING: frozenset({PeerState.AWAITING_ANSWER}),
    PeerState.AWAITING_ANSWER: frozenset({PeerState.CONNECTING}),
    PeerState.AWAITING_OFFER: frozenset({PeerState.ANSWERING}),
    PeerState.ANSWERING: frozenset({PeerState.CONNECTING}),
    PeerState.CONNECTING: frozenset({PeerState.ESTABLISHED}),
    PeerState.ESTABLISHED: frozenset(),
    PeerState.CLOSED: frozenset(),
}
"""Forward moves; CLOSED is reachable from every state and is handled apart."""


class IllegalTransition(RuntimeError):
    """A bug in the server, never something a peer can cause (signals are checked first)."""


def check_transition(current: PeerState, target: PeerState) -> None:
    if target is not PeerState.CLOSED and target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target}")


class CloseReason(StrEnum):
    """Why a session ended: a bounded set, used as metric labels."""

    ESTABLISH_TIMEOUT = "establish_timeout"
    """Not connected and authenticated within ``establish_timeout``."""
    EVICTED = "evicted"
    """Pending, and the oldest when ``max_pending`` sessions were already pending."""
    REPLACED = "replaced"
    """The same alias asked for a new session."""
    BAD_SIGNALLING = "bad_signalling"
    """An offer, answer or candidate the WebRTC stack could not apply."""
    AUTH_FAILED = "auth_failed"
    DUPLICATE_LINK = "duplicate_link"
    """A second link with a server we already have a working one with."""
    REFUSED = "refused"
    """The remote server refused the session (CONNECTION_REFUSED)."""
    SERVER_FULL = "server_full"
    """Authenticated while ``max_peers`` clients were already established."""
    PEER_SILENT = "peer_silent"
    """Nothing heard, not even an acknowledgement, for longer than the peer timeout."""
    SLOW_PEER = "slow_peer"
    """Its reliable writer queue overflowed."""
    CHANNEL_CLOSED = "channel_closed"
    """The peer closed a data channel (a clean close by a client ends this way)."""
    CONNECTION_FAILED = "connection_failed"
    """ICE or DTLS failed (or the peer connection closed under us)."""
    COORDINATOR_LOST = "coordinator_lost"
    """The coordinator link dropped while the session was being set up."""
    DRAINING = "draining"
    SHUTDOWN = "shutdown"

    @property
    def relink(self) -> bool:
        """Whether a server link that ended this way is worth making again."""
        return self not in _NO_RELINK


_NO_RELINK = frozenset(
    {
        CloseReason.DUPLICATE_LINK,
        CloseReason.REFUSED,
        CloseReason.AUTH_FAILED,
        CloseReason.SHUTDOWN,
        CloseReason.DRAINING,
        CloseReason.REPLACED,
    }
)
