"""``webrtc-broker bench --compare-udp-modes`` in its smallest form, and its arithmetic.

Proves that the comparison alternates per-connection and single-port runs,
that in both modes clients connected and messages were delivered, that the
single-port servers really kept every peer connection's socket on their one
port (read from /proc by the bench), that the report and JSON carry the
medians, ratios and verdicts, and that no process outlives the command. The
verdict rule and the port choice are checked on their own, and a server that
cannot bind its port fails the bench's start at once instead of after the
start timeout. No rate or
latency is asserted: those belong to the benchmark report (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from webrtc_broker.bench import localcluster
from webrtc_broker.bench.localcluster import (
    ClusterError,
    ephemeral_ports,
    free_udp_ports,
    udp_flags,
)
from webrtc_broker.bench.options import BenchOptions, UdpMode
from webrtc_broker.bench.udpmodes import METRICS, verdict

COMPARE_TIMEOUT = 180.0

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
SERVER_UDP = {
    "name": str,
    "sockets": int,
    "ports": int,
    "lowest": (int, type(None)),
    "highest": (int, type(None)),
    "expected": (list, type(None)),
    "in_mode": (bool, type(None)),
}
CONNECT = {
    "bots": int,
    "connected": int,
    "p50_s": OPTIONAL_NUMBER,
    "p99_s": OPTIONAL_NUMBER,
    "max_s": OPTIONAL_NUMBER,
    "total_s": OPTIONAL_NUMBER,
    "failures": int,
    "errors": dict,
    "server_cpu_ms_per_connect": OPTIONAL_NUMBER,
    "memory_per_client_mb": OPTIONAL_NUMBER,
    "servers_udp": [SERVER_UDP],
}
SUMMARY = {
    "name": str,
    "unit": str,
    "better": str,
    "per_connection": OPTIONAL_NUMBER,
    "single_port": OPTIONAL_NUMBER,
    "ratio": OPTIONAL_NUMBER,
    "verdict": (str, type(None)),
}
RUN = {
    "mode": str,
    "number": int,
    "connect": CONNECT,
    "dense": dict,  # a RunResult, whose shape tests/bench/test_bench_smoke.py checks
    "dense_servers_udp": [SERVER_UDP],
}
COMPARISON = {
    "schema": int,
    "command": [str],
    "started_at": str,
    "finished_at": str,
    "machine": dict,
    "loadavg_before": [NUMBER],
    "loadavg_after": [NUMBER],
    "options": dict,
    "budget_percent": NUMBER,
    "runs": [RUN],
    "summary": [SUMMARY],
    "error": type(None),
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
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        assert ok, f"{where}: {value!r} is not {allowed}"


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_comparison_alternates_modes_and_both_deliver(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench", "--compare-udp-modes"),
        *("--runs", "1", "--connect-bots", "4"),
        *("--bots", "3", "--rate", "5", "--duration", "1", "--warmup", "0.5"),
        *("--json", str(out), "--log-dir", str(tmp_path / "logs")),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=COMPARE_TIMEOUT, check=False
    )
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").rglob("*.log")))
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{logs}"

    report = json.loads(out.read_text())
    check_shape(report, COMPARISON)
    runs = report["runs"]
    assert [(run["mode"], run["number"]) for run in runs] == [
        ("per-connection", 1),
        ("single-port", 1),
    ]
    for run in runs:
        connect, dense = run["connect"], run["dense"]
        assert connect["connected"] == 4, connect
        assert connect["failures"] == 0, connect
        # All clients' span contains each client's own connect.
        assert connect["total_s"] >= connect["max_s"] > 0
        assert dense["bots_connected"] == 3
        assert dense["published"] > 0, f"{run['mode']} published nothing"
        assert dense["delivered"] > 0, f"{run['mode']} delivered nothing"
        for census in (connect["servers_udp"], run["dense_servers_udp"]):
            (server,) = census
            assert server["sockets"] > 0
            if run["mode"] == "per-connection":
                assert server["expected"] is None
                assert server["in_mode"] is None
            else:
                low, high = server["expected"]
                assert low == high
                # Every peer connection's socket on the one port: the mode took effect.
                assert server["in_mode"] is True, server
                assert server["ports"] == 1, server

    summary = {row["name"]: row for row in report["summary"]}
    assert list(summary) == [metric.name for metric in METRICS]
    for metric in METRICS:
        row = summary[metric.name]
        if metric.budgeted:
            assert row["per_connection"] is not None and row["single_port"] is not None
            assert row["ratio"] == pytest.approx(row["single_port"] / row["per_connection"])
            assert row["verdict"] in ("PASS", "WARN")
        else:
            assert row["verdict"] is None

    assert "Medians of 1 run(s) per mode" in completed.stdout
    assert "single-port" in completed.stdout
    for run in runs:
        for process in run["dense"]["processes"]:
            if process["role"] != "bench":
                assert not pid_alive(process["pid"]), f"{process['name']} outlived the bench"


def test_verdict_allows_ten_percent_the_worse_way_only() -> None:
    assert verdict("lower", 1.10, 10.0) == "PASS"
    assert verdict("lower", 1.11, 10.0) == "WARN"
    assert verdict("lower", 0.5, 10.0) == "PASS"
    assert verdict("higher", 0.90, 10.0) == "PASS"
    assert verdict("higher", 0.89, 10.0) == "WARN"
    assert verdict("higher", 1.5, 10.0) == "PASS"
    assert verdict("lower", None, 10.0) is None


def test_fixed_ports_are_free_consecutive_and_outside_the_ephemeral_range() -> None:
    ephemeral_low, ephemeral_high = ephemeral_ports()
    low, high = free_udp_ports(50)
    assert high - low == 49
    assert high < ephemeral_low or low > ephemeral_high
    for port in (low, high):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("", port))  # still free: nothing in the range was left bound
    other_low, other_high = free_udp_ports(50, taken=set(range(low, high + 1)))
    assert other_high < low or other_low > high


def test_each_mode_becomes_the_comm_servers_flags() -> None:
    assert udp_flags(UdpMode.PER_CONNECTION, None) == []
    assert udp_flags(UdpMode.SINGLE_PORT, (20000, 20000)) == ["--udp-port", "20000"]
    assert udp_flags(UdpMode.PORT_RANGE, (20000, 20999)) == ["--udp-port-range", "20000-20999"]


def test_modes_need_a_cluster_the_bench_starts() -> None:
    with pytest.raises(ValueError, match="udp-mode"):
        BenchOptions(coordinator_url="ws://127.0.0.1:1", udp_mode=UdpMode.SINGLE_PORT)
    with pytest.raises(ValueError, match="udp-mode"):
        BenchOptions(coordinator_url="ws://127.0.0.1:1", compare_udp_modes=True)
    with pytest.raises(ValueError, match="runs"):
        BenchOptions(compare_udp_modes=True, runs=0)


async def test_a_server_that_cannot_bind_its_port_fails_the_start_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("", 0))
    taken = int(holder.getsockname()[1])
    monkeypatch.setattr(localcluster, "free_udp_ports", lambda count, taken_=(): (taken, taken))
    try:
        with pytest.raises(ClusterError, match="comm server 1 exited"):
            async with asyncio.timeout(localcluster.START_TIMEOUT - 5):  # not the start timeout
                async with localcluster.local_cluster(
                    1, 0.01, tmp_path / "cluster.log", UdpMode.SINGLE_PORT
                ):
                    pass
    finally:
        holder.close()
    assert f"{taken}" in (tmp_path / "cluster.log").read_text()  # the server said which port
