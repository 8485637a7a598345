"""Signalling budgets: how many frames a party may send, charged to that party.

A flood aimed at a comm server must cost the sender, never the server. Each
client connection has a token bucket; when clients prove an identity (a
verified token), every connection of that identity also draws from one shared
bucket, so opening more connections does not buy more frames. A frame passes
only if every bucket it draws from has a token; otherwise it is dropped before
it is even decoded, which keeps a flood cheap to refuse.

The clock is read once per frame (``time.monotonic``); the arithmetic is a few
float operations, so the budget costs nothing measurable on the relay path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from webrtc_broker.tokenbucket import TokenBucket

__all__ = ["SignalBudget", "SubjectBudgets", "TokenBucket"]


class SignalBudget:
    """The buckets one connection's frames draw from: its own, and its subject's if any."""

    def __init__(
        self,
        own: TokenBucket,
        shared: TokenBucket | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now = clock()
        own.updated = now
        self._own = own
        self._shared = shared
        self._clock = clock

    def allow(self) -> bool:
        """Charge one frame; False (and nothing charged) if a bucket is empty.

        Both buckets are checked before either is charged, so a frame refused by
        the subject's bucket does not also drain the connection's own.
        """
        now = self._clock()
        own, shared = self._own, self._shared
        if not own.unlimited:
            own.refill(now)
            if own.tokens < 1.0:
                return False
        if shared is not None and not shared.take(now):
            return False
        if not own.unlimited:
            own.tokens -= 1.0
        return True


@dataclass(slots=True)
class _Shared:
    bucket: TokenBucket
    users: int = 0


class SubjectBudgets:
    """One bucket per verified identity, shared by all its open connections.

    A bucket lives as long as a connection of its subject does, so memory is
    bounded by the number of open connections (themselves capped).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._shared: dict[bytes, _Shared] = {}

    def __len__(self) -> int:
        return len(self._shared)

    def acquire(self, subject: bytes) -> TokenBucket:
        """The subject's bucket; pair every call with :meth:`release`."""
        entry = self._shared.get(subject)
        if entry is None:
            bucket = TokenBucket(self._rate, self._burst)
            bucket.updated = self._clock()
            entry = self._shared[subject] = _Shared(bucket)
        entry.users += 1
        return entry.bucket

    def release(self, subject: bytes) -> None:
        entry = self._shared.get(subject)
        if entry is None:
            return
        entry.users -= 1
        if entry.users <= 0:
            del self._shared[subject]
