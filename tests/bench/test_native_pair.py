"""The native yardstick: a Chromium pair that moves messages, and reports that read
the broker against it and against the aiortc pair, or say why it is missing.

The measurement runs for real (Debian's chromium through Playwright, as the
browser tests use it), briefly; no rate is asserted beyond "some messages
arrived", since rates belong to the benchmark report (docs/benchmarks.md).
A missing Chromium is simulated through the module's own detection.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from tests.bench.test_bench_units import _summary
from webrtc_broker.bench import nativepair
from webrtc_broker.bench.plot import plot_sweep
from webrtc_broker.bench.report import delivered_table, print_report
from webrtc_broker.bench.results import Baseline, Machine, Report
from webrtc_broker.cluster import spawn


@pytest.mark.parametrize("reliable", [True, False], ids=["reliable", "unreliable"])
async def test_the_chromium_pair_moves_messages(tmp_path: Path, reliable: bool) -> None:
    log = tmp_path / "native-pair.log"
    result, note = await nativepair.measure_in_subprocess(100, reliable, 1.0, Progress(), log)

    assert note is None, f"{note}\n{log.read_text()}"
    assert result is not None
    assert result.stack == "chromium"
    assert (result.size, result.reliable, result.seconds) == (100, reliable, 1.0)
    assert 0 < result.received <= result.sent
    assert result.messages_per_s == result.received / 1.0
    assert result.mb_per_s == pytest.approx(result.received * 100 / 1e6)


def test_missing_chromium_or_playwright_is_one_line_with_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert nativepair.unavailable() is None  # both are installed for the tests

    monkeypatch.setattr(nativepair, "chromium_path", lambda: None)
    note = nativepair.unavailable()
    assert note is not None
    assert "apt-get install chromium" in note
    assert "Playwright" not in note

    monkeypatch.setattr(nativepair, "playwright_installed", lambda: False)
    note = nativepair.unavailable()
    assert note is not None
    assert "apt-get install chromium" in note
    assert "webrtc-broker[bench]" in note
    assert "\n" not in note


async def test_a_missing_chromium_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nativepair, "chromium_path", lambda: None)
    log = tmp_path / "native-pair.log"
    result, note = await nativepair.measure_in_subprocess(100, False, 1.0, Progress(), log)
    assert result is None
    assert note == nativepair.unavailable()
    assert not log.exists()  # nothing was started


async def test_a_failing_measurement_is_a_note_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def spawn_elsewhere(*args: str, **kwargs: Any) -> asyncio.subprocess.Process:
        return await spawn(*args, **{**kwargs, "module": "webrtc_broker.bench.no_such"})

    monkeypatch.setattr(nativepair, "spawn", spawn_elsewhere)
    log = tmp_path / "native-pair.log"
    result, note = await nativepair.measure_in_subprocess(100, False, 1.0, Progress(), log)
    assert result is None
    assert note is not None
    assert "Chromium pair not measured: it failed (exit 1)" in note
    assert "No module named webrtc_broker.bench.no_such" in note


AIORTC = Baseline(100, False, 1.0, 1000, 1000, 50.0, 0.005)
CHROMIUM = Baseline(100, False, 1.0, 9000, 9000, 400.0, 0.04, stack="chromium")


def _printed(native: Baseline | None, note: str | None) -> str:
    """A two-run report (180 delivered/s each) against the aiortc pair and ``native``."""
    run = _summary([0.01] * 10, received=360, published=100, arrived=360)
    if native is not None:
        run = replace(run, native_ratio=run.delivered_per_s / native.messages_per_s)
    report = Report(
        ["webrtc-broker", "bench"],
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:01:00+00:00",
        Machine(2, "Linux", "3.11", "1.16", 0.5),
        {},
        AIORTC,
        [run, run],
        native=native,
        native_note=note,
    )
    buffer = io.StringIO()
    print_report(Console(file=buffer, width=220), report)
    return buffer.getvalue()


def test_the_report_reads_the_broker_against_both_pairs() -> None:
    text = _printed(CHROMIUM, None)
    assert "aiortc (Python)" in text
    assert "Chromium (libwebrtc)" in text
    # 180 delivered/s against 50/s (aiortc) and 400/s (Chromium).
    assert "3.60x aiortc pair, 0.45x Chromium pair" in text
    assert "x aiortc pair" in text
    assert "x Chromium pair" in text
    sweep_rows = [line for line in text.splitlines() if "3.60" in line and "x aiortc" not in line]
    assert sweep_rows and all("0.45" in line for line in sweep_rows)  # the sweep's columns
    assert "not measured" not in text


def test_without_chromium_the_report_says_so_in_one_line_and_keeps_the_aiortc_ratio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nativepair, "chromium_path", lambda: None)
    note = nativepair.unavailable()
    text = _printed(None, note)
    lines = [line for line in text.splitlines() if "not measured" in line]
    assert len(lines) == 1
    assert "apt-get install chromium" in lines[0]
    assert "aiortc pair only" in lines[0]
    monkeypatch.setattr(nativepair, "playwright_installed", lambda: False)
    text = _printed(None, nativepair.unavailable())
    assert "pip install 'webrtc-broker[bench]'" in text  # printed as is, not as markup
    assert "3.60x aiortc pair" in text
    assert "Chromium (libwebrtc)" not in text
    assert "x Chromium pair" in text  # the sweep's column, empty
    assert "0.45" not in text


def _table_text(rows: list[tuple[str, float | None]], native: Baseline | None) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(delivered_table("Delivered", rows, AIORTC, native))
    return buffer.getvalue()


def test_the_batch_sweep_table_has_both_ratios_and_dashes_for_a_missing_pair() -> None:
    rows = [("unbatched", 200.0), ("idle (≤ 10 ms)", None)]
    both = _table_text(rows, CHROMIUM)
    assert "x aiortc pair" in both and "x Chromium pair" in both
    unbatched = next(line for line in both.splitlines() if "unbatched" in line)
    assert "4.00" in unbatched and "0.50" in unbatched  # 200/s against 50/s and 400/s
    aiortc_only = _table_text(rows, None)
    unbatched = next(line for line in aiortc_only.splitlines() if "unbatched" in line)
    assert "4.00" in unbatched and "0.50" not in unbatched
    assert unbatched.rstrip(" │|").endswith("-")


def test_the_sweep_plot_draws_both_pairs(tmp_path: Path) -> None:
    run = _summary([0.01] * 10, received=360, published=100, arrived=360)
    png = tmp_path / "sweep.png"
    plot_sweep([run, replace(run, bots=10)], AIORTC, png, native=CHROMIUM)
    assert png.read_bytes().startswith(b"\x89PNG")
