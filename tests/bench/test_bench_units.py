"""The bench's arithmetic: percentiles, histograms, bodies, bot placement, summaries, output."""

from __future__ import annotations

import io
import math
import os
import random
import struct
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from webrtc_broker.bench.bots import WorkerPlan, WorkerResult
from webrtc_broker.bench.latency import GROWTH, LatencyHistogram, percentile
from webrtc_broker.bench.localcluster import ClusterHandle, ServerInfo, http_base
from webrtc_broker.bench.options import BenchOptions, default_workers
from webrtc_broker.bench.payload import HEADER_SIZE, decode_body, encode_body
from webrtc_broker.bench.plot import plot_sweep
from webrtc_broker.bench.report import print_report
from webrtc_broker.bench.results import Baseline, Machine, Report, RunResult
from webrtc_broker.bench.runner import summarise
from webrtc_broker.bench.sampling import Usage, Watched, cpu_seconds, rss_bytes
from webrtc_broker.bench.workers import ConnectLog, make_plans
from webrtc_broker.bench.world import closed_by_servers
from webrtc_broker.bench.worldbots import WorldWorkerResult


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(1).shuffle(values)
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def test_histogram_percentiles_are_within_a_bucket_of_the_exact_ones() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(math.log(0.02), 0.8) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.add(sample)
    for q in (0.5, 0.95, 0.99):
        exact = percentile(samples, q)
        assert exact is not None
        approx = histogram.percentile(q)
        assert approx is not None
        assert exact <= approx <= exact * GROWTH  # the bucket's upper bound, never below
    assert histogram.maximum == max(samples)
    assert histogram.mean == pytest.approx(sum(samples) / len(samples))
    assert histogram.percentile(1.0) == max(samples)


def test_histograms_merge_exactly_and_survive_json() -> None:
    one, two, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for index in range(1000):
        value = 0.001 * (index % 97) + 1e-6
        (one if index % 3 else two).add(value)
        both.add(value)
    merged = LatencyHistogram.from_json(one.to_json())
    merged.merge(LatencyHistogram.from_json(two.to_json()))
    assert merged.buckets == both.buckets
    assert merged.count == both.count == 1000
    assert merged.percentile(0.99) == both.percentile(0.99)
    assert LatencyHistogram().percentile(0.5) is None


def test_negative_and_tiny_latencies_land_in_the_first_bucket() -> None:
    histogram = LatencyHistogram()
    histogram.add(-0.001)
    histogram.add(0.0)
    assert histogram.buckets == {0: 2}
    assert histogram.percentile(0.5) == 0.0


def test_body_carries_time_bot_and_sequence_at_the_asked_size() -> None:
    body = encode_body(1234.5, 7, 2**32 + 3, 100)
    assert len(body) == 100
    assert decode_body(body) == (1234.5, 7, 3)
    assert len(encode_body(1.0, 0, 0, HEADER_SIZE)) == HEADER_SIZE
    with pytest.raises(struct.error):
        decode_body(b"short")


def test_bots_are_spread_evenly_over_servers_and_workers() -> None:
    plans = make_plans(
        coordinator_url="ws://127.0.0.1:1",
        topic="t",
        servers=[11, 22, 33],
        bots=10,
        workers=2,
        rate=10.0,
        size=100,
        reliable=False,
        connect_concurrency=4,
        connect_timeout=5.0,
    )
    assert [len(plan.bots) for plan in plans] == [5, 5]
    placed = [bot for plan in plans for bot in plan.bots]
    assert sorted(index for index, _ in placed) == list(range(10))
    assert Counter(server for _, server in placed) == {11: 4, 22: 3, 33: 3}
    assert WorkerPlan.from_json(plans[0].to_argv()[1]) == plans[0]


def test_default_workers_leave_a_core_per_server() -> None:
    assert default_workers(1, cpus=2) == 1
    assert default_workers(2, cpus=2) == 1
    assert default_workers(1, cpus=8) == 7
    assert BenchOptions(bots=3, workers=8).workers_for(3) == 3


