"""The ``helm test`` hook's command, run against a real local broker.

No cluster runs the hook's pod here, so the next best thing: render the
chart with ``tests.coordinatorUrl`` pointing at a coordinator on 127.0.0.1,
take the pod's command and arguments exactly as rendered, and run them as a
process (the image's entrypoint is the same console script). The broker is
real: coordinator and comm-server processes, WebRTC between the probe's
clients and the servers, the server mesh between the servers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass

from tests.e2e.helpers import start_mesh
from tests.helm.chart import find, render
from tests.support import Cluster

PROBE_TIMEOUT = 90.0


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def entrypoint() -> list[str]:
    """``webrtc-broker`` from the virtualenv, as the image's ENTRYPOINT runs it."""
    script = shutil.which("webrtc-broker", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "webrtc_broker"]


def hook_command(coordinator_url: str, timeout: int) -> list[str]:
    """The test pod's command line, rendered by helm for ``coordinator_url``."""
    sets = [f"tests.coordinatorUrl={coordinator_url}", f"tests.timeoutSeconds={timeout}"]
    pod = find(render(sets=sets), "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["webrtc-broker"]
    return [*entrypoint(), *container["args"]]


async def start(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def finish(process: asyncio.subprocess.Process) -> Finished:
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def test_hook_round_trips_a_message_across_two_servers(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2")
    result = await finish(await start(hook_command(cluster.url, 60)))
    assert result.returncode == 0, result.stderr
    # least-clients puts the second client on the other server: the mesh is crossed.
    assert "round-tripped a message across two servers" in result.stdout, result.stdout
    assert result.stdout.startswith("ok: client ")


async def test_hook_waits_for_a_broker_that_is_still_starting(cluster: Cluster) -> None:
    probe = await start(hook_command(cluster.url, 60))
    await asyncio.sleep(2)  # the probe's first attempts find no coordinator
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    result = await finish(probe)
    assert result.returncode == 0, result.stderr
    assert "cannot reach the coordinator" in result.stderr
    assert "across the same server" in result.stdout


async def test_hook_fails_when_nothing_relays(cluster: Cluster) -> None:
    await cluster.start_coordinator()  # and no comm server
    result = await finish(await start(hook_command(cluster.url, 3)))
    assert result.returncode == 1
    assert "probe failed within 3 s" in result.stderr, result.stderr
    assert result.stdout == ""
