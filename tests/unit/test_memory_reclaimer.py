"""The memory reclaimer: one collection per burst of closes, rate-limited, and
closed sessions that stay referenced reported as lingering."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from tests.support import eventually
from webrtc_broker.rtc.memory import MemoryReclaimer, MemoryReport, live_objects


class Node:
    """Stands for a session: part of a reference cycle, like aiortc's objects."""

    def __init__(self) -> None:
        self.other: object = self


def cycles(count: int) -> list[Node]:
    return [Node() for _ in range(count)]


def close_all(reclaimer: MemoryReclaimer, nodes: list[Node]) -> None:
    # A function of its own: a loop variable in the test would keep the last node alive.
    for node in nodes:
        reclaimer.closed(node)


def fast(*, delay: float = 0.01, min_interval: float = 0.0, retries: int = 3) -> MemoryReclaimer:
    """A collection of the test process's heap takes ~0.1 s or more on a busy machine:
    no duty-cycle spacing here, only what the test sets."""
    return MemoryReclaimer(delay=delay, min_interval=min_interval, duty=1000.0, retries=retries)


async def until(condition: Callable[[], bool]) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=10.0, interval=0.01)


def idle(reclaimer: MemoryReclaimer, runs: int) -> Callable[[], bool]:
    """``runs`` collections done and none due."""
    return lambda: reclaimer.stats.runs >= runs and not reclaimer.stats.scheduled


async def test_a_burst_of_closes_costs_one_collection() -> None:
    gc.collect()
    reclaimer = fast(delay=0.05)
    gc.disable()  # only the reclaimer may collect in this test
    try:
        close_all(reclaimer, cycles(20))
        assert live_objects([Node])["Node"] == 20, "cyclic garbage waits for a collection"
        assert reclaimer.stats.scheduled
        await until(idle(reclaimer, 1))
        await asyncio.sleep(0.1)
        assert reclaimer.stats.runs == 1
        assert live_objects([Node]) == {"Node": 0}
        assert reclaimer.stats.collected >= 20
        assert reclaimer.stats.lingering == 0
    finally:
        gc.enable()
        reclaimer.close()


async def test_collections_are_spaced_by_min_interval() -> None:
    loop = asyncio.get_running_loop()
    reclaimer = fast(min_interval=1.0)
    try:
        reclaimer.closed(Node())
        await until(idle(reclaimer, 1))
        first = loop.time()
        reclaimer.closed(Node())
        await until(idle(reclaimer, 2))
        assert loop.time() - first >= 0.9, "the next collection waits for min_interval"
    finally:
        reclaimer.close()


async def test_a_closed_session_still_referenced_is_retried_then_reported() -> None:
    reclaimer = fast(retries=2)
    kept = Node()
    try:
        reclaimer.closed(kept)
        await until(idle(reclaimer, 3))
        await asyncio.sleep(0.1)
        assert reclaimer.stats.runs == 3, "one collection and two retries, then it stops"
        assert reclaimer.stats.lingering == 1
        del kept
        reclaimer.closed(Node())  # a new close looks again
        await until(idle(reclaimer, 4))
        assert reclaimer.stats.lingering == 0
    finally:
        reclaimer.close()


async def test_report_walks_the_heap_at_most_once_a_period() -> None:
    reclaimer = MemoryReclaimer()
    report = MemoryReport(reclaimer, [Node], period=60.0)
    first = report.get()
    assert first["rss_bytes"] > 0
    held = cycles(3)
    assert report.get()["live_objects"] == first["live_objects"], "cached within the period"
    assert MemoryReport(reclaimer, [Node]).get()["live_objects"]["Node"] >= len(held)