@pytest.mark.parametrize(
    "bad",
    [{"bots": 1}, {"size": HEADER_SIZE - 1}, {"rate": 0}, {"sweep": (10, 1)}, {"workers": 0}],
)
def test_options_refuse_what_cannot_run(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BenchOptions(**bad)  # type: ignore[arg-type]


def test_http_base_of_a_coordinator_url() -> None:
    assert http_base("ws://127.0.0.1:9090/") == "http://127.0.0.1:9090"
    assert http_base("wss://broker.example:443") == "https://broker.example:443"


def test_proc_sampling_sees_this_process() -> None:
    assert (cpu_seconds(os.getpid()) or 0.0) > 0.0
    assert (rss_bytes(os.getpid()) or 0) > 1024 * 1024
    assert cpu_seconds(2**22 + 1) is None  # above pid_max's default: no such process


def _summary(latencies: list[float], *, received: int, published: int, arrived: int) -> RunResult:
    histogram = LatencyHistogram()
    for value in latencies:
        histogram.add(value)
    options = BenchOptions(bots=5, rate=10.0, duration=2.0)
    cluster = ClusterHandle(
        "ws://127.0.0.1:1", [ServerInfo("s1", 1, 100, "http://x/status")], 101, 0.01
    )
    usages = [
        Usage(Watched("commserver", "s1", 100), 60.0, 90.0, 100.0),
        Usage(Watched("worker", "worker-1", 102), 95.0, 70.0, 80.0),
        Usage(Watched("coordinator", "coordinator", 101), 1.0, 50.0, 50.0),
        Usage(Watched("bench", "bench", 103), 4.0, 60.0, 60.0),
    ]
    return summarise(
        options=options,
        cluster=cluster,
        bots=5,
        connected=5,
        workers=1,
        baseline=Baseline(100, False, 1.0, 1000, 1000, 50.0, 0.005),
        connects=ConnectLog([0.1, 0.2, 0.3], Counter({"ServerFullError": 2})),
        results=[
            WorkerResult(
                published=published,
                received=received,
                arrived=arrived,
                skipped=3,
                latency=histogram,
            )
        ],
        usages=usages,
        machine=190.0,
        memory=(80.0, 81.0),
        status_delta={"deliveries": Counter({"client": 360}), "drops": Counter({"full": 2})},
    )


def test_summary_math() -> None:
    run = _summary([0.010] * 300 + [0.100] * 60, received=360, published=100, arrived=360)
    # 5 bots x 10 Hz x 4 receivers, over a 2 s window.
    assert run.offered_per_s == 200.0
    assert run.published_per_s == 100 * 4 / 2.0
    assert run.delivered_per_s == 180.0
    assert run.loss_percent == pytest.approx(10.0)  # 360 of 100 x 4 arrived
    assert run.ceiling_ratio == pytest.approx(180.0 / 50.0)
    assert run.latency_ms.samples == 360
    assert run.latency_ms.p50 == pytest.approx(10.0, rel=0.02)
    assert run.latency_ms.p99 == pytest.approx(100.0, rel=0.02)
    assert run.connect_s.p50 == 0.2
    assert run.connect_s.failures == 2
    assert run.server.memory_per_client_mb == pytest.approx(0.2)
    assert run.server.deliveries_per_s == 180.0
    assert run.server.drops == {"full": 2}
    assert run.cpu.other_percent == pytest.approx(190.0 - 160.0)
    assert run.cpu.commservers_percent == 60.0
    # 60% of a core for 2 s is 1.2 s of CPU, over 360 deliveries.
    assert run.server.cpu_us_per_delivery == pytest.approx(1.2 / 360 * 1e6)
    assert run.cpu.workers_us_per_delivery == pytest.approx(1.9 / 360 * 1e6)
    warnings = " ".join(run.warnings)
    assert "worker-1 used 95%" in warnings
    assert "other processes used 30%" in warnings
    assert "2 bots failed to connect" in warnings
    assert "skipped 3 publishes" in warnings


def test_report_and_plot_render(tmp_path: Path) -> None:
    runs = [
        _summary([0.01] * 10, received=10, published=10, arrived=10),
        _summary([], received=0, published=10, arrived=0),  # nothing arrived: no latency at all
    ]
    report = Report(
        ["webrtc-broker", "bench"],
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:01:00+00:00",
        Machine(2, "Linux", "3.11", "1.16", 0.5),
        {},
        Baseline(100, False, 1.0, 1000, 1000, 50.0, 0.005),
        runs,
    )
    buffer = io.StringIO()
    print_report(Console(file=buffer, width=200), report)
    text = buffer.getvalue()
    assert "delivered/s" in text
    assert "Sweep" in text
    assert "x aiortc pair" in text
    png = tmp_path / "sweep.png"
    plot_sweep(runs, report.baseline, png)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_sessions_the_servers_closed_leave_out_the_ones_clients_closed() -> None:
    outcomes = {
        "established:client": 60,
        "closed:channel_closed": 20,  # avatars that left
        "closed:slow_peer": 3,
        "closed:peer_silent": 1,
        "failed:establish_timeout": 2,  # never a session: not lost
    }
    assert closed_by_servers(outcomes) == {"slow_peer": 3, "peer_silent": 1}
    assert closed_by_servers({"closed:channel_closed": 5}) == {}


def test_a_world_worker_result_keeps_why_its_sessions_were_lost() -> None:
    result = WorldWorkerResult(sessions_lost=3, lost_because={"server silent": 2, "failed": 1})
    assert WorldWorkerResult.from_json(result.to_json()) == result
