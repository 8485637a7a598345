"""The world scenario's pure logic: cells, neighbourhoods, walking, and the rule that
decides which deliveries a receiver must have got while subscriptions move."""

from __future__ import annotations

import math
import random

import pytest

from webrtc_broker.bench.options import BenchOptions, default_world_workers
from webrtc_broker.bench.worldgrid import (
    Grid,
    Interval,
    Publish,
    Walker,
    count_expected,
    covered,
    grid_for,
    parse_grid,
    subscription_change,
    topic_of,
)


def test_neighbourhoods_are_clipped_at_edges_and_corners() -> None:
    grid = Grid(4, 3)
    assert len(grid.neighbourhood((0, 0))) == 4
    assert len(grid.neighbourhood((3, 2))) == 4
    assert len(grid.neighbourhood((1, 0))) == 6
    assert len(grid.neighbourhood((0, 1))) == 6
    assert grid.neighbourhood((1, 1)) == {(c, r) for c in range(3) for r in range(3)}
    assert Grid(1, 1).neighbourhood((0, 0)) == {(0, 0)}


def test_neighbourhoods_are_symmetric() -> None:
    """The expected fan-out relies on it: c sees d exactly when d sees c."""
    grid = Grid(5, 4)
    cells = [(c, r) for c in range(5) for r in range(4)]
    for cell in cells:
        for other in cells:
            assert (other in grid.neighbourhood(cell)) == (cell in grid.neighbourhood(other))


def test_points_map_to_cells_and_the_far_edge_belongs_to_the_last_cell() -> None:
    grid = Grid(4, 4)
    assert grid.cell_of(0.0, 0.0) == (0, 0)
    assert grid.cell_of(1.999, 3.0) == (1, 3)
    assert grid.cell_of(4.0, 4.0) == (3, 3)
    assert grid.cell_of(-0.1, 5.0) == (0, 3)


def test_expected_fanout_matches_counting_every_placement() -> None:
    grid = Grid(3, 3)
    # Corners see 4 cells, edges 6, the middle 9: mean 49/9 of 9 cells.
    assert grid.expected_fanout(10) == pytest.approx(9 * 49 / 81)
    assert Grid(1, 1).expected_fanout(5) == 4  # everybody sees everybody else
    assert grid.expected_fanout(1) == 0.0


def test_expected_fanout_agrees_with_random_avatars() -> None:
    grid, avatars, rng = Grid(4, 4), 30, random.Random(7)
    total, trials = 0, 4000
    for _ in range(trials):
        cells = [grid.cell_of(rng.uniform(0, 4), rng.uniform(0, 4)) for _ in range(avatars)]
        sender, others = cells[0], cells[1:]
        total += sum(1 for cell in others if sender in grid.neighbourhood(cell))
    assert total / trials == pytest.approx(grid.expected_fanout(avatars), rel=0.05)


def test_grids_parse_and_default_to_about_four_avatars_per_cell() -> None:
    assert parse_grid("4x4") == Grid(4, 4)
    assert parse_grid(" 3X5 ") == Grid(3, 5)
    for bad in ("4", "4by4", "0x3", "x3"):
        with pytest.raises(ValueError):
            parse_grid(bad)
    assert grid_for(60) == Grid(4, 4)
    assert grid_for(1000) == Grid(16, 16)
    assert grid_for(2) == Grid(3, 3)


def test_topics_name_their_cell() -> None:
    assert topic_of((2, 3)) == "world/2-3"
    assert Grid(3, 3).neighbourhood_topics((0, 0)) == {
        "world/0-0",
        "world/1-0",
        "world/0-1",
        "world/1-1",
    }


def test_crossing_a_boundary_drops_and_adds_the_right_cells() -> None:
    grid = Grid(4, 4)
    dropped, added = subscription_change(grid, (1, 1), (2, 1))
    assert dropped == {"world/0-0", "world/0-1", "world/0-2"}
    assert added == {"world/3-0", "world/3-1", "world/3-2"}
    dropped, added = subscription_change(grid, (0, 0), (1, 0))
    assert dropped == set()
    assert added == {"world/2-0", "world/2-1"}
    assert subscription_change(grid, (2, 2), (2, 2)) == (frozenset(), frozenset())


def test_walkers_stay_inside_and_keep_their_speed() -> None:
    grid, rng = Grid(3, 2), random.Random(1)
    walker = Walker.at_random(grid, speed=2.0, rng=rng)
    for _ in range(5000):
        x, y = walker.x, walker.y
        walker.step(0.1, grid, rng)
        assert 0.0 <= walker.x <= 3.0
        assert 0.0 <= walker.y <= 2.0
        # A bounce folds the path, which only shortens the straight-line distance.
        assert math.hypot(walker.x - x, walker.y - y) <= 2.0 * 0.1 + 1e-9


