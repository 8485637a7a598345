"""A histogram cheap enough for a per-message hot path.

``prometheus_client.Histogram.observe`` takes a lock and walks label
children; at thousands of messages per second that is work the relay does not
need. :class:`FixedHistogram` is a list of plain int counts with fixed upper
bounds: one ``bisect`` and two additions per observation, no lock (everything
runs on the event loop). A collector turns it into a Prometheus histogram at
scrape time (:func:`webrtc_broker.metrics.families.histogram`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

SETUP_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
"""Seconds: WebRTC session set-up (ICE, DTLS, SCTP, AUTH) takes tens of ms to seconds."""

RELAY_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
"""Seconds: handling one topic frame takes microseconds; milliseconds mean trouble."""


class FixedHistogram:
    """Counts of observations per bucket, with Prometheus ``le`` semantics."""

    __slots__ = ("_counts", "bounds", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        ordered = tuple(bounds)
        if not ordered or list(ordered) != sorted(set(ordered)):
            raise ValueError("bucket bounds must be non-empty, increasing and distinct")
        self.bounds = ordered
        self._counts = [0] * (len(ordered) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            total += count
            yield bound, total
