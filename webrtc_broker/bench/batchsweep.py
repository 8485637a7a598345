"""``webrtc-broker bench --batch-sweep 0,1,2,5,10,20,idle``: latency against CPU per batching.

Batching frames for one peer into one data-channel message saves the comm
server most of its per-message cost (one SCTP packet, one DTLS record, one
datagram each) and costs latency: the time frames wait to share a message.
This command runs the dense scenario (``--bots``, ``--rate``, ``--size``, ...)
once per setting and round, on a fresh cluster each time:

* a number: window mode with that window in ms (``0``: no batching at all);
* ``idle``: idle mode, frames leave once the server has nothing else queued,
  waiting at most ``--batch-window``.

Rounds alternate the settings (see :mod:`webrtc_broker.bench.alternating`)
and each setting's medians are compared: one-way latency p50 and p99 against
the servers' CPU per delivery, as a table, JSON and a PNG. With ``idle``,
``0`` and the window of ``--batch-window`` among the settings, idle mode is
also checked against its targets: p50 within :data:`P50_SLACK_MS` of
unbatched, p99 no worse than unbatched, and CPU per delivery within
:data:`CPU_BUDGET_PERCENT` of the fixed window. Like the UDP mode comparison
it records and prints; the exit code is 1 only when a run could not be
completed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from webrtc_broker.bench.alternating import alternate, loadavg, machine_line, median
from webrtc_broker.bench.command import (
    machine_info,
    measure_yardsticks,
    now_iso,
    options_json,
    stdout_console,
)
from webrtc_broker.bench.options import IDLE_SETTING, BenchOptions
from webrtc_broker.bench.plot import PlotUnavailable, plot_batch_sweep
from webrtc_broker.bench.report import delivered_table, num, print_yardsticks, ratio
from webrtc_broker.bench.results import (
    BatchRun,
    BatchSetting,
    BatchSummary,
    BatchSweep,
    RunResult,
    TargetCheck,
)
from webrtc_broker.bench.runner import Runner

DEFAULT_PLOT = Path("bench-batch-sweep.png")
P50_SLACK_MS = 2.0
"""How much higher than unbatched idle mode's median p50 may be."""
CPU_BUDGET_PERCENT = 10.0
"""How much more server CPU per delivery than the fixed window idle mode may cost."""


def batch_settings(options: BenchOptions) -> list[BatchSetting]:
    """The settings of ``--batch-sweep``, in the order given."""
    settings = []
    for name in options.batch_sweep:
        if name == IDLE_SETTING:
            settings.append(BatchSetting(name, "idle", options.batch_window))
        else:
            settings.append(BatchSetting(name, "window", float(name) / 1000.0))
    return settings


def _cpu_per_delivery(run: RunResult) -> float | None:
    return run.server.cpu_us_per_delivery


def summarise(runs: list[BatchRun], settings: list[BatchSetting]) -> list[BatchSummary]:
    """Each setting's medians, in the order of ``settings``."""
    summary = []
    for setting in settings:
        mine = [run.dense for run in runs if run.setting == setting]
        ratios = [run.frames_per_message for run in runs if run.setting == setting]

        def mid(value: Callable[[RunResult], float | None]) -> float | None:
            return median(value(run) for run in mine)  # noqa: B023 (used at once)

        summary.append(
            BatchSummary(
                setting=setting,
                runs=len(mine),
                latency_p50_ms=mid(lambda r: r.latency_ms.p50),
                latency_p99_ms=mid(lambda r: r.latency_ms.p99),
                server_cpu_us_per_delivery=mid(_cpu_per_delivery),
                server_cpu_percent=mid(lambda r: r.server.cpu_percent),
                frames_per_message=median(ratios),
                delivered_per_s=mid(lambda r: r.delivered_per_s),
                loss_percent=mid(lambda r: r.loss_percent),
                workers_cpu_us_per_delivery=mid(lambda r: r.cpu.workers_us_per_delivery),
                other_cpu_percent=mid(lambda r: r.cpu.other_percent),
            )
        )
    return summary


