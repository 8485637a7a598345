"""Pytest plugin: the real cluster as session fixtures (``control_plane``, ``node``,
``broker_image``): one cluster for every Kubernetes suite of a run.

Registered by ``tests/conftest.py``. What the collected tests use is built
(or found in the cache) right after collection, outside any test's timeout:
the control plane's executable, CoreDNS and the node's images, the broker's
image; a first build prints its progress. Without Go (or root, for the
image) the tests that need them are skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext

import pytest

from tests.k8s import build, image
from tests.k8s.cluster import ControlPlane, running
from tests.k8s.node import Node, NodeUnavailable

FIXTURE = "control_plane"
_unavailable: dict[str, str] = {}
"""Why a fixture cannot be had here, by fixture name (a build that failed)."""


def _builds(used: set[str]) -> list[tuple[str, Callable[[], object]]]:
    """What the collected tests need built, in order: (the fixture it is for, how)."""
    steps: list[tuple[str, Callable[[], object]]] = [(FIXTURE, build.build)]
    if used & {"node", "broker_image"}:
        steps += [("node", build.build_coredns), ("node", build.build_image_programs)]
    if "broker_image" in used:
        steps.append(("broker_image", image.build))
    return steps


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Build what the collected tests need before any runs, outside their timeouts (a cold
    build takes minutes), showing the builds' progress."""
    used = {name for item in items for name in getattr(item, "fixturenames", ())}
    if config.option.collectonly or FIXTURE not in used:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    hold = capture.global_and_fixture_disabled() if capture is not None else nullcontext()
    with hold:
        for fixture, step in _builds(used):
            try:
                step()
            except (build.GoUnavailable, image.Unavailable) as exc:
                _unavailable[fixture] = str(exc)
                if fixture == FIXTURE:
                    return  # nothing else can run without it


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

    One started with ``make k8s-up`` is reused and left running; otherwise one is
    started for the session and stopped (its state removed) at the end.
    """
    if FIXTURE in _unavailable:
        pytest.skip(f"no Kubernetes control plane: {_unavailable[FIXTURE]}")
    try:
        with running() as plane:
            yield plane
    except build.GoUnavailable as exc:
        pytest.skip(f"no Kubernetes control plane: {exc}")


@pytest.fixture(scope="session")
def node(control_plane: ControlPlane) -> Iterator[Node]:
    """The control plane's node (kubelet, containerd, CNI, kube-proxy, CoreDNS): one that
    runs (``make k8s-up``) is reused and left running; else it is grown for the session
    and removed at its end. Pods need ``tests.k8s.node.TOLERATION`` to land on it."""
    if "node" in _unavailable:
        pytest.skip(f"no node: {_unavailable['node']}")
    grown = Node(control_plane)
    if grown.running():
        yield grown
        return
    try:
        grown.up()
    except NodeUnavailable as exc:
        pytest.skip(f"this machine cannot run the node: {exc}")
    try:
        yield grown
    finally:
        grown.down()


@pytest.fixture(scope="session")
def broker_image(node: Node) -> str:
    """The broker's image (the repository's Dockerfile, built here without a registry,
    cached), imported into the node's containerd; the name pods use."""
    if "broker_image" in _unavailable:
        pytest.skip(f"the broker's image cannot be built here: {_unavailable['broker_image']}")
    try:
        image.import_archive(node.socket, image.build())
    except image.Unavailable as exc:
        pytest.skip(f"the broker's image cannot be built here: {exc}")
    return image.reference()
