"""Relay counters of a comm server.

Plain integers, incremented on the hot path and read when someone asks
(``/status`` today, a Prometheus collector at scrape time). Keys are bounded:
message types, channel kinds and fixed reason strings, never peers or topics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from webrtc_broker.metrics.histogram import RELAY_BUCKETS, SETUP_BUCKETS, FixedHistogram
from webrtc_broker.rtc import Session
from webrtc_broker.wire import broker_pb2 as pb

TYPE_NAMES: dict[int, str] = {value: name.lower() for name, value in pb.MessageType.items()}
"""Message types as ``/status`` names them (``topic``, ``ping``, ...)."""


def _setup_histograms() -> defaultdict[str, FixedHistogram]:
    """One histogram per peer role, both present from the start so their series read 0."""
    return defaultdict(
        lambda: FixedHistogram(SETUP_BUCKETS),
        {role: FixedHistogram(SETUP_BUCKETS) for role in ("client", "server")},
    )


@dataclass(slots=True)
class RelayStats:
    frames_in: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    """Frames received, keyed ``(peer role name, message type, reliable)``."""
    bytes_in: int = 0
    """Bytes of every data-channel message received (a batch counts whole)."""
    deliveries: Counter[str] = field(default_factory=Counter)
    """Topic frames handed to writers, keyed ``client`` or ``server``."""
    drops: Counter[str] = field(default_factory=Counter)
    """Frames dropped, keyed by reason."""
    sessions: Counter[str] = field(default_factory=Counter)
    """Session outcomes: established, failed reasons, refused reasons."""
    coordinator_connects: int = 0
    refused_signals: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Signalling refused for the session's state, keyed ``(state, signal)``."""
    frame_bytes_in: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    """Bytes of the frames in ``frames_in``, same keys."""
    frames_sent: Counter[tuple[int, bool]] = field(default_factory=Counter)
    """Frames handed to writers, keyed ``(message type, reliable)``."""
    frame_bytes_sent: Counter[tuple[int, bool]] = field(default_factory=Counter)
    """Bytes of the frames in ``frames_sent``, same keys."""
    setup_seconds: defaultdict[str, FixedHistogram] = field(default_factory=_setup_histograms)
    """Session set-up time, keyed by the peer's role (``client``, ``server``)."""
    relay_seconds: FixedHistogram = field(default_factory=lambda: FixedHistogram(RELAY_BUCKETS))
    """Time from receiving a topic frame to handing its last copy to a writer."""
    retired_sent: Counter[bool] = field(default_factory=Counter)
    """Writer ``sent`` totals of closed sessions, keyed by ``reliable``."""
    retired_dropped: Counter[bool] = field(default_factory=Counter)
    """Writer ``dropped`` totals of closed sessions, keyed by ``reliable``."""

    def sent(self, kind: int, reliable: bool, frames: int, size: int) -> None:
        """Count ``frames`` frames of type ``kind`` and ``size`` bytes in all, sent at once."""
        key = (kind, reliable)
        self.frames_sent[key] += frames
        self.frame_bytes_sent[key] += size

    def retire(self, session: Session) -> None:
        """Keep a closing session's writer totals, so exported counters never go down."""
        for writer in (session.reliable, session.unreliable):
            if writer is not None:
                self.retired_sent[writer.reliable] += writer.sent
                self.retired_dropped[writer.reliable] += writer.dropped

    @property
    def frames_out(self) -> int:
        """Frames handed to writers (deliveries and PING echoes), as ``/status`` shows it."""
        return sum(self.frames_sent.values())

    def as_dict(self) -> dict[str, Any]:
        frames_in: Counter[str] = Counter()
        for (role, kind, _reliable), count in self.frames_in.items():
            frames_in[f"{role}/{TYPE_NAMES[kind]}"] += count
        return {
            "frames_in": dict(frames_in),
            "bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "deliveries": dict(self.deliveries),
            "drops": dict(self.drops),
            "sessions": dict(self.sessions),
            "coordinator_connects": self.coordinator_connects,
        }
