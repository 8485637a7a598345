"""``webrtc-broker up``: coordinators and N comm servers as child processes.

With ``--coordinators N`` the replicas listen on consecutive ports, each with
its own alias space (``--alias-spaces 10 --replica-id i``), and every comm
server links to all of them.

The children die with the parent (``PR_SET_PDEATHSIG``), so even a ``kill -9``
of ``up`` leaves no orphans; Ctrl-C or SIGTERM stops them in order (servers,
then the coordinator) and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

import httpx

from webrtc_broker.client.errors import BrokerError

_PR_SET_PDEATHSIG = 1
STOP_GRACE = 10.0
ALIAS_SPACES = 10
"""Alias spaces of a local cluster's replicas: room for the ten ``up`` allows."""


@dataclass(frozen=True)
class ClusterSpec:
    servers: int = 2
    host: str = "127.0.0.1"
    port: int = 9090
    http_port_base: int = 9101
    max_peers: int | None = None
    coordinators: int = 1

    @property
    def coordinator_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def coordinator_http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def coordinator_ports(self) -> list[int]:
        return [self.port + index for index in range(self.coordinators)]

    @property
    def coordinator_urls(self) -> list[str]:
        return [f"ws://{self.host}:{port}" for port in self.coordinator_ports]

    def coordinator_args(self, index: int) -> list[str]:
        """The command line of coordinator replica ``index``."""
        args = ["coordinator", "--host", self.host, "--port", str(self.coordinator_ports[index])]
        if self.coordinators > 1:
            args += ["--alias-spaces", str(ALIAS_SPACES), "--replica-id", str(index)]
        return args

    def server_status_url(self, index: int) -> str:
        return f"http://{self.host}:{self.http_port_base + index}/status"


CLIENT_AUTH_VARIABLES = (
    "WEBRTC_BROKER_COORDINATOR_CLIENT_AUTH",
    "WEBRTC_BROKER_COMMSERVER_CLIENT_AUTH",
)
SERVER_SECRET_VARIABLES = (
    "WEBRTC_BROKER_COORDINATOR_SERVER_SECRET",
    "WEBRTC_BROKER_COMMSERVER_SERVER_SECRET",
)


def children_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the cluster's processes.

    Client authentication needs a server secret (the services refuse to start
    without one). When the environment turns it on for a local cluster, the
    coordinator and the servers get the server secret it names for either
    of them, or one generated for this run: they are all children of this
    process, so nothing else needs to know it. It travels in the environment,
    not on command lines that ``ps`` shows.
    """
    env = dict(environ)
    if all(env.get(name, "none").strip().lower() == "none" for name in CLIENT_AUTH_VARIABLES):
        return env
    given = [env[name] for name in SERVER_SECRET_VARIABLES if env.get(name)]
    secret = given[0] if given else secrets.token_urlsafe(32)
    for name in SERVER_SECRET_VARIABLES:
        if not env.get(name):
            env[name] = secret
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: get SIGTERM when the parent dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(
    *args: str,
    module: str = "webrtc_broker",
    stdin: int | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start ``python -m MODULE ARGS...`` with this interpreter, tied to this process.

    The streams default to this process's; the bench pipes its workers and sends
    the servers' logs to a file so they do not tear its progress display.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        preexec_fn=_die_with_parent,
    )


async def wait_http_ok(url: str, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200."""
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def wait_servers_registered(status_url: str, count: int, timeout: float = 30.0) -> list[int]:
    """Poll the coordinator's ``/status`` until ``count`` servers are registered."""
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                servers = (await http.get(status_url)).json()["servers"]
                if len(servers) >= count:
                    return [int(server["alias"]) for server in servers]
            await asyncio.sleep(0.1)


async def stop(processes: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM every process still running, then SIGKILL what outlives the grace period."""
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def run_cluster(spec: ClusterSpec, *, demo: bool = False) -> int:
    """Run the cluster until a signal (exit 0) or until a child dies (exit 1)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    env = children_environment(os.environ)
    coordinators = [
        await spawn(*spec.coordinator_args(index), env=env) for index in range(spec.coordinators)
    ]
    servers: list[asyncio.subprocess.Process] = []
    try:
        for port in spec.coordinator_ports:
            await wait_http_ok(f"http://{spec.host}:{port}/readyz")
        links = [arg for url in spec.coordinator_urls for arg in ("--coordinator-url", url)]
        for index in range(spec.servers):
            args = [
                "commserver",
                *links,
                "--name", f"commserver-{index + 1}",
                "--http-host", spec.host,
                "--http-port", str(spec.http_port_base + index),
            ]  # fmt: skip
            if spec.max_peers is not None:
                args += ["--max-peers", str(spec.max_peers)]
            servers.append(await spawn(*args, env=env))
        for port in spec.coordinator_ports:
            aliases = await wait_servers_registered(
                f"http://{spec.host}:{port}/status", spec.servers
            )
        _print_urls(spec)
        if demo:
            from webrtc_broker.demo import run_demo  # noqa: PLC0415

            try:
                await run_demo(spec.coordinator_url, aliases)
            except (BrokerError, TimeoutError) as exc:
                print(f"demo failed: {exc}", flush=True)
        print("cluster is up; Ctrl-C stops it", flush=True)
        children = [asyncio.ensure_future(p.wait()) for p in (*coordinators, *servers)]
        stopper = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({stopper, *children}, return_when=asyncio.FIRST_COMPLETED)
        for future in (stopper, *children):
            future.cancel()
        if stopper not in done:
            print("a cluster process exited; stopping the rest", flush=True)
            return 1
        return 0
    except TimeoutError:
        print("the cluster did not come up in time", flush=True)
        return 1
    finally:
        await stop([*servers, *coordinators])


def _print_urls(spec: ClusterSpec) -> None:
    for url, port in zip(spec.coordinator_urls, spec.coordinator_ports, strict=True):
        print(f"coordinator  {url}  (status http://{spec.host}:{port}/status)")
    print(f"demo page    {spec.coordinator_http}/  (open it in two browser tabs)")
    for index in range(spec.servers):
        print(f"commserver-{index + 1} status {spec.server_status_url(index)}")
    print(f"try: webrtc-broker client --coordinator-url {spec.coordinator_url} --topic chat")
    print(flush=True)
