"""Coordinator high availability under a steady stream of connects, with real processes.

Two coordinator replicas in disjoint alias spaces, two comm servers linked to
both, and the clients of ``webrtc-broker bench coordinator-restart`` at a
small scale (:class:`ClientLoad`: a new client every 0.2 s holding its
session 3 s, and witnesses counting every message), each given both
coordinator URLs. One replica is killed (or both are restarted in turn)
while they run; every client's outcome is counted.

Every connect must succeed, those under way through a replica at the
moment it stops included: a set-up whose coordinator WebSocket closes fails
at once in the SDK, and the connect moves on to the other URL. Nothing
established may be lost.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from webrtc_broker.bench.localcluster import (
    ClusterHandle,
    local_cluster,
    registered_names,
    start_coordinator,
    stop_coordinator,
    wait_rejoined,
)
from webrtc_broker.bench.rollingrestart import (
    ClientLoad,
    LoadOptions,
    LoadReport,
    rolling_restart,
)
from webrtc_broker.client import BrokerClient

RATE = 5.0
"""New clients per second."""
DURATION = 15.0
HOLD = 3.0
LOAD = LoadOptions(witnesses=4, witness_rate=4.0, hold=HOLD, workers=1)
OUTAGE = 3.0
"""Seconds the killed replica stays down, with new clients arriving meanwhile."""
BATCH_WINDOW = 0.01

pytestmark = pytest.mark.timeout(240)


def assert_nothing_lost(report: LoadReport) -> None:
    """No established session or message lost, and no connect failed."""
    assert report.sessions_lost == 0, (report.stream_lost, report.witnesses_lost)
    assert report.witness_received > 0
    assert report.witness_lost == 0, report.witness_expected
    assert report.stream_received > 0
    assert report.stream_messages_lost == 0, report.stream_expected
    assert report.stream_deaf == 0
    assert report.failed_total == 0, report.failure_details
    assert report.succeeded + report.failed_total == report.attempted
    assert report.attempted >= RATE * DURATION - 1


async def steady(load: ClientLoad) -> None:
    """Until the stream's first clients are closing: as many come as go."""
    assert load.started_at is not None
    await asyncio.sleep(max(0.0, load.started_at + HOLD - time.time()))


async def test_a_killed_replica_costs_nothing_and_rejoins(tmp_path: Path) -> None:
    log = tmp_path / "processes.log"
    async with local_cluster(2, BATCH_WINDOW, log, coordinators=2) as cluster:
        with log.open("ab") as output:
            async with ClientLoad.running(cluster.coordinator_urls, LOAD, output) as load:
                await load.begin(RATE, DURATION)
                await steady(load)
                killed_at = time.time()
                assert await stop_coordinator(cluster, 0, kill=True) == -signal.SIGKILL
                await asyncio.sleep(OUTAGE)
                restarted_at = time.time()
                await start_coordinator(cluster, 0)
                await wait_rejoined(cluster, 0)
                assert await registered_names(cluster.coordinators[0]) == {
                    server.name for server in cluster.servers
                }
                await connect_through_only(cluster, 0)
                report = await load.finish(DURATION)
                connects = list(load.tally.connects)
    print("\n".join(report.lines(DURATION, RATE, [killed_at])))
    assert_nothing_lost(report)
    # Every client that came while replica 0 was down got in through replica 1; those
    # that tried replica 0 first moved on to it.
    survivor = cluster.coordinators[1].url
    during = [c for c in connects if killed_at < c.started < restarted_at]
    assert len(during) >= RATE * OUTAGE - 1
    assert {c.url for c in during} == {survivor}
    assert any(c.retried for c in during)


async def connect_through_only(cluster: ClusterHandle, index: int) -> None:
    """A client given only replica ``index``'s URL gets a working session through it."""
    url = cluster.coordinators[index].url
    client = await BrokerClient.connect(url, "only-one-url", timeout=20)
    try:
        assert client.coordinator_url == url
        assert client.server_alias in {server.alias for server in cluster.servers}
        await client.ping()
    finally:
        await client.close()


async def test_a_rolling_restart_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "processes.log"
    lines: list[str] = []
    async with local_cluster(2, BATCH_WINDOW, log, coordinators=2) as cluster:
        with log.open("ab") as output:
            async with ClientLoad.running(cluster.coordinator_urls, LOAD, output) as load:
                start = await load.begin(RATE, DURATION)
                await steady(load)
                timings = await rolling_restart(
                    cluster,
                    kill=False,
                    settle=1.0,
                    out=lines.append,
                    clock=lambda: time.time() - start,
                )
                report = await load.finish(DURATION)
        for replica in cluster.coordinators:
            assert await registered_names(replica) == {server.name for server in cluster.servers}
    signals = [timing.signalled_at for timing in timings]
    print("\n".join([*lines, *report.lines(DURATION, RATE, signals)]))
    assert [timing.replica for timing in timings] == [0, 1]
    for timing in timings:
        # uvicorn drains, then re-raises the SIGTERM it caught: the status says the signal.
        assert timing.exit_code in (0, -signal.SIGTERM)
        assert 0 < timing.stopped <= timing.ready <= timing.rejoined
    assert_nothing_lost(report)
    assert set(report.via) == {replica.url for replica in cluster.coordinators}
