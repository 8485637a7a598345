"""Session churn does not leave memory behind in a comm server.

Clients open sessions with one comm server and end them in three ways: a
proper close, the client process killed (``SIGKILL``: its sockets go with it)
and the client process frozen (``SIGSTOP``: it just goes silent, as a peer
behind a lost network does, until the server's client keepalive gives it up).
After a warm-up round of 100 sessions ended these three ways (so that the
server has already held as many sessions at once as it will later), 500 more
in five more rounds must leave the server's resident memory within
``RSS_BOUND`` of what it was after the warm-up, and the aiortc objects
alive (counted by the server's ``/debug/memory``, a walk of the garbage
collector's objects) must come back to the warm-up's counts: nothing of a
closed session survives.

Clients run in processes of their own (``tests.churn_clients``), so their
memory and garbage are not the server's; each round runs a process per way of
ending, concurrently, 10 set-ups at a time in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Cluster, eventually

MB = 1024 * 1024
RSS_BOUND = 10 * MB
"""Growth of the server's RSS allowed from the end of the warm-up to the end of the churn."""
ROUNDS = int(os.environ.get("CHURN_ROUNDS", "5"))
"""Rounds after the warm-up round (``CHURN_ROUNDS=15`` for a longer run by hand)."""
CLEAN, KILLED, FROZEN = 40, 30, 30
"""Sessions per round ended by a close, by SIGKILL and by SIGSTOP (100 per round)."""
CLIENT_TIMEOUT = 2.0
"""The server's client keepalive timeout: how soon it notices the abrupt ends."""
SETTLE = 60.0
OPEN_TIMEOUT = 180.0
"""For a client process to set up its sessions (10 at a time) on a busy machine."""


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def clients(
    cluster: Cluster, server: int, sessions: int, mode: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``tests.churn_clients`` process; yields it once all its sessions are open."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.churn_clients",
        *("--url", cluster.url, "--server", str(server), "--sessions", str(sessions)),
        *("--mode", mode),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,  # python -m finds ``tests`` there
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), OPEN_TIMEOUT)
        assert line.startswith(b"open"), f"client process ended early: {line!r}"
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def clean(cluster: Cluster, server: int, sessions: int) -> None:
    async with clients(cluster, server, sessions, "clean"):
        pass


async def killed(cluster: Cluster, server: int, sessions: int) -> None:
    async with clients(cluster, server, sessions, "hold") as process:
        process.kill()


async def frozen(cluster: Cluster, server: int, sessions: int) -> None:
    """Freeze the clients and keep them frozen until the server dropped their sessions."""
    async with clients(cluster, server, sessions, "hold") as process:
        process.send_signal(signal.SIGSTOP)
        await no_clients(cluster)


async def churn_round(cluster: Cluster, server: int) -> None:
    await asyncio.gather(
        clean(cluster, server, CLEAN),
        killed(cluster, server, KILLED),
        frozen(cluster, server, FROZEN),
    )
    await no_clients(cluster)


async def no_clients(cluster: Cluster) -> None:
    async def probe() -> bool:
        status = await cluster.server_status("s1")
        return bool(status["clients"] == 0 and status["pending"] == 0)

    await eventually(probe, timeout=SETTLE, interval=0.2)


async def memory(cluster: Cluster) -> dict[str, Any]:
    response = await cluster.http.get(
        f"http://127.0.0.1:{cluster.servers['s1'].http_port}/debug/memory"
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def settled(cluster: Cluster, expected: dict[str, int] | None = None) -> dict[str, Any]:
    """Wait until no session is left and the reclaimer has collected the closed
    ones (none due, none lingering), with the object counts steady or equal to
    ``expected``."""
    await no_clients(cluster)
    previous: list[dict[str, int]] = []

    async def probe() -> dict[str, Any] | None:
        report = await memory(cluster)
        counts = report["live_objects"]
        steady = previous and previous[-1] == counts
        previous.append(counts)
        reclaimer = report["reclaimer"]
        if reclaimer["scheduled"] or reclaimer["lingering"] or not reclaimer["runs"]:
            return None  # closed sessions not collected yet
        if expected is not None:
            return report if counts == expected else None
        return report if steady else None

    try:
        report: dict[str, Any] = await eventually(probe, timeout=SETTLE, interval=1.1)
    except AssertionError:
        if expected is None:
            raise
        return await memory(cluster)  # the caller's assertion shows what is left
    return report


@pytest.mark.timeout(600)
async def test_memory_returns_after_session_churn(cluster: Cluster) -> None:
    await cluster.start_coordinator()
    proc = await cluster.start_server(
        "s1",
        *("--client-timeout", str(CLIENT_TIMEOUT), "--keepalive-interval", "0.5"),
        *("--establish-timeout", "60"),  # set-ups slowed by a busy machine are not the point
        *("--log-level", "info"),
    )
    assert proc.process is not None
    pid = proc.process.pid
    server = await cluster.alias_of("s1")
    started = time.monotonic()
    rss_start = rss_bytes(pid)

    await churn_round(cluster, server)
    baseline = await settled(cluster)
    rss_warm = rss_bytes(pid)
    print(
        f"\nwarm-up: {CLEAN + KILLED + FROZEN} sessions in {time.monotonic() - started:.1f} s; RSS "
        f"{rss_start / MB:.1f} -> {rss_warm / MB:.1f} MB; live {baseline['live_objects']}"
    )

    for index in range(ROUNDS):
        began = time.monotonic()
        await churn_round(cluster, server)
        print(
            f"round {index}: {CLEAN} closed, {KILLED} killed, {FROZEN} frozen in "
            f"{time.monotonic() - began:.1f} s; RSS {rss_bytes(pid) / MB:.1f} MB"
        )

    after = await settled(cluster, baseline["live_objects"])
    rss_end = rss_bytes(pid)
    status = await cluster.server_status("s1")
    print(
        f"after {ROUNDS * (CLEAN + KILLED + FROZEN)} more sessions: RSS {rss_end / MB:.1f} MB "
        f"({(rss_end - rss_warm) / MB:+.1f} MB since the warm-up); live {after['live_objects']}; "
        f"reclaimer {after['reclaimer']}; sessions {status['stats']['sessions']}; "
        f"{time.monotonic() - started:.1f} s in all"
    )
    assert after["live_objects"] == baseline["live_objects"]
    assert rss_end - rss_warm <= RSS_BOUND
