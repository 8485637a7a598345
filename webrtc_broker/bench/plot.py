"""The sweeps as PNGs: delivered rate and p99 latency against the number of bots
(``--sweep``), latency against server CPU per delivery per batching setting
(``--batch-sweep``).

matplotlib comes with the ``bench`` extra (and ``dev``); it is imported only
when a plot is asked for, with the non-interactive Agg backend, so a bench
without a plot works on a plain install and nothing needs a display.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from webrtc_broker.bench.report import batching_text
from webrtc_broker.bench.results import Baseline, BatchSweep, RunResult


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def _pyplot() -> ModuleType:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'webrtc-broker[bench]'"
        ) from exc
    return pyplot


def plot_sweep(
    runs: list[RunResult],
    baseline: Baseline | None,
    path: Path,
    batch_mode: str | None = None,
    native: Baseline | None = None,
) -> None:
    """``batch_mode``: the servers' batch mode, when the bench started them; ``baseline``
    and ``native``: the aiortc and Chromium pairs, drawn as lines when measured."""
    pyplot = _pyplot()
    runs = sorted(runs, key=lambda run: run.bots)
    bots = [run.bots for run in runs]
    figure, (rate_axes, latency_axes) = pyplot.subplots(2, 1, sharex=True, figsize=(7, 7))
    rate_axes.plot(bots, [r.offered_per_s for r in runs], "--", color="grey", label="offered")
    rate_axes.plot(bots, [r.delivered_per_s for r in runs], "o-", label="delivered")
    if baseline is not None:
        rate_axes.axhline(
            baseline.messages_per_s, color="red", linestyle=":", label="raw aiortc pair ceiling"
        )
    if native is not None:
        rate_axes.axhline(
            native.messages_per_s, color="purple", linestyle="-.", label="Chromium pair"
        )
    rate_axes.set_ylabel("deliveries / s")
    rate_axes.set_ylim(bottom=0)
    rate_axes.legend()
    rate_axes.grid(True, alpha=0.3)
    p99 = [r.latency_ms.p99 for r in runs]
    latency_axes.plot(
        [b for b, v in zip(bots, p99, strict=True) if v is not None],
        [v for v in p99 if v is not None],
        "o-",
        color="tab:orange",
        label="p99",
    )
    latency_axes.set_ylabel("one-way latency p99 (ms)")
    known = [v for v in p99 if v is not None and v > 0]
    if known and max(known) / min(known) > 20:
        latency_axes.set_yscale("log")  # an overloaded point would flatten all the others
    else:
        latency_axes.set_ylim(bottom=0)
    latency_axes.set_xlabel("bots (all on one topic)")
    latency_axes.grid(True, alpha=0.3)
    first = runs[0]
    kind = "reliable" if first.reliable else "unreliable"
    window = batching_text(first.batch_window, batch_mode)
    figure.suptitle(
        f"Dense scenario: {first.rate:g} Hz x {first.size} B, {kind}, "
        f"{first.servers} server(s), {window}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_batch_sweep(sweep: BatchSweep, path: Path) -> None:
    """Each setting's p50 and p99 against its server CPU per delivery: medians joined
    by a line, every run's own values as faint points around them."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5.5))
    colours = pyplot.get_cmap("viridis")
    window_rows = [row for row in sweep.summary if row.setting.mode == "window"]
    for row in sweep.summary:
        setting = row.setting
        if setting.mode == "idle":
            colour: object = "tab:red"
        else:
            colour = colours(window_rows.index(row) / max(1, len(window_rows) - 1) * 0.9)
        runs = [run.dense for run in sweep.runs if run.setting == setting]
        for run in runs:
            cpu = run.server.cpu_us_per_delivery
            if cpu is None:
                continue
            for value, marker in ((run.latency_ms.p50, "o"), (run.latency_ms.p99, "^")):
                if value is not None:
                    axes.plot(cpu, value, marker, color=colour, alpha=0.25, markersize=4)
        cpu = row.server_cpu_us_per_delivery
        if cpu is None or row.latency_p50_ms is None or row.latency_p99_ms is None:
            continue
        axes.plot([cpu, cpu], [row.latency_p50_ms, row.latency_p99_ms], "-", color=colour)
        axes.plot(cpu, row.latency_p50_ms, "o", color=colour, markersize=8, label=setting.label)
        axes.plot(cpu, row.latency_p99_ms, "^", color=colour, markersize=8)
        axes.annotate(
            setting.label,
            (cpu, row.latency_p50_ms),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
            color=colour,
        )
    axes.set_yscale("log")
    plain = pyplot.FuncFormatter(lambda value, _position: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.set_xlabel("comm-server CPU per delivery (µs, median)")
    axes.set_ylabel("one-way latency (ms): ● p50, ▲ p99")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper right")
    options = sweep.options
    kind = "reliable" if options["reliable"] else "unreliable"
    figure.suptitle(
        f"Batching: {options['bots']} bots x {options['rate']:g} Hz x {options['size']} B, "
        f"{kind}, {options['servers']} server(s); medians of {options['runs']} "
        "alternating rounds"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
