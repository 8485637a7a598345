"""The pure parts of ``bench crowd``: who connects where and when, what a connect
event says, how results add up, and what the report concludes from the figures."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from click.testing import CliRunner
from rich.console import Console

from webrtc_broker.bench.bots import WorkerPlan as TopicPlan
from webrtc_broker.bench.bots import WorkerResult
from webrtc_broker.bench.crowd import CrowdOptions, crowd_command
from webrtc_broker.bench.crowdclients import (
    NOT_STARTED,
    CrowdPlan,
    Storm,
    connect_event,
    expected_deliveries,
    merge_results,
)
from webrtc_broker.bench.crowdreport import (
    CrowdRun,
    Descriptors,
    Footprint,
    ProcessPhases,
    SteadyResult,
    StormResult,
    crowd_table,
    limits,
)
from webrtc_broker.bench.crowdrun import (
    CrowdConnectLog,
    Phase,
    assign,
    fd_limit,
    open_fds,
    storm_deadline,
    storm_result,
    topic_of,
)
from webrtc_broker.bench.options import UdpMode
from webrtc_broker.bench.results import LatencySummary
from webrtc_broker.bench.sampling import Usage, Watched
from webrtc_broker.cli import main as cli_main


def test_every_client_is_assigned_once_and_a_topic_lives_in_one_worker() -> None:
    shares = assign(clients=95, topic_size=10, workers=3)
    indexes = sorted(index for share in shares for index, _ in share)
    assert indexes == list(range(95))
    workers_of_topic: dict[str, set[int]] = {}
    for worker, share in enumerate(shares):
        for index, topic in share:
            assert topic == topic_of(index, 10)
            workers_of_topic.setdefault(topic, set()).add(worker)
    assert len(workers_of_topic) == 10  # 9 full topics and one of 5
    assert all(len(workers) == 1 for workers in workers_of_topic.values())
    assert {len(share) for share in shares} == {30, 35}  # topics spread over the workers


def test_the_worker_count_never_exceeds_the_topics() -> None:
    assert CrowdOptions(clients=20, topic_size=10, workers=5).worker_count == 2
    assert CrowdOptions(clients=1000, workers=3).worker_count == 3
    assert CrowdOptions(clients=1000).topics == 100


@pytest.mark.parametrize(
    "bad",
    [
        {"clients": 1},
        {"topic_size": 1},
        {"connect_rate": 0},
        {"connect_concurrency": 0},
        {"size": 4},
        {"duration": 0},
        {"workers": 0},
        {"udp_modes": ()},
        {"keepalive_interval": 0},
        {"keepalive_interval": 4.0},  # the keepalive timeout: every idle server would die
    ],
)
def test_options_refuse_what_cannot_run(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CrowdOptions(**bad)  # type: ignore[arg-type]


def test_the_storm_deadline_follows_the_last_due_connect() -> None:
    storm = Storm(start=100.0, connect_rate=20.0, deadline=0.0)
    assert storm.due(0) == 100.0
    assert storm.due(999) == pytest.approx(149.95)
    assert storm_deadline(100.0, 1000, 20.0, 30.0) == pytest.approx(179.95)


def test_a_plan_survives_its_command_line() -> None:
    common = TopicPlan("ws://127.0.0.1:1", "", [], 2, 1.0, 100, True, 8, 30.0)
    plan = CrowdPlan([(0, "crowd/0"), (1, "crowd/0")], 3, 2.5, common)
    assert CrowdPlan.from_json(plan.to_argv()[1]) == plan
    topic = plan.topic_plan("crowd/0")
    assert (topic.topic, topic.total_bots, topic.rate, topic.reliable) == ("crowd/0", 2, 1.0, True)


def test_connect_events_feed_the_connect_log() -> None:
    log = CrowdConnectLog()
    log.add(connect_event(due=10.0, started=10.5, ended=11.0, session=0.4, subscribed=0.5))
    log.add(connect_event(due=10.0, started=9.0, ended=9.2, error="ConnectTimeoutError",
                          detail="no session within 30 s"))  # fmt: skip
    log.add(connect_event(due=12.0, started=40.0, ended=40.0, error=NOT_STARTED))
    assert log.seconds == [0.4]
    assert log.subscribed == [0.5]
    assert log.lags == [0.5, 0.0, 28.0]  # a connect is never early
    assert log.errors == Counter({"ConnectTimeoutError": 1, NOT_STARTED: 1})
    assert log.details["ConnectTimeoutError"] == "no session within 30 s"
    assert log.details[NOT_STARTED] == NOT_STARTED
    assert log.total_seconds == pytest.approx(31.0)  # 9.0 to 40.0


def test_expected_deliveries_reach_every_other_member() -> None:
    # 2 topics: 3 members publishing 4 messages each, 1 lone member publishing 5
    assert expected_deliveries({"a": 12, "b": 5}, {"a": 3, "b": 1}) == 12 * 2


def test_results_merge_counts_and_histograms() -> None:
    first, second = WorkerResult(published=2, received=3, arrived=3), WorkerResult(published=1)
    first.latency.add(0.01)
    second.latency.add(0.02)
    merged = merge_results([first, second])
    assert (merged.published, merged.received, merged.arrived) == (3, 3, 3)
    assert merged.latency.count == 2


def _phase(seconds: float, **cpu: float) -> Phase:
    usages = [
        Usage(Watched(role, role, pid), percent, 10.0, 10.0)
        for pid, (role, percent) in enumerate(cpu.items(), start=1)
    ]
    return Phase(usages, sum(cpu.values()), seconds)


def test_storm_cost_per_connect_comes_from_the_phase_cpu() -> None:
    log = CrowdConnectLog()
    for _ in range(4):
        log.add(connect_event(due=0.0, started=0.0, ended=1.0, session=0.2, subscribed=0.3))
    result = storm_result(
        connects=log, clients=5, connected=4, usage=_phase(10.0, commserver=20.0, coordinator=4.0)
    )
    assert result.server_cpu_ms_per_connect == pytest.approx(500.0)  # 2 CPU s over 4 connects
    assert result.coordinator_cpu_ms_per_connect == pytest.approx(100.0)
    assert result.session_p50_s == 0.2
    assert result.subscribed_p99_s == 0.3


def _storm(connected: int, **changes: object) -> StormResult:
    fields: dict[str, object] = {
        "clients": 1000, "connected": connected, "failures": 1000 - connected,
        "errors": {}, "error_details": {}, "seconds": 50.0, "connects_per_s": 20.0,
        "session_p50_s": 0.3, "session_p99_s": 0.9, "session_max_s": 1.0,
        "subscribed_p50_s": 0.3, "subscribed_p99_s": 0.9, "lag_p99_s": 0.1, "lag_max_s": 0.2,
        "server_cpu_ms_per_connect": 12.0, "coordinator_cpu_ms_per_connect": 3.0,
        "machine_percent": 100.0,
    }  # fmt: skip
    fields.update(changes)
    return StormResult(**fields)  # type: ignore[arg-type]


def _process(role: str, name: str, storm: float) -> ProcessPhases:
    return ProcessPhases(role, name, 1, storm, 1.0, 10.0, 100.0)


def test_a_saturated_worker_is_named_as_the_bottleneck_not_the_server() -> None:
    run = CrowdRun("per-connection", 1000, 10, 100, 1, storm=_storm(1000))
    run.processes = [
        _process("commserver", "comm server", 40.0),
        _process("worker", "worker-1", 97.0),
    ]
    found = limits(run, cores=2)
    assert any("worker-1 used 97 %" in line and "not the server" in line for line in found)
    assert not any("comm server used" in line for line in found)


def test_failures_late_starts_and_descriptors_are_reported() -> None:
    run = CrowdRun(
        "per-connection", 1000, 10, 100, 1,
        storm=_storm(890, errors={"ConnectTimeoutError": 100, NOT_STARTED: 10},
                     error_details={"ConnectTimeoutError": "no session within 30 s",
                                    NOT_STARTED: NOT_STARTED},
                     lag_p99_s=3.0, lag_max_s=4.0),
        descriptors=Descriptors(10, 1790, 20000, 0, 1780, 1780),
        server=Footprint(80.0, 380.0, 341.0),
    )  # fmt: skip
    text = "\n".join(limits(run, cores=2))
    assert "110 of 1000 clients did not connect: 100 ConnectTimeoutError (no session" in text
    assert "up to 4.0 s after they were due" in text
    assert "(not started" not in text
    assert "2.0 per client" in text and "reached at about 9,995 clients" in text
    assert "341 KB per client" in text
    assert "nothing saturated" not in text


def test_a_run_without_a_bottleneck_says_so() -> None:
    run = CrowdRun("single-port", 1000, 10, 100, 1, storm=_storm(1000))
    run.processes = [_process("commserver", "comm server", 40.0)]
    assert limits(run, cores=2)[0].startswith("nothing saturated")


def test_the_table_shows_a_dash_for_phases_a_failed_run_did_not_reach() -> None:
    runs = [
        CrowdRun("per-connection", 1000, 10, 100, 1, storm=_storm(1000)),
        CrowdRun("single-port", 1000, 10, 100, 1, error="the cluster did not come up"),
    ]
    options = CrowdOptions(keepalive_interval=2.5).to_json()
    console = Console(width=200, record=True)
    console.print(crowd_table(runs, options))
    text = console.export_text()
    assert "1,000 of 1,000" in text
    assert "12.0 ms" in text  # the server's CPU per connect
    assert "a client PINGs after 2.5 s of silence" in " ".join(text.split())  # the title may wrap
    row = next(line for line in text.splitlines() if "delivered/s" in line)
    assert row.count("-") >= 2  # neither run has a steady phase


def test_descriptors_of_this_process_are_readable() -> None:
    assert (open_fds(os.getpid()) or 0) >= 3
    assert (fd_limit(os.getpid()) or 0) >= 3


def test_the_command_parses_its_options() -> None:
    runner = CliRunner()
    help_text = runner.invoke(crowd_command, ["--help"]).output
    for flag in ("--clients", "--topic-size", "--connect-rate", "--udp-mode", "--duration"):
        assert flag in help_text
    refused = runner.invoke(crowd_command, ["--clients", "1"])
    assert refused.exit_code == 2 and "--clients >= 2" in refused.output
    assert UdpMode("single-port") in CrowdOptions(udp_modes=(UdpMode.SINGLE_PORT,)).udp_modes


def test_webrtc_broker_bench_crowd_is_the_command() -> None:
    """Reached as ``webrtc-broker bench crowd``, options and refusals included."""
    runner = CliRunner()
    listed = runner.invoke(cli_main, ["bench", "--help"]).output
    assert "crowd" in listed
    help_text = runner.invoke(cli_main, ["bench", "crowd", "--help"]).output
    assert "--topic-size" in help_text and "bench crowd [OPTIONS]" in help_text
    refused = runner.invoke(cli_main, ["bench", "crowd", "--clients", "1"])
    assert refused.exit_code == 2 and "--clients >= 2" in refused.output


def _steady(loss: float, skipped: int) -> SteadyResult:
    return SteadyResult(
        duration=30.0, rate=1.0, published=30000, expected=270000, arrived=270000,
        late_after_s=2.0, offered_per_s=9000.0, delivered_per_s=9000.0, loss_percent=loss,
        latency_ms=LatencySummary(30.0, 60.0, 90.0, 35.0, 120.0, 270000),
        server_cpu_percent=72.0, server_us_per_client_s=720.0, server_us_per_delivery=80.0,
        empty_server_cpu_percent=0.0, idle_server_cpu_percent=40.0,
        idle_server_us_per_client_s=400.0, sessions_lost=0, inbox_dropped=0,
        skipped_publishes=skipped, server_drops={}, machine_percent=150.0,
    )  # fmt: skip


@pytest.mark.parametrize(("loss", "skipped", "caveat"), [(0.0, 0, False), (4.3, 0, True),
                                                          (0.0, 876, True)])  # fmt: skip
def test_the_cpu_projection_is_qualified_when_the_load_did_not_get_through(
    loss: float, skipped: int, caveat: bool
) -> None:
    run = CrowdRun("single-port", 1000, 10, 100, 1, storm=_storm(1000))
    run.steady = _steady(loss, skipped)
    (line,) = [text for text in limits(run, cores=2) if text.startswith("server CPU:")]
    assert "one core carries about 1,389 such clients" in line
    assert ("an overestimate" in line) is caveat
