"""Test infrastructure: real coordinator and comm-server processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, interval: float = 0.1
) -> Any:
    """Poll ``probe`` until it returns a truthy value; fail with its last value on timeout."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    last = await probe()
                    if last:
                        return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(
            f"condition not met within {timeout} s; last value: {last!r}"
        ) from None


def _pythonpath() -> str:
    """The repository first, so ``python -m tests.<launcher>`` works from any directory."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    http_port: int = 0
    module: str = "webrtc_broker"
    """The module run with ``python -m`` (a test launcher may wrap the real CLI)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables (settings without a command-line flag)."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """Starts and stops broker processes; every process is stopped by :meth:`close`."""

    workdir: Path
    coordinator_port: int = field(default_factory=free_port)
    coordinator: Proc | None = None
    servers: dict[str, Proc] = field(default_factory=dict)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.coordinator_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.coordinator_port}"

    async def _spawn(self, proc: Proc) -> Proc:
        log = proc.log_path.open("ab")
        proc.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            proc.module,
            *proc.args,
            stdout=log,
            stderr=log,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": _pythonpath(),
                **proc.env,
            },
        )
        log.close()
        return proc

    async def start_coordinator(
        self, *extra: str, module: str = "webrtc_broker", env: Mapping[str, str] | None = None
    ) -> Proc:
        args = ["coordinator", "--port", str(self.coordinator_port), *extra]
        log_path = self.workdir / "coordinator.log"
        self.coordinator = await self._spawn(
            Proc("coordinator", args, log_path, module=module, env=dict(env or {}))
        )
        await eventually(self._ready, timeout=STARTUP_TIMEOUT)
        return self.coordinator

    async def _ready(self) -> bool:
        return (await self.http.get(f"{self.http_url}/readyz")).status_code == 200

    async def start_server(
        self,
        name: str,
        *extra: str,
        wait: bool = True,
        module: str = "webrtc_broker",
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """Start a comm server; with ``wait`` return once the coordinator lists it."""
        port = free_port()
        # --coordinator-url is repeatable (one link per URL): a test that names its
        # own (a fault proxy in front of the coordinator), or has the server find the
        # coordinator by its DNS name, gets only that.
        own_url = "--coordinator-url" in extra or "--coordinator-dns" in extra
        args = [
            "commserver",
            *([] if own_url else ["--coordinator-url", self.url]),
            "--name", name,
            "--http-port", str(port),
            "--log-level", "debug",
            *extra,
        ]  # fmt: skip
        log_path = self.workdir / f"{name}.log"
        proc = Proc(name, args, log_path, http_port=port, module=module, env=dict(env or {}))
        proc = await self._spawn(proc)
        self.servers[name] = proc
        if wait:
            await self.alias_of(name)
        return proc

    async def coordinator_status(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.http_url}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def server_status(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"http://127.0.0.1:{self.servers[name].http_port}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def alias_of(self, name: str) -> int:
        """The alias the coordinator gave server ``name`` (waits for its registration)."""

        async def probe() -> int | None:
            for server in (await self.coordinator_status())["servers"]:
                if server["name"] == name:
                    return int(server["alias"])
            return None

        alias: int = await eventually(probe, timeout=STARTUP_TIMEOUT)
        return alias

    async def wait_mesh(self, name: str, servers: int) -> None:
        """Wait until server ``name`` has ``servers`` authenticated server sessions."""

        async def probe() -> bool:
            return bool((await self.server_status(name))["servers"] == servers)

        await eventually(probe, timeout=STARTUP_TIMEOUT)

    async def stop(self, proc: Proc, *, kill: bool = False) -> None:
        if proc.process is None or proc.process.returncode is not None:
            return
        proc.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.process.wait(), 15)
        except TimeoutError:
            proc.process.kill()
            await proc.process.wait()

    async def close(self) -> None:
        for proc in [*self.servers.values(), self.coordinator]:
            if proc is not None:
                await self.stop(proc)
        await self.http.aclose()

    def logs(self) -> str:
        procs = [p for p in [self.coordinator, *self.servers.values()] if p is not None]
        return "\n".join(f"==== {p.name} ====\n{p.log()[-6000:]}" for p in procs)


async def spawn_cli_client(
    coordinator_url: str, topics: Sequence[str], output: Path | None = None
) -> asyncio.subprocess.Process:
    """``webrtc-broker client --topic T ... --no-stdin``: a subscriber in its own process
    (to kill or freeze), printing what arrives to ``output`` (nowhere without it)."""
    args = ["client", "--coordinator-url", coordinator_url, "--no-stdin"]
    for topic in topics:
        args += ["--topic", topic]
    sink = output.open("wb") if output is not None else None
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webrtc_broker",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink if sink is not None else asyncio.subprocess.DEVNULL,
            stderr=sink if sink is not None else asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        if sink is not None:
            sink.close()
