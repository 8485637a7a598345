"""What a bench invocation runs, as one validated, immutable value."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from webrtc_broker.bench.payload import HEADER_SIZE
from webrtc_broker.bench.worldgrid import Grid, grid_for, parse_grid
from webrtc_broker.config import BatchMode

IDLE_SETTING = "idle"
"""The ``--batch-sweep`` entry for idle-mode batching (its longest wait: ``--batch-window``)."""

DEFAULT_TOPIC = "bench/dense"
DEFAULT_CONNECT_BOTS = 200
"""Clients of the connect stage of ``--compare-udp-modes``."""
SCENARIOS = ("dense", "world")
"""``--scenario``: every bot on one topic, or avatars moving on a grid of cells."""
AVATARS_PER_WORKER = 100
"""Most avatars one world worker process holds by default."""


class UdpMode(StrEnum):
    """How the comm servers the bench starts bind their peer connections' UDP sockets."""

    PER_CONNECTION = "per-connection"
    """A socket on a free port for every peer connection (the default)."""
    SINGLE_PORT = "single-port"
    """Every peer connection on one port (``--udp-port``)."""
    PORT_RANGE = "port-range"
    """Every peer connection's sockets on ports of one range (``--udp-port-range``)."""


def default_workers(servers: int, cpus: int | None = None) -> int:
    """Bot worker processes that leave one core to each comm server under test.

    Each comm server is one single-threaded Python process, so it can use at
    most one core. The bots' work is as heavy as the server's (every delivery
    the server sends, a bot has to decrypt, parse and count), so workers are
    CPU-bound too: with ``servers + workers`` above the core count the kernel
    time-slices the server with the load generator and the bench measures the
    starvation, not the server. Hence ``cores - servers`` workers, but at least
    one; beyond that the report's CPU table shows who got what.
    """
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, cores - servers)


def default_world_workers(avatars: int, servers: int, cpus: int | None = None) -> int:
    """World worker processes: :func:`default_workers`, but at least one per
    :data:`AVATARS_PER_WORKER` avatars.

    One event loop drives every peer connection of its process (SCTP timers,
    DTLS, the avatars' own ticks); past about a hundred connections per loop a
    connect storm and the timers alone make it lag, while more processes than
    cores still let the kernel spread that work. A worker near 100 % of a
    core is then reported as the limit of the run.
    """
    return max(default_workers(servers, cpus), math.ceil(avatars / AVATARS_PER_WORKER))


