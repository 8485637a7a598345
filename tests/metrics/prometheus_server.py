"""A real Prometheus server for tests: Debian's ``prometheus`` binary on 127.0.0.1.

It listens on a free loopback port, keeps its TSDB in the test's temporary
directory and scrapes the targets it is given every second. ``make test``
installs the binary (``make deps-system``); without it the tests fail with
that hint rather than skip, because these tests are how the metrics are
proven to work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import eventually, free_port

SCRAPE_INTERVAL = "1s"
STARTUP_TIMEOUT = 30.0


def binary(name: str) -> str:
    """Path of a Prometheus binary; fails the test with the install hint when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found: run `make deps-system` (apt-get install prometheus)")
    return path


def scrape_config(jobs: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """A Prometheus configuration scraping ``/metrics`` of each job's ``host:port`` targets."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in jobs.items()
        ],
    }


class QueryError(AssertionError):
    """Prometheus answered a query with an error."""


@dataclass
class Prometheus:
    """A running Prometheus and a client for its HTTP API."""

    url: str
    process: asyncio.subprocess.Process
    log_path: Path
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10))

    async def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises :class:`QueryError`."""
        response = await self.http.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"{path} {params}: HTTP {response.status_code} {body}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        data = await self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise QueryError(f"{expr!r} returned a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    async def values(self, expr: str, by: str) -> dict[str, float]:
        """``expr``'s samples keyed by the value of label ``by``."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in await self.query(expr)}

    async def scalar(self, expr: str) -> float:
        """The single sample of ``expr`` (0 when it has none)."""
        result = await self.query(expr)
        if len(result) > 1:
            raise QueryError(f"{expr!r} returned {len(result)} series")
        return float(result[0]["value"][1]) if result else 0.0

    async def eventually_equal(
        self, expr: str, expected: float | Mapping[str, float], *, by: str = "", timeout: float = 20
    ) -> None:
        """Wait until ``expr`` (keyed by label ``by`` when given) equals ``expected``."""
        last: list[Any] = [None]

        async def probe() -> bool:
            last[0] = await self.values(expr, by) if by else await self.scalar(expr)
            return bool(last[0] == expected)

        try:
            await eventually(probe, timeout=timeout, interval=0.25)
        except AssertionError:
            raise AssertionError(f"{expr}: wanted {expected!r}, last got {last[0]!r}") from None

    async def targets_up(self) -> bool:
        """True once every configured target was scraped successfully."""
        active = (await self.api("targets"))["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _write_config(workdir: Path, settings: Mapping[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(settings, indent=2))  # JSON is valid YAML
    return config


def running_prometheus(
    workdir: Path, jobs: Mapping[str, Sequence[str]]
) -> contextlib.AbstractAsyncContextManager[Prometheus]:
    """Start Prometheus scraping ``jobs``; it is stopped (and waited for) on exit."""
    return prometheus_with_config(workdir, scrape_config(jobs))


@contextlib.asynccontextmanager
async def prometheus_with_config(
    workdir: Path, settings: Mapping[str, Any]
) -> AsyncIterator[Prometheus]:
    """Start Prometheus with the configuration ``settings`` on a free loopback port; it is
    stopped (and waited for) on exit."""
    config = _write_config(workdir, settings)
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
            cwd=workdir,
            stdout=log,
            stderr=log,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"prometheus exited: {prometheus.log()[-2000:]}")
            return (await prometheus.http.get(f"{prometheus.url}/-/ready")).status_code == 200

        await eventually(ready, timeout=STARTUP_TIMEOUT)
        yield prometheus
    finally:
        await prometheus.http.aclose()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def promtool_check(text: str) -> tuple[int, str]:
    """Run ``promtool check metrics`` on an exposition; returns (exit code, its output)."""
    process = await asyncio.create_subprocess_exec(
        binary("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(text.encode())
    return process.returncode or 0, output.decode(errors="replace")
