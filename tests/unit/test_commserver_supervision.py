"""The comm server's long-lived tasks die on purpose here: restarted, or the server fails.

The comm server runs in process against a real coordinator (uvicorn, real
WebSockets) and its real HTTP app; the tasks are broken by replacing the
coroutine they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from commserver.coordinators import LINK_TASK
from commserver.http import create_http_app
from commserver.server import CommServer
from tests.coordinator.harness import running_coordinator, wait_until
from tests.support import Cluster
from webrtc_broker.config import CommServerConfig
from webrtc_broker.supervise import RestartPolicy, TaskState


@contextlib.asynccontextmanager
async def running(cs: CommServer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(cs.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get(cs: CommServer, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_http_app(cs))
    async with httpx.AsyncClient(transport=transport, base_url="http://commserver") as http:
        return await http.get(path)


async def test_a_dead_coordinator_link_is_restarted_and_reregisters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_coordinator() as coordinator:
        cs = CommServer(
            CommServerConfig(name="s1", coordinator_url=f"ws://127.0.0.1:{coordinator.port}")
        )
        async with running(cs):
            await wait_until(lambda: cs.alias != 0)
            first = cs.alias
            # The link's frame loop raises once: its task ends with an exception.
            link = cs.link.slots[f"ws://127.0.0.1:{coordinator.port}"].link
            assert link is not None
            serve = link._serve
            calls = 0

            async def broken_once(ws: object) -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("injected failure")
                await serve(ws)  # type: ignore[arg-type]

            monkeypatch.setattr(link, "_serve", broken_once)
            # Force a reconnect so the broken loop runs: drop the coordinator's side.
            for session in list(coordinator.coordinator._sessions):
                session.stop()
            await wait_until(lambda: cs.supervisor.restarts[LINK_TASK] == 1, timeout=15)
            # Back, under the alias it proposes at every registration.
            await wait_until(lambda: cs.stats.coordinator_connects == 2)
            assert cs.alias == first == cs.own_alias
            assert cs.healthy
            assert (await get(cs, "/healthz")).status_code == 200
            metrics = (await get(cs, "/metrics")).text
            assert 'webrtc_broker_commserver_task_restarts_total{task="coordinator-link"} 1.0' in (
                metrics
            )


async def test_a_task_out_of_restarts_fails_the_server_and_its_healthz() -> None:
    cs = CommServer(CommServerConfig(name="s1", coordinator_url="ws://127.0.0.1:9"))
    cs.supervisor._policy = RestartPolicy(max_restarts=2, window=60, first_delay=0.01)
    attempts = 0

    async def always_broken() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("injected failure")

    cs._keepalive = always_broken  # type: ignore[method-assign]
    async with running(cs) as task:
        await asyncio.wait_for(asyncio.shield(task), 10)  # run() returns: the server failed
        assert attempts == 3
        assert not cs.healthy
        assert cs.supervisor.states["keepalive"] is TaskState.FAILED
        answer = await get(cs, "/healthz")
        assert answer.status_code == 503
        assert "keepalive" in answer.json()["reason"]


def test_a_server_that_cannot_serve_http_exits_non_zero_saying_why() -> None:
    """A real process: its HTTP port is taken, so it has no /healthz to fail; it exits."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "webrtc_broker",
                "commserver",
                "--coordinator-url",
                "ws://127.0.0.1:9",
                "--http-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_task_out_of_restarts_turns_healthz_false_then_exits_1(tmp_path: Path) -> None:
    """A real process whose keepalive fails on every run: /healthz says so, then it exits 1."""
    cluster = Cluster(tmp_path)
    try:
        await cluster.start_coordinator()
        proc = await cluster.start_server(
            "s1", module="tests.broken_keepalive_commserver", wait=False
        )
        assert proc.process is not None
        url = f"http://127.0.0.1:{proc.http_port}/healthz"
        answers: list[int] = []
        while proc.process.returncode is None:
            with contextlib.suppress(httpx.HTTPError):
                answers.append((await cluster.http.get(url)).status_code)
            await asyncio.sleep(0.05)
            assert len(answers) < 600, "still running after 30 s"
        assert proc.process.returncode == 1
        # 503 before the exit (and 200 before that, unless the failures came first).
        assert answers and answers[-1] == 503, answers
        assert "task keepalive raised RuntimeError" in proc.log()
    finally:
        await cluster.close()