@dataclass(frozen=True)
class BenchOptions:
    bots: int = 50
    rate: float = 10.0
    """Messages each bot publishes per second."""
    size: int = 100
    """Body bytes of each message (at least :data:`HEADER_SIZE`)."""
    reliable: bool = False
    servers: int = 1
    duration: float = 10.0
    """Seconds of the measured window."""
    warmup: float = 3.0
    """Seconds of traffic before the window opens (subscriptions settle, queues fill)."""
    batch_window: float = 0.01
    """Passed to the comm servers this bench starts; 0 disables batching."""
    batch_mode: BatchMode = "idle"
    """Passed to the comm servers this bench starts: when batched frames leave."""
    workers: int | None = None
    """Bot worker processes; ``None`` picks :func:`default_workers`."""
    coordinator_url: str | None = None
    """Use this running cluster instead of starting one."""
    sweep: tuple[int, ...] = ()
    """Bot counts to run one after the other (replaces ``bots``)."""
    json_path: Path | None = None
    plot_path: Path | None = None
    baseline_seconds: float = 3.0
    """Length of the raw aiortc measurement; 0 skips it."""
    native: bool = True
    """Also measure a Chromium (libwebrtc) pair, as long as ``baseline_seconds``."""
    connect_concurrency: int = 8
    """Connections each worker sets up at once."""
    connect_timeout: float = 30.0
    topic: str = DEFAULT_TOPIC
    log_dir: Path | None = None
    """Where the processes' logs go; a temporary folder when unset."""
    udp_mode: UdpMode = UdpMode.PER_CONNECTION
    """Passed to the comm servers this bench starts (a cluster it did not start keeps its own)."""
    compare_udp_modes: bool = False
    """Alternate per-connection and single-port runs instead of one run per bot count."""
    runs: int = 3
    """Runs of each mode in the comparison."""
    connect_bots: int = DEFAULT_CONNECT_BOTS
    """Clients whose connect time the comparison measures (``bots`` is its dense stage)."""
    batch_sweep: tuple[str, ...] = ()
    """Batching settings to alternate, ``runs`` times each: windows in ms (``0``:
    unbatched) and :data:`IDLE_SETTING`."""
    scenario: str = "dense"
    """One of :data:`SCENARIOS`."""
    avatars: int = 60
    """World: avatars connected at the start (churn keeps the number about level)."""
    grid: str | None = None
    """World: ``COLUMNSxROWS``; ``None`` derives it from ``avatars`` (:func:`grid_for`)."""
    speed: float = 0.3
    """World: how fast avatars walk, in cells per second."""
    chat_rate: float = 0.2
    """World: reliable chat messages per second per avatar (``rate`` is the position rate)."""
    churn: float = 1.0
    """World: avatars leaving per second during traffic, and as many new ones joining."""

    def __post_init__(self) -> None:
        problems = []
        if self.bots < 2 and not self.sweep:
            problems.append("--bots must be at least 2 (one publisher, one receiver)")
        if any(count < 2 for count in self.sweep):
            problems.append("every --sweep count must be at least 2")
        if self.rate <= 0:
            problems.append("--rate must be positive")
        if self.size < HEADER_SIZE:
            problems.append(f"--size must be at least {HEADER_SIZE} (timestamp and sequence)")
        if self.servers < 1:
            problems.append("--servers must be at least 1")
        if self.duration <= 0 or self.warmup < 0:
            problems.append("--duration must be positive and --warmup not negative")
        if self.batch_window < 0:
            problems.append("--batch-window must not be negative")
        if self.workers is not None and self.workers < 1:
            problems.append("--workers must be at least 1")
        if self.baseline_seconds < 0:
            problems.append("--baseline-seconds must not be negative")
        if self.connect_concurrency < 1:
            problems.append("--connect-concurrency must be at least 1")
        if self.coordinator_url is not None and (
            self.udp_mode is not UdpMode.PER_CONNECTION or self.compare_udp_modes
        ):
            problems.append(
                "--udp-mode and --compare-udp-modes need the bench's own cluster "
                "(not --coordinator-url): a running server keeps its port mode"
            )
        if self.compare_udp_modes and self.sweep:
            problems.append("--compare-udp-modes runs fixed bot counts: drop --sweep")
        if self.runs < 1:
            problems.append("--runs must be at least 1")
        if self.connect_bots < 2:
            problems.append("--connect-bots must be at least 2")
        problems += self._batch_sweep_problems()
        problems += self._world_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _batch_sweep_problems(self) -> list[str]:
        if not self.batch_sweep:
            return []
        problems = []
        for setting in self.batch_sweep:
            if setting == IDLE_SETTING:
                continue
            try:
                milliseconds = float(setting)
            except ValueError:
                milliseconds = -1.0
            if not 0 <= milliseconds <= 1000:
                problems.append(
                    f"--batch-sweep entry {setting!r} is neither a window in ms (0-1000) "
                    f"nor {IDLE_SETTING!r}"
                )
        if len(set(self.batch_sweep)) != len(self.batch_sweep):
            problems.append("--batch-sweep lists a setting twice")
        if IDLE_SETTING in self.batch_sweep and self.batch_window == 0:
            problems.append("--batch-sweep idle waits at most --batch-window, which is 0")
        if self.coordinator_url is not None:
            problems.append("--batch-sweep starts its own servers: drop --coordinator-url")
        if self.sweep or self.compare_udp_modes:
            problems.append("--batch-sweep runs alone: drop --sweep and --compare-udp-modes")
        return problems

    def _world_problems(self) -> list[str]:
        if self.scenario not in SCENARIOS:
            return [f"--scenario must be one of {', '.join(SCENARIOS)}"]
        if self.scenario != "world":
            return []
        problems = []
        if self.avatars < 2:
            problems.append("--avatars must be at least 2")
        if self.grid is not None:
            try:
                parse_grid(self.grid)
            except ValueError as exc:
                problems.append(str(exc))
        if self.speed < 0 or self.chat_rate < 0 or self.churn < 0:
            problems.append("--speed, --chat-rate and --churn must not be negative")
        if self.sweep or self.compare_udp_modes or self.batch_sweep or self.plot_path:
            problems.append(
                "--scenario world runs alone: drop --sweep, --compare-udp-modes, "
                "--batch-sweep and --plot"
            )
        return problems

    @property
    def world_grid(self) -> Grid:
        return parse_grid(self.grid) if self.grid is not None else grid_for(self.avatars)

    @property
    def world_worker_count(self) -> int:
        """Never more workers than avatars."""
        if self.workers is not None:
            return min(self.workers, self.avatars)
        return min(self.avatars, default_world_workers(self.avatars, self.servers))

    @property
    def bot_counts(self) -> tuple[int, ...]:
        """The bot count of each run: the sweep, or just ``bots``."""
        return self.sweep or (self.bots,)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else default_workers(self.servers)

    def workers_for(self, bots: int) -> int:
        """Never more workers than bots."""
        return min(self.worker_count, bots)
