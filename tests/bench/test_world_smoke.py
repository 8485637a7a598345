"""``webrtc-broker bench --scenario world`` as users run it: a few avatars, a few seconds.

Checks behaviour only: figures were produced, avatars re-subscribed as they
walked, some left and others joined, reliable chat lost nothing the rule
expected, and every process the bench started is gone when it exits. No rate
or latency is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import pid_alive

BENCH_TIMEOUT = 120.0


def test_world_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench", "--scenario", "world"),
        *("--avatars", "6", "--grid", "3x3", "--speed", "1.5", "--chat-rate", "2"),
        *("--churn", "1", "--duration", "3", "--warmup", "1.5", "--baseline-seconds", "0.5"),
        *("--json", str(out), "--log-dir", str(tmp_path / "logs")),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=BENCH_TIMEOUT, check=False
    )
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{logs}"

    report = json.loads(out.read_text())
    assert report["scenario"] == "world"
    assert report["error"] is None
    run = report["run"]
    assert run["avatars_connected"] == 6
    assert run["grid"] == "3x3"
    position, chat = run["position"], run["chat"]
    for kind in (position, chat):
        assert kind["published_per_s"] > 0
        assert kind["delivered_per_s"] > 0
        assert kind["latency_ms"]["samples"] > 0
        assert kind["expected"] > 0
        assert 0 < kind["arrived"] <= kind["expected"]
        assert kind["measured_per_message"] is not None
    assert not position["reliable"]
    assert chat["reliable"]
    assert chat["arrived"] == chat["expected"], "reliable chat lost a message"
    assert chat["loss_percent"] == 0.0
    assert run["subscription_changes_per_s"] > 0
    assert run["subscription_change_failures"] == 0
    assert run["joins"] >= 1
    assert run["leaves"] >= 1
    assert run["grid_fanout"] > 0
    assert "channel_closed" not in run["closed_by_servers"], "a leaving avatar is not lost"
    assert sum(run["lost_because"].values()) == run["sessions_lost"]
    assert report["baseline"]["received"] > 0
    assert len(run["worker_loads"]) == run["workers"]
    assert "reliable chat lost nothing" in completed.stdout
    for process in run["processes"]:
        if process["role"] != "bench":
            assert not pid_alive(process["pid"]), f"{process['name']} outlived the bench"
