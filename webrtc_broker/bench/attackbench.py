"""``webrtc-broker bench attack``: what each attack costs a well-behaved pair's latency.

The limits that refuse hostile input are asserted by tests (they hold or they
do not); what is left is how much an attack still costs everyone else, which
depends on the machine and is measured, never asserted. This starts a local
cluster (a coordinator and two comm servers), connects a pair of SDK clients
on *different* servers (so their messages cross the server mesh), and lets
each publish timestamped reliable messages to the other at a steady rate.
Then, phase after phase of ``seconds`` each:

* ``baseline``: nothing else happens;
* one phase per attack (:mod:`webrtc_broker.bench.attacker`, run as its own
  process, aimed at the first server);
* ``baseline after``: nothing again, to show the broker recovered.

For each phase it reports the pair's one-way latency (p50, p95, p99) over
the messages *sent* during the phase, how many of those arrived, what the
attacker sent, the CPU the attacked server (and the whole machine) used, and
what the broker refused meanwhile: the changes of the coordinator's drop,
refusal and timeout counters and of the servers' drop and failed-session
counters. Everything runs on one machine, so a busy machine (other work, or
the attacker's own CPU) shows in the latencies; the machine column says how
busy it was. Between phases it waits (``settle``) for the
sessions an attack left half open to expire, so one attack's leftovers are
not billed to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from webrtc_broker.bench.attacker import ATTACKS
from webrtc_broker.bench.latency import LatencyHistogram
from webrtc_broker.bench.localcluster import ClusterHandle, fetch_json, http_base, local_cluster
from webrtc_broker.bench.payload import HEADER_SIZE, decode_body, encode_body
from webrtc_broker.bench.routes import Route, until_routed
from webrtc_broker.bench.sampling import cpu_seconds, machine_busy_seconds
from webrtc_broker.client import BrokerClient, BrokerError, ClosedError
from webrtc_broker.cluster import spawn, stop

BASELINE = "baseline"
AFTER = "baseline after"
GRACE = 3.0
"""Seconds after a phase for its last messages to arrive (late ones count as lost)."""
ATTACKER_START = 20.0
"""Seconds an attacker process may take to start (imports) and say so."""
ATTACKER_EXIT = 30.0
"""Seconds past its duration an attacker may take to report (closing its sockets)."""
BATCH_WINDOW = 0.01
"""The comm servers' batching window (their default)."""
TOPICS = ("attack-bench/to-b", "attack-bench/to-a")
PROBE = b"?"
"""Body of the probes that wait for the routes: shorter than any timed message."""
ROUTE_TIMEOUT = 30.0
"""Seconds the pair's subscriptions may take to cross the mesh."""


@dataclass(frozen=True)
class AttackOptions:
    seconds: float = 10.0
    rate: float = 50.0
    size: int = 100
    attacks: tuple[str, ...] = ATTACKS
    settle: float = 16.0
    """Longest wait between phases for the servers' half-open sessions to expire."""
    json_path: Path | None = None
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.rate <= 0:
            raise ValueError("--seconds and --rate must be positive")
        if self.size < HEADER_SIZE:
            raise ValueError(f"--size must be at least {HEADER_SIZE}")
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"unknown attacks: {', '.join(sorted(unknown))}")


@dataclass
class Phase:
    attack: str
    seconds: float
    sent: int
    delivered: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    refused: dict[str, int]
    """Counter changes during the phase, ``"<where> <counter>"`` -> increase."""
    attacker: dict[str, Any] | None = None
    """The attacker's own report (frames sent, connections, ...)."""
    cpu_percent: dict[str, float | None] = field(default_factory=dict)
    """CPU over the phase, in percent of one core: ``coordinator``, ``server1`` (the one
    attacked), ``server2``, ``attacker``, and ``machine`` (every process, all cores)."""


@dataclass
class Stream:
    """One member's messages to the other: when each was sent, and each arrival."""

    sends: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    """``(sent_at, latency)`` of each message received."""
    broken: str = ""