def test_walkers_cross_cells_about_as_often_as_their_speed_says() -> None:
    """At v cells/s a straight-ish walk crosses about 4v/pi vertical or horizontal
    lines a second; the drifting heading and the walls keep it near that."""
    grid, rng = Grid(8, 8), random.Random(3)
    walkers = [Walker.at_random(grid, speed=0.5, rng=rng) for _ in range(50)]
    crossings, seconds = 0, 20.0
    for walker in walkers:
        cell = walker.cell(grid)
        for _ in range(int(seconds * 10)):
            walker.step(0.1, grid, rng)
            crossings += walker.cell(grid) != cell
            cell = walker.cell(grid)
    per_second = crossings / (len(walkers) * seconds)
    assert 0.3 < per_second < 0.8  # 4 * 0.5 / pi = 0.64 without drift or walls
    still = Walker(1.5, 1.5, 0.0, speed=0.0)
    still.step(10.0, grid, rng)
    assert (still.x, still.y) == (1.5, 1.5)


def test_the_rule_expects_a_message_only_inside_a_confirmed_subscription_with_margin() -> None:
    spans = [Interval(10.0, 20.0)]
    assert covered(spans, 10.0, guard=2.0)
    assert not covered(spans, 9.99, guard=2.0)  # sent before the server confirmed
    assert covered(spans, 18.0, guard=2.0)
    assert not covered(spans, 18.01, guard=2.0)  # too close to the unsubscription
    assert not covered(spans, 25.0, guard=2.0)
    assert covered([Interval(10.0)], 1e9, guard=2.0)  # still subscribed
    assert covered([Interval(0.0, 5.0), Interval(10.0, 20.0)], 12.0, guard=2.0)
    assert not covered([], 12.0)


def test_expected_count_excludes_the_sender_the_margin_and_outside_the_window() -> None:
    publishes = {
        "world/0-0": [Publish(1.0, 1), Publish(5.0, 1), Publish(5.5, 2), Publish(11.0, 2)],
        "world/1-0": [Publish(6.0, 3)],
    }
    intervals = [
        (1, "world/0-0", Interval(0.0)),  # gets 5.5 (its own 5.0 is not for it)
        (2, "world/0-0", Interval(4.0, 8.0)),  # gets 5.0; 5.5 + 2 s margin > 8.0
        (3, "world/0-0", Interval(5.2)),  # gets 5.5
        (4, "world/1-0", Interval(0.0, 8.0)),  # gets 6.0 (6 + 2 <= 8)
        (5, "world/2-2", Interval(0.0)),  # nothing published there
    ]
    assert count_expected(publishes, intervals, (2.0, 10.0), guard=2.0) == 4


def test_worker_classification_and_central_count_agree_when_everything_arrives() -> None:
    """Receivers judge arrivals locally with covered(); the orchestrator counts
    expectations centrally. With every message delivered to every subscriber the
    two must match exactly, or the loss would be off by construction."""
    rng = random.Random(11)
    topics = [f"world/{i}-0" for i in range(4)]
    window = (10.0, 30.0)
    publishes: dict[str, list[Publish]] = {topic: [] for topic in topics}
    for _ in range(2000):
        topic = rng.choice(topics)
        publishes[topic].append(Publish(rng.uniform(0.0, 40.0), rng.randrange(12)))
    held: dict[tuple[int, str], list[Interval]] = {}
    for receiver in range(12):
        for topic in topics:
            t, spans = rng.uniform(0.0, 5.0), []
            while t < 40.0:
                end = t + rng.uniform(0.5, 8.0)
                spans.append(Interval(t, end if end < 38.0 else math.inf))
                t = end + rng.uniform(0.0, 3.0)  # the gap while re-subscribing
            held[receiver, topic] = spans
    judged = sum(
        covered(held[receiver, topic], p.sent_at, guard=2.0)
        for topic in topics
        for p in publishes[topic]
        if window[0] <= p.sent_at < window[1]
        for receiver in range(12)
        if receiver != p.sender
    )
    intervals = [(r, topic, span) for (r, topic), spans in held.items() for span in spans]
    assert judged > 0
    assert count_expected(publishes, intervals, window, guard=2.0) == judged


def test_world_options_are_checked_and_size_their_workers() -> None:
    options = BenchOptions(scenario="world", avatars=1000)
    assert options.world_grid == Grid(16, 16)
    assert options.world_worker_count == default_world_workers(1000, 1)
    assert default_world_workers(1000, 1, cpus=2) == 10
    assert default_world_workers(60, 1, cpus=2) == 1
    assert default_world_workers(60, 1, cpus=8) == 7
    assert BenchOptions(scenario="world", avatars=3, workers=8).world_worker_count == 3
    assert BenchOptions(scenario="world", grid="5x2").world_grid == Grid(5, 2)
    for bad in (
        {"scenario": "crowd"},
        {"scenario": "world", "avatars": 1},
        {"scenario": "world", "grid": "big"},
        {"scenario": "world", "churn": -1.0},
        {"scenario": "world", "sweep": (2, 4)},
    ):
        with pytest.raises(ValueError):
            BenchOptions(**bad)
