"""The ``bench`` click command; :mod:`webrtc_broker.cli` registers it.

Its options live here, beside the bench, so the shared CLI module only has to
add the command. Importing this module is cheap: the bench itself is imported
when the command runs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from webrtc_broker import logs

ATTACK_NAMES = (
    "offer-flood",
    "connect-flood",
    "candidate-flood",
    "ping-batch",
    "gzip-subscriptions",
    "slowloris",
)
"""The attacks of ``bench attack`` (:mod:`webrtc_broker.bench.attacker` checks the names);
listed here so that ``--help`` does not import the bench."""
UDP_MODES = ("per-connection", "single-port", "port-range")
"""The values of :class:`webrtc_broker.bench.options.UdpMode`, default first (same reason)."""
SCENARIOS = ("dense", "world")
"""The values of ``--scenario`` (:data:`webrtc_broker.bench.options.SCENARIOS`), default first."""
BATCH_MODES = ("idle", "window")
"""The comm server's batch modes, default first (:data:`webrtc_broker.config.BatchMode`)."""


def _counts(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise click.BadParameter("expected comma-separated bot counts, e.g. 10,25,50") from exc


def _settings(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    """Comma-separated names, checked by the bench's options."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@click.group(invoke_without_command=True)
@click.option("--bots", default=50, show_default=True, help="Bot clients, all on one topic")
@click.option("--rate", default=10.0, show_default=True, help="Messages per second per bot")
@click.option("--size", default=100, show_default=True, help="Body bytes per message")
@click.option("--reliable/--unreliable", default=False, show_default=True, help="Channel kind")
@click.option("--servers", default=1, show_default=True, help="Comm servers; bots spread evenly")
@click.option("--duration", default=10.0, show_default=True, help="Seconds measured")
@click.option("--warmup", default=3.0, show_default=True, help="Seconds of traffic before that")
@click.option(
    "--batch-window",
    default=0.01,
    show_default=True,
    help="Comm servers' batching window in seconds (idle mode: the longest wait); 0 = unbatched",
)
@click.option(
    "--batch-mode",
    type=click.Choice(BATCH_MODES),
    default=BATCH_MODES[0],
    show_default=True,
    help="When the comm servers' batched frames leave: once the server is idle, or after "
    "the whole window",
)
@click.option(
    "--batch-sweep",
    callback=_settings,
    help="Alternate these batching settings for --runs rounds (windows in ms, 0 = unbatched, "
    "and 'idle'), e.g. 0,1,2,5,10,20,idle; print medians and plot latency against server CPU",
)
@click.option(
    "--workers",
    type=int,
    help="Bot worker processes [cores - servers, at least 1: a core per server under test]",
)
@click.option("--coordinator-url", help="Bench this running cluster instead of starting one")
@click.option(
    "--sweep", callback=_counts, help="Run once per bot count, e.g. 10,25,50,100, and plot"
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="PNG of delivered rate and p99 against bots [bench-sweep.png with --sweep]",
)
@click.option(
    "--baseline-seconds",
    default=3.0,
    show_default=True,
    help="Length of the raw aiortc pair measurement; 0 skips it",
)
@click.option(
    "--native/--no-native",
    default=True,
    show_default=True,
    help="Also measure a pair of Chromium's peer connections (needs chromium and Playwright)",
)
@click.option("--connect-concurrency", default=8, show_default=True, help="Per worker")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Keep the processes' logs here [a temporary folder, removed after a clean run]",
)
@click.option(
    "--udp-mode",
    type=click.Choice(UDP_MODES),
    default=UDP_MODES[0],
    show_default=True,
    help="How the started comm servers bind peer connections: a socket each, "
    "one port (--udp-port), or a port range (--udp-port-range)",
)
@click.option(
    "--compare-udp-modes",
    is_flag=True,
    help="Alternate per-connection and single-port runs (connect stage of --connect-bots "
    "clients, then the dense scenario) and print the medians' ratios",
)
@click.option(
    "--runs",
    default=3,
    show_default=True,
    help="Runs per mode, with --compare-udp-modes or --batch-sweep",
)
@click.option(
    "--connect-bots",
    default=200,
    show_default=True,
    help="Clients of the connect stage, with --compare-udp-modes",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default=SCENARIOS[0],
    show_default=True,
    help="dense: every bot on one topic; world: avatars walking on a grid of cell topics",
)
@click.option(
    "--avatars", default=60, show_default=True, help="World: avatars connected at the start"
)
@click.option("--grid", help="World: COLUMNSxROWS cells, e.g. 4x4 [about 4 avatars per cell]")
@click.option(
    "--speed", default=0.3, show_default=True, help="World: walking speed, cells per second"
)
@click.option(
    "--chat-rate",
    default=0.2,
    show_default=True,
    help="World: reliable chat messages per second per avatar (--rate: positions, unreliable)",
)
@click.option(
    "--churn",
    default=1.0,
    show_default=True,
    help="World: avatars leaving per second during traffic, and as many joining",
)
@click.pass_context
def bench(ctx: click.Context, /, **flags: Any) -> None:
    """Measure the broker on the dense scenario: N bots, one topic, all publishing.

    With --scenario world: avatars on a grid of cells, each subscribed to its
    cell and the 8 around it, publishing positions and chat to its cell,
    walking (re-subscribing at each boundary), leaving and joining.

    With a subcommand (``bench attack``), run that measurement instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from webrtc_broker.bench.batchsweep import run_batch_sweep  # noqa: PLC0415
    from webrtc_broker.bench.command import run_bench  # noqa: PLC0415
    from webrtc_broker.bench.options import BenchOptions, UdpMode  # noqa: PLC0415
    from webrtc_broker.bench.udpmodes import run_comparison  # noqa: PLC0415
    from webrtc_broker.bench.world import run_world  # noqa: PLC0415

    try:
        options = BenchOptions(**{**flags, "udp_mode": UdpMode(flags["udp_mode"])})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure("warning")
    command = run_comparison if options.compare_udp_modes else run_bench
    if options.batch_sweep:
        command = run_batch_sweep
    if options.scenario == "world":
        command = run_world
    try:
        code = asyncio.run(command(options, ["webrtc-broker", *sys.argv[1:]]))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (command.py)
        code = 130
    raise SystemExit(code)


@bench.command("attack")
@click.option("--seconds", default=10.0, show_default=True, help="Seconds per phase")
@click.option("--rate", default=50.0, show_default=True, help="Messages per second, each way")
@click.option("--size", default=100, show_default=True, help="Body bytes per message")
@click.option(
    "--attacks",
    default=",".join(ATTACK_NAMES),
    show_default=True,
    help="Comma-separated attacks to run, in this order",
)
@click.option(
    "--settle",
    default=16.0,
    show_default=True,
    help="Longest wait between phases for half-open sessions to expire (s)",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Where bench-attack.log (the processes' output) goes [current directory]",
)
def attack(attacks: str, **flags: Any) -> None:
    """What each attack costs a well-behaved pair's latency, beside a baseline.

    A local cluster (coordinator, 2 comm servers) and a pair of clients on
    different servers exchanging timestamped reliable messages; then a
    baseline phase, one phase per attack aimed at the first server, and a
    baseline again. Prints p50/p95/p99 latency, delivered/sent and the
    broker's refusal counters per phase.
    """
    from webrtc_broker.bench.attackbench import AttackOptions, run_attack_bench  # noqa: PLC0415

    try:
        names = tuple(name.strip() for name in attacks.split(",") if name.strip())
        options = AttackOptions(attacks=names, **flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure("warning")
    command = ["webrtc-broker", *sys.argv[1:]]
    try:
        code = asyncio.run(run_attack_bench(options, command, lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


@bench.command(
    "crowd",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def crowd(ctx: click.Context) -> None:
    """1,000 clients on one comm server: connect storm, memory, CPU and descriptors per client.

    Its options (``crowd --help``) live with it: importing them here would make every
    ``webrtc-broker`` command pay for the bench's configuration models.
    """
    from webrtc_broker.bench.crowd import crowd_command  # noqa: PLC0415

    crowd_command.main(args=ctx.args, prog_name=ctx.command_path)


@bench.command("coordinator-restart")
@click.option("--coordinators", default=2, show_default=True, help="Coordinator replicas")
@click.option(
    "--servers", default=2, show_default=True, help="Comm servers, linked to every replica"
)
@click.option(
    "--connect-rate", default=20.0, show_default=True, help="New clients per second, steadily"
)
@click.option("--duration", default=60.0, show_default=True, help="Seconds of new clients")
@click.option(
    "--hold", default=5.0, show_default=True, help="Seconds each new client stays connected"
)
@click.option(
    "--witnesses", default=10, show_default=True, help="Long-lived clients counting every message"
)
@click.option(
    "--witness-rate", default=1.0, show_default=True, help="Messages per second per witness"
)
@click.option(
    "--stream-rate",
    default=0.5,
    show_default=True,
    help="Messages per second each new client publishes to the witnesses",
)
@click.option(
    "--settle",
    default=5.0,
    show_default=True,
    help="Seconds after a replica rejoined, before the next",
)
@click.option("--kill", is_flag=True, help="SIGKILL each replica instead of SIGTERM")
@click.option(
    "--no-restart", is_flag=True, help="Only the load: what the machine sustains without restarts"
)
@click.option(
    "--workers", type=int, help="Client worker processes [one per 10 connects/s, at least 1]"
)
@click.option(
    "--connect-timeout", default=20.0, show_default=True, help="Seconds per connect, every URL"
)
@click.option("--interval", default=5.0, show_default=True, help="Seconds between report lines")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Where bench-coordinator-restart.log (the processes' output) goes [current directory]",
)
def coordinator_restart(**flags: Any) -> None:
    """A rolling restart of the coordinator replicas under a steady stream of connects.

    A local cluster (coordinator replicas, comm servers linked to all), new
    clients given every coordinator URL arriving at --connect-rate, and
    witnesses counting every message; meanwhile each replica in turn is
    stopped (SIGTERM, or SIGKILL with --kill), started again and waited for
    until every comm server has rejoined it. Exits 1 if a connect failed or an
    established session or a message was lost.
    """
    from webrtc_broker.bench.rollingrestart import (  # noqa: PLC0415
        RestartBenchOptions,
        restart_bench_main,
    )

    try:
        options = RestartBenchOptions(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure("warning")
    raise SystemExit(restart_bench_main(options))


@click.command()
@click.option("--duration", default=60.0, show_default=True, help="Seconds of traffic")
@click.option("--bots", default=20, show_default=True, help="Bot clients, all on one topic")
@click.option("--rate", default=10.0, show_default=True, help="Messages per second per bot")
@click.option("--size", default=100, show_default=True, help="Body bytes per message")
@click.option("--reliable/--unreliable", default=True, show_default=True, help="Channel kind")
@click.option("--servers", default=2, show_default=True, help="Comm servers; bots spread evenly")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between report lines")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Where soak.log (the processes' output) goes [current directory]",
)
def soak(**flags: Any) -> None:
    """Steady traffic on a local cluster; comm-server memory and delivery rate over time.

    Exits 1 if a bot lost its session or (reliable) a message was lost.
    """
    from webrtc_broker.bench.soak import SoakOptions, soak_main  # noqa: PLC0415

    try:
        options = SoakOptions(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure("warning")
    raise SystemExit(soak_main(options))
