"""Telling a dead peer from a busy one.

WebRTC alone notices a vanished peer only after ICE consent fails, about half
a minute; the broker's keepalives want seconds. They tick every ``interval``
and declare a peer dead after ``timeout`` of *silence*, and two mistakes make
a live peer look silent:

* Our own backlog. A PING probe queued behind a megabyte of our own reliable
  frames comes back only after they are through, so waiting for its echo
  alone punishes a peer for our sending. The peer's SCTP acknowledgements of
  that backlog are proof of life too: :attr:`Session.peer_progress` moves
  with them as well as with every message received.
* Our own stalls. When this process is starved of CPU (or a browser throttles
  a background tab's timers), a tick comes late and the peer's frames may be
  sitting unread in a socket. Silence is therefore counted in time this
  process was awake to hear: a late tick adds at most one ``interval``.
"""

from __future__ import annotations

from collections.abc import Hashable

from webrtc_broker.wire import broker_pb2 as pb

KEEPALIVE_PING = pb.PingMessage(type=pb.PING, time=-1.0).SerializeToString()
"""A PING nobody waits for. A client sends it when it has heard nothing, and the
server's echo is simply something heard; a server sends it to a quiet peer, and
the peer's SCTP acknowledgement of it (and a server's hearing it) is the sign of
life. Clients match no probe of theirs to time -1, so they ignore the server's."""


class SilenceClock:
    """How long a peer has shown no sign of life, fed one tick at a time."""

    __slots__ = ("_last_progress", "_last_tick", "interval", "silent_for", "timeout")

    def __init__(self, *, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.silent_for = 0.0
        """Seconds of silence counted so far (late ticks capped at ``interval``)."""
        self._last_progress: Hashable = None
        self._last_tick: float | None = None

    def tick(self, progress: Hashable, now: float) -> bool:
        """Record the peer's ``progress`` at monotonic time ``now``; True once it is dead.

        ``progress`` is any value that changes whenever the peer shows life.
        """
        if self._last_tick is None or progress != self._last_progress:
            self.silent_for = 0.0
        else:
            self.silent_for += min(now - self._last_tick, self.interval)
        self._last_progress, self._last_tick = progress, now
        return self.silent_for > self.timeout
