"""Per-channel writer with a bounded queue in front of aiortc's send buffer.

Frames go straight to the data channel while its buffered amount is under a
high-water mark; above it they wait in a bounded queue that drains when aiortc
reports ``bufferedamountlow``. What happens when that queue is full depends on
the channel: a reliable channel must not lose frames, so the peer is given up
(:class:`QueueOverflow`); an unreliable channel drops its oldest frame, which
is what a position update stream wants anyway.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class QueueOverflow(Exception):
    """A reliable writer's queue is full: the peer cannot keep up."""


class ChannelWriter:
    __slots__ = ("_channel", "_high", "_max_frames", "_queue", "dropped", "reliable", "sent")

    def __init__(self, channel: Any, *, reliable: bool, max_frames: int, high_bytes: int) -> None:
        self._channel = channel
        self._high = high_bytes
        self.reliable = reliable
        self._queue: deque[bytes] = deque(maxlen=None if reliable else max_frames)
        self._max_frames = max_frames
        self.sent = 0
        self.dropped = 0
        channel.bufferedAmountLowThreshold = high_bytes // 2
        channel.on("bufferedamountlow", self._drain)

    @property
    def depth(self) -> int:
        """Frames waiting in the queue (not yet handed to the data channel)."""
        return len(self._queue)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.readyState == "open")

    def send(self, frame: bytes) -> None:
        """Send or queue ``frame``; raises :class:`QueueOverflow` on a full reliable queue."""
        if self._channel.readyState != "open":
            self.dropped += 1
            return
        if not self._queue and self._channel.bufferedAmount < self._high:
            self._channel.send(frame)
            self.sent += 1
            return
        if len(self._queue) >= self._max_frames:
            if self.reliable:
                raise QueueOverflow(f"{self._max_frames} frames queued on the reliable channel")
            self.dropped += 1  # deque(maxlen) evicts the oldest on append
        self._queue.append(frame)

    def _drain(self) -> None:
        channel = self._channel
        while self._queue and channel.readyState == "open" and channel.bufferedAmount < self._high:
            channel.send(self._queue.popleft())
            self.sent += 1