def check_targets(summary: list[BatchSummary]) -> list[TargetCheck]:
    """Idle mode against unbatched and against the window it is bounded by.

    Empty unless the sweep has all three: idle, ``0`` and a window-mode setting
    with idle's longest wait.
    """
    idle = next((s for s in summary if s.setting.mode == "idle"), None)
    if idle is None:
        return []
    unbatched = next((s for s in summary if s.setting.window == 0), None)
    window = next(
        (
            s
            for s in summary
            if s.setting.mode == "window" and s.setting.window == idle.setting.window
        ),
        None,
    )
    if unbatched is None or window is None:
        return []
    label = idle.setting.label

    def at_most(name: str, value: float | None, limit: float | None) -> TargetCheck:
        met = None if value is None or limit is None else value <= limit
        return TargetCheck(label, name, value, limit, met)

    def plus(value: float | None, add: float = 0.0, factor: float = 1.0) -> float | None:
        return None if value is None else value * factor + add

    return [
        at_most(
            f"latency p50 (ms) within {P50_SLACK_MS:g} ms of unbatched",
            idle.latency_p50_ms,
            plus(unbatched.latency_p50_ms, add=P50_SLACK_MS),
        ),
        at_most(
            "latency p99 (ms) no worse than unbatched",
            idle.latency_p99_ms,
            unbatched.latency_p99_ms,
        ),
        at_most(
            f"server CPU per delivery (µs) within {CPU_BUDGET_PERCENT:g} % of "
            f"{window.setting.label}",
            idle.server_cpu_us_per_delivery,
            plus(window.server_cpu_us_per_delivery, factor=1.0 + CPU_BUDGET_PERCENT / 100.0),
        ),
    ]


def runs_table(sweep: BatchSweep) -> Table:
    options = sweep.options
    table = Table(
        title=(
            f"Runs, in order: {options['bots']} bots x {options['rate']:g} Hz x "
            f"{options['size']} B, {options['duration']:g} s window"
        ),
        caption="server CPU µs per delivery and % of a core; frames per data-channel message "
        "the servers made (sent or dropped); other: load on the machine outside the bench "
        "(% of a core)",
    )
    for heading in (
        "round",
        "setting",
        "p50 ms",
        "p99 ms",
        "µs/deliv",
        "CPU %",
        "frames/msg",
        "deliv/s",
        "loss %",
        "other %",
    ):
        table.add_column(heading, justify="left" if heading == "setting" else "right")
    for run in sweep.runs:
        dense = run.dense
        table.add_row(
            str(run.number),
            run.setting.label,
            num(dense.latency_ms.p50, 1),
            num(dense.latency_ms.p99, 1),
            num(dense.server.cpu_us_per_delivery, 1),
            num(dense.server.cpu_percent),
            num(run.frames_per_message, 2),
            num(dense.delivered_per_s),
            num(dense.loss_percent, 2),
            num(dense.cpu.other_percent),
        )
    return table


def summary_table(sweep: BatchSweep) -> Table:
    table = Table(title="Medians per setting")
    headings = (
        "setting",
        "runs",
        "p50 ms",
        "p99 ms",
        "server µs/deliv",
        "server CPU %",
        "frames/msg",
        "delivered/s",
        "loss %",
        "bots µs/deliv",
        "other %",
    )
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "setting" else "right")
    for row in sweep.summary:
        table.add_row(
            row.setting.label,
            str(row.runs),
            num(row.latency_p50_ms, 1),
            num(row.latency_p99_ms, 1),
            num(row.server_cpu_us_per_delivery, 1),
            num(row.server_cpu_percent),
            num(row.frames_per_message, 2),
            num(row.delivered_per_s),
            num(row.loss_percent, 2),
            num(row.workers_cpu_us_per_delivery, 1),
            num(row.other_cpu_percent),
        )
    return table


def target_lines(targets: list[TargetCheck]) -> list[str]:
    lines = []
    for check in targets:
        verdict = "unknown"
        if check.met is not None:
            verdict = "[green]met[/green]" if check.met else "[yellow]not met[/yellow]"
        lines.append(
            f"{check.setting}: {check.name}: {num(check.value, 1)} against at most "
            f"{num(check.limit, 1)}: {verdict}"
        )
    return lines