class Pair:
    """Two SDK clients on different servers, publishing timestamped messages to each other."""

    def __init__(self, clients: tuple[BrokerClient, BrokerClient], rate: float, size: int) -> None:
        self.clients = clients
        self.rate = rate
        self.size = size
        self.streams = (Stream(), Stream())
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, url: str, servers: tuple[int, int], rate: float, size: int) -> Pair:
        a = await BrokerClient.connect(url, "bench-pair-a", server=servers[0])
        try:
            b = await BrokerClient.connect(url, "bench-pair-b", server=servers[1])
        except BaseException:
            await a.close()
            raise
        pair = cls((a, b), rate, size)
        a.subscribe([TOPICS[1]])
        b.subscribe([TOPICS[0]])
        routes = (Route(a, TOPICS[0], b), Route(b, TOPICS[1], a))
        await until_routed(routes, probe=PROBE, timeout=ROUTE_TIMEOUT)
        for index in (0, 1):
            pair._tasks.append(asyncio.create_task(pair._publish(index)))
            pair._tasks.append(asyncio.create_task(pair._receive(index)))
        return pair

    async def _publish(self, index: int) -> None:
        client, stream, period = self.clients[index], self.streams[index], 1.0 / self.rate
        next_at = time.monotonic()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.time()
            try:
                client.publish(TOPICS[index], encode_body(now, index, len(stream.sends), self.size))
            except BrokerError as exc:  # reconnecting: the message is not sent
                stream.broken = stream.broken or repr(exc)
                continue
            stream.sends.append(now)

    async def _receive(self, index: int) -> None:
        receiver, stream = self.clients[1 - index], self.streams[index]
        while True:
            try:
                message = await receiver.receive()
            except ClosedError:
                return
            if message.topic != TOPICS[index] or len(message.body) != self.size:
                continue
            sent_at, _, _ = decode_body(message.body)
            stream.arrivals.append((sent_at, time.time() - sent_at))

    def window(self, start: float, end: float) -> tuple[int, int, LatencyHistogram]:
        """Messages sent in ``[start, end)``: how many, how many arrived, their latencies."""
        sent = delivered = 0
        histogram = LatencyHistogram()
        for stream in self.streams:
            sent += sum(1 for t in stream.sends if start <= t < end)
            for sent_at, latency in stream.arrivals:
                if start <= sent_at < end:
                    delivered += 1
                    histogram.add(latency)
        return sent, delivered, histogram

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()


# -- the broker's counters ------------------------------------------------------

_COUNTER = re.compile(
    r'^webrtc_broker_coordinator_(\w+)_total(?:\{\w+="([^"]*)"\})? (\S+)$', re.MULTILINE
)
_COORDINATOR_COUNTERS = (
    "frames_dropped",
    "connections_refused",
    "connections_timed_out",
    "slow_connections_closed",
)


async def counters(cluster: ClusterHandle) -> dict[str, int]:
    """The refusal counters of the coordinator and the servers, flattened."""
    flat: dict[str, int] = {}
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{http_base(cluster.coordinator_url)}/metrics")).text
        for name, label, value in _COUNTER.findall(text):
            if name in _COORDINATOR_COUNTERS:
                key = f"coordinator {name}" + (f":{label}" if label else "")
                flat[key] = int(float(value))
    for index, server in enumerate(cluster.servers):
        status = await fetch_json(server.status_url) if server.status_url else None
        stats = (status or {}).get("stats", {})
        for reason, value in stats.get("drops", {}).items():
            flat[f"server{index + 1} drops:{reason}"] = int(value)
        for outcome, value in stats.get("sessions", {}).items():
            if outcome.startswith(("failed:", "refused:")):
                flat[f"server{index + 1} sessions:{outcome}"] = int(value)
        # Rises when the server lost its coordinator link and registered again.
        flat[f"server{index + 1} coordinator_connects"] = int(stats.get("coordinator_connects", 0))
    return flat


