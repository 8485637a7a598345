"""``webrtc-broker bench crowd``: a thousand clients on one comm server.

The dense bench asks how many deliveries a server makes; this one asks how
many clients it holds, and at what cost each. A local cluster (a
coordinator and ONE comm server) and ``--clients`` clients in worker
processes (:mod:`.crowdclients`), in topics of ``--topic-size`` (one shared
topic would make the crowd a delivery benchmark: 1,000 clients at 1 Hz on
one topic ask for a million deliveries a second). Per ``--udp-mode``, on a
fresh cluster:

1. before: the server's and the coordinator's RSS, the server's file
   descriptors and UDP sockets;
2. the storm: client ``i`` connects at ``i / --connect-rate`` seconds, at
   most ``--connect-concurrency`` per worker at once, each then subscribes;
   connect time to session established and to the subscription's first
   round trip (p50/p99), failures by kind with a message, how late connects
   started (the pacing falling behind), and every process's CPU (the server's
   per connect);
3. idle: ``--idle`` seconds with every client connected and silent (what the
   sessions' keepalives cost); then RSS, descriptors and UDP sockets again:
   their growth per client;
4. steady: every client publishes ``--rate`` messages a second on its topic
   for ``--warmup`` + ``--duration`` seconds (the dense bench's publish and
   receive loops): delivered/s, loss, latency, and every process's CPU (the
   server's per client-second and per delivery).

The client workers' CPU is in the report beside the server's, phase by
phase, so a run whose clients, not the server, were the bottleneck says so;
the "what limits it" lines name what saturated and where the measured
per-client costs (CPU, memory, descriptors) would run out.

The storm ends in bounded time: a connect not started by its deadline (the
last one due plus ``--connect-timeout``) counts as failed, and each connect
has ``--connect-timeout``. Exit status 1 only when a run could not be
completed; failed connects are a finding, not an error.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from webrtc_broker import logs
from webrtc_broker.bench.options import UdpMode, default_workers
from webrtc_broker.bench.payload import HEADER_SIZE
from webrtc_broker.limits import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT

UDP_MODES = tuple(mode.value for mode in UdpMode)


@dataclass(frozen=True)
class CrowdOptions:
    clients: int = 1000
    topic_size: int = 10
    connect_rate: float = 20.0
    """Connects started per second, all workers together."""
    connect_concurrency: int = 16
    """Connects under way at once, per worker."""
    connect_timeout: float = 30.0
    rate: float = 1.0
    """Messages each client publishes per second in the steady phase."""
    size: int = 100
    reliable: bool = True
    duration: float = 30.0
    warmup: float = 3.0
    idle: float = 5.0
    workers: int | None = None
    """Client worker processes; ``None``: a core each beside the server's, at least one."""
    udp_modes: tuple[UdpMode, ...] = (UdpMode.PER_CONNECTION,)
    batch_window: float = 0.01
    keepalive_interval: float = KEEPALIVE_INTERVAL
    """How long a client hears nothing before it PINGs: what idle clients cost."""
    json_path: Path | None = None
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.clients < 2 or not self.topic_size >= 2:
            problems.append("need --clients >= 2 and --topic-size >= 2")
        if self.connect_rate <= 0 or self.connect_concurrency < 1 or self.connect_timeout <= 0:
            problems.append(
                "need --connect-rate > 0, --connect-concurrency >= 1, --connect-timeout > 0"
            )
        if self.rate <= 0 or self.size < HEADER_SIZE:
            problems.append(f"need --rate > 0 and --size >= {HEADER_SIZE}")
        if self.duration <= 0 or self.warmup < 0 or self.idle < 0:
            problems.append("need --duration > 0, --warmup >= 0 and --idle >= 0")
        if self.workers is not None and self.workers < 1:
            problems.append("--workers must be at least 1")
        if not 0 < self.keepalive_interval < KEEPALIVE_TIMEOUT:
            problems.append(
                f"need 0 < --keepalive-interval < {KEEPALIVE_TIMEOUT:g} (the clients' keepalive "
                "timeout: a longer interval would take a live server for dead)"
            )
        if not self.udp_modes:
            problems.append("name at least one --udp-mode")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def topics(self) -> int:
        return math.ceil(self.clients / self.topic_size)

    @property
    def worker_count(self) -> int:
        """Never more workers than topics: a topic lives in one worker."""
        wanted = self.workers if self.workers is not None else default_workers(1)
        return min(wanted, self.topics)

    def to_json(self) -> dict[str, Any]:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        data["udp_modes"] = [str(mode) for mode in self.udp_modes]
        data["workers"] = self.worker_count
        return data


@click.command("crowd")
@click.option("--clients", default=1000, show_default=True, help="Clients, all on one comm server")
@click.option("--topic-size", default=10, show_default=True, help="Clients per topic")
@click.option("--connect-rate", default=20.0, show_default=True, help="Connects started per second")
@click.option(
    "--connect-concurrency",
    default=16,
    show_default=True,
    help="Connects under way at once, per worker",
)
@click.option("--connect-timeout", default=30.0, show_default=True, help="Seconds per connect")
@click.option(
    "--rate", default=1.0, show_default=True, help="Messages per second per client, steady"
)
@click.option("--size", default=100, show_default=True, help="Body bytes per message")
@click.option("--reliable/--unreliable", default=True, show_default=True, help="Channel kind")
@click.option(
    "--duration", default=30.0, show_default=True, help="Seconds of the steady phase measured"
)
@click.option("--warmup", default=3.0, show_default=True, help="Seconds of traffic before that")
@click.option(
    "--idle",
    default=5.0,
    show_default=True,
    help="Seconds all connected and silent, after the storm",
)
@click.option("--workers", type=int, help="Client worker processes [a core each beside the server]")
@click.option(
    "--udp-mode",
    "udp_modes",
    type=click.Choice(UDP_MODES),
    multiple=True,
    default=(UDP_MODES[0],),
    show_default=True,
    help="The server's UDP port mode; repeat for a run per mode, each on a fresh cluster",
)
@click.option(
    "--batch-window", default=0.01, show_default=True, help="The server's flush window (s)"
)
@click.option(
    "--keepalive-interval",
    default=KEEPALIVE_INTERVAL,
    show_default=True,
    help="Seconds a client hears nothing before it PINGs (the SDK's default)",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Keep the processes' logs here [a temporary folder, removed after a clean run]",
)
def crowd_command(udp_modes: tuple[str, ...], **flags: Any) -> None:
    """A thousand clients on one comm server: the connect storm, memory, CPU and
    descriptors per client, and a steady phase in small topics.

    A local cluster (coordinator and one comm server) and --clients clients in
    topics of --topic-size, connecting at --connect-rate; then --idle seconds
    silent and --duration seconds each publishing --rate messages a second.
    Prints connect time (to session established and to the first round trip),
    failures by reason, RSS before and after per client (server and
    coordinator), the server's descriptors and UDP sockets, CPU per connect
    and per client-second, delivered/s, loss, latency, every process's CPU per
    phase, and what limited the run.
    """
    try:
        options = CrowdOptions(udp_modes=tuple(UdpMode(m) for m in udp_modes), **flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    from webrtc_broker.bench.crowdrun import run_crowd  # noqa: PLC0415

    logs.configure("warning")
    try:
        code = asyncio.run(run_crowd(options, ["webrtc-broker", "bench", "crowd", *sys.argv[1:]]))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    crowd_command()
