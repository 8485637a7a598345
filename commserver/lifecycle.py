"""How a peer session at a comm server ends.

Its set-up is the signalling state machine the SDK shares,
:mod:`webrtc_broker.rtc.handshake`, whose :class:`PeerState` (the comm server's
``sessions`` metric labels) is re-exported here. :class:`CloseReason` is the
comm server's alone: a fixed set of metric labels.
"""

from __future__ import annotations

from enum import StrEnum

from webrtc_broker.rtc.handshake import PeerState

__all__ = ["CloseReason", "PeerState"]


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
