"""Shared fixtures: a process cluster per test, with its logs printed when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.support import Cluster

# The real Kubernetes control plane (`control_plane`), built and cached by tests/k8s.
pytest_plugins = ["tests.k8s.fixtures", "tests.k8s.support"]


@pytest.fixture
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """An empty cluster: tests start the coordinator and servers they need."""
    instance = Cluster(tmp_path)
    try:
        yield instance
    finally:
        await instance.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(instance.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
