"""What a bench run produces: the values behind the table, the plot and ``--json``.

Every dataclass here is written to the JSON file as-is (``dataclasses.asdict``),
so the field names and their docstrings are the JSON schema. Rates are per
second of the measured window; ``None`` (JSON ``null``) means "not measured"
(no samples, no baseline, or a cluster the bench did not start and so cannot
see into).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from webrtc_broker.bench.latency import LatencyHistogram, percentile
from webrtc_broker.config import BatchMode

SCHEMA_VERSION = 1

Stack = Literal["aiortc", "chromium"]
"""Whose WebRTC a yardstick pair ran on: aiortc (Python, the broker's own) or
Chromium's libwebrtc (the native stack browsers use)."""


@dataclass(frozen=True)
class Baseline:
    """A yardstick: one peer-connection pair, one channel, as fast as it goes.

    ``stack`` says whose: the raw aiortc pair (the ceiling of one Python connection)
    or a pair of Chromium's peer connections (what the native stack moves on the
    same machine).
    """

    size: int
    reliable: bool
    seconds: float
    sent: int
    """Messages handed to the data channel (including the warm-up)."""
    received: int
    """Messages that arrived during the measured seconds."""
    messages_per_s: float
    mb_per_s: float
    stack: Stack = "aiortc"


@dataclass(frozen=True)
class LatencySummary:
    """One-way latency (sender's ``time.time()`` in the body to the receiver's), in ms."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None
    samples: int

    @classmethod
    def of(cls, histogram: LatencyHistogram) -> LatencySummary:
        """The summary of ``histogram`` (whose samples are in seconds)."""
        return cls(
            p50=_ms(histogram.percentile(0.50)),
            p95=_ms(histogram.percentile(0.95)),
            p99=_ms(histogram.percentile(0.99)),
            mean=_ms(histogram.mean),
            max=_ms(histogram.maximum if histogram.count else None),
            samples=histogram.count,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


@dataclass(frozen=True)
class ConnectSummary:
    """Duration of ``BrokerClient.connect`` (coordinator, WebRTC set-up, AUTH), in seconds."""

    p50: float | None
    p99: float | None
    max: float | None
    count: int
    """Bots that connected."""
    failures: int
    errors: dict[str, int]
    """Failed connects by exception type."""

    @classmethod
    def of(cls, seconds: Sequence[float], errors: dict[str, int]) -> ConnectSummary:
        """The summary of the successful connects' ``seconds`` and the failures' ``errors``."""
        return cls(
            p50=percentile(seconds, 0.50),
            p99=percentile(seconds, 0.99),
            max=max(seconds, default=None),
            count=len(seconds),
            failures=sum(errors.values()),
            errors=errors,
        )


@dataclass(frozen=True)
class ProcessUsage:
    role: str
    """``commserver``, ``coordinator``, ``worker`` or ``bench`` (the orchestrator)."""
    name: str
    pid: int
    cpu_percent: float | None
    """Average over the measured window, in % of one core."""
    rss_mb_mean: float | None
    rss_mb_max: float | None


@dataclass(frozen=True)
class ServerSummary:
    """The comm servers under test, summed over all of them."""

    cpu_percent: float | None
    """Sum over the servers, in % of one core (each server can use at most 100)."""
    rss_mb_max: float | None
    rss_mb_before_clients: float | None
    rss_mb_after_clients: float | None
    """Right after every bot connected and subscribed, before traffic."""
    memory_per_client_mb: float | None
    """(after - before) / connected bots."""
    deliveries_per_s: float | None
    """Topic frames the servers handed to client writers (their ``/status`` counters)."""
    cpu_us_per_delivery: float | None
    """Server CPU time per message the bots received, in µs: a cost that stays
    comparable when other load on the machine steals the servers' time."""
    drops: dict[str, int]
    """Frames the servers dropped during the window, by reason."""


@dataclass(frozen=True)
class CpuShare:
    """How the machine's CPU was spent during the window, each in % of one core."""

    cores: int
    machine_percent: float
    """Busy time of the whole machine (at most ``cores * 100``)."""
    commservers_percent: float | None
    workers_percent: float | None
    coordinator_percent: float | None
    workers_us_per_delivery: float | None
    """Bot workers' CPU time per message received, in µs (the load generator's cost)."""
    bench_percent: float | None
    other_percent: float | None
    """Machine busy time not spent by the bench's processes: other load, i.e. noise."""


@dataclass(frozen=True)
class RunResult:
    """One run of the dense scenario at one bot count."""

    bots: int
    bots_connected: int
    servers: int
    workers: int
    rate: float
    size: int
    reliable: bool
    batch_window: float | None
    """The servers' flush window; ``None`` for a cluster the bench did not start."""
    warmup: float
    duration: float
    """Length of the measured window, in seconds."""
    offered_per_s: float
    """bots_connected * rate * (bots_connected - 1): every bot receives every other bot."""
    published_per_s: float
    """Publishes the bots actually made in the window, times receivers per message."""
    delivered_per_s: float
    """Messages the bots received during the window (arrival time in the window)."""
    loss_percent: float
    """100 * (1 - arrived / (published * receivers)): of the messages published in the
    window, the share that did not reach a subscriber within ``late_after_s`` of the
    window's end. Messages are matched by their send time, so a backlog that drains
    into or out of the window does not distort it."""
    ceiling_ratio: float | None
    """delivered_per_s / baseline.messages_per_s (the aiortc pair)."""
    published: int
    """Publishes in the window (each one is due at bots_connected - 1 receivers)."""
    delivered: int
    """Arrivals in the window (the latency samples)."""
    arrived: int
    """Messages published in the window that arrived at a receiver before the cut-off."""
    late_after_s: float
    """Traffic goes on this long after the window; later arrivals count as lost."""
    skipped_publishes: int
    """Publish ticks a bot skipped because its worker fell behind schedule."""
    inbox_dropped: int
    """Messages the SDK dropped because a bot's inbox was full (bot too slow)."""
    sessions_lost: int
    """Bot sessions that closed during traffic."""
    latency_ms: LatencySummary
    connect_s: ConnectSummary
    server: ServerSummary
    cpu: CpuShare
    processes: list[ProcessUsage]
    warnings: list[str] = field(default_factory=list)
    """What may make the numbers unrepresentative (saturated workers, other load, ...)."""
    native_ratio: float | None = None
    """delivered_per_s / the Chromium pair's messages_per_s; ``None`` when not measured."""


@dataclass(frozen=True)
class Machine:
    cpus: int
    platform: str
    python: str
    aiortc: str
    loadavg_1m: float
    """Load average when the bench started: above zero means someone else is busy."""


@dataclass
class Provenance:
    """What every ``--json`` file opens with: the command, when it ran, on what machine."""

    command: list[str]
    started_at: str
    """ISO 8601, UTC."""
    finished_at: str
    machine: Machine

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReportHead(Provenance):
    """What every traffic scenario's ``--json`` file opens with: how and where it was run."""

    options: dict[str, Any]
    baseline: Baseline | None


@dataclass
class Report(ReportHead):
    runs: list[RunResult]
    schema: int = SCHEMA_VERSION
    error: str | None = None
    """Why the bench stopped early; the runs before it are still reported."""
    native: Baseline | None = None
    """The Chromium pair (``stack`` ``chromium``), beside ``baseline`` (aiortc)."""
    native_note: str | None = None
    """Why the Chromium pair was not measured (not installed, failed); ``None`` when it
    was, or when it was skipped on purpose."""


# -- the UDP port mode comparison (``--compare-udp-modes``) ---------------


@dataclass(frozen=True)
class ServerUdp:
    """The UDP sockets one comm server held, read from /proc once its clients connected."""

    name: str
    sockets: int
    ports: int
    """Distinct local ports among them."""
    lowest: int | None
    highest: int | None
    expected: tuple[int, int] | None
    """The (low, high) ports its mode allows; ``None``: any port (per-connection)."""
    in_mode: bool | None
    """Every socket lies on the expected ports; ``None`` when any port is allowed or the
    process was not readable. ``False`` means the server ignored its port mode."""


@dataclass(frozen=True)
class ConnectStage:
    """``bots`` clients connecting to a fresh cluster, with no traffic."""

    bots: int
    connected: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    """Per client: ``BrokerClient.connect`` (coordinator, ICE, DTLS, SCTP, both channels
    open, AUTH confirmed by a PING echo), in seconds."""
    total_s: float | None
    """From the first client's connect start to the last one's end."""
    failures: int
    errors: dict[str, int]
    server_cpu_ms_per_connect: float | None
    """Comm servers' CPU time from the first connect to the last, per connected client."""
    memory_per_client_mb: float | None
    servers_udp: list[ServerUdp]


@dataclass(frozen=True)
class ModeRun:
    """One run of one mode: the connect stage, then the dense stage on a fresh cluster."""

    mode: str
    number: int
    """1-based; runs alternate modes, so run 1 of each mode precedes run 2 of either."""
    connect: ConnectStage
    dense: RunResult
    dense_servers_udp: list[ServerUdp]


@dataclass(frozen=True)
class MetricSummary:
    """One metric's median per mode and what single-port costs against per-connection."""

    name: str
    unit: str
    better: str
    """``higher`` or ``lower``: which way is an improvement."""
    per_connection: float | None
    single_port: float | None
    ratio: float | None
    """single_port / per_connection of the medians."""
    verdict: str | None
    """``PASS`` within the budget, ``WARN`` beyond it, ``None`` for a metric without a
    budget (or without values)."""


@dataclass
class Comparison:
    command: list[str]
    started_at: str
    finished_at: str
    machine: Machine
    loadavg_before: list[float]
    """/proc/loadavg's 1, 5 and 15 minute averages before the first run."""
    loadavg_after: list[float]
    options: dict[str, Any]
    budget_percent: float
    runs: list[ModeRun]
    summary: list[MetricSummary]
    schema: int = SCHEMA_VERSION
    error: str | None = None
    """Why the comparison stopped early; the runs before it are still reported."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the batching sweep (``--batch-sweep``) -------------------------------


@dataclass(frozen=True)
class BatchSetting:
    """How the comm servers of a run batch: one entry of ``--batch-sweep``."""

    name: str
    """As given: a window in ms (``"0"``: unbatched) or ``"idle"``."""
    mode: BatchMode
    """The servers' ``batch_mode``."""
    window: float
    """The servers' ``batch_window`` in seconds: the wait (window mode), the longest
    wait (idle mode), or 0 for no batching."""

    @property
    def label(self) -> str:
        if self.window == 0:
            return "unbatched"
        milliseconds = f"{self.window * 1000:g} ms"
        return f"window {milliseconds}" if self.mode == "window" else f"idle (≤ {milliseconds})"


@dataclass(frozen=True)
class BatchRun:
    """One run of the dense scenario with one batching setting."""

    setting: BatchSetting
    number: int
    """1-based round; every setting runs once per round."""
    dense: RunResult
    frames_per_message: float | None
    """Frames per data-channel message the servers' writers made (sent or dropped)
    during the window (1: none shared a message); ``None`` when their metrics were not
    readable."""


@dataclass(frozen=True)
class BatchSummary:
    """One setting's medians over its runs."""

    setting: BatchSetting
    runs: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    server_cpu_us_per_delivery: float | None
    """Comm servers' CPU time per message a bot received."""
    server_cpu_percent: float | None
    frames_per_message: float | None
    delivered_per_s: float | None
    loss_percent: float | None
    workers_cpu_us_per_delivery: float | None
    """The bots' (the Python SDK's) CPU time per message received."""
    other_cpu_percent: float | None
    """CPU of processes other than the bench's during the window: the machine's noise."""


@dataclass(frozen=True)
class TargetCheck:
    """One target for a setting, against a reference setting's median."""

    setting: str
    """The label of the setting checked."""
    name: str
    value: float | None
    limit: float | None
    """The largest value that meets the target."""
    met: bool | None
    """``None`` when either median is missing."""


@dataclass
class BatchSweep:
    command: list[str]
    started_at: str
    finished_at: str
    machine: Machine
    loadavg_before: list[float]
    """/proc/loadavg's 1, 5 and 15 minute averages before the first run."""
    loadavg_after: list[float]
    options: dict[str, Any]
    runs: list[BatchRun]
    summary: list[BatchSummary]
    targets: list[TargetCheck]
    schema: int = SCHEMA_VERSION
    error: str | None = None
    """Why the sweep stopped early; the runs before it are still reported."""
    baseline: Baseline | None = None
    """The aiortc pair, measured before the first round."""
    native: Baseline | None = None
    """The Chromium pair, measured before the first round."""
    native_note: str | None = None
    """Why the Chromium pair was not measured; ``None`` when it was or was skipped."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
