"""Relay counters of a comm server.

Plain integers, incremented on the hot path and read when someone asks
(``/status`` today, a Prometheus collector at scrape time). Keys are bounded:
message types, channel kinds and fixed reason strings, never peers or topics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RelayStats:
    frames_in: Counter[str] = field(default_factory=Counter)
    """Frames received, keyed ``"<peer role>/<message type>"``."""
    bytes_in: int = 0
    frames_out: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    """Topic frames handed to writers, keyed ``client`` or ``server``."""
    drops: Counter[str] = field(default_factory=Counter)
    """Frames dropped, keyed by reason."""
    sessions: Counter[str] = field(default_factory=Counter)
    """Session outcomes: established, failed reasons, refused reasons."""
    coordinator_connects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_in": dict(self.frames_in),
            "bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "deliveries": dict(self.deliveries),
            "drops": dict(self.drops),
            "sessions": dict(self.sessions),
            "coordinator_connects": self.coordinator_connects,
        }
