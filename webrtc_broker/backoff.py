"""Capped exponential backoff with jitter, for everything that reconnects.

When a comm server dies, every client it served reconnects at the same
moment, and when the coordinator restarts, every comm server does. Jitter
spreads each such herd over a fifth of the delay either way.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays of min, 2*min, 4*min ... max, each with +-20% jitter."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._min = minimum
        self._max = max(minimum, maximum)
        self._next = minimum

    def reset(self) -> None:
        self._next = self._min

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._max, self._next * 2)
        return delay * random.uniform(0.8, 1.2)
