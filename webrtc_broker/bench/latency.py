"""Latency histograms that merge across worker processes, and percentile math.

A bot receives hundreds of messages a second, so a run yields hundreds of
thousands of latency samples. Shipping them all from each worker would cost
more than measuring them; a histogram with logarithmic buckets is a few
hundred entries, merges exactly across workers, and keeps every percentile
within :data:`GROWTH` (2%) of the true value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FLOOR = 1e-5
"""Seconds: everything at or below 10 µs lands in bucket 0."""
GROWTH = 1.02
"""Each bucket's upper bound is 2% above its lower bound."""
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    if seconds <= FLOOR:
        return 0
    return 1 + int(math.log(seconds / FLOOR) / _LOG_GROWTH)


def bucket_upper(index: int) -> float:
    """The upper bound of bucket ``index``, in seconds."""
    return FLOOR * GROWTH**index


@dataclass(slots=True)
class LatencyHistogram:
    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    """Sum of the samples (seconds), for the mean."""
    maximum: float = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)  # the same clock on both ends; guard against steps anyway
        index = bucket_of(seconds)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q <= 1) by nearest rank; ``None`` without samples.

        It answers the upper bound of the bucket holding that rank (never more
        than the largest sample), so it overstates by at most 2%.
        """
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(bucket_upper(index), self.maximum)
        return self.maximum

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(index): n for index, n in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "maximum": self.maximum,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        return cls(
            buckets={int(index): int(n) for index, n in data["buckets"].items()},
            count=int(data["count"]),
            total=float(data["total"]),
            maximum=float(data["maximum"]),
        )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q`` quantile of a small sample (connect times); ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
