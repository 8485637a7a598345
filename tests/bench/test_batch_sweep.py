"""``webrtc-broker bench --batch-sweep`` in its smallest form, and its arithmetic.

Proves that the sweep runs every setting once per round, round after round,
that every run delivered messages, that the JSON carries the runs, the
medians per setting and the idle-mode target checks, that the plot is
written, and that no process outlives the command. How the settings become
the servers' configuration, the median and target arithmetic and the option
checks are tested on their own. No rate or latency is asserted: those belong
to the benchmark report (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_udp_modes import check_shape, pid_alive
from webrtc_broker.bench.batchsweep import batch_settings, check_targets, summarise
from webrtc_broker.bench.options import BenchOptions
from webrtc_broker.bench.results import (
    BatchRun,
    BatchSetting,
    ConnectSummary,
    CpuShare,
    LatencySummary,
    RunResult,
    ServerSummary,
)
from webrtc_broker.bench.runner import BATCH_MODE_VARIABLE, servers_batch_mode
from webrtc_broker.config import CommServerConfig

SWEEP_TIMEOUT = 240.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
SETTING = {"name": str, "mode": str, "window": NUMBER}
SUMMARY = {
    "setting": SETTING,
    "runs": int,
    "latency_p50_ms": OPTIONAL_NUMBER,
    "latency_p99_ms": OPTIONAL_NUMBER,
    "server_cpu_us_per_delivery": OPTIONAL_NUMBER,
    "server_cpu_percent": OPTIONAL_NUMBER,
    "frames_per_message": OPTIONAL_NUMBER,
    "delivered_per_s": OPTIONAL_NUMBER,
    "loss_percent": OPTIONAL_NUMBER,
    "workers_cpu_us_per_delivery": OPTIONAL_NUMBER,
    "other_cpu_percent": OPTIONAL_NUMBER,
}
TARGET = {
    "setting": str,
    "name": str,
    "value": OPTIONAL_NUMBER,
    "limit": OPTIONAL_NUMBER,
    "met": (bool, type(None)),
}
SWEEP = {
    "schema": int,
    "command": [str],
    "started_at": str,
    "finished_at": str,
    "machine": dict,
    "loadavg_before": [NUMBER],
    "loadavg_after": [NUMBER],
    "options": dict,
    "runs": [
        {"setting": SETTING, "number": int, "dense": dict, "frames_per_message": OPTIONAL_NUMBER}
    ],
    "summary": [SUMMARY],
    "targets": [TARGET],
    "error": type(None),
    "baseline": type(None),  # --baseline-seconds 0: no yardstick at all
    "native": type(None),
    "native_note": type(None),
}


def test_sweep_alternates_the_settings_and_reports_medians_targets_and_a_plot(
    tmp_path: Path,
) -> None:
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench", "--batch-sweep", "0,5,idle"),
        *("--batch-window", "0.005", "--runs", "2", "--baseline-seconds", "0"),
        *("--bots", "3", "--rate", "5", "--duration", "1", "--warmup", "0.3"),
        *("--json", str(out), "--plot", str(plot), "--log-dir", str(tmp_path / "logs")),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=SWEEP_TIMEOUT, check=False
    )
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").rglob("*.log")))
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{logs}"

    report = json.loads(out.read_text())
    check_shape(report, SWEEP)
    order = [(run["setting"]["name"], run["number"]) for run in report["runs"]]
    assert order == [("0", 1), ("5", 1), ("idle", 1), ("0", 2), ("5", 2), ("idle", 2)]
    modes = {run["setting"]["name"]: run["setting"] for run in report["runs"]}
    assert modes == {
        "0": {"name": "0", "mode": "window", "window": 0.0},
        "5": {"name": "5", "mode": "window", "window": 0.005},
        "idle": {"name": "idle", "mode": "idle", "window": 0.005},
    }
    for run in report["runs"]:
        dense = run["dense"]
        assert dense["bots_connected"] == 3
        if run["setting"]["window"] == 0:  # nothing shares a message: the servers' own count
            assert run["frames_per_message"] == pytest.approx(1.0, abs=0.02)
        else:
            assert run["frames_per_message"] >= 1.0
        assert dense["delivered"] > 0, f"{run['setting']['name']} delivered nothing"
        assert dense["batch_window"] == run["setting"]["window"]

    assert [row["setting"]["name"] for row in report["summary"]] == ["0", "5", "idle"]
    assert all(row["runs"] == 2 for row in report["summary"])
    targets = report["targets"]
    assert len(targets) == 3
    assert {target["setting"] for target in targets} == {"idle (≤ 5 ms)"}
    for target in targets:
        assert target["value"] is not None and target["limit"] is not None
        assert target["met"] == (target["value"] <= target["limit"])

    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert "Medians per setting" in completed.stdout
    for run in report["runs"]:
        for process in run["dense"]["processes"]:
            if process["role"] != "bench":
                assert not pid_alive(process["pid"]), f"{process['name']} outlived the bench"


def test_settings_are_windows_in_ms_and_idle_bounded_by_the_window() -> None:
    options = BenchOptions(batch_sweep=("0", "2.5", "idle"), batch_window=0.02)
    assert batch_settings(options) == [
        BatchSetting("0", "window", 0.0),
        BatchSetting("2.5", "window", 0.0025),
        BatchSetting("idle", "idle", 0.02),
    ]
    assert [s.label for s in batch_settings(options)] == [
        "unbatched",
        "window 2.5 ms",
        "idle (≤ 20 ms)",
    ]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"batch_sweep": ("10", "fast")}, "neither a window"),
        ({"batch_sweep": ("-1",)}, "neither a window"),
        ({"batch_sweep": ("5", "5")}, "twice"),
        ({"batch_sweep": ("idle",), "batch_window": 0.0}, "at most --batch-window"),
        ({"batch_sweep": ("0",), "coordinator_url": "ws://127.0.0.1:1"}, "own servers"),
        ({"batch_sweep": ("0",), "sweep": (10, 20)}, "runs alone"),
        ({"batch_sweep": ("0",), "compare_udp_modes": True}, "runs alone"),
    ],
)
def test_bad_sweeps_are_refused(flags: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        BenchOptions(**flags)  # type: ignore[arg-type]


def _dense(p50: float, p99: float, cpu_us: float) -> RunResult:
    """A run with the latency and server CPU the sweep summarises; the rest is filler."""
    return RunResult(
        bots=3, bots_connected=3, servers=1, workers=1, rate=5.0, size=100, reliable=False,
        batch_window=0.01, warmup=0.3, duration=1.0, offered_per_s=30.0,
        published_per_s=30.0, delivered_per_s=30.0, loss_percent=0.0, ceiling_ratio=None,
        published=15, delivered=30, arrived=30, late_after_s=2.0, skipped_publishes=0,
        inbox_dropped=0, sessions_lost=0,
        latency_ms=LatencySummary(p50, None, p99, None, None, 30),
        connect_s=ConnectSummary(None, None, None, 3, 0, {}),
        server=ServerSummary(10.0, None, None, None, None, 30.0, cpu_us, {}),
        cpu=CpuShare(2, 50.0, 10.0, 20.0, None, 1.0, 1.0, 5.0),
        processes=[],
    )  # fmt: skip


UNBATCHED = BatchSetting("0", "window", 0.0)
WINDOW = BatchSetting("10", "window", 0.01)
IDLE = BatchSetting("idle", "idle", 0.01)


def test_medians_per_setting_and_the_targets_they_meet() -> None:
    runs = [
        BatchRun(UNBATCHED, 1, _dense(2.0, 9.0, 40.0), 1.0),
        BatchRun(WINDOW, 1, _dense(15.0, 20.0, 13.0), 4.0),
        BatchRun(IDLE, 1, _dense(3.0, 8.0, 14.0), 2.0),
        BatchRun(UNBATCHED, 2, _dense(4.0, 11.0, 36.0), 1.0),
        BatchRun(WINDOW, 2, _dense(17.0, 24.0, 12.0), 5.0),
        BatchRun(IDLE, 2, _dense(5.0, 9.5, 15.0), None),
    ]
    summary = summarise(runs, [UNBATCHED, WINDOW, IDLE])
    assert [(row.setting, row.runs) for row in summary] == [(UNBATCHED, 2), (WINDOW, 2), (IDLE, 2)]
    idle = summary[2]
    assert (idle.latency_p50_ms, idle.latency_p99_ms) == (4.0, 8.75)
    assert idle.server_cpu_us_per_delivery == 14.5
    assert [row.frames_per_message for row in summary] == [1.0, 4.5, 2.0]  # unknown left out
    p50, p99, cpu = check_targets(summary)
    assert (p50.value, p50.limit, p50.met) == (4.0, 5.0, True)  # unbatched 3.0 + 2 ms
    assert (p99.value, p99.limit, p99.met) == (8.75, 10.0, True)
    assert cpu.value == 14.5
    assert cpu.limit == pytest.approx(12.5 * 1.1)
    assert cpu.met is False
    assert {check.setting for check in (p50, p99, cpu)} == {"idle (≤ 10 ms)"}


def test_no_targets_without_idle_unbatched_and_the_same_window() -> None:
    runs = [BatchRun(s, 1, _dense(1.0, 2.0, 3.0), 1.0) for s in (UNBATCHED, WINDOW, IDLE)]
    other_window = BatchSetting("20", "window", 0.02)
    assert check_targets(summarise(runs, [UNBATCHED, WINDOW])) == []
    assert check_targets(summarise(runs, [WINDOW, IDLE])) == []
    assert check_targets(summarise(runs, [UNBATCHED, other_window, IDLE])) == []


def test_servers_started_inside_get_the_mode_and_the_environment_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BATCH_MODE_VARIABLE, "window")
    with servers_batch_mode("idle"):
        assert os.environ[BATCH_MODE_VARIABLE] == "idle"
        assert CommServerConfig().batch_mode == "idle"
    assert os.environ[BATCH_MODE_VARIABLE] == "window"
    monkeypatch.delenv(BATCH_MODE_VARIABLE)
    with servers_batch_mode("window"):
        assert CommServerConfig().batch_mode == "window"
    assert BATCH_MODE_VARIABLE not in os.environ
