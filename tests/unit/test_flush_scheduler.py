"""FlushScheduler: when batched frames leave, in each batch mode.

``idle`` sends what one loop iteration produced as soon as the loop has nothing
else queued, and holds frames while work is queued for at most the window;
``window`` always holds them for the window. A fake clock on the running loop
makes the window's bound exact instead of a matter of timing.
"""

from __future__ import annotations

import asyncio

import pytest

from webrtc_broker.config import BatchMode
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type

NEVER = 3600.0
"""A window no test reaches: a frame that left did not wait for it."""
GIVE_UP = 10.0
"""Seconds a test waits for something that should happen at once, before failing."""


class Channel:
    """Enough of aiortc's RTCDataChannel, and a future resolved by the first send."""

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[bytes] = []
        self.first_send: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on(self, _event: str, _handler: object) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        self.bufferedAmount += len(data)
        if not self.first_send.done():
            self.first_send.set_result(None)


def frames_of(message: bytes) -> list[bytes]:
    if frame_type(message) == pb.BATCH:
        return list(decode_as(message, pb.BatchMessage).frames)
    return [message]


def topic(i: int) -> bytes:
    return pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=1, body=b"%06d" % i).SerializeToString()


def batched(scheduler: FlushScheduler, channel: Channel, max_frames: int = 100) -> ChannelWriter:
    writer = ChannelWriter(channel, reliable=True, max_frames=max_frames, high_bytes=1 << 20)
    writer.enable_batching(scheduler, max_bytes=1000)
    return writer


class FakeClock:
    """The running loop's ``time()``, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_frames_of_one_iteration_share_one_message_per_peer() -> None:
    scheduler = FlushScheduler(NEVER, "idle")
    first, second = Channel(), Channel()
    a, b = batched(scheduler, first), batched(scheduler, second)
    for i in range(3):
        a.send(topic(i))
        b.send(topic(10 + i))
    assert first.sent == second.sent == []  # nothing leaves inside the iteration
    async with asyncio.timeout(GIVE_UP):
        await asyncio.gather(first.first_send, second.first_send)
    assert [frames_of(m) for m in first.sent] == [[topic(0), topic(1), topic(2)]]
    assert [frames_of(m) for m in second.sent] == [[topic(10), topic(11), topic(12)]]


async def test_a_lone_frame_leaves_once_the_loop_is_idle_not_after_the_window() -> None:
    scheduler = FlushScheduler(NEVER, "idle")
    channel = Channel()
    writer = batched(scheduler, channel)
    writer.send(topic(1))
    async with asyncio.timeout(GIVE_UP):  # far less than the window
        await channel.first_send
    assert channel.sent == [topic(1)]  # alone, it goes as itself, not as a BATCH


async def test_a_lone_frame_waits_only_for_the_work_already_queued() -> None:
    """A callback queued right after the frame runs first; the frame leaves on the
    iteration after it, when nothing else is queued."""
    scheduler = FlushScheduler(NEVER, "idle")
    channel = Channel()
    writer = batched(scheduler, channel)
    seen: list[list[bytes]] = []
    writer.send(topic(1))
    asyncio.get_running_loop().call_soon(lambda: seen.append(list(channel.sent)))
    async with asyncio.timeout(GIVE_UP):
        await channel.first_send
    assert seen == [[]]
    assert channel.sent == [topic(1)]


async def test_idle_schedulers_of_one_loop_do_not_hold_each_other_back() -> None:
    """Each SDK client has its own scheduler; one's pending check is not work for the
    others (were it, each would wait for the others until its window ran out)."""
    channels = [Channel() for _ in range(3)]
    for i, channel in enumerate(channels):
        batched(FlushScheduler(NEVER, "idle"), channel).send(topic(i))
    async with asyncio.timeout(GIVE_UP):
        await asyncio.gather(*(channel.first_send for channel in channels))
    assert [channel.sent for channel in channels] == [[topic(i)] for i in range(3)]


async def test_a_failing_flush_leaves_the_other_schedulers_flushing() -> None:
    """A writer raising something unexpected fails its own flush (asyncio reports it);
    the schedulers still waiting, and their later rounds, are flushed all the same."""

    class Broken(Channel):
        def send(self, data: bytes) -> None:
            raise RuntimeError("broken channel")

    loop = asyncio.get_running_loop()
    reported: asyncio.Future[object] = loop.create_future()
    loop.set_exception_handler(lambda _loop, context: reported.set_result(context["exception"]))
    try:
        batched(FlushScheduler(NEVER, "idle"), Broken()).send(topic(0))
        first, second = Channel(), Channel()
        batched(FlushScheduler(NEVER, "idle"), first).send(topic(1))
        async with asyncio.timeout(GIVE_UP):
            error = await reported
            await first.first_send
        batched(FlushScheduler(NEVER, "idle"), second).send(topic(2))  # a later round
        async with asyncio.timeout(GIVE_UP):
            await second.first_send
    finally:
        loop.set_exception_handler(None)
    assert "broken channel" in str(error)
    assert (first.sent, second.sent) == ([topic(1)], [topic(2)])


async def test_while_work_is_queued_frames_wait_for_it_up_to_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task that is always runnable keeps the loop from ever going idle: frames of
    successive iterations pile into one message, sent once the window has passed."""
    clock = FakeClock()
    monkeypatch.setattr(asyncio.get_running_loop(), "time", clock)
    window = 0.010
    scheduler = FlushScheduler(window, "idle")
    channel = Channel()
    writer = batched(scheduler, channel)
    sent_at: list[float] = []
    iterations = 0
    async with asyncio.timeout(GIVE_UP):
        while not channel.sent:
            writer.send(topic(iterations))
            sent_at.append(clock.now)
            iterations += 1
            clock.now += 0.001
            await asyncio.sleep(0)  # runnable again at once: the loop is never idle
    (message,) = channel.sent
    frames = frames_of(message)
    assert len(frames) > 1, "frames of several busy iterations share the message"
    assert frames == [topic(i) for i in range(len(frames))]
    assert clock.now >= window, "while work is queued, frames wait"
    assert clock.now <= sent_at[0] + window + 0.002, "but not longer than the window"


