"""Hostile parties against the coordinator, as real processes, next to well-behaved clients.

The attacker is the one ``webrtc-broker bench attack`` runs
(``python -m webrtc_broker.bench.attacker``, not niced here), in a process of
its own; where a limit counts per address it runs in a network namespace with
an address of its own (``tests/netns.py``), and the coordinator listens on
the host side of that namespace's veth pair. Each test asserts what the
well-behaved side sees (the server keeps its registration, clients still get
in, nothing they send is lost) and that what was refused is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import TIMEOUT, receive, receive_bodies, subscribe
from tests.netns import NetworkNamespace, network_namespace
from tests.support import ROOT, Cluster
from webrtc_broker.client import BrokerClient

ATTACKER = "webrtc_broker.bench.attacker"
REPORT_NAMES = {
    "connections": "opened",
    "closed_by_peer": "closed_by_server",
    "frames": "frames_sent",
}
"""Fields of the attacker's report, and the names this module reads them by."""


@dataclass
class AddressedCluster(Cluster):
    """A cluster whose coordinator listens on ``host`` instead of 127.0.0.1."""

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.coordinator_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.coordinator_port}"


def metric(text: str, series: str) -> float:
    """One sample of a Prometheus text exposition, e.g. ``name{label="v"}``."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{series} not exported"
    return float(match.group(1))


async def coordinator_metrics(cluster: Cluster, http: httpx.AsyncClient | None = None) -> str:
    response = await (http or cluster.http).get(f"{cluster.http_url}/metrics")
    response.raise_for_status()
    return response.text


async def metrics_despite_handshake_limit(cluster: Cluster, tries: int = 3) -> tuple[str, int]:
    """The coordinator's ``/metrics``, and how many of our tries it closed unanswered.

    Under a 1 s handshake limit, a request that a starved test process writes more
    than a second after its connection opened is closed like any slow client's, and
    counted as one: try again, and say how often, so the counts stay exact. Each try
    opens a connection of its own, so none is a kept-alive one the coordinator closed
    while the attack ran."""
    for closed in range(tries):
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
                return await coordinator_metrics(cluster, http), closed
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            print(f"\n/metrics closed unanswered ({type(exc).__name__}); trying again")
    raise AssertionError(f"/metrics closed unanswered {tries} times")


async def server_metrics(cluster: Cluster, name: str) -> str:
    port = cluster.servers[name].http_port
    response = await cluster.http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return response.text


@dataclass
class Attacker:
    process: asyncio.subprocess.Process

    async def report(self, timeout: float) -> dict[str, Any]:
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), timeout)
        assert self.process.returncode == 0, stderr.decode(errors="replace")[-3000:]
        result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        return {REPORT_NAMES.get(key, key): value for key, value in result.items()}


@pytest.fixture
async def attackers() -> AsyncIterator[list[Attacker]]:
    """Attacker processes a test starts; killed at the end whatever happened."""
    started: list[Attacker] = []
    yield started
    for attacker in started:
        if attacker.process.returncode is None:
            attacker.process.kill()
            await attacker.process.wait()


async def start_attacker(
    started: list[Attacker],
    mode: str,
    host: str,
    port: int,
    *options: str,
    namespace: NetworkNamespace | None = None,
) -> Attacker:
    url = f"ws://{host}:{port}"
    argv = [sys.executable, "-m", ATTACKER, mode, "--url", url, "--nice", "0", *options]
    if namespace is not None:
        argv = namespace.command(*argv)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    attacker = Attacker(process)
    started.append(attacker)
    return attacker


async def round_trip(url: str, *, server: int | None = None, topic: str = "probe") -> None:
    """Two fresh SDK clients connect (to ``server`` if given) and exchange a message."""
    alice = await BrokerClient.connect(url, "alice", server=server, timeout=TIMEOUT)
    try:
        bob = await BrokerClient.connect(url, "bob", server=server, timeout=TIMEOUT)
        try:
            await subscribe(bob, [topic])
            alice.publish(topic, b"hello", reliable=True)
            assert (await receive(bob)).body == b"hello"
        finally:
            await bob.close()
    finally:
        await alice.close()


# --- a signalling flood at a comm server's alias -----------------------------------------


ATTACK_CONNECTIONS = 40
ATTACK_SECONDS = 8.0
SIGNAL_RATE = 20.0  # the defaults: the test runs the coordinator with no limit flags
SIGNAL_BURST = 100


async def test_offer_flood_costs_the_attacker_not_the_server(
    cluster: Cluster, attackers: list[Attacker]
) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("target")
    alias = await cluster.alias_of("target")
    alice = await BrokerClient.connect(cluster.url, "alice", server=alias, timeout=TIMEOUT)
    bob = await BrokerClient.connect(cluster.url, "bob", server=alias, timeout=TIMEOUT)
    try:
        await subscribe(bob, ["room"])
        attacker = await start_attacker(
            attackers,
            "offer-flood",
            "127.0.0.1",
            cluster.coordinator_port,
            "--connections", str(ATTACK_CONNECTIONS),
            "--seconds", str(ATTACK_SECONDS),
            "--target", str(alias),
        )  # fmt: skip
        # The pair keeps talking through the attack, and the server keeps its alias.
        aliases_seen: set[int] = set()
        sent: list[bytes] = []
        while attacker.process.returncode is None:
            body = f"m{len(sent)}".encode()
            alice.publish("room", body, reliable=True)
            sent.append(body)
            status = await cluster.coordinator_status()
            aliases_seen.update(s["alias"] for s in status["servers"] if s["name"] == "target")
            await asyncio.sleep(0.05)
        report = await attacker.report(TIMEOUT)
        assert await receive_bodies(bob, len(sent)) == sent  # nothing lost, in order
        assert bob.reconnects == alice.reconnects == 0
    finally:
        await alice.close()
        await bob.close()

    assert report["opened"] == ATTACK_CONNECTIONS
    assert report["closed_by_server"] == 0  # the attacker loses frames, not its connections
    assert aliases_seen == {alias}
    coordinator = await coordinator_metrics(cluster)
    assert metric(coordinator, 'webrtc_broker_coordinator_connections_total{role="server"}') == 1
    assert metric(coordinator, "webrtc_broker_coordinator_slow_connections_closed_total") == 0
    server = await server_metrics(cluster, "target")
    assert metric(server, "webrtc_broker_commserver_coordinator_registrations_total") == 1

    # Every frame the attacker sent is accounted for: relayed within its budget,
    # or dropped and counted against it.
    def dropped(reason: str) -> float:
        return metric(
            coordinator, f'webrtc_broker_coordinator_frames_dropped_total{{reason="{reason}"}}'
        )

    offers = metric(
        coordinator, 'webrtc_broker_coordinator_frames_relayed_total{type="WEBRTC_OFFER"}'
    )
    relayed_from_attacker = offers - 2  # the server's offers to alice and bob
    refused = dropped("rate_limited") + dropped("target_busy") + dropped("queue_full")
    assert relayed_from_attacker + refused == report["frames_sent"]
    budget = ATTACK_CONNECTIONS * (SIGNAL_BURST + SIGNAL_RATE * (ATTACK_SECONDS + 5))
    assert relayed_from_attacker <= budget
    assert dropped("rate_limited") > 0
    print(
        f"\nattacker: {ATTACK_CONNECTIONS} connections sent {report['frames_sent']} OFFERs in "
        f"{ATTACK_SECONDS:g} s; relayed {relayed_from_attacker:.0f}, rate_limited "
        f"{dropped('rate_limited'):.0f}, target_busy {dropped('target_busy'):.0f}; "
        f"the pair exchanged {len(sent)} messages, none lost"
    )

    # Fresh clients still reach that very server.
    await round_trip(cluster.url, server=alias)
    assert await cluster.alias_of("target") == alias


# --- slow, silent and idle connections, from an address of their own ------------------

HANDSHAKE_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
PER_ADDRESS = 40
SLACK = 3.0
"""Seconds allowed beyond a timeout: 2 shared cores, and hundreds of sockets at once."""
SLOW_OPTIONS = ("--trickle", "0.3", "--idle-connections", "0")
"""Slowloris connections send a header line every 0.3 s, and come without idle WebSockets
(those are an attack of their own here, counted against the per-address cap)."""


async def run_in_namespace(
    namespace: NetworkNamespace, tmp_path: Path, extra: Sequence[str] = ()
) -> AddressedCluster:
    cluster = AddressedCluster(tmp_path, host=namespace.host_address)
    await cluster.start_coordinator(
        "--host", namespace.host_address,
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
        "--client-idle-timeout", str(IDLE_TIMEOUT),
        "--max-clients-per-address", str(PER_ADDRESS),
        *extra,
    )  # fmt: skip
    await cluster.start_server("s1")
    return cluster


async def test_slow_silent_and_idle_connections_are_closed_and_capped(
    tmp_path: Path, attackers: list[Attacker]
) -> None:
    with network_namespace() as namespace:
        cluster = await run_in_namespace(namespace, tmp_path)
        try:
            port = cluster.coordinator_port
            host = namespace.host_address

            def attack(mode: str, connections: int, seconds: float) -> Any:
                options = ["--connections", str(connections), "--seconds", str(seconds)]
                return start_attacker(
                    attackers, mode, host, port, *options, *SLOW_OPTIONS, namespace=namespace
                )

            slowloris = await attack("slowloris", 100, 10)
            silent = await attack("silent", 50, 10)
            idle = await attack("idle", 100, 12)
            # While the attack holds its sockets, real clients (from the host's
            # address) still get in and talk.
            await asyncio.sleep(1.0)
            await round_trip(cluster.url)

            reports = {
                name: await attacker.report(30)
                for name, attacker in (("slowloris", slowloris), ("silent", silent), ("idle", idle))
            }
            metrics, ours_closed = await metrics_despite_handshake_limit(cluster)
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            await cluster.close()

    print(f"\n{json.dumps(reports, indent=1)}")
    for name, opened in (("slowloris", 100), ("silent", 50)):
        report = reports[name]
        assert (report["opened"], report["closed_by_server"]) == (opened, opened), report
        assert report["longest_open"] < HANDSHAKE_TIMEOUT + SLACK, report
    idle_report = reports["idle"]
    assert idle_report["opened"] == PER_ADDRESS, idle_report
    assert idle_report["refused"] == 100 - PER_ADDRESS, idle_report
    assert idle_report["close_codes"] == {"1008": PER_ADDRESS}, idle_report
    assert idle_report["longest_open"] < IDLE_TIMEOUT + SLACK, idle_report

    def series(name: str, label: str) -> float:
        return metric(metrics, f"webrtc_broker_coordinator_{name}{{{label}}}")

    assert series("connections_timed_out_total", 'phase="handshake"') == 150 + ours_closed
    assert series("connections_timed_out_total", 'phase="idle"') == PER_ADDRESS
    assert series("connections_refused_total", 'reason="too_many_from_address"') == 60
    assert series("connections_refused_total", 'reason="too_many_connections"') == 0


def test_namespace_is_removed_after_use() -> None:
    with network_namespace() as namespace:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
        assert namespace.name in listed.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert namespace.name not in listed.stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert namespace.host_interface not in links.stdout
