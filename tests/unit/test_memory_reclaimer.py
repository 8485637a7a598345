"""The memory reclaimer: one collection per burst of closes, rate-limited, and
closed sessions that stay referenced reported as lingering."""

from __future__ import annotations

import asyncio
import gc

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
    """A collection of the test process's heap takes ~0.1 s: no duty-cycle spacing here."""
    return MemoryReclaimer(delay=delay, min_interval=min_interval, duty=1.0, retries=retries)


async def test_a_burst_of_closes_costs_one_collection() -> None:
    gc.collect()
    reclaimer = fast(delay=0.05)
    gc.disable()  # only the reclaimer may collect in this test
    try:
        close_all(reclaimer, cycles(20))
        assert live_objects([Node])["Node"] == 20, "cyclic garbage waits for a collection"
        assert reclaimer.stats.scheduled
        await asyncio.sleep(0.2)
        assert reclaimer.stats.runs == 1
        assert not reclaimer.stats.scheduled
        assert live_objects([Node]) == {"Node": 0}
        assert reclaimer.stats.collected >= 20
        assert reclaimer.stats.lingering == 0
    finally:
        gc.enable()
        reclaimer.close()


async def test_collections_are_spaced_by_min_interval() -> None:
    reclaimer = fast(min_interval=0.5)
    try:
        reclaimer.closed(Node())
        await asyncio.sleep(0.1)
        assert reclaimer.stats.runs == 1
        reclaimer.closed(Node())
        await asyncio.sleep(0.1)
        assert reclaimer.stats.runs == 1, "the next collection waits for min_interval"
        await asyncio.sleep(0.5)
        assert reclaimer.stats.runs == 2
    finally:
        reclaimer.close()


async def test_a_closed_session_still_referenced_is_retried_then_reported() -> None:
    reclaimer = fast(retries=2)
    kept = Node()
    try:
        reclaimer.closed(kept)
        await asyncio.sleep(1.0)
        assert reclaimer.stats.runs == 3, "one collection and two retries, then it stops"
        assert reclaimer.stats.lingering == 1
        assert not reclaimer.stats.scheduled
        del kept
        reclaimer.closed(Node())  # a new close looks again
        await asyncio.sleep(0.5)
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
