"""Reconnect delays: doubling, capped, jittered, and reset after success."""

from __future__ import annotations

import pytest

from webrtc_broker.backoff import Backoff


def test_delays_double_up_to_the_cap_within_the_jitter() -> None:
    backoff = Backoff(0.1, 1.0)
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for expected in nominal:
        assert backoff.next_delay() == pytest.approx(expected, rel=0.2)


def test_jitter_spreads_a_herd() -> None:
    first_delays = {round(Backoff(1.0, 5.0).next_delay(), 6) for _ in range(100)}
    assert len(first_delays) > 50
    assert all(0.8 <= delay <= 1.2 for delay in first_delays)


def test_reset_starts_again_from_the_minimum() -> None:
    backoff = Backoff(0.5, 8.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.5, rel=0.2)


def test_a_maximum_below_the_minimum_means_the_minimum() -> None:
    backoff = Backoff(2.0, 1.0)
    assert [backoff.next_delay() == pytest.approx(2.0, rel=0.2) for _ in range(3)] == [True] * 3
