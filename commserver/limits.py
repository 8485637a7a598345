"""What one client may do to a comm server: frame size, subscriptions and publish rate.

Every limit refuses the offending frame, counts it under a drop reason, and
keeps the session: one bad frame should not cost a client its connection
(the same rule as for malformed frames). The publish rate in particular
drops the excess instead of closing a client that keeps exceeding it: a
closed client reconnects (the SDKs do so on their own), and a WebRTC set-up
with its DTLS handshake costs the server far more CPU than dropping frames,
so closing would turn a noisy client into a more expensive one.

Authenticated comm servers are exempt: they hold the server secret and relay
the sum of many clients' traffic and subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from webrtc_broker.config import MAX_FRAME_BYTES, CommServerConfig

FRAME_TOO_LARGE = "frame_too_large"
"""A data-channel message above ``max_frame_bytes``."""
TOO_MANY_TOPICS = "too_many_topics"
"""A SUBSCRIPTION naming more than ``max_topics_per_peer`` topics (the old set stays)."""
TOPIC_TOO_LONG = "topic_too_long"
"""A SUBSCRIPTION or a publish naming a topic longer than ``max_topic_bytes``."""
RATE_LIMITED = "rate_limited"
"""A publish above the client's token bucket (``publish_rate``, ``publish_burst``)."""

LIMIT_DROPS = (FRAME_TOO_LARGE, TOO_MANY_TOPICS, TOPIC_TOO_LONG, RATE_LIMITED)


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """The per-client limits of :class:`~webrtc_broker.config.CommServerConfig`."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    max_topics_bytes: int = 64 * 1024
    """Largest decompressed topic list of one SUBSCRIPTION (servers included)."""
    max_topics: int = 1000
    max_topic_bytes: int = 256
    publish_rate: float = 1000.0
    """Sustained publishes per second; 0 turns the limit off."""
    publish_burst: int = 5000

    @classmethod
    def from_config(cls, config: CommServerConfig) -> PeerLimits:
        return cls(
            max_frame_bytes=config.max_frame_bytes,
            max_topics_bytes=config.max_topics_bytes,
            max_topics=config.max_topics_per_peer,
            max_topic_bytes=config.max_topic_bytes,
            publish_rate=config.publish_rate,
            publish_burst=config.publish_burst,
        )

    def subscription_problem(self, topics: frozenset[str]) -> str | None:
        """The drop reason for a client's topic set, or None if it is within the limits."""
        if len(topics) > self.max_topics:
            return TOO_MANY_TOPICS
        limit = self.max_topic_bytes
        # A name of n characters has at least n UTF-8 bytes: encode only the candidates.
        if any(len(t.encode()) > limit for t in topics if len(t) * 4 > limit):
            return TOPIC_TOO_LONG
        return None
