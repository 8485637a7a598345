"""Pytest plugin: the real control plane as a session fixture (``control_plane``).

Registered by ``tests/conftest.py``. When a collected test uses the fixture,
the executable is built (or found in the cache) right after collection,
outside any test's timeout; the first build prints its progress. Without Go
those tests are skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s import build
from tests.k8s.cluster import ControlPlane, running

FIXTURE = "control_plane"
_unavailable: list[str] = []


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.option.collectonly or not any(
        FIXTURE in getattr(item, "fixturenames", ()) for item in items
    ):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    try:
        if build.built() is None and capture is not None:
            with capture.global_and_fixture_disabled():  # show the build's progress
                build.build()
        else:
            build.build()
    except build.GoUnavailable as exc:
        _unavailable.append(str(exc))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

    One started with ``make k8s-up`` is reused and left running; otherwise one is
    started for the session and stopped (its state removed) at the end.
    """
    if _unavailable:
        pytest.skip(f"no Kubernetes control plane: {_unavailable[0]}")
    try:
        with running() as plane:
            yield plane
    except build.GoUnavailable as exc:
        pytest.skip(f"no Kubernetes control plane: {exc}")
