"""The operator's supervised tasks, killed on purpose in a real ``webrtc-broker operator``.

The resync loop is made to fail by the API server: the emulator answers its
list of BrokerClusters (and only its: kopf's requests say ``kopf/`` in their
User-Agent) with an item the resync cannot read. The metrics endpoint is made
to fail by taking its port before the operator starts. Each failure must
either be restarted and counted in ``webrtc_broker_operator_task_restarts_total``,
or, when it keeps happening, turn ``/healthz`` to 503 and then end the
process with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker_operator import PLURAL
from tests.operator.apiserver import ApiServer
from tests.operator.support import OperatorProcess, broker_cluster, until
from tests.operator.test_operator_kopf import all_owned, create_cluster
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)


def garbled_resync_lists(apiserver: ApiServer) -> dict[str, bool]:
    """While ``switch["on"]``, the resync's list of BrokerClusters holds an unreadable item."""
    switch = {"on": False}

    def resync_list(request: Any) -> bool:
        return bool(
            switch["on"]
            and request.method == "GET"
            and request.url.path.endswith(f"/{PLURAL}")
            and "watch" not in request.url.query_string
            and not request.headers.get("User-Agent", "").startswith("kopf/")
        )

    apiserver[resync_list] << {"kind": "BrokerClusterList", "items": [{"spec": {}}]}
    return switch


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=3) as client:
        return (await client.get(f"http://127.0.0.1:{port}/metrics")).text


def sample(text: str, name: str, task: str) -> float | None:
    found = re.search(rf'^{name}{{task="{task}"}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def restarts(text: str, task: str) -> float | None:
    return sample(text, "webrtc_broker_operator_task_restarts_total", task)


@contextlib.contextmanager
def taken_port() -> Iterator[socket.socket]:
    """A port another process holds: listening, so nobody else can bind it."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock
    finally:
        sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


async def test_a_failing_resync_is_restarted_and_counted(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    switch = garbled_resync_lists(apiserver)
    text = await until(lambda: scrape(operator.metrics_port))
    assert restarts(text, "resync") == 0
    assert restarts(text, "metrics") == 0

    switch["on"] = True
    await until(lambda: _at_least(operator.metrics_port, "resync", 2), timeout=30, interval=0.2)
    switch["on"] = False
    assert "task resync raised KeyError" in operator.log()

    # Still whole: healthy, resyncing, and reconciling what comes next.
    async with httpx.AsyncClient(timeout=3) as client:
        health = await client.get(f"http://127.0.0.1:{operator.metrics_port}/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    store = apiserver.store
    create_cluster(store, broker_cluster())
    await until(lambda: all_owned(store))
    before = _resyncs(await scrape(operator.metrics_port))
    await until(lambda: _resyncs_after(operator.metrics_port, before))
    assert operator.process is not None and operator.process.returncode is None
    stopping = time.monotonic()
    assert await operator.stop() == 0, "a SIGTERM after recovered failures is a clean exit"
    # Nothing left running for kopf to wait for (it gives such tasks 5 s).
    assert time.monotonic() - stopping < 3


async def _at_least(port: int, task: str, count: float) -> bool:
    value = restarts(await scrape(port), task)
    return value is not None and value >= count


def _resyncs(text: str) -> float:
    found = re.search(r"^webrtc_broker_operator_resyncs_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


async def _resyncs_after(port: int, before: float) -> bool:
    return _resyncs(await scrape(port)) > before


async def test_a_metrics_port_freed_in_time_is_a_counted_restart(
    kubeconfig: Path, tmp_path: Path
) -> None:
    with taken_port() as sock:
        proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", metrics_port=port_of(sock))
        try:
            await proc.start()
            await until(lambda: "task metrics raised SystemExit" in proc.log(), timeout=20)
            sock.close()  # the other process let go
            text = await until(lambda: scrape(proc.metrics_port), timeout=20)
            count = restarts(text, "metrics")
            assert count is not None and count >= 1
            assert proc.process is not None and proc.process.returncode is None
        finally:
            code = await proc.stop()
    assert code == 0, proc.log()[-4000:]


async def test_a_metrics_port_that_stays_taken_ends_the_operator_with_status_1(
    kubeconfig: Path, tmp_path: Path
) -> None:
    with taken_port() as sock:
        proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", metrics_port=port_of(sock))
        started = time.monotonic()
        await proc.spawn()
        assert proc.process is not None
        try:
            code = await asyncio.wait_for(proc.process.wait(), 45)
        finally:
            await proc.stop()
    elapsed = time.monotonic() - started
    log = proc.log()
    print(f"operator exited {code} after {elapsed:.1f} s")
    assert code == 1, log[-4000:]
    assert "task metrics" in log and "restarts exhausted" in log
    restarted = re.findall(r"task metrics raised SystemExit: \d+; restarting", log)
    assert len(restarted) == 5, "5 restarts, no more"


async def test_a_resync_out_of_restarts_fails_healthz_then_exits_1(
    apiserver: ApiServer, operator: OperatorProcess
) -> None:
    switch = garbled_resync_lists(apiserver)
    url = f"http://127.0.0.1:{operator.metrics_port}/healthz"
    process = operator.process
    assert process is not None
    switch["on"] = True
    started = time.monotonic()
    seen: list[tuple[float, int, bool]] = []  # (time, status, process still running)
    async with httpx.AsyncClient(timeout=1) as client:
        while process.returncode is None and time.monotonic() - started < 60:
            with contextlib.suppress(httpx.HTTPError):
                answer = await client.get(url)
                seen.append((time.monotonic() - started, answer.status_code, True))
                if answer.status_code == 503:
                    assert answer.text == "failed: task resync\n"
            await asyncio.sleep(0.05)
    code = await asyncio.wait_for(process.wait(), 20)
    exited = time.monotonic() - started
    failing = [at for at, status, _ in seen if status == 503]
    assert failing, f"no 503 before the exit; answers: {seen[-5:]}"
    print(f"/healthz 503 from {failing[0]:.1f} s, exit {code} at {exited:.1f} s")
    assert failing[0] < exited
    assert all(status == 200 for at, status, _ in seen if at < failing[0])
    assert code == 1, operator.log()[-4000:]
    assert "task resync" in operator.log() and "restarts exhausted" in operator.log()
