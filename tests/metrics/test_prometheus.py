"""Metrics end to end: a real Prometheus scrapes a real coordinator and two comm servers.

One cluster and one Prometheus serve the whole module (starting them is most
of the cost). Five SDK clients stay connected throughout: alice, bob and erin
on s1, carol and dave on s2, all subscribed to ``room``. Each test leaves that
state as it found it, and asserts differences against a baseline where it
sends traffic, so the tests do not depend on their order. Nothing here
asserts a duration: histogram counts are checked, never their buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.dashboard import dashboard_exprs
from tests.metrics.prometheus_server import Prometheus, promtool_check, running_prometheus
from tests.support import ROOT, Cluster, eventually
from webrtc_broker.client import BrokerClient
from webrtc_broker.wire import broker_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = 15.0
TOPIC = "room"
BODY = b"m" * 100
RELIABLE_COUNT = 40
UNRELIABLE_COUNT = 5
METRICS_DOC = ROOT / "docs" / "metrics.md"
NS = "webrtc_broker_commserver"


@dataclass
class Setup:
    cluster: Cluster
    prometheus: Prometheus
    clients: dict[str, BrokerClient]
    instance: dict[str, str]
    """Prometheus ``instance`` label of each comm server, by name."""
    aliases: dict[str, int]

    @property
    def coordinator_instance(self) -> str:
        return f"127.0.0.1:{self.cluster.coordinator_port}"

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{i}/metrics" for i in [self.coordinator_instance, *self.instance.values()]]

    def per_server(self, s1: float, s2: float) -> dict[str, float]:
        return {self.instance["s1"]: s1, self.instance["s2"]: s2}


async def connect(setup_cluster: Cluster, name: str, server_alias: int) -> BrokerClient:
    client = await BrokerClient.connect(setup_cluster.url, name, server=server_alias)
    client.subscribe([TOPIC])
    await asyncio.wait_for(client.ping(), TIMEOUT)  # the echo proves the subscription applied
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("metrics")
    cluster = Cluster(workdir)
    failed_before = request.session.testsfailed
    prometheus: Prometheus | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await cluster.start_coordinator()
            for name in ("s1", "s2"):
                await cluster.start_server(name)
            for name in ("s1", "s2"):
                await cluster.wait_mesh(name, 1)
            instance = {
                name: f"127.0.0.1:{proc.http_port}" for name, proc in cluster.servers.items()
            }
            prometheus = await stack.enter_async_context(
                running_prometheus(
                    workdir / "prometheus",
                    {
                        "coordinator": [f"127.0.0.1:{cluster.coordinator_port}"],
                        "commserver": list(instance.values()),
                    },
                )
            )
            await eventually(prometheus.targets_up, timeout=30)
            aliases = {name: await cluster.alias_of(name) for name in ("s1", "s2")}
            clients: dict[str, BrokerClient] = {}
            for name, server in (
                ("alice", "s1"),
                ("bob", "s1"),
                ("erin", "s1"),
                ("carol", "s2"),
                ("dave", "s2"),
            ):
                clients[name] = await connect(cluster, name, aliases[server])
                stack.push_async_callback(clients[name].close)
            setup = Setup(cluster, prometheus, clients, instance, aliases)
            # Each server learnt the other's topic: forwarding between them is on.
            await prometheus.eventually_equal(
                'webrtc_broker_commserver_topics{audience="server"}',
                setup.per_server(1, 1),
                by="instance",
            )
            yield setup
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs())
            if prometheus is not None:
                print("==== prometheus ====\n" + prometheus.log()[-4000:])
        await cluster.close()


async def receive_all(client: BrokerClient, count: int) -> list[bytes]:
    return [(await asyncio.wait_for(client.receive(), TIMEOUT)).body for _ in range(count)]


def topic_frame_size() -> int:
    """Bytes of one TOPIC frame as the SDK encodes it (``publish``)."""
    return len(pb.TopicMessage(type=pb.TOPIC, topic=TOPIC, body=BODY).SerializeToString())


# -- the endpoints themselves ---------------------------------------------------


async def test_every_endpoint_passes_promtool(setup: Setup) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        for url in setup.endpoints:
            response = await http.get(url)
            assert response.status_code == 200, url
            assert response.headers["content-type"].startswith("text/plain"), url
            code, output = await promtool_check(response.text)
            assert (code, output) == (0, ""), f"{url}: promtool check metrics said:\n{output}"
            # What Prometheus itself asks for (OpenMetrics) is served as well.
            negotiated = await http.get(
                url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert negotiated.headers["content-type"].startswith("application/openmetrics-text")
            assert negotiated.text.endswith("# EOF\n")


async def test_every_metric_has_help_and_bounded_labels(setup: Setup) -> None:
    forbidden = {"alias", "peer", "topic", "client", "from_alias", "to_alias"}
    async with httpx.AsyncClient(timeout=5) as http:
        for url in setup.endpoints:
            for family in text_string_to_metric_families((await http.get(url)).text):
                if not family.name.startswith("webrtc_broker_"):
                    continue
                assert family.documentation, f"{family.name} has no help text"
                labels = {name for sample in family.samples for name in sample.labels}
                assert not labels & forbidden, f"{family.name} has unbounded labels {labels}"


# -- what Prometheus sees -------------------------------------------------------


async def test_relay_counters_rise_by_what_was_sent(setup: Setup) -> None:
    prom, clients = setup.prometheus, setup.clients

    async def snapshot() -> dict[str, dict[str, float]]:
        by_channel = "sum by (instance, peer_role, channel)"
        exprs = {
            "topic_in": f'{by_channel} ({NS}_frames_received_total{{type="TOPIC"}})',
            "topic_bytes_in": f'{by_channel} ({NS}_received_bytes_total{{type="TOPIC"}})',
            "deliveries": f"{NS}_deliveries_total",
            "sent": f'sum by (instance, channel, type) ({NS}_frames_sent_total{{type=~"TOPIC.*"}})',
            "relayed": f"{NS}_relay_duration_seconds_count",
        }
        result: dict[str, dict[str, float]] = {}
        for key, expr in exprs.items():
            for series in await prom.query(expr):
                labels = series["metric"]
                name = "/".join(
                    f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("job", "__name__")
                )
                result.setdefault(key, {})[name] = float(series["value"][1])
        return result

    def delta(
        after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        return {
            key: {
                name: value - before.get(key, {}).get(name, 0.0)
                for name, value in series.items()
                if value - before.get(key, {}).get(name, 0.0)
            }
            for key, series in after.items()
        }

    s1, s2 = setup.instance["s1"], setup.instance["s2"]
    # Scrapes are 1 s apart: wait until Prometheus has what the servers count now.
    await wait_scraped(setup)
    before = await snapshot()

    for _ in range(RELIABLE_COUNT):
        clients["alice"].publish(TOPIC, BODY, reliable=True)
    for name in ("bob", "erin", "carol", "dave"):
        assert await receive_all(clients[name], RELIABLE_COUNT) == [BODY] * RELIABLE_COUNT
    # Unreliable frames one at a time, each awaited by every receiver: none is lost.
    for _ in range(UNRELIABLE_COUNT):
        clients["carol"].publish(TOPIC, BODY, reliable=False)
        for name in ("alice", "bob", "erin", "dave"):
            assert await receive_all(clients[name], 1) == [BODY]

    frame = topic_frame_size()
    expected: dict[str, dict[str, int | None]] = {
        "topic_in": {
            f"channel=reliable/instance={s1}/peer_role=client": RELIABLE_COUNT,
            f"channel=reliable/instance={s2}/peer_role=server": RELIABLE_COUNT,
            f"channel=unreliable/instance={s2}/peer_role=client": UNRELIABLE_COUNT,
            f"channel=unreliable/instance={s1}/peer_role=server": UNRELIABLE_COUNT,
        },
        "topic_bytes_in": {
            f"channel=reliable/instance={s1}/peer_role=client": RELIABLE_COUNT * frame,
            f"channel=unreliable/instance={s2}/peer_role=client": UNRELIABLE_COUNT * frame,
            # A forwarded TOPIC carries the sender's alias: a few bytes more.
            f"channel=reliable/instance={s2}/peer_role=server": None,
            f"channel=unreliable/instance={s1}/peer_role=server": None,
        },
        "deliveries": {
            # s1: alice's to bob and erin, and to s2; carol's (via s2) to alice, bob, erin.
            f"audience=client/instance={s1}": 2 * RELIABLE_COUNT + 3 * UNRELIABLE_COUNT,
            f"audience=server/instance={s1}": RELIABLE_COUNT,
            # s2: alice's (via s1) to carol and dave; carol's to dave, and to s1.
            f"audience=client/instance={s2}": 2 * RELIABLE_COUNT + UNRELIABLE_COUNT,
            f"audience=server/instance={s2}": UNRELIABLE_COUNT,
        },
        "sent": {
            f"channel=reliable/instance={s1}/type=TOPIC_FW": 2 * RELIABLE_COUNT,
            f"channel=unreliable/instance={s1}/type=TOPIC_FW": 3 * UNRELIABLE_COUNT,
            f"channel=reliable/instance={s1}/type=TOPIC": RELIABLE_COUNT,
            f"channel=reliable/instance={s2}/type=TOPIC_FW": 2 * RELIABLE_COUNT,
            f"channel=unreliable/instance={s2}/type=TOPIC_FW": UNRELIABLE_COUNT,
            f"channel=unreliable/instance={s2}/type=TOPIC": UNRELIABLE_COUNT,
        },
        "relayed": {
            f"instance={s1}": RELIABLE_COUNT + UNRELIABLE_COUNT,
            f"instance={s2}": RELIABLE_COUNT + UNRELIABLE_COUNT,
        },
    }

    def matches(got: dict[str, dict[str, float]]) -> bool:
        for key, series in expected.items():
            if set(got.get(key, {})) != set(series):
                return False
            for name, value in series.items():
                if value is not None and got[key][name] != value:
                    return False
        return True

    last: list[dict[str, dict[str, float]]] = [{}]

    async def probe() -> bool:
        last[0] = delta(await snapshot(), before)
        return matches(last[0])

    try:
        await eventually(probe, timeout=20, interval=0.25)
    except AssertionError:
        raise AssertionError(f"expected {expected}\n got {last[0]}") from None
    forwarded = last[0]["topic_bytes_in"][f"channel=reliable/instance={s2}/peer_role=server"]
    assert forwarded > RELIABLE_COUNT * frame


async def test_peer_gauges_match_the_clients_connected(setup: Setup) -> None:
    prom, cluster = setup.prometheus, setup.cluster
    clients_expr = 'webrtc_broker_commserver_peers{role="client", state="established"}'
    await prom.eventually_equal(clients_expr, setup.per_server(3, 2), by="instance")
    await prom.eventually_equal("webrtc_broker_coordinator_clients", 5)
    await prom.eventually_equal('webrtc_broker_coordinator_servers{role="server"}', 2)
    await prom.eventually_equal(
        "webrtc_broker_commserver_mesh_peers", setup.per_server(1, 1), by="instance"
    )
    await prom.eventually_equal(
        'webrtc_broker_commserver_peers{role="server", state="established"}',
        setup.per_server(1, 1),
        by="instance",
    )
    await prom.eventually_equal(
        'webrtc_broker_commserver_subscriptions{audience="client"}',
        setup.per_server(3, 2),
        by="instance",
    )
    established = await prom.values(
        'webrtc_broker_commserver_sessions_established_total{role="client"}', "instance"
    )
    setup_count = await prom.values(
        'webrtc_broker_commserver_session_setup_seconds_count{role="client"}', "instance"
    )
    assert established == setup_count  # one set-up time per established session

    # One more client on s2, then it leaves: every gauge follows.
    frank = await connect(cluster, "frank", setup.aliases["s2"])
    try:
        await prom.eventually_equal(clients_expr, setup.per_server(3, 3), by="instance")
        await prom.eventually_equal("webrtc_broker_coordinator_clients", 6)
        await prom.eventually_equal(
            'webrtc_broker_commserver_sessions_established_total{role="client"}',
            {**established, setup.instance["s2"]: established[setup.instance["s2"]] + 1},
            by="instance",
        )
    finally:
        await frank.close()
    await prom.eventually_equal(clients_expr, setup.per_server(3, 2), by="instance")
    await prom.eventually_equal("webrtc_broker_coordinator_clients", 5)
    closed = await prom.scalar(
        f'sum(webrtc_broker_commserver_sessions_closed_total{{instance="{setup.instance["s2"]}"}})'
    )
    assert closed >= 1


async def test_coordinator_counts_connections_and_signalling(setup: Setup) -> None:
    prom = setup.prometheus
    await wait_scraped(setup)
    connections = await prom.values("webrtc_broker_coordinator_connections_total", "role")
    assert connections["server"] == 2
    assert connections["client"] >= 5
    relayed = await prom.values("webrtc_broker_coordinator_frames_relayed_total", "type")
    # Every client and the second server sent one CONNECT, each answered by one OFFER.
    assert relayed["CONNECT"] == connections["client"] + 1
    assert relayed["WEBRTC_OFFER"] == relayed["CONNECT"]
    registrations = await prom.values(
        "webrtc_broker_commserver_coordinator_registrations_total", "instance"
    )
    assert registrations == setup.per_server(1, 1)
    assert await prom.values("count by (service) (webrtc_broker_build_info)", "service") == {
        "coordinator": 1,
        "commserver": 2,
    }
    cpu = await prom.query("process_cpu_seconds_total")
    assert len(cpu) == 3  # process metrics from every service


# -- the dashboard and the docs --------------------------------------------------


async def test_every_dashboard_expression_is_accepted_by_prometheus(setup: Setup) -> None:
    prom = setup.prometheus
    await wait_scraped(setup)
    names = set(await prom.api("label/__name__/values"))
    for title, expr in dashboard_exprs():
        await prom.api("query", query=expr)  # raises on a parse or evaluation error
        for metric in re.findall(r"\b((?:webrtc_broker|process)_[a-z_]+)\b", expr):
            assert metric in names, f"{title}: {metric} is not a series Prometheus has"
    now = float((await prom.api("query", query="time()"))["result"][0])
    for _title, expr in dashboard_exprs():  # range queries, as Grafana sends them
        await prom.api("query_range", query=expr, start=str(now - 60), end=str(now), step="5")


def _documented() -> set[str]:
    return set(re.findall(r"^\| `(webrtc_broker_[a-z_]+)` \|", METRICS_DOC.read_text(), re.M))


async def test_docs_list_every_metric_exposed(setup: Setup) -> None:
    exposed: set[str] = set()
    async with httpx.AsyncClient(timeout=5) as http:
        for url in setup.endpoints:
            for family in text_string_to_metric_families((await http.get(url)).text):
                if family.name.startswith("webrtc_broker_"):
                    suffix = "_total" if family.type == "counter" else ""
                    exposed.add(family.name + suffix)
    assert _documented() == exposed


# -- webrtc-broker status --------------------------------------------------------


async def test_status_command_summarises_the_cluster(setup: Setup) -> None:
    cluster = setup.cluster
    await asyncio.sleep(0)
    args = [
        "status",
        "--coordinator-url",
        cluster.url,  # the ws:// URL works too
        *("--server-status", f"http://{setup.instance['s1']}"),
        *("--server-status", f"http://{setup.instance['s2']}/status"),
    ]
    table = await run_cli(*args)
    for expected in ("s1", "s2", "topics", "2 servers, 5 clients"):
        assert expected in table, table
    data = json.loads(await run_cli(*args, "--json"))
    rows = {row["name"]: row for row in data["servers"]}
    assert {name: row["clients"] for name, row in rows.items()} == {"s1": 3, "s2": 2}
    assert {name: row["detail"]["topics"] for name, row in rows.items()} == {"s1": 1, "s2": 1}
    assert data["problems"] == []

    bare = await run_cli("status", "--coordinator-url", cluster.http_url)
    assert "--server-status" in bare  # says where topics would come from
    assert "2 servers, 5 clients" in bare


async def run_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webrtc_broker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        cwd=Path(ROOT),
    )
    output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 0, text
    return text


# -- helpers -------------------------------------------------------------------------


async def wait_scraped(setup: Setup) -> None:
    """Wait until Prometheus holds a scrape of every target taken after this call."""
    prom = setup.prometheus
    since = (await prom.api("query", query="time()"))["result"][0]

    async def fresh() -> bool:
        targets = (await prom.api("targets"))["activeTargets"]
        return all(_scrape_time(t["lastScrape"]) > float(since) + 0.1 for t in targets)

    await eventually(fresh, timeout=15, interval=0.25)


def _scrape_time(rfc3339: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