async def test_window_mode_holds_a_lone_frame_for_the_whole_window() -> None:
    scheduler = FlushScheduler(0.05, "window")
    channel = Channel()
    writer = batched(scheduler, channel)
    writer.send(topic(1))
    for _ in range(10):
        await asyncio.sleep(0)  # idle iterations do not send it
    assert channel.sent == []
    async with asyncio.timeout(GIVE_UP):
        await channel.first_send
    assert channel.sent == [topic(1)]


async def test_close_drops_the_pending_round() -> None:
    scheduler = FlushScheduler(NEVER, "idle")
    channel = Channel()
    writer = batched(scheduler, channel)
    writer.send(topic(1))
    scheduler.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert channel.sent == []


@pytest.mark.parametrize("mode", ["idle", "window"])
async def test_an_overflow_in_a_scheduled_flush_reaches_its_writer_only(mode: BatchMode) -> None:
    """A flush from the loop has no caller to catch an overflow: the writer's handler
    hears of it and the other writers of the round are flushed all the same."""
    scheduler = FlushScheduler(0.001, mode)
    stalled = Channel()
    stalled.bufferedAmount = 1 << 30  # above the high-water mark: everything queues
    overflows: list[QueueOverflow] = []
    slow = ChannelWriter(
        stalled, reliable=True, max_frames=1, high_bytes=5, on_overflow=overflows.append
    )
    slow.enable_batching(scheduler, max_bytes=1000)
    fine = [Channel() for _ in range(3)]
    writers = [slow, *(batched(scheduler, channel) for channel in fine)]
    for round_ in range(2):  # the first round fills the stalled queue, the second overflows
        for writer in writers:
            writer.send(topic(round_))
        await asyncio.sleep(0.01)  # a later timer than the window's: the round was flushed
    assert len(overflows) == 1
    for channel in fine:
        assert [frames_of(m) for m in channel.sent] == [[topic(0)], [topic(1)]]
