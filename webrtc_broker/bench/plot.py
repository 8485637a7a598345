"""The sweep as a PNG: delivered rate and p99 latency against the number of bots.

matplotlib comes with the ``bench`` extra (and ``dev``); it is imported only
when a plot is asked for, with the non-interactive Agg backend, so a bench
without a plot works on a plain install and nothing needs a display.
"""

from __future__ import annotations

from pathlib import Path

from webrtc_broker.bench.results import Baseline, RunResult


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def plot_sweep(runs: list[RunResult], baseline: Baseline | None, path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'webrtc-broker[bench]'"
        ) from exc

    runs = sorted(runs, key=lambda run: run.bots)
    bots = [run.bots for run in runs]
    figure, (rate_axes, latency_axes) = pyplot.subplots(2, 1, sharex=True, figsize=(7, 7))
    rate_axes.plot(bots, [r.offered_per_s for r in runs], "--", color="grey", label="offered")
    rate_axes.plot(bots, [r.delivered_per_s for r in runs], "o-", label="delivered")
    if baseline is not None:
        rate_axes.axhline(
            baseline.messages_per_s, color="red", linestyle=":", label="raw aiortc pair ceiling"
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
    window = (
        "existing cluster"
        if first.batch_window is None
        else ("unbatched" if first.batch_window == 0 else f"batch {first.batch_window * 1000:g} ms")
    )
    figure.suptitle(
        f"Dense scenario: {first.rate:g} Hz x {first.size} B, {kind}, "
        f"{first.servers} server(s), {window}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
