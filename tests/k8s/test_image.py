"""The broker's image as the local cluster's node gets it, built without a registry.

Proves that ``tests/k8s/image.py`` turns the repository's Dockerfile (on a
Debian base made here, no Docker Hub) into an OCI archive that containerd's
``ctr -n k8s.io images import`` accepts under the name the manifests use
(``webrtc-broker:0.1.0`` is ``docker.io/library/webrtc-broker:0.1.0`` to the
kubelet) for this machine's platform, and that the imported image starts:
``webrtc-broker --help`` exits 0 and prints usage, as uid and gid 10001 (the
operator's pod specs' runAsUser/runAsGroup). The containerd is a private one
(its own root, state and socket in a temporary folder), and the test checks
that stopping it leaves no process, mount or folder behind. The archive is
rebuilt exactly when what the Dockerfile copies changes: the cache key follows
the copied files and ignores the rest of the checkout.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s import image

BUILD_TIMEOUT = 1800
"""A cold build (Debian base, PyPI downloads) takes minutes on a loaded 2-core machine;
a cached one under a second."""


@pytest.fixture(scope="module")
def archive(pytestconfig: pytest.Config) -> Path:
    """The archive, built unless cached, with its progress shown (a cold build is long)."""
    try:
        image.check_tools()
    except image.Unavailable as exc:
        pytest.skip(f"the image cannot be built on this machine: {exc}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if image.built() is None and capture is not None:
        with capture.global_and_fixture_disabled():
            return image.build()
    return image.build()


@pytest.fixture
def containerd() -> Iterator[image.PrivateContainerd]:
    try:
        instance = image.PrivateContainerd()
    except image.Unavailable as exc:
        pytest.skip(f"no containerd to import into: {exc}")
    with instance:
        yield instance
    # What it started and mounted is gone with it.
    assert not instance.folder.exists()
    assert instance._mounts() == []
    assert instance._shims() == []


def _run(containerd: image.PrivateContainerd, *args: str) -> subprocess.CompletedProcess[str]:
    """``ctr run --rm`` of the imported image (runc), args replacing its ENTRYPOINT/CMD."""
    command = [
        "ctr",
        "--address",
        str(containerd.address),
        "--namespace",
        image.NAMESPACE,
        "run",
        "--rm",
        image.reference(),
        f"webrtc-broker-test-{uuid.uuid4().hex[:8]}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_archive_imports_under_the_manifests_name_and_starts(
    archive: Path, containerd: image.PrivateContainerd
) -> None:
    name = image.import_archive(containerd.address, archive)
    assert name == "docker.io/library/webrtc-broker:0.1.0"

    rows = {row.ref: row for row in image.images(containerd.address)}
    assert list(rows) == [name]
    assert rows[name].platforms == (f"linux/{image.architecture()}",)
    assert rows[name].digest == image.archive_digest(archive)

    # The image's own ENTRYPOINT and CMD: `webrtc-broker --help`.
    started = _run(containerd)
    assert started.returncode == 0, started.stderr
    assert "Usage: webrtc-broker" in started.stdout
    assert "operator" in started.stdout

    identity = _run(containerd, "id", "-u")
    assert identity.returncode == 0, identity.stderr
    assert identity.stdout.strip() == "10001"
    group = _run(containerd, "id", "-g")
    assert group.stdout.strip() == "10001"


def _checkout(root: Path) -> None:
    """A miniature build context: a Dockerfile copying two paths, a .dockerignore."""
    (root / "Dockerfile").write_text(
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\n"
        "COPY pyproject.toml ./\n"
        "COPY pkg ./pkg\n"
        "FROM ${BASE}\n"
        "COPY --from=build /opt /opt\n"
    )
    (root / ".dockerignore").write_text("**/__pycache__\n*.egg-info\ntests\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0.1.0'\n")
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "module.py").write_text("VALUE = 1\n")
    (root / "pkg" / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _checkout(tmp_path)
    monkeypatch.setattr(image, "ROOT", tmp_path)
    monkeypatch.setattr(image, "DOCKERFILE", tmp_path / "Dockerfile")
    monkeypatch.setattr(image, "DOCKERIGNORE", tmp_path / ".dockerignore")
    return tmp_path


def test_cache_key_follows_what_the_dockerfile_copies(checkout: Path) -> None:
    files = [path.relative_to(checkout).as_posix() for path in image.context_files()]
    assert files == ["pkg/module.py", "pyproject.toml"]

    key = image.broker_key()
    # Bytecode, tests and files no COPY names are not in the image: same key.
    (checkout / "pkg" / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"\1")
    (checkout / "tests" / "test_x.py").write_text("changed")
    (checkout / "notes.txt").write_text("not copied")
    assert image.broker_key() == key

    (checkout / "pkg" / "module.py").write_text("VALUE = 2\n")
    changed = image.broker_key()
    assert changed != key
    (checkout / "pkg" / "new.py").write_text("")
    assert image.broker_key() != changed
    (checkout / "Dockerfile").write_text((checkout / "Dockerfile").read_text() + "USER 1\n")
    assert image.broker_key() not in (key, changed)
