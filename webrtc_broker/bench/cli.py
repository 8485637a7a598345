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


def _counts(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise click.BadParameter("expected comma-separated bot counts, e.g. 10,25,50") from exc


@click.command()
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
    help="Comm servers' batching window in seconds; 0 = unbatched",
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
@click.option("--connect-concurrency", default=8, show_default=True, help="Per worker")
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="Keep the processes' logs here [a temporary folder, removed after a clean run]",
)
def bench(**flags: Any) -> None:
    """Measure the broker on the dense scenario: N bots, one topic, all publishing."""
    from webrtc_broker.bench.command import run_bench  # noqa: PLC0415
    from webrtc_broker.bench.options import BenchOptions  # noqa: PLC0415

    try:
        options = BenchOptions(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure("warning")
    try:
        code = asyncio.run(run_bench(options, ["webrtc-broker", *sys.argv[1:]]))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (command.py)
        code = 130
    raise SystemExit(code)


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
