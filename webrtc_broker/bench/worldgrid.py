"""The virtual world's geometry and bookkeeping, free of I/O: cells, neighbourhoods,
movement, and the rule that says which deliveries a receiver could expect.

The world is a rectangle of ``columns x rows`` square cells, one topic each.
An avatar stands at a point ``(x, y)`` in cell units; it publishes to the
topic of the cell it stands in and is subscribed to the topics of that cell
and its 8 neighbours (fewer at an edge or a corner): its neighbourhood.
Crossing a cell boundary always changes the neighbourhood, hence the
subscriptions.

The expectation rule (which messages a receiver should have got) is here too,
shared by the bot workers (classifying arrivals) and the orchestrator
(counting what was expected): see :data:`GUARD` and :func:`covered`.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

TOPIC_PREFIX = "world"
AVATARS_PER_CELL = 4
"""Density the default grid aims at: about this many avatars per cell."""
GUARD = 2.0
"""Seconds of margin around a subscription change (see :func:`covered`)."""

Cell = tuple[int, int]
"""(column, row)."""


@dataclass(frozen=True)
class Grid:
    columns: int
    rows: int

    def __post_init__(self) -> None:
        if self.columns < 1 or self.rows < 1:
            raise ValueError("a grid needs at least one column and one row")

    @property
    def cells(self) -> int:
        return self.columns * self.rows

    def cell_of(self, x: float, y: float) -> Cell:
        """The cell holding the point (a point on the far edge belongs to the last cell)."""
        column = min(self.columns - 1, max(0, math.floor(x)))
        row = min(self.rows - 1, max(0, math.floor(y)))
        return column, row

    def neighbourhood(self, cell: Cell) -> frozenset[Cell]:
        """The cell and its up to 8 neighbours, clipped at the edges."""
        column, row = cell
        return frozenset(
            (c, r)
            for c in range(max(0, column - 1), min(self.columns, column + 2))
            for r in range(max(0, row - 1), min(self.rows, row + 2))
        )

    def neighbourhood_topics(self, cell: Cell) -> frozenset[str]:
        return frozenset(topic_of(neighbour) for neighbour in self.neighbourhood(cell))

    def expected_fanout(self, avatars: int) -> float:
        """Receivers per published message when ``avatars`` stand uniformly at random.

        A message published in cell ``c`` reaches every other avatar whose
        neighbourhood holds ``c``; neighbourhoods are symmetric, so those are
        the avatars standing in ``c``'s own neighbourhood. Each of the other
        ``avatars - 1`` stands there with probability ``|N(c)| / cells``, and
        ``c`` is itself uniform.
        """
        if avatars < 2:
            return 0.0
        mean_size = sum(
            len(self.neighbourhood((c, r))) for c in range(self.columns) for r in range(self.rows)
        ) / float(self.cells)
        return (avatars - 1) * mean_size / self.cells


def topic_of(cell: Cell) -> str:
    return f"{TOPIC_PREFIX}/{cell[0]}-{cell[1]}"


GRID_PATTERN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_grid(text: str) -> Grid:
    """``"4x4"`` (columns x rows); raises ``ValueError`` otherwise."""
    match = GRID_PATTERN.match(text)
    if match is None:
        raise ValueError(f"--grid {text!r} is not COLUMNSxROWS, e.g. 4x4")
    return Grid(int(match[1]), int(match[2]))


def grid_for(avatars: int) -> Grid:
    """A square grid with about :data:`AVATARS_PER_CELL` avatars per cell (at least 3x3,
    so that there is an inside and an edge)."""
    side = max(3, math.ceil(math.sqrt(avatars / AVATARS_PER_CELL)))
    return Grid(side, side)


@dataclass
class Walker:
    """A random walk at constant speed: the heading drifts, walls reflect."""

    x: float
    y: float
    heading: float
    """Radians."""
    speed: float
    """Cells per second."""

    TURN_PER_SQRT_S = 1.0
    """Standard deviation of the heading's drift over one second (radians): a
    Brownian heading, so paths wander but do not zigzag at every tick."""

    @classmethod
    def at_random(cls, grid: Grid, speed: float, rng: random.Random) -> Walker:
        return cls(
            rng.uniform(0, grid.columns),
            rng.uniform(0, grid.rows),
            rng.uniform(0, 2 * math.pi),
            speed,
        )

    def step(self, seconds: float, grid: Grid, rng: random.Random) -> None:
        """Move for ``seconds``; bounce off the world's edges."""
        self.heading += rng.gauss(0.0, self.TURN_PER_SQRT_S * math.sqrt(max(seconds, 0.0)))
        x = self.x + math.cos(self.heading) * self.speed * seconds
        y = self.y + math.sin(self.heading) * self.speed * seconds
        x, flip_x = _reflect(x, grid.columns)
        y, flip_y = _reflect(y, grid.rows)
        if flip_x:
            self.heading = math.pi - self.heading
        if flip_y:
            self.heading = -self.heading
        self.x, self.y = x, y

    def cell(self, grid: Grid) -> Cell:
        return grid.cell_of(self.x, self.y)


