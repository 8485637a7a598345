"""Giving memory back after peer connections close.

A comm server that opens and closes many sessions kept what they used: in a
measured churn (docs/reliability.md, "Memory after churn") its resident memory
rose from 85 to 134 MB over 600 sessions and stayed there. Two causes, both
outside the broker's own data structures:

* **Closed sessions wait for the cyclic collector.** An aiortc connection is
  a web of objects that point at each other: the peer connection and its
  transports (back-pointers, and pyee listeners that are bound methods), the
  SCTP transport and its data channels, aioice's connection and its socket
  protocols, tasks that reference their owners. Dropping the last outside
  reference frees none of it; only the cyclic garbage collector does, and
  with it the native state behind it (OpenSSL's DTLS context and
  certificate, SRTP). CPython runs a full collection only once the objects
  promoted to the oldest generation since the last one exceed a quarter of
  those already there, and a session that lived a few seconds has been
  promoted, so hundreds of closed sessions piled up between collections.
* **glibc keeps freed memory.** Once they are collected, the freed blocks
  stay in malloc's free lists between live objects, and RSS does not go
  down; ``malloc_trim(0)`` returns the free pages to the kernel. Limiting
  malloc arenas (``MALLOC_ARENA_MAX=1``) changed nothing: the memory sits in
  the main heap, not in per-thread arenas.

:class:`MemoryReclaimer` therefore runs one full collection and a trim
shortly after sessions close, batched: a burst of closes costs one collection.
A collection's cost has two parts: freeing what the closed sessions left
(work CPython would do anyway, later) and walking every live object (about
300 per open session), the price of collecting often. Collections are spaced
so that they take about ``duty`` of the process's time, within bounds: at
most ``max_interval`` apart, because spacing them by their duration alone
feeds back (a late collection finds more garbage, takes longer and waits
longer still: in a 1,500-session churn, 1% with no cap let RSS climb from
100 to 139 MB within four rounds of 100 sessions; 2% capped at 5 s kept it
at 94-100 MB throughout).

What was allocated at start-up (modules, classes, configuration; some 66,000
objects) is moved out of the collector's sight first with :func:`gc.freeze`,
so a collection on an idle server costs microseconds instead of ~35 ms;
CPython's own collections profit from that too.

Closed sessions are tracked by weak reference: one still alive after a
collection is either finishing its teardown or kept by a reference that
should not exist. The reclaimer retries a few times and then reports it as
``lingering`` (``/debug/memory``), which is how a reference held by the comm
server's keepalive loop was found.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice
from aiortc import (
    RTCDataChannel,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCSctpTransport,
)

from webrtc_broker.rtc.session import Session
from webrtc_broker.rtc.writer import ChannelWriter

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

SESSION_TYPES: tuple[type, ...] = (
    RTCPeerConnection,
    RTCSctpTransport,
    RTCDtlsTransport,
    RTCIceTransport,
    RTCIceGatherer,
    aioice.Connection,
    RTCDataChannel,
    Session,
    ChannelWriter,
)
"""What one session is made of: each open session has one or two of each, a
collected closed one none."""


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def freeze_startup_objects() -> None:
    """Exempt everything allocated so far from garbage collection, for good.

    Call once, when a service has finished starting and before it serves:
    modules, classes and configuration live as long as the process, and
    without this every full collection walks them again.
    """
    gc.collect()
    gc.freeze()


def live_objects(types: Iterable[type]) -> dict[str, int]:
    """How many objects of each of ``types`` the garbage collector tracks now.

    Walks every tracked object (milliseconds per 10,000): for diagnostics on
    demand, never per message. Frozen start-up objects are not counted.
    """
    wanted = {t: t.__name__ for t in types}
    counts: Counter[str] = Counter({name: 0 for name in wanted.values()})
    for obj in gc.get_objects():
        name = wanted.get(type(obj))
        if name is not None:
            counts[name] += 1
    return dict(counts)


class MemoryReport:
    """RSS, live session objects and reclaimer totals, computed at most once a ``period``.

    The object count walks the whole heap: served on demand (an HTTP endpoint),
    it is cached so that a caller polling it cannot make the server do that
    walk more often than once a period.
    """

    def __init__(
        self, reclaimer: MemoryReclaimer, types: Iterable[type], *, period: float = 1.0
    ) -> None:
        self._reclaimer = reclaimer
        self._types = tuple(types)
        self._period = period
        self._at = -period
        self._report: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._at >= self._period:
            self._at = now
            self._report = {
                "rss_bytes": rss_bytes(),
                "live_objects": live_objects(self._types),
                "reclaimer": self._reclaimer.stats.as_dict(),
            }
        return self._report


@dataclass(slots=True)
class ReclaimStats:
    """What the reclaimer did so far, for ``/debug/memory``."""

    runs: int = 0
    collected: int = 0
    """Unreachable objects the collections found."""
    seconds: float = 0.0
    """Time spent collecting and trimming, in all."""
    last_seconds: float = 0.0
    returned_bytes: int = 0
    """Drop of resident memory across the collections and trims."""
    lingering: int = 0
    """Closed sessions still alive after the last collection."""
    scheduled: bool = False
    """A collection is due: sessions closed since the last one."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "collected": self.collected,
            "seconds": round(self.seconds, 4),
            "last_seconds": round(self.last_seconds, 4),
            "returned_bytes": self.returned_bytes,
            "lingering": self.lingering,
            "scheduled": self.scheduled,
        }


