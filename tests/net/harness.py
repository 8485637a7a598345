"""Broker processes for the network tests: anywhere, in any namespace.

:class:`Processes` starts the coordinator, comm servers and client processes
(``python -m tests.net.peer``), each under an optional command prefix
(``ip netns exec NS``), with its output in a log file; every process is
stopped when the block ends, and the logs of a failed test are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, eventually

STARTUP_TIMEOUT = 30.0
PEER_EXIT = 5.0
"""Seconds peer processes get to close their clients at end of input."""
REPLY_GRACE = 15.0
"""Seconds a peer process may take beyond a command's own timeout to answer it."""


def free_port(address: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port free on ``address`` now (racy, as every such helper is; fine in tests)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class PeerProcess:
    """A ``tests.net.peer`` process: Python SDK clients driven by JSON lines."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._lock = asyncio.Lock()

    async def request(self, op: str, *, wait: float = 20.0, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply (see :mod:`tests.net.peer`).

        ``wait`` is how long the command itself may take; the reply must come
        within it plus :data:`REPLY_GRACE`, or the test fails here.
        """
        stdin, stdout = self.process.process.stdin, self.process.process.stdout
        assert stdin is not None and stdout is not None
        async with self._lock:
            try:
                stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
                await stdin.drain()
                line = await asyncio.wait_for(stdout.readline(), wait + REPLY_GRACE)
            except TimeoutError:
                raise AssertionError(
                    f"{self.process.name}: no reply to {op} within {wait + REPLY_GRACE:g} s"
                ) from None
            except ConnectionError:
                line = b""
        if not line:
            await self.process.process.wait()
            raise AssertionError(
                f"{self.process.name} exited with {self.process.process.returncode} "
                f"before answering {op}:\n{self.process.log()[-3000:]}"
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def ok(self, op: str, *, wait: float = 20.0, **fields: Any) -> dict[str, Any]:
        """:meth:`request`, failing the test unless the command succeeded."""
        reply = await self.request(op, wait=wait, **fields)
        assert reply["ok"], f"{self.process.name} {op} {fields}: {reply}"
        return reply


@dataclass
class Processes:
    """Every process a test starts; all stopped by :meth:`close`."""

    workdir: Path
    started: list[Process] = field(default_factory=list)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5))

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, workdir: Path) -> AsyncIterator[Processes]:
        processes = cls(workdir)
        failed = True
        try:
            yield processes
            failed = False
        finally:
            await processes.close()
            if failed:
                print(processes.logs())

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stdio: bool = False,
    ) -> Process:
        """Start ``prefix + argv``; with ``stdio`` its stdin and stdout are pipes."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *prefix,
                *argv,
                stdin=asyncio.subprocess.PIPE if stdio else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdio else log,
                stderr=log,
                cwd=ROOT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                    ),
                    **(env or {}),
                },
            )
        started = Process(name, process, log_path)
        self.started.append(started)
        return started

    async def coordinator(self, address: str, *extra: str) -> str:
        """Start a coordinator on ``address``; returns its ``ws://`` URL once it is ready."""
        port = free_port(address)
        await self.spawn(
            "coordinator",
            [sys.executable, "-m", "webrtc_broker", "coordinator", "--host", address,
             "--port", str(port), *extra],
        )  # fmt: skip
        http_url = f"http://{address}:{port}"

        async def ready() -> bool:
            return (await self.http.get(f"{http_url}/readyz")).status_code == 200

        await eventually(ready, timeout=STARTUP_TIMEOUT)
        return f"ws://{address}:{port}"

    async def commserver(
        self,
        name: str,
        coordinator_url: str,
        *extra: str,
        prefix: Sequence[str] = (),
        http_host: str = "127.0.0.1",
    ) -> Process:
        """Start a comm server; returns once the coordinator lists it."""
        process = await self.spawn(
            name,
            [sys.executable, "-m", "webrtc_broker", "commserver",
             "--coordinator-url", coordinator_url, "--name", name,
             "--http-host", http_host, "--http-port", "0", "--log-level", "debug", *extra],
            prefix=prefix,
        )  # fmt: skip
        status_url = coordinator_url.replace("ws://", "http://") + "/status"

        async def registered() -> bool:
            if process.process.returncode is not None:
                raise AssertionError(f"{name} exited:\n{process.log()[-3000:]}")
            servers = (await self.http.get(status_url)).json()["servers"]
            return any(server["name"] == name for server in servers)

        await eventually(registered, timeout=STARTUP_TIMEOUT)
        return process

    async def peer(
        self,
        name: str,
        coordinator_url: str,
        *,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        module: str = "tests.net.peer",
    ) -> PeerProcess:
        """A process of Python SDK clients (:mod:`tests.net.peer`), or of browser
        pages (``module="tests.net.browser_peer"``)."""
        process = await self.spawn(
            name,
            [sys.executable, "-m", module, coordinator_url],
            prefix=prefix,
            env=env,
            stdio=True,
        )
        return PeerProcess(process)

    async def close(self) -> None:
        # Peer processes first, by end of input: they close their sessions (and a
        # browser its pages) while the servers still run, so no server drains them.
        peers = [p.process for p in self.started if p.process.stdin is not None]
        for process in peers:
            if process.returncode is None and process.stdin is not None:
                process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in peers)), PEER_EXIT)
        for started in reversed(self.started):
            process = started.process
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for started in self.started:
            try:
                await asyncio.wait_for(started.process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    started.process.kill()
                await started.process.wait()
        await self.http.aclose()

    def logs(self) -> str:
        return "\n".join(f"==== {p.name} ====\n{p.log()[-5000:]}" for p in self.started)


async def exchange(
    sender: PeerProcess, sender_name: str, receiver: PeerProcess, receiver_name: str, topic: str
) -> list[str]:
    """``sender_name`` publishes on ``topic`` reliably and unreliably; ``receiver_name``
    (the only subscriber) gets both. Returns what crossed."""
    crossed = []
    for reliable in (True, False):
        body = f"{sender_name} -> {receiver_name} reliable={reliable}"
        await sender.ok("publish", name=sender_name, topic=topic, body=body, reliable=reliable)
        reply = await receiver.ok("receive", name=receiver_name, count=1, timeout=10)
        [got] = reply["messages"]
        assert (got["body"], got["reliable"], got["topic"]) == (body, reliable, topic), got
        crossed.append(body)
    return crossed
