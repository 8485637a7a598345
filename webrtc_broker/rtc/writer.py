"""Per-channel writer: optional batching, then a bounded queue before aiortc's buffer.

Frames go straight to the data channel while its buffered amount is under a
high-water mark; above it they wait in a bounded queue that drains when aiortc
reports ``bufferedamountlow``. What happens when that queue is full depends on
the channel: a reliable channel must not lose frames, so the peer is given up
(:class:`QueueOverflow`); an unreliable channel drops its oldest message, which
is what a position update stream wants anyway.

aiortc sends one SCTP packet per data-channel message and its cost is per
packet, not per byte (docs/benchmarks.md, "Where the time goes"). For peers
that accept BATCH frames the writer therefore collects frames and sends them
as one message that fits one SCTP packet. When the collected frames leave is
the :class:`FlushScheduler`'s :data:`~webrtc_broker.config.BatchMode`: once
the event loop has nothing else queued (``idle``: a frame waits only while
the process has more work to do, at most the window), or once per window
(``window``: every frame may wait up to the window, even on an idle server).
One scheduler serves every writer of a process, so a busy server arms one
callback per flush, not one per peer.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from webrtc_broker.config import BatchMode
from webrtc_broker.limits import BATCH_ENTRY_OVERHEAD, BATCH_MAX_BYTES
from webrtc_broker.wire.codec import encode_batch

SCTP_PACKET_PAYLOAD = BATCH_MAX_BYTES
"""Largest message aiortc sends as a single DATA chunk (one SCTP packet): the batch
limit every side shares (webrtc_broker.limits)."""

MAX_QUEUE_BYTES = 16 * 1024 * 1024
"""Bytes one writer may hold queued, whatever the message count: a stalled peer of
large messages costs at most this much memory before it is given up."""

log = logging.getLogger(__name__)

_BATCH_ENTRY_OVERHEAD = BATCH_ENTRY_OVERHEAD
"""Bytes counted for one frame inside a batch besides the frame: its tag and length,
and its share of the batch's header (webrtc_broker.limits, as the browser SDK counts)."""


class QueueOverflow(Exception):
    """A reliable writer's queue is full: the peer cannot keep up."""


