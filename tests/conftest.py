"""Shared fixtures: a process cluster per test, with its logs printed when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.support import Cluster

# The real Kubernetes control plane (`control_plane`), built and cached by tests/k8s.
pytest_plugins = ["tests.k8s.fixtures", "tests.k8s.support"]


MARKER_OF_FOLDER = {
    "unit": "unit",
    "coordinator": "unit",
    "operator": "unit",
    "e2e": "e2e",
    "fuzz": "e2e",
    "metrics": "e2e",
    "net": "e2e",
    "turn": "e2e",
    "bench": "e2e",
    "packaging": "e2e",
    "sdk": "e2e",
    "browser": "browser",
    "k8s": "k8s",
    "helm": "helm",
}
"""Each test folder's marker (pyproject.toml lists them): ``pytest -m unit`` runs the
in-process tests (``make unit``), ``-m "not k8s"`` skips the Kubernetes node, ..."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        folder = Path(item.path).relative_to(tests).parts[0]
        marker = MARKER_OF_FOLDER.get(folder)
        if marker is None:
            raise pytest.UsageError(f"tests/{folder} has no marker in tests/conftest.py")
        item.add_marker(marker)


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