class MemoryReclaimer:
    """Collects and trims shortly after sessions close, batched and rate-limited.

    ``delay`` lets a burst of closes (and aiortc's teardown of each) finish
    before the collection; a collection that took ``d`` seconds is followed by
    the next no sooner than ``d / duty``, clamped between ``min_interval`` and
    ``max_interval``. A closed session still alive after a collection is
    retried up to ``retries`` times.
    """

    def __init__(
        self,
        *,
        delay: float = 1.0,
        min_interval: float = 1.0,
        max_interval: float = 5.0,
        duty: float = 0.02,
        retries: int = 3,
        trim: bool = True,
    ) -> None:
        self.delay = delay
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.duty = duty
        self.retries = retries
        self.stats = ReclaimStats()
        self._trim = _malloc_trim() if trim else None
        self._closed: weakref.WeakSet[object] = weakref.WeakSet()
        self._timer: asyncio.TimerHandle | None = None
        self._next_allowed = 0.0
        self._attempts = 0

    def closed(self, session: object) -> None:
        """``session`` closed: make sure a collection follows soon."""
        self._closed.add(session)
        self._attempts = 0
        self._schedule(self.delay)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + delay, self._next_allowed)
        self._timer = loop.call_at(at, self.run)
        self.stats.scheduled = True

    def run(self) -> None:
        """Collect and trim now (the timer calls this; tests may too)."""
        self._timer = None
        self.stats.scheduled = False
        started = time.perf_counter()
        rss_before = rss_bytes()
        collected = gc.collect()
        if self._trim is not None:
            self._trim(0)
        returned = max(0, rss_before - rss_bytes())
        took = time.perf_counter() - started
        stats = self.stats
        stats.runs += 1
        stats.collected += collected
        stats.seconds += took
        stats.last_seconds = took
        stats.returned_bytes += returned
        stats.lingering = len(self._closed)
        loop = asyncio.get_running_loop()
        spacing = min(self.max_interval, max(self.min_interval, took / self.duty))
        self._next_allowed = loop.time() + spacing
        if stats.lingering and self._attempts < self.retries:
            # Still tearing down (aiortc's close awaits its transports), or kept
            # alive by something: look again later, a bounded number of times.
            self._attempts += 1
            self._schedule(self.delay)
        elif stats.lingering:
            log.debug("%d closed sessions still referenced after collection", stats.lingering)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.stats.scheduled = False
