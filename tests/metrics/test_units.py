"""The metrics building blocks on their own: histogram, families, registries, endpoint."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from commserver.metrics import commserver_registry
from commserver.server import CommServer
from commserver.stats import RelayStats
from coordinator import create_app
from tests.metrics.dashboard import dashboard_exprs, load
from tests.metrics.prometheus_server import promtool_check, scrape_config
from tests.support import eventually, free_port
from webrtc_broker.config import CommServerConfig, CoordinatorConfig
from webrtc_broker.metrics import FixedHistogram, counter, histogram, reason_label
from webrtc_broker.metrics.families import MAX_LABEL_VALUES, OTHER
from webrtc_broker.metrics.http import metrics_server
from webrtc_broker.wire import broker_pb2 as pb


def exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest  # noqa: PLC0415

    return generate_latest(registry).decode()


# -- FixedHistogram -------------------------------------------------------------


def test_histogram_buckets_follow_prometheus_le_semantics() -> None:
    hist = FixedHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(value)
    assert list(hist.cumulative()) == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert hist.count == 5
    assert hist.sum == pytest.approx(8.65)


@pytest.mark.parametrize("bounds", [(), (1.0, 0.5), (0.5, 0.5)])
def test_histogram_rejects_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        FixedHistogram(bounds)


def test_histogram_family_is_cumulative_with_inf() -> None:
    hist = FixedHistogram((0.5,))
    hist.observe(0.25)
    hist.observe(2.0)
    family = histogram("test", "wait_seconds", "Help.", {("a",): hist}, ("role",))
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("webrtc_broker_test_wait_seconds_bucket", "0.5")] == 1
    assert samples[("webrtc_broker_test_wait_seconds_bucket", "+Inf")] == 2
    assert samples[("webrtc_broker_test_wait_seconds_count", None)] == 2
    assert samples[("webrtc_broker_test_wait_seconds_sum", None)] == 2.25


# -- families -------------------------------------------------------------------


def test_counter_names_must_end_in_total() -> None:
    with pytest.raises(ValueError):
        counter("test", "frames", "Help.", 1)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("slow peer: 4096 messages queued", "slow_peer"),
        ("establish timeout", "establish_timeout"),
        ("coordinator connection lost during set-up", "coordinator_connection_lost_during_set_up"),
        ("authentication failed: bad token: x", "authentication_failed"),
        ("", "unknown"),
        ("  :::", "unknown"),
    ],
)
def test_reason_label(text: str, label: str) -> None:
    assert reason_label(text) == label


def test_label_values_are_capped_and_stay_monotonic() -> None:
    counts = {f"r{index}": 1 for index in range(MAX_LABEL_VALUES + 10)}

    def sample_values() -> dict[str, float]:
        family = counter("test", "x_total", "Help.", [((k,), v) for k, v in counts.items()], ("r",))
        return {s.labels["r"]: s.value for s in family.samples if s.name.endswith("_total")}

    first = sample_values()
    assert len(first) == MAX_LABEL_VALUES
    assert first[OTHER] == 11
    counts["r70"] += 5  # a key beyond the cap grows: `other` grows with it
    assert sample_values()[OTHER] == 16


# -- service registries ---------------------------------------------------------


async def test_commserver_registry_is_promtool_clean() -> None:
    server = CommServer(CommServerConfig(name="unit", coordinator_url="ws://127.0.0.1:9"))
    text = exposition(commserver_registry(server))
    assert await promtool_check(text) == (0, "")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "python_info", "webrtc_broker_build_info"} <= names
    assert "webrtc_broker_commserver_peers" in names


async def test_coordinator_registry_is_promtool_clean() -> None:
    app = create_app(CoordinatorConfig(port=0))
    text = exposition(app.state.metrics_registry)
    assert await promtool_check(text) == (0, "")
    assert 'webrtc_broker_coordinator_servers{role="hub"} 0.0' in text


async def test_service_without_http_port_can_serve_a_registry() -> None:
    """What the operator will use: a registry served on a port of its own."""
    server = CommServer(CommServerConfig(name="unit", coordinator_url="ws://127.0.0.1:9"))
    port = free_port()
    http = metrics_server(commserver_registry(server), "127.0.0.1", port)
    task = asyncio.create_task(http.serve())
    try:

        async def started() -> bool:
            return bool(http.started)

        await eventually(started, timeout=10)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert "webrtc_broker_commserver_info" in response.text
    finally:
        http.should_exit = True
        await task


def test_status_keeps_its_shape() -> None:
    stats = RelayStats()
    stats.frames_in[("client", pb.PING, True)] += 2
    stats.frames_in[("client", pb.PING, False)] += 1
    stats.sent(pb.PING, True, 2, 20)
    stats.sent(pb.TOPIC_FW, False, 3, 90)
    status = stats.as_dict()
    assert status["frames_in"] == {"client/ping": 3}
    assert status["frames_out"] == 5
    assert json.dumps(status)  # still plain JSON


# -- dashboard and scrape config ----------------------------------------------------


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = load()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("relay rate", "loss", "time inside a comm server", "clients per server"):
        assert topic in titles, f"no panel about {topic!r}"
    assert "queue depth" in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel.get("description") for panel in dashboard["panels"] if "targets" in panel)
    assert len(dashboard_exprs()) >= 20


def test_scrape_config_scrapes_every_target_every_second() -> None:
    config = scrape_config({"coordinator": ["127.0.0.1:1"], "commserver": ["127.0.0.1:2"]})
    assert config["global"]["scrape_interval"] == "1s"
    assert [job["job_name"] for job in config["scrape_configs"]] == ["coordinator", "commserver"]