class FlushScheduler:
    """Flushes every writer holding a partial batch, with one callback for all of them.

    ``window`` mode flushes ``window`` seconds after the first frame of a round.
    ``idle`` mode flushes as soon as the event loop has no other callback queued
    (checked once per loop iteration, see :class:`_IdleFlusher`), and at the
    latest ``window`` seconds after the first frame. Everything that the work of
    one loop iteration produces for one peer (the datagrams read together, the
    tasks they wake) therefore shares a message, a lone frame leaves on the next
    iteration, and the busier the process, the longer frames wait and the fuller
    the messages: batching costs latency only while there is work it saves.
    """

    def __init__(self, window: float, mode: BatchMode = "idle") -> None:
        self.window = window
        self.mode: BatchMode = mode
        self._dirty: set[ChannelWriter] = set()
        self._timer: asyncio.TimerHandle | None = None
        """Window mode: the current round's flush."""
        self._idle: _IdleFlusher | None = None
        """Idle mode: the loop's flusher, while the current round waits on it."""
        self.deadline = 0.0
        """Idle mode: loop time by which the current round is flushed, idle or not."""

    def mark(self, writer: ChannelWriter) -> None:
        self._dirty.add(writer)
        if self._timer is not None or self._idle is not None:
            return
        loop = asyncio.get_running_loop()
        if self.mode == "window":
            self._timer = loop.call_later(self.window, self.flush)
        else:
            self.deadline = loop.time() + self.window
            self._idle = _IdleFlusher.of(loop)
            self._idle.wait(self, loop)

    def flush(self) -> None:
        """Flush every dirty writer. This runs from the loop, where nobody could catch
        an overflow: each writer's overflow goes to its own handler, and the other
        writers of the round are flushed all the same."""
        self._end_round()
        dirty, self._dirty = self._dirty, set()
        for writer in dirty:
            try:
                writer.flush()
            except QueueOverflow as exc:
                writer.overflowed(exc)

    def close(self) -> None:
        self._end_round()
        self._dirty.clear()

    def _end_round(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._idle is not None:
            self._idle.forget(self)
            self._idle = None


class _IdleFlusher:
    """The idle check of one event loop, shared by every idle-mode scheduler on it.

    One check per loop, not one per scheduler: two schedulers checking on their
    own would each see the other's check queued, take the loop for busy, and
    spin until their windows ran out (an SDK process holds a scheduler per
    client).
    """

    def __init__(self) -> None:
        self._waiting: dict[FlushScheduler, None] = {}
        """Schedulers with a round to flush, in the order they started it."""
        self._check: asyncio.Handle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _IdleFlusher:
        flusher = _IDLE_FLUSHERS.get(loop)
        if flusher is None:
            flusher = _IDLE_FLUSHERS[loop] = cls()
        return flusher

    def wait(self, scheduler: FlushScheduler, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting[scheduler] = None
        if self._check is None:
            self._check = loop.call_soon(self._flush_when_idle, loop)

    def forget(self, scheduler: FlushScheduler) -> None:
        self._waiting.pop(scheduler, None)

    def _flush_when_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._check = None
        if not _has_queued_callbacks(loop):
            due = list(self._waiting)
        else:
            now = loop.time()
            due = [scheduler for scheduler in self._waiting if scheduler.deadline <= now]
        try:
            for scheduler in due:
                scheduler.flush()  # which forgets it here
        finally:
            # Even after an error: a scheduler waiting here starts no check of its own.
            if self._waiting:  # behind the work queued now
                self._check = loop.call_soon(self._flush_when_idle, loop)


_IDLE_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _IdleFlusher] = (
    weakref.WeakKeyDictionary()
)


def _has_queued_callbacks(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop has callbacks due before it next waits for I/O or a timer.

    asyncio's loops keep them in ``_ready`` (ready handles, woken tasks), which no
    public API exposes; a loop without it (uvloop) counts as idle, so the flush
    happens on the next iteration, never later than it would with a timer.
    """
    ready = getattr(loop, "_ready", None)
    return bool(ready)


class ChannelWriter:
    __slots__ = (
        "_batch",
        "_batch_bytes",
        "_batch_limit",
        "_channel",
        "_high",
        "_max_bytes",
        "_max_frames",
        "_on_overflow",
        "_queue",
        "_queued_bytes",
        "_scheduler",
        "dropped",
        "reliable",
        "sent",
    )

    def __init__(
        self,
        channel: Any,
        *,
        reliable: bool,
        max_frames: int,
        high_bytes: int,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        on_overflow: Callable[[QueueOverflow], None] | None = None,
    ) -> None:
        """``on_overflow`` hears of a reliable queue overflow that happened where no
        caller could catch it (a batch flushed by the :class:`FlushScheduler`)."""
        self._channel = channel
        self._on_overflow = on_overflow
        self._high = high_bytes
        self.reliable = reliable
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_queue_bytes
        self._scheduler: FlushScheduler | None = None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_limit = SCTP_PACKET_PAYLOAD
        self.sent = 0
        """Data-channel messages handed to aiortc (a batch counts once)."""
        self.dropped = 0
        """Messages dropped: evicted from a full unreliable queue, sent to a closed channel,
        or larger than the peer's maximum message size."""
        channel.bufferedAmountLowThreshold = high_bytes // 2
        channel.on("bufferedamountlow", self._drain)

    def enable_batching(
        self, scheduler: FlushScheduler, max_bytes: int = SCTP_PACKET_PAYLOAD
    ) -> None:
        """Batch from now on: the peer announced that it accepts BATCH frames."""
        self._scheduler = scheduler
        self._batch_limit = max_bytes

    @property
    def depth(self) -> int:
        """Messages waiting in the queue (not yet handed to the data channel)."""
        return len(self._queue)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.readyState == "open")

    def send(self, frame: bytes) -> None:
        """Send, batch or queue ``frame``.

        Raises :class:`QueueOverflow` when a reliable queue is full.
        """
        if self._scheduler is None:
            self._write(frame)
            return
        size = len(frame) + _BATCH_ENTRY_OVERHEAD
        if self._batch_bytes + size > self._batch_limit:
            self.flush()  # keep order: what is pending goes before this frame
            if size > self._batch_limit:
                self._write(frame)
                return
        self._batch.append(frame)
        self._batch_bytes += size
        if len(self._batch) == 1:
            self._scheduler.mark(self)

    def overflowed(self, exc: QueueOverflow) -> None:
        if self._on_overflow is not None:
            self._on_overflow(exc)
        else:
            log.warning("reliable writer overflowed with no handler: %s", exc)

    def send_now(self, frame: bytes) -> None:
        """Send ``frame`` without waiting for the batch window (RTT probes).

        What is pending goes first, in the same batch, so order is kept.
        """
        self.send(frame)
        self.flush()

    def flush(self) -> None:
        """Send the pending batch now (a lone frame goes out as itself)."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._batch_bytes = 0
        self._write(batch[0] if len(batch) == 1 else encode_batch(batch))

    def _write(self, message: bytes) -> None:
        channel = self._channel
        if channel.readyState != "open":
            self.dropped += 1
            return
        if not self._queue and channel.bufferedAmount < self._high:
            self._send_now(message)
            return
        queue = self._queue
        size = len(message)
        while queue and (
            len(queue) >= self._max_frames or self._queued_bytes + size > self._max_bytes
        ):
            if self.reliable:
                raise QueueOverflow(
                    f"{len(queue)} messages ({self._queued_bytes} bytes) queued on the "
                    "reliable channel"
                )
            self._queued_bytes -= len(queue.popleft())  # unreliable: the oldest goes
            self.dropped += 1
        queue.append(message)
        self._queued_bytes += size

    def _drain(self) -> None:
        channel = self._channel
        queue = self._queue
        while queue and channel.readyState == "open" and channel.bufferedAmount < self._high:
            message = queue.popleft()
            self._queued_bytes -= len(message)
            self._send_now(message)

    def _send_now(self, message: bytes) -> None:
        try:
            self._channel.send(message)
        except ValueError:
            # aiortc refuses a message above the peer's max-message-size. A relayed
            # frame can outgrow the one that came in (the server adds from_alias and
            # the topic), and this peer cannot take it at all: drop it for this peer
            # rather than raise into a fan-out loop (starving the other subscribers)
            # or into aiortc's bufferedamountlow callback.
            self.dropped += 1
            return
        self.sent += 1
