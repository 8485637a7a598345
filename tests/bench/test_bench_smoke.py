"""``webrtc-broker bench`` as users run it: a few bots, a few seconds, real processes.

Checks behaviour only: messages were delivered, the JSON has every documented
field with the right type, and every process the bench started is gone when
it exits. No rate or latency is asserted; those depend on the machine and its
load, and belong to the benchmark report, not to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_TIMEOUT = 90.0

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))

BASELINE = {
    "size": int,
    "reliable": bool,
    "seconds": NUMBER,
    "sent": int,
    "received": int,
    "messages_per_s": NUMBER,
    "mb_per_s": NUMBER,
    "stack": str,
}
LATENCY = {
    "p50": OPTIONAL_NUMBER,
    "p95": OPTIONAL_NUMBER,
    "p99": OPTIONAL_NUMBER,
    "mean": OPTIONAL_NUMBER,
    "max": OPTIONAL_NUMBER,
    "samples": int,
}
CONNECT = {
    "p50": OPTIONAL_NUMBER,
    "p99": OPTIONAL_NUMBER,
    "max": OPTIONAL_NUMBER,
    "count": int,
    "failures": int,
    "errors": dict,
}
SERVER = {
    "cpu_percent": OPTIONAL_NUMBER,
    "rss_mb_max": OPTIONAL_NUMBER,
    "rss_mb_before_clients": OPTIONAL_NUMBER,
    "rss_mb_after_clients": OPTIONAL_NUMBER,
    "memory_per_client_mb": OPTIONAL_NUMBER,
    "deliveries_per_s": OPTIONAL_NUMBER,
    "cpu_us_per_delivery": OPTIONAL_NUMBER,
    "drops": dict,
}
CPU = {
    "cores": int,
    "machine_percent": NUMBER,
    "commservers_percent": OPTIONAL_NUMBER,
    "workers_percent": OPTIONAL_NUMBER,
    "workers_us_per_delivery": OPTIONAL_NUMBER,
    "coordinator_percent": OPTIONAL_NUMBER,
    "bench_percent": OPTIONAL_NUMBER,
    "other_percent": OPTIONAL_NUMBER,
}
PROCESS = {
    "role": str,
    "name": str,
    "pid": int,
    "cpu_percent": OPTIONAL_NUMBER,
    "rss_mb_mean": OPTIONAL_NUMBER,
    "rss_mb_max": OPTIONAL_NUMBER,
}
RUN = {
    "bots": int,
    "bots_connected": int,
    "servers": int,
    "workers": int,
    "rate": NUMBER,
    "size": int,
    "reliable": bool,
    "batch_window": OPTIONAL_NUMBER,
    "warmup": NUMBER,
    "duration": NUMBER,
    "offered_per_s": NUMBER,
    "published_per_s": NUMBER,
    "delivered_per_s": NUMBER,
    "loss_percent": NUMBER,
    "ceiling_ratio": OPTIONAL_NUMBER,
    "published": int,
    "delivered": int,
    "arrived": int,
    "late_after_s": NUMBER,
    "skipped_publishes": int,
    "inbox_dropped": int,
    "sessions_lost": int,
    "latency_ms": LATENCY,
    "connect_s": CONNECT,
    "server": SERVER,
    "cpu": CPU,
    "processes": [PROCESS],
    "warnings": [str],
    "native_ratio": OPTIONAL_NUMBER,
}
MACHINE = {
    "cpus": int,
    "platform": str,
    "python": str,
    "aiortc": str,
    "loadavg_1m": NUMBER,
}
REPORT = {
    "schema": int,
    "command": [str],
    "started_at": str,
    "finished_at": str,
    "machine": MACHINE,
    "options": dict,
    "baseline": BASELINE,
    "runs": [RUN],
    "error": type(None),
    "native": BASELINE,
    "native_note": type(None),
}


def check_shape(value: Any, shape: Any, where: str = "$") -> None:
    """``value`` has exactly the fields of ``shape``, each of the type it names."""
    if isinstance(shape, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        assert set(value) == set(shape), f"{where}: fields {sorted(value)} != {sorted(shape)}"
        for key, sub in shape.items():
            check_shape(value[key], sub, f"{where}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for index, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{index}]")
    else:
        allowed = shape if isinstance(shape, tuple) else (shape,)
        # bool is an int in Python; a count must not be a bool and a flag must be one.
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        assert ok, f"{where}: {value!r} is not {allowed}"


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench"),
        *("--bots", "4", "--rate", "5", "--duration", "3", "--warmup", "1"),
        *("--servers", "2", "--baseline-seconds", "1"),
        *("--json", str(out), "--log-dir", str(tmp_path / "logs")),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=BENCH_TIMEOUT, check=False
    )
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{logs}"

    report = json.loads(out.read_text())
    check_shape(report, REPORT)
    (run,) = report["runs"]
    assert run["bots_connected"] == 4
    assert run["servers"] == 2
    assert run["published"] > 0
    assert run["delivered"] > 0
    assert 0 < run["arrived"] <= run["published"] * 3
    assert 0.0 <= run["loss_percent"] < 100.0
    assert run["latency_ms"]["samples"] == run["delivered"]
    assert run["offered_per_s"] == 4 * 5.0 * 3
    assert report["baseline"]["received"] > 0
    assert report["baseline"]["stack"] == "aiortc"
    assert report["native"]["stack"] == "chromium"  # Chromium is installed for the tests
    assert report["native"]["received"] > 0
    assert run["native_ratio"] == run["delivered_per_s"] / report["native"]["messages_per_s"]
    roles = sorted(p["role"] for p in run["processes"])
    assert roles == sorted(
        ["bench", "coordinator"] + ["commserver"] * 2 + ["worker"] * run["workers"]
    )
    assert "delivered/s" in completed.stdout  # the table was printed
    assert "x Chromium pair" in completed.stdout
    for process in run["processes"]:
        if process["role"] != "bench":
            assert not pid_alive(process["pid"]), f"{process['name']} outlived the bench"
