"""`pip install webrtc-broker` is the SDK alone, and that is enough to use a broker.

The wheel is built from this checkout and installed, without extras, into a
fresh virtualenv (dependencies come from the package index pip is configured
with). That virtualenv must not hold the servers' or the operator's packages;
a client run with it relays a message through a cluster started from the
development environment; and a server command run with it names the extra to
install instead of failing with a traceback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Cluster

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "webrtc_broker", "coordinator", "commserver", "operator")
UNBUILT = shutil.ignore_patterns("__pycache__", "*.egg-info", "node_modules")
NOT_IN_BASE = ("fastapi", "starlette", "uvicorn", "kopf", "kubernetes", "matplotlib", "rich")

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from webrtc_broker.client import BrokerClient

    async def main(url: str) -> None:
        listener = await BrokerClient.connect(url)
        talker = await BrokerClient.connect(url)
        listener.subscribe(["base-install"])
        async with asyncio.timeout(30):
            while True:  # until the subscription has reached the talker's server
                talker.publish("base-install", b"hello from the base install")
                try:
                    async with asyncio.timeout(0.5):
                        message = await listener.receive()
                except TimeoutError:
                    continue
                print(message.body.decode(), flush=True)
                break
        await talker.close()
        await listener.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def checked(*args: str | Path, timeout: float = 600) -> str:
    done = run(*args, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with the wheel of this checkout installed without extras."""
    work = tmp_path_factory.mktemp("base-install")
    print("\nbuilding the wheel and installing it without extras (about a minute)", flush=True)
    # Built from a copy of what the Dockerfile copies: setuptools leaves a build/
    # folder where it builds, and a stale one could put removed modules in a wheel.
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=UNBUILT)
        else:
            shutil.copy2(ROOT / name, source / name)
    checked(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", work, source)
    (wheel,) = work.glob("webrtc_broker-*.whl")
    venv = work / "venv"
    checked(sys.executable, "-m", "venv", venv)
    checked(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    yield venv


def test_the_base_install_holds_no_server_packages(base_venv: Path) -> None:
    probe = "import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if u.find_spec(m)))"
    present = checked(base_venv / "bin" / "python", "-c", probe, *NOT_IN_BASE).split()
    assert present == []
    assert checked(base_venv / "bin" / "python", "-c", "import aiortc, webrtc_broker.client") == ""


async def test_the_base_install_talks_to_a_cluster(base_venv: Path, cluster: Cluster) -> None:
    await cluster.start_coordinator()
    await cluster.start_server("s1")
    script = base_venv.parent / "client.py"
    script.write_text(CLIENT_SCRIPT)
    done = await asyncio.to_thread(
        run, base_venv / "bin" / "python", script, cluster.url, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello from the base install"


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("coordinator", "server"),
        ("commserver", "server"),
        ("operator", "operator"),
        ("bench", "bench"),
    ],
)
def test_a_command_without_its_extra_names_it(base_venv: Path, command: str, extra: str) -> None:
    done = run(base_venv / "bin" / "webrtc-broker", command, timeout=60)
    assert done.returncode == 1
    assert f"pip install 'webrtc-broker[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
