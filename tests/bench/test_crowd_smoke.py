"""``bench crowd`` as an operator runs it, small: 20 clients, a few seconds, real processes.

Checks that it completes, that every phase produced its figures, that the
costs per client it divides out are positive (a client costs the server
memory and CPU), that the report names what limited the run, and that every
process it started is gone. How large the figures are is the measurement,
not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import pid_alive

TIMEOUT = 150.0
CLIENTS = 20


def test_crowd_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "crowd.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker.bench.crowd"),
        *("--clients", str(CLIENTS), "--topic-size", "5", "--connect-rate", "10"),
        *("--idle", "1", "--warmup", "1", "--duration", "4"),
        *("--json", str(out), "--log-dir", str(tmp_path)),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    log = (tmp_path / "crowd-per-connection.log").read_text(errors="replace")
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{log[-5000:]}"
    assert "What limits it (UDP per-connection):" in completed.stdout

    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["error"] is None
    assert (run["clients"], run["topics"], run["udp_mode"]) == (CLIENTS, 4, "per-connection")

    storm = run["storm"]
    assert storm["connected"] + storm["failures"] == CLIENTS
    assert storm["connected"] >= 2
    assert sum(storm["errors"].values()) == storm["failures"]
    assert 0 < storm["session_p50_s"] <= storm["subscribed_p50_s"]
    assert storm["server_cpu_ms_per_connect"] > 0

    assert run["server"]["kb_per_client"] > 0
    assert run["server"]["rss_mb_after"] > run["server"]["rss_mb_before"] > 0
    assert run["coordinator"]["rss_mb_before"] > 0
    descriptors = run["descriptors"]
    # per-connection mode: a UDP socket (at least) per client session
    assert descriptors["udp_sockets_after"] >= storm["connected"]
    assert descriptors["fds_after"] > descriptors["fds_before"]

    steady = run["steady"]
    assert steady["expected"] > 0
    assert steady["delivered_per_s"] > 0
    assert steady["latency_ms"]["samples"] > 0
    assert steady["server_cpu_percent"] > 0
    assert steady["server_us_per_client_s"] > 0
    assert run["limits"]

    roles = {process["role"] for process in run["processes"]}
    assert roles == {"commserver", "coordinator", "worker", "bench"}
    for process in run["processes"]:
        if process["role"] != "bench":
            assert not pid_alive(process["pid"]), f"{process['name']} outlived the bench"
