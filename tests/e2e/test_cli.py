"""The ``webrtc-broker`` command as users run it: ``up --demo`` and ``client``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.e2e.helpers import TIMEOUT, connected, wait_status
from tests.support import Cluster, eventually, free_port

UP_TIMEOUT = 60.0


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free (for ``--http-port-base``)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``needle`` (a /proc scan, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            status = (entry / "stat").read_text()
            if status.split(")")[-1].split()[0] == "Z":
                continue  # a zombie waits for its parent; it runs nothing
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
            if needle in cmdline:
                found.append((int(entry.name), cmdline))
    return found


@contextlib.asynccontextmanager
async def broker_command(
    *args: str,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stderr_path: Path,
    env: dict[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``webrtc-broker ARGS``; killed on exit if the test did not stop it."""
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webrtc_broker",
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_until(process: asyncio.subprocess.Process, marker: str, timeout: float) -> list[str]:
    """Lines of stdout up to and including the first one that contains ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise AssertionError(f"stdout ended before {marker!r}: {lines}")
            lines.append(raw.decode().rstrip("\n"))
            if marker in lines[-1]:
                return lines


async def test_up_with_demo_then_sigterm(tmp_path: Path) -> None:
    port = free_port()
    http_base = free_port_pair()
    stderr_path = tmp_path / "up.stderr"
    needles = (f"--port {port}", f"ws://127.0.0.1:{port}")
    async with broker_command(
        "up",
        "--servers", "2",
        "--demo",
        "--port", str(port),
        "--http-port-base", str(http_base),
        stderr_path=stderr_path,
    ) as up:  # fmt: skip
        try:
            lines = await read_until(up, "cluster is up", UP_TIMEOUT)
        except (AssertionError, TimeoutError):
            print(stderr_path.read_text(errors="replace")[-5000:])
            raise
        output = "\n".join(lines)
        assert f"coordinator  ws://127.0.0.1:{port}" in output
        assert f"http://127.0.0.1:{http_base}/status" in output
        assert f"http://127.0.0.1:{http_base + 1}/status" in output
        assert "bob got" in output, output
        assert "hello bob, this is alice" in output
        assert "identity b'alice'" in output
        assert "alice got" in output
        assert "hi alice, bob here" in output
        assert "demo failed" not in output

        children = [p for needle in needles for p in processes_mentioning(needle)]
        children = [(pid, cmd) for pid, cmd in children if pid != up.pid]
        assert len({pid for pid, _ in children}) == 3, children  # coordinator + 2 servers

        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 30) == 0

    leftovers = [p for needle in needles for p in processes_mentioning(needle)]
    assert leftovers == []


async def test_up_with_client_tokens_from_the_environment(tmp_path: Path) -> None:
    """Client authentication needs a server secret: ``up`` makes one for its children."""
    port = free_port()
    key = "a-client-token-key-of-32-bytes-or-more"
    env = {
        "WEBRTC_BROKER_COORDINATOR_CLIENT_AUTH": "jwt",
        "WEBRTC_BROKER_COORDINATOR_CLIENT_JWT_SECRET": key,
        "WEBRTC_BROKER_COMMSERVER_CLIENT_AUTH": "jwt",
        "WEBRTC_BROKER_COMMSERVER_CLIENT_JWT_SECRET": key,
    }
    stderr_path = tmp_path / "up.stderr"
    async with broker_command(
        "up",
        "--servers", "1",
        "--port", str(port),
        "--http-port-base", str(free_port()),
        stderr_path=stderr_path,
        env=env,
    ) as up:  # fmt: skip
        try:
            await read_until(up, "cluster is up", UP_TIMEOUT)
        except (AssertionError, TimeoutError):
            print(stderr_path.read_text(errors="replace")[-5000:])
            raise
        # The server registered, so it holds the secret; a stranger without it does not.
        cluster = Cluster(tmp_path, coordinator_port=port)
        try:
            assert len((await cluster.coordinator_status())["servers"]) == 1
            await cluster.start_server("stranger", wait=False)
            stranger = cluster.servers["stranger"]

            async def stranger_refused() -> bool:
                return "HTTP 403" in stranger.log()

            await eventually(stranger_refused, timeout=TIMEOUT)
        finally:
            await cluster.close()
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 30) == 0


async def test_client_command_prints_what_others_publish(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with broker_command(
        "client",
        "--coordinator-url", cluster.url,
        "--topic", "chat",
        "--no-stdin",
        stderr_path=tmp_path / "client.stderr",
    ) as listener:  # fmt: skip
        await wait_status(cluster, "s1", "topics", 1)  # the command subscribed
        async with connected(cluster, "alice") as (alice,):
            alice.publish("chat", "hello from the SDK")
            alice.publish_identity("chat", "signed")
            lines = await read_until(listener, "signed", TIMEOUT)
            assert lines == [
                f"[{alice.alias}] hello from the SDK",
                f"[{alice.alias} (alice)] signed",
            ]
        listener.terminate()
        await asyncio.wait_for(listener.wait(), TIMEOUT)


async def test_client_command_publishes_stdin(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    async with connected(cluster, "bob") as (bob,):
        bob.subscribe(["chat"])
        await bob.ping()
        async with broker_command(
            "client",
            "--coordinator-url", cluster.url,
            "--topic", "chat",
            "--credentials", "carol",
            "--identity",
            stdin=asyncio.subprocess.PIPE,
            stderr_path=tmp_path / "client.stderr",
        ) as writer:  # fmt: skip
            assert writer.stdin is not None
            await wait_status(cluster, "s1", "clients", 2)
            writer.stdin.write(b"line one\nline two\n")
            writer.stdin.close()
            got = [await asyncio.wait_for(bob.receive(), TIMEOUT) for _ in range(2)]
            assert [(m.body, m.identity) for m in got] == [
                (b"line one", b"carol"),
                (b"line two", b"carol"),
            ]
            # End of stdin ends the command cleanly.
            assert await asyncio.wait_for(writer.wait(), TIMEOUT) == 0

        async def gone() -> bool:
            return bool((await cluster.server_status("s1"))["clients"] == 1)

        await eventually(gone)