def _reflect(value: float, size: int) -> tuple[float, bool]:
    """``value`` folded back into ``[0, size]``, and whether it bounced."""
    if value < 0:
        return min(-value, float(size)), True
    if value > size:
        return max(2 * size - value, 0.0), True
    return value, False


def subscription_change(grid: Grid, old: Cell, new: Cell) -> tuple[frozenset[str], frozenset[str]]:
    """The topics to drop and to add when an avatar moves from ``old`` to ``new``."""
    before, after = grid.neighbourhood_topics(old), grid.neighbourhood_topics(new)
    return before - after, after - before


# -- the expectation rule ------------------------------------------------------


@dataclass
class Interval:
    """One stretch of a receiver's subscription to one topic."""

    start: float
    """When the server confirmed the subscription (the SDK's confirming PING came back)."""
    end: float = math.inf
    """When the receiver asked to drop it (or began to leave); infinite while it lasts."""


def covered(intervals: Iterable[Interval], sent_at: float, guard: float = GUARD) -> bool:
    """Whether a message sent at ``sent_at`` to a topic must reach a receiver subscribed
    to it over ``intervals``.

    The rule: the receiver's subscription was confirmed by the send time, and
    it did not ask to drop the topic (or leave) until ``guard`` seconds after
    it. A message sent within ``guard`` before the receiver unsubscribes may
    legitimately miss it: it reaches the server after the unsubscription when
    its own trip is slower than the unsubscription's. Such transition
    messages are neither expected nor counted as arrived, so they make no
    loss; their latency is still measured like every other delivery.
    """
    return any(i.start <= sent_at and sent_at + guard <= i.end for i in intervals)


@dataclass(frozen=True)
class Publish:
    sent_at: float
    sender: int


def count_expected(
    publishes: dict[str, list[Publish]],
    intervals: Iterable[tuple[int, str, Interval]],
    window: tuple[float, float],
    guard: float = GUARD,
) -> int:
    """Deliveries the rule expects: for each publish in ``window`` (``start <= t < end``)
    to a topic, each receiver other than its sender whose interval on that topic
    :func:`covered` it.

    ``intervals``: (receiver, topic, interval), from every worker. The
    intervals of one receiver on one topic never overlap (a topic is added
    only while it is not held), so summing over them counts each message once.
    """
    window_start, window_end = window
    times: dict[str, list[float]] = {}
    by_sender: dict[tuple[str, int], list[float]] = defaultdict(list)
    for topic, sent in publishes.items():
        in_window = sorted(p.sent_at for p in sent if window_start <= p.sent_at < window_end)
        times[topic] = in_window
        for p in sent:
            if window_start <= p.sent_at < window_end:
                by_sender[topic, p.sender].append(p.sent_at)
    for values in by_sender.values():
        values.sort()
    expected = 0
    for receiver, topic, interval in intervals:
        low, high = interval.start, interval.end - guard  # covered: low <= t <= high
        if high < low:
            continue
        expected += _between(times.get(topic, []), low, high)
        expected -= _between(by_sender.get((topic, receiver), []), low, high)
    return expected


def _between(ordered: list[float], low: float, high: float) -> int:
    """How many values of sorted ``ordered`` lie in ``[low, high]``."""
    return bisect.bisect_right(ordered, high) - bisect.bisect_left(ordered, low)
