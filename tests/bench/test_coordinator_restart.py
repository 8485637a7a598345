"""``webrtc-broker bench coordinator-restart`` as an operator runs it, tiny: a few seconds.

Checks that it completes, that its exit status agrees with the problems it
reports, that the text and the JSON report parse and count every connect of
the stream, that both replicas were restarted and came back, and that every
process it started is gone. Connect times, restart durations and whether a
connect under way at a signal failed are the measurement, not asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import pid_alive

TIMEOUT = 150.0
RATE, DURATION = 4, 8
INTERVAL_LINE = re.compile(r"^\s+[\d.]+s\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+\S+$")
RESTART_STEP = re.compile(r"^\s+[\d.]+s\s+replica (\d)\b")


def test_coordinator_restart_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "restart.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench", "coordinator-restart"),
        *("--connect-rate", str(RATE), "--duration", str(DURATION), "--hold", "1"),
        *("--witnesses", "2", "--settle", "0.5", "--interval", "2"),
        *("--json", str(out), "--log-dir", str(tmp_path)),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    log = (tmp_path / "bench-coordinator-restart.log").read_text(errors="replace")
    report = json.loads(out.read_text())
    problems = report["problems"]
    assert completed.returncode == (1 if problems else 0), (
        f"{completed.stdout}\n{completed.stderr}\n{log[-5000:]}"
    )

    lines = completed.stdout.splitlines()
    assert lines[0].startswith("coordinator-restart: 2 coordinators, 2 comm servers")
    assert sum(1 for line in lines if INTERVAL_LINE.match(line)) >= DURATION // 2
    steps = [int(m.group(1)) for line in lines if (m := RESTART_STEP.match(line))]
    assert steps == [0] * 4 + [1] * 4  # signal, exit, ready, every server registered
    assert lines[-1] == ("result: PASS" if not problems else f"result: FAIL: {'; '.join(problems)}")

    clients = report["clients"]
    assert clients["attempted"] == RATE * DURATION
    assert clients["succeeded"] + sum(clients["failed"].values()) == clients["attempted"]
    assert clients["witness_expected"] == clients["witness_published"] > 0
    assert clients["stream_expected"] == 2 * clients["stream_published"]
    assert [r["replica"] for r in report["restarts"]] == [0, 1]
    for restart in report["restarts"]:
        assert restart["signal"] == "SIGTERM"
        assert 0 < restart["stopped"] <= restart["ready"] <= restart["rejoined"]
    # coordinators, comm servers, the witnesses' worker and the stream's
    assert len(report["pids"]) == 6
    for pid in report["pids"]:
        assert not pid_alive(pid), f"{pid} outlived the bench"
