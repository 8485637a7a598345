"""The signalling of one session, as an explicit state machine both ends share.

A session is set up by signalling relayed through the coordinator, and every
one of those frames comes from another party: a client or server that may be
buggy or hostile. Each input is therefore checked against the state the
session is in, and one that does not fit (an answer to an offer never made, a
second answer, an offer to a session that offered) is a *refused transition*:
counted, and otherwise ignored. Nothing another party sends can raise out of
the signalling path through this machine.

Who offers follows docs/protocol.md: the side that receives CONNECT creates the
channels and the offer (a comm server); the side that sent CONNECT answers (an
SDK client, or a comm server linking to another).

::

    CONNECT received                      CONNECT sent
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

Any state can go to CLOSED, once, with a reason.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from webrtc_broker.rtc.session import Session


class PeerState(StrEnum):
    OFFERING = "offering"
    """CONNECT received: our offer is being created."""
    AWAITING_ANSWER = "awaiting_answer"
    """Our offer is sent; the peer must answer it."""
    AWAITING_OFFER = "awaiting_offer"
    """We sent CONNECT; the peer must send an offer."""
    ANSWERING = "answering"
    """Applying the peer's offer and creating our answer."""
    CONNECTING = "connecting"
    """Descriptions exchanged: ICE, DTLS, SCTP, the channels, then AUTH."""
    ESTABLISHED = "established"
    """Authenticated: the session carries traffic."""
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

TAKING: dict[Signal, PeerState] = {
    Signal.OFFER: PeerState.ANSWERING,
    Signal.ANSWER: PeerState.CONNECTING,
}
"""Where taking a description moves at once, before it is applied: a second one is
refused while the first is still being applied."""


class IllegalTransition(RuntimeError):
    """A bug in our own code, never something a peer can cause (signals are checked first)."""


class Handshake:
    """One session's signalling: what it takes now, and applying it to its :class:`Session`.

    It starts at OFFERING on the side CONNECT was sent to, AWAITING_OFFER on the
    side that sent it. Owners decide when each step runs (inline, or in a task
    of its own) and what a failure costs; the machine decides whether it may run.
    """

    def __init__(
        self,
        session: Session,
        state: PeerState,
        refused: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.session = session
        self.state = state
        self.refused: Counter[tuple[str, str]] = Counter() if refused is None else refused
        """Refused transitions by (state, signal); may be shared by many handshakes."""

    def take(self, signal: Signal) -> bool:
        """Whether the current state takes ``signal`` (a refusal is counted, never raised);
        an offer or answer taken moves the state on at once."""
        if signal not in ACCEPTED[self.state]:
            self.refused[(self.state, signal)] += 1
            return False
        if signal in TAKING:
            self.move(TAKING[signal])
        return True

    def move(self, target: PeerState) -> None:
        """Take a forward step (see :data:`TRANSITIONS`); CLOSED is :meth:`close`'s."""
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state} -> {target}")
        self.state = target

    async def offer(self) -> bytes | None:
        """Create the channels and our offer; None when the handshake closed meanwhile."""
        offer = await self.session.create_offer()
        if self.state is not PeerState.OFFERING:
            return None
        self.move(PeerState.AWAITING_ANSWER)
        return offer

    async def answer(self, offer: bytes) -> bytes | None:
        """Apply an offer :meth:`take` took and create our answer; None when the
        handshake closed meanwhile. Raises what the WebRTC stack raises."""
        answer = await self.session.accept_offer(offer)
        if self.state is not PeerState.ANSWERING:
            return None
        self.move(PeerState.CONNECTING)
        return answer

    async def accept_answer(self, answer: bytes) -> None:
        """Apply an answer :meth:`take` took. Raises what the WebRTC stack raises."""
        await self.session.accept_answer(answer)

    async def add_candidate(self, candidate: bytes) -> None:
        """Apply a candidate :meth:`take` took; the session holds it until the remote
        description is set, within its budget (``CandidateRefused`` beyond it)."""
        await self.session.add_candidate(candidate)

    def close(self, reason: str) -> bool:
        """Go to CLOSED and close the session for ``reason``; False if already closed."""
        if self.state is PeerState.CLOSED:
            return False
        self.state = PeerState.CLOSED
        self.session.close_soon(reason)
        return True
