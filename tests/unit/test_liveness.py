"""Keepalive arithmetic, and the proof of life a session reads from its peer."""

from __future__ import annotations

import asyncio

from tests.support import eventually
from webrtc_broker.client import Keepalive
from webrtc_broker.rtc import Session
from webrtc_broker.rtc.liveness import SilenceClock


def clock() -> SilenceClock:
    silence = SilenceClock(interval=1.0, timeout=4.0)
    assert not silence.tick(0, 100.0)
    return silence


def test_silence_on_time_ticks_is_dead_after_the_timeout() -> None:
    silence = clock()
    verdicts = [silence.tick(0, 100.0 + second) for second in range(1, 6)]
    assert verdicts == [False, False, False, False, True]


def test_any_progress_starts_the_count_again() -> None:
    silence = clock()
    for second in range(1, 4):
        silence.tick(0, 100.0 + second)
    assert silence.silent_for == 3.0
    assert not silence.tick(1, 104.0)
    assert silence.silent_for == 0.0
    verdicts = [silence.tick(1, 104.0 + second) for second in range(1, 6)]
    assert verdicts == [False, False, False, False, True]


def test_late_ticks_count_one_interval_each() -> None:
    """A process stalled for 30 s has not been listening for 30 s."""
    silence = clock()
    assert not silence.tick(0, 130.0)
    assert silence.silent_for == 1.0
    verdicts = [silence.tick(0, 130.0 + 30 * late) for late in range(1, 5)]
    assert verdicts == [False, False, False, True]


def test_progress_may_be_any_comparable_value() -> None:
    silence = clock()
    assert not silence.tick((0, 7), 101.0)  # changed from 0: life
    assert silence.silent_for == 0.0
    assert not silence.tick((0, 7), 102.0)
    assert silence.silent_for == 1.0


def test_the_keepalive_looks_at_least_four_times_within_its_timeout() -> None:
    assert Keepalive(interval=3.0, timeout=4.0).tick == 1.0
    assert Keepalive(interval=0.5, timeout=4.0).tick == 0.5
    assert Keepalive(interval=3.0, timeout=60.0).tick == 3.0


async def test_peer_acknowledgements_count_as_progress() -> None:
    """A peer that never sends still proves it is alive by acknowledging our data."""
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    sender = Session(on_frame=lambda data, reliable: None)
    receiver = Session(on_frame=lambda data, reliable: inbox.put_nowait(data))
    try:
        offer = await sender.create_offer()
        await sender.accept_answer(await receiver.accept_offer(offer))
        await asyncio.gather(sender.wait_open(10), receiver.wait_open(10))
        before = sender.peer_progress
        for index in range(20):
            sender.send(b"frame %d" % index, reliable=True)
        for _ in range(20):
            await asyncio.wait_for(inbox.get(), 10)

        async def peer_acknowledged() -> bool:
            return sender.peer_progress != before

        await eventually(peer_acknowledged, timeout=10, interval=0.05)
        received, acknowledged = sender.peer_progress
        assert received == before[0] == 0, "the receiver sent nothing"
        assert acknowledged != before[1], "the peer's SCTP acknowledgements are not visible"
    finally:
        await asyncio.gather(sender.close(), receiver.close())
