"""ChannelWriter against a fake data channel: batching, queue bounds, draining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type


class FakeChannel:
    """Enough of aiortc's RTCDataChannel: send, bufferedAmount and its low event."""

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[bytes] = []
        self._low: Callable[[], None] | None = None

    def on(self, event: str, handler: Callable[[], None]) -> None:
        assert event == "bufferedamountlow"
        self._low = handler

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        self.bufferedAmount += len(data)

    def acknowledge_all(self) -> None:
        self.bufferedAmount = 0
        assert self._low is not None
        self._low()


def _frames(sent: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for message in sent:
        if frame_type(message) == pb.BATCH:
            out += decode_as(message, pb.BatchMessage).frames
        else:
            out.append(message)
    return out


def _topic(i: int, size: int = 20) -> bytes:
    body = f"{i:06d}".encode().ljust(size, b".")
    return pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=1, body=body).SerializeToString()


def test_unbatched_frames_go_out_one_by_one() -> None:
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=10, high_bytes=1 << 20)
    frames = [_topic(i) for i in range(5)]
    for frame in frames:
        writer.send(frame)
    assert channel.sent == frames
    assert writer.sent == 5


async def test_batching_packs_frames_in_order_within_the_size_cap() -> None:
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=100, high_bytes=1 << 20)
    scheduler = FlushScheduler(0.001)
    writer.enable_batching(scheduler, max_bytes=300)
    frames = [_topic(i) for i in range(40)]
    for frame in frames:
        writer.send(frame)
    await asyncio.sleep(0.01)  # the window passes: the tail goes out too
    assert _frames(channel.sent) == frames
    assert len(channel.sent) < len(frames)
    assert all(len(message) <= 300 for message in channel.sent)


async def test_a_frame_larger_than_the_cap_goes_alone_after_what_was_pending() -> None:
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=100, high_bytes=1 << 20)
    writer.enable_batching(FlushScheduler(0.001), max_bytes=300)
    small, big = _topic(1), _topic(2, size=1000)
    writer.send(small)
    writer.send(big)
    assert channel.sent == [small, big]


def test_reliable_queue_overflows_by_count_and_by_bytes() -> None:
    channel = FakeChannel()
    channel.bufferedAmount = 10  # above the high-water mark: everything queues
    writer = ChannelWriter(channel, reliable=True, max_frames=3, high_bytes=5)
    for i in range(3):
        writer.send(_topic(i))
    with pytest.raises(QueueOverflow):
        writer.send(_topic(3))

    writer = ChannelWriter(
        channel, reliable=True, max_frames=1000, high_bytes=5, max_queue_bytes=100
    )
    writer.send(b"x" * 60)
    with pytest.raises(QueueOverflow):
        writer.send(b"y" * 60)


async def test_an_overflow_in_a_timed_flush_reaches_its_writer_and_spares_the_others() -> None:
    """The scheduler flushes from a timer, where nobody could catch the overflow."""
    stalled = FakeChannel()
    stalled.bufferedAmount = 10  # above the high-water mark: everything queues
    overflows: list[QueueOverflow] = []
    scheduler = FlushScheduler(0.001)
    slow = ChannelWriter(
        stalled, reliable=True, max_frames=1, high_bytes=5, on_overflow=overflows.append
    )
    fine = [
        ChannelWriter(FakeChannel(), reliable=True, max_frames=10, high_bytes=1 << 20)
        for _ in range(3)
    ]
    writers = [slow, *fine]
    for writer in writers:
        writer.enable_batching(scheduler, max_bytes=300)
    slow.send(_topic(0))
    await asyncio.sleep(0.01)  # the first batch fills the stalled writer's queue
    for round_ in range(2):
        for writer in writers:
            writer.send(_topic(round_ + 1))
        await asyncio.sleep(0.01)
    assert len(overflows) >= 1
    for writer in fine:
        assert _frames(writer._channel.sent) == [_topic(1), _topic(2)]


def test_unreliable_queue_drops_the_oldest() -> None:
    channel = FakeChannel()
    channel.bufferedAmount = 10
    writer = ChannelWriter(
        channel, reliable=False, max_frames=3, high_bytes=5, max_queue_bytes=10_000
    )
    frames = [_topic(i) for i in range(5)]
    for frame in frames:
        writer.send(frame)
    assert writer.dropped == 2
    while writer.depth:
        channel.acknowledge_all()
    assert channel.sent == frames[2:]


def test_queue_drains_when_the_buffer_empties() -> None:
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=100, high_bytes=50)
    frames = [_topic(i) for i in range(6)]
    for frame in frames:
        writer.send(frame)
    assert writer.depth > 0
    while writer.depth:
        channel.acknowledge_all()
    assert channel.sent == frames


def test_closed_channel_counts_drops() -> None:
    channel = FakeChannel()
    channel.readyState = "closed"
    writer = ChannelWriter(channel, reliable=True, max_frames=10, high_bytes=1 << 20)
    writer.send(_topic(1))
    assert (writer.dropped, channel.sent) == (1, [])


async def test_send_now_skips_the_window_and_keeps_order() -> None:
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=100, high_bytes=1 << 20)
    writer.enable_batching(FlushScheduler(10.0), max_bytes=1000)  # a window never reached
    pending, probe = _topic(1), pb.PingMessage(type=pb.PING, time=1.0).SerializeToString()
    writer.send(pending)
    assert channel.sent == []
    writer.send_now(probe)
    assert _frames(channel.sent) == [pending, probe]