def print_sweep(console: Console, sweep: BatchSweep) -> None:
    options = sweep.options
    console.print(
        f"Batching sweep: {', '.join(options['batch_sweep'])}; {options['runs']} round(s), "
        f"alternating; {options['servers']} server(s), "
        f"{'reliable' if options['reliable'] else 'unreliable'}"
    )
    console.print(machine_line(sweep.machine, sweep.loadavg_before, sweep.loadavg_after))
    print_yardsticks(console, sweep.baseline, sweep.native, sweep.native_note)
    if sweep.runs:
        console.print(runs_table(sweep))
        console.print(summary_table(sweep))
        rows = [(row.setting.label, row.delivered_per_s) for row in sweep.summary]
        console.print(
            delivered_table("Delivered (medians) per yardstick", rows, sweep.baseline, sweep.native)
        )
    for line in target_lines(sweep.targets):
        console.print(line)
    for run in sweep.runs:
        for warning in run.dense.warnings:
            console.print(
                f"[yellow]warning:[/yellow] {run.setting.label} round {run.number}: {warning}"
            )
    if sweep.error:
        console.print(f"[red]error:[/red] {sweep.error}")


async def run_batch_sweep(options: BenchOptions, argv: list[str]) -> int:
    """Every setting once per round, ``options.runs`` rounds; the command's exit code."""
    out = stdout_console()
    settings = batch_settings(options)
    sweep = BatchSweep(
        command=argv,
        started_at=now_iso(),
        finished_at="",
        machine=machine_info(),
        loadavg_before=loadavg(),
        loadavg_after=[],
        options=options_json(options),
        runs=[],
        summary=[],
        targets=[],
    )

    async def run_one(setting: BatchSetting, number: int, log_dir: Path, progress: Progress) -> str:
        if number == 1 and setting == settings[0]:  # before any cluster starts
            yardsticks = await measure_yardsticks(options, progress, log_dir)
            sweep.baseline, sweep.native = yardsticks.aiortc, yardsticks.chromium
            sweep.native_note = yardsticks.chromium_note
        run_dir = log_dir / f"{number}-{setting.name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        runner = Runner(
            replace(options, batch_window=setting.window, batch_mode=setting.mode, batch_sweep=()),
            progress,
            run_dir,
        )
        dense = await runner.run(options.bots, sweep.baseline)
        dense = replace(dense, native_ratio=ratio(dense.delivered_per_s, sweep.native))
        sweep.runs.append(BatchRun(setting, number, dense, runner.frames_per_message))
        return (
            f"round {number} {setting.label}: p50 {num(dense.latency_ms.p50, 1)} ms, "
            f"p99 {num(dense.latency_ms.p99, 1)} ms, "
            f"{num(dense.server.cpu_us_per_delivery, 1)} µs server CPU per delivery, "
            f"{num(runner.frames_per_message, 2)} frames per message, "
            f"{num(dense.delivered_per_s)}/s delivered"
        )

    def finish(error: str | None) -> int:
        sweep.error = error
        return _finish(sweep, settings, options, out)

    return await alternate(
        options, settings, title="sweeping batching settings", run_one=run_one, finish=finish
    )


def _finish(
    sweep: BatchSweep, settings: list[BatchSetting], options: BenchOptions, out: Console
) -> int:
    sweep.finished_at = now_iso()
    sweep.loadavg_after = loadavg()
    sweep.summary = summarise(sweep.runs, settings)
    sweep.targets = check_targets(sweep.summary)
    print_sweep(out, sweep)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(sweep.to_json(), indent=2) + "\n")
        out.print(f"JSON written to {options.json_path}")
    code = 0 if sweep.error is None else 1
    plot_path = options.plot_path or DEFAULT_PLOT
    if sweep.runs:
        try:
            plot_batch_sweep(sweep, plot_path)
            out.print(f"plot written to {plot_path}")
        except PlotUnavailable as exc:
            print(exc, file=sys.stderr)
            code = 1
    return code