def increase(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changes = {key: value - before.get(key, 0) for key, value in after.items()}
    return {key: change for key, change in sorted(changes.items()) if change > 0}


async def pending_sessions(cluster: ClusterHandle) -> int:
    total = 0
    for server in cluster.servers:
        status = await fetch_json(server.status_url) if server.status_url else None
        total += int((status or {}).get("pending", 0))
    return total


async def settle(cluster: ClusterHandle, longest: float) -> None:
    """Wait (at most ``longest`` s) until no server holds a half-open session."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(longest):
            while True:
                if not await pending_sessions(cluster):
                    return
                await asyncio.sleep(0.25)


# -- running the phases -----------------------------------------------------------


class CpuWindow:
    """CPU seconds of the cluster's processes (and the machine) over one phase."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.machine = machine_busy_seconds()
        self.before = {role: _cpu(pid) for role, pid in pids.items()}

    def percent(self) -> dict[str, float | None]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        result: dict[str, float | None] = {}
        for role, pid in self.pids.items():
            before, after = self.before[role], _cpu(pid)
            used = None if before is None or after is None else after - before
            result[role] = None if used is None else round(100 * used / elapsed, 1)
        result["machine"] = round(100 * (machine_busy_seconds() - self.machine) / elapsed, 1)
        return result


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


class AttackerProcess:
    """``python -m webrtc_broker.bench.attacker`` for one phase."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, attack: str, url: str, target: int, seconds: float) -> AttackerProcess:
        process = await spawn(
            *(attack, "--url", url, "--target", str(target), "--seconds", str(seconds)),
            module="webrtc_broker.bench.attacker",
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def started(self) -> None:
        """Wait for the attacker's first line: it is about to attack."""
        assert self.process.stdout is not None
        await self.process.stdout.readline()

    async def report(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        await self.process.wait()
        data = json.loads(line) if line.strip() else {}
        return data if isinstance(data, dict) else {}


async def run_phase(
    cluster: ClusterHandle,
    pair: Pair,
    attack: str,
    options: AttackOptions,
    processes: list[asyncio.subprocess.Process],
) -> Phase:
    before = await counters(cluster)
    attacker: AttackerProcess | None = None
    report: dict[str, Any] | None = None
    if attack not in (BASELINE, AFTER):
        target = cluster.servers[0].alias
        attacker = await AttackerProcess.start(
            attack, cluster.coordinator_url, target, options.seconds
        )
        processes.append(attacker.process)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attacker.started(), ATTACKER_START)
    pids = {
        "coordinator": cluster.coordinator_pid,
        **{f"server{i + 1}": server.pid for i, server in enumerate(cluster.servers)},
        "attacker": attacker.process.pid if attacker is not None else None,
    }
    cpu = CpuWindow(pids)
    start = time.time()
    await asyncio.sleep(options.seconds)
    end = time.time()
    cpu_percent = cpu.percent()
    if attacker is not None:
        try:
            report = await asyncio.wait_for(attacker.report(), ATTACKER_EXIT)
        except TimeoutError:
            report = {"error": "no report"}
        await stop([attacker.process])
    await _catch_up(pair, start, end)
    sent, delivered, histogram = pair.window(start, end)
    after = await counters(cluster)
    phase = Phase(
        attack=attack,
        seconds=round(end - start, 2),
        sent=sent,
        delivered=delivered,
        p50_ms=_ms(histogram.percentile(0.50)),
        p95_ms=_ms(histogram.percentile(0.95)),
        p99_ms=_ms(histogram.percentile(0.99)),
        max_ms=_ms(histogram.maximum if histogram.count else None),
        refused=increase(before, after),
        attacker=report,
        cpu_percent=cpu_percent,
    )
    await settle(cluster, options.settle)
    return phase


async def _catch_up(pair: Pair, start: float, end: float) -> None:
    """Until every message sent in the window arrived, or :data:`GRACE` seconds."""
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        sent, delivered, _ = pair.window(start, end)
        if delivered >= sent:
            return
        await asyncio.sleep(0.05)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def run_attack_bench(
    options: AttackOptions, command: list[str], out: Callable[[str], None] = print
) -> int:
    """Run every phase and print the table (and the JSON document, if asked); returns 0."""
    log_dir = options.log_dir or Path.cwd()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "bench-attack.log"
    phases: list[Phase] = []
    processes: list[asyncio.subprocess.Process] = []
    async with local_cluster(2, BATCH_WINDOW, log_path) as cluster:
        roles = ["coordinator", *(["commserver"] * (len(cluster.processes) - 1))]
        processes.extend(cluster.processes)
        servers = (cluster.servers[0].alias, cluster.servers[1].alias)
        pair = await Pair.start(cluster.coordinator_url, servers, options.rate, options.size)
        try:
            out(
                f"attack bench: a pair of clients on 2 servers, {options.rate:g} msg/s each way, "
                f"{options.size} B, reliable; {options.seconds:g} s per phase (log: {log_path})"
            )
            for attack in (BASELINE, *options.attacks, AFTER):
                phases.append(await run_phase(cluster, pair, attack, options, processes))
                out(f"  {attack}: done")
        finally:
            await pair.close()
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    if process.returncode is None:
                        process.kill()
    for line in table(phases):
        out(line)
    if options.json_path is not None:
        document = {
            "command": command,
            "options": {**asdict(options), "json_path": None, "log_dir": None},
            "phases": [asdict(phase) for phase in phases],
            "processes": [
                {"role": roles[index] if index < len(roles) else "attacker", "pid": p.pid}
                for index, p in enumerate(processes)
            ],
        }
        options.json_path.write_text(json.dumps(document, indent=2) + "\n")
    lost = [p.attack for p in phases if p.delivered < p.sent]
    if lost:
        out(
            f"the pair lost messages (or got them more than {GRACE:g} s late) in: {', '.join(lost)}"
        )
    return 0


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _refusals(refused: dict[str, int], limit: int = 4) -> str:
    if not refused:
        return "-"
    top = sorted(refused.items(), key=lambda item: -item[1])[:limit]
    text = ", ".join(f"{key} {value}" for key, value in top)
    return text + (f" (+{len(refused) - limit} more)" if len(refused) > limit else "")


def table(phases: list[Phase]) -> list[str]:
    """The report: one row per phase."""
    lines = [
        f"{'attack':<20} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'delivered/sent':>15} {'attack frames':>13} {'CPU % server1':>13} "
        f"{'machine':>7}  refused (counter increases)"
    ]
    for phase in phases:
        frames = "-" if phase.attacker is None else str(phase.attacker.get("frames", "?"))
        cpu = phase.cpu_percent
        lines.append(
            f"{phase.attack:<20} {_cell(phase.p50_ms):>7} {_cell(phase.p95_ms):>7} "
            f"{_cell(phase.p99_ms):>7} {_cell(phase.max_ms):>7} "
            f"{f'{phase.delivered}/{phase.sent}':>15} {frames:>13} "
            f"{_cell(cpu.get('server1')):>13} {_cell(cpu.get('machine')):>7}  "
            f"{_refusals(phase.refused)}"
        )
    return lines
