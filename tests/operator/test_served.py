"""When the resync nudges kopf: BrokerClusters kopf has not handled for some rounds."""

from __future__ import annotations

from broker_operator.served import KopfCoverage


def test_handled_clusters_never_nudge() -> None:
    coverage = KopfCoverage(grace_rounds=2)
    coverage.handled("a")
    assert [coverage.round(["a"]) for _ in range(5)] == [False] * 5
    assert coverage.nudges == 0


def test_an_unhandled_cluster_nudges_after_the_grace_rounds_and_again_later() -> None:
    coverage = KopfCoverage(grace_rounds=2)
    coverage.handled("a")
    assert [coverage.round(["a", "b"]) for _ in range(4)] == [False, True, False, True]
    assert coverage.nudges == 2


def test_a_round_without_unhandled_clusters_starts_the_count_again() -> None:
    coverage = KopfCoverage(grace_rounds=2)
    assert coverage.round(["b"]) is False
    coverage.handled("b")
    assert coverage.round(["b"]) is False
    assert coverage.round(["b", "c"]) is False  # a new one gets its own grace
    assert coverage.round(["b", "c"]) is True
