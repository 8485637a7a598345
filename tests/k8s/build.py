"""Builds the Kubernetes control plane the tests run, from pinned Go module versions.

``tests/k8s/controlplane/`` is a small Go module whose ``main.go`` links etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and the node's
kubelet and kube-proxy into one executable (the first argument names the
component): the packages they share are compiled once, and the node costs
the build little more than its own packages and a relink. Go is needed only here,
to build test infrastructure; nothing of the product depends on it.

The executable is cached outside the checkout, so that every clone on the
machine (CI's among them) reuses it::

    ${XDG_CACHE_HOME:-~/.cache}/webrtc-broker/k8s-v1.34.4/controlplane-<key>

where ``<key>`` hashes everything the build depends on (the wrapper's
``go.mod``, ``go.sum`` and ``main.go``, the Go version, the flags): a changed
wrapper builds anew. The Go module and build caches live beside it
(``gomod/``, ``go-build/``), so a fresh clone downloads nothing twice.

The node needs two more programs, built the same way into the same cache:
CoreDNS (``tests/k8s/coredns/``, a module of its own pinned at
``COREDNS_VERSION``: only the plugins the cluster's DNS uses) and the static
programs of the node's container images (``tests/k8s/node/cmd/``: the
sandbox's ``pause`` and the tests' ``probe``, standard library only)::

    ${XDG_CACHE_HOME:-~/.cache}/webrtc-broker/coredns-v1.14.1/coredns-<key>
    ${XDG_CACHE_HOME:-~/.cache}/webrtc-broker/node-images/{pause,probe}-<key>

Command line (``python -m tests.k8s.build``)::

    build        build unless cached; print the executable's path
                 (--optional: without Go, say so and exit 0)
    path         print the executable's path if it is built (exit 1 if not)
    gomod        regenerate controlplane/go.mod from the pinned versions
    node         build CoreDNS and the image programs unless cached; print their paths
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
"""k8s.io/kubernetes. v1.34 keeps the tests' kubectl 1.33 within the supported
skew (one minor version), and its kubelet still runs on a cgroup v1 host by
default and supports containerd 1.x; 1.34.4 is its newest patch release
served by the module proxy when this was pinned."""

ETCD_VERSION = "v3.6.4"
"""go.etcd.io/etcd/server/v3: the version k8s.io/kubernetes v1.34 itself
requires (its etcd client libraries are v3.6.4 too, and kubeadm 1.34 ships
etcd 3.6.4), so the two resolve together without moving any of
Kubernetes' own dependencies."""

COREDNS_VERSION = "v1.14.1"
"""github.com/coredns/coredns: the newest release whose Kubernetes client
libraries are the 1.34 line (k8s.io/client-go v0.34.3; 1.14.2 moved to
v0.35), so its kubernetes plugin speaks the API of the server it watches."""

MODULE_DIR = Path(__file__).resolve().parent / "controlplane"
COREDNS_DIR = Path(__file__).resolve().parent / "coredns"
IMAGES_DIR = Path(__file__).resolve().parent / "node" / "cmd"
IMAGE_PROGRAMS = ("pause", "probe")
MODULE_PATH = "webrtc-broker.test/controlplane"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)


class GoUnavailable(RuntimeError):
    """No usable Go toolchain: the control plane cannot be built here."""


def staging_version(kubernetes: str = KUBERNETES_VERSION) -> str:
    """The published version of the ``k8s.io/<staging>`` modules: v1.34.4 -> v0.34.4."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes)
    if match is None:
        raise ValueError(f"not a Kubernetes release: {kubernetes}")
    return f"v0.{match[1]}.{match[2]}"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/webrtc-broker`` (``~/.cache/webrtc-broker`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "webrtc-broker"


def version_dir() -> Path:
    return cache_root() / f"k8s-{KUBERNETES_VERSION}"


def go_env() -> dict[str, str]:
    """The environment of every ``go`` command here: caches outside the checkout."""
    root = cache_root()
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "gomod"),
        GOCACHE=str(root / "go-build"),
        GOFLAGS="-mod=mod -buildvcs=false",
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",
        GOWORK="off",
    )
    return env


def go_binary() -> str:
    """``go`` from PATH, else from the official install's place (/usr/local/go/bin)."""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise GoUnavailable("Go is not installed (the control plane is built with it)")
    return go


def go_version() -> str:
    output = subprocess.run(
        [go_binary(), "env", "GOVERSION"],
        capture_output=True,
        text=True,
        check=True,
        env=go_env(),
        timeout=60,
    ).stdout.strip()
    match = re.fullmatch(r"go1\.(\d+)(\.\d+)?.*", output)
    if match is None or int(match[1]) < 24:
        raise GoUnavailable(f"Go {output} is too old: Kubernetes 1.34 needs Go 1.24 or newer")
    return output


def ldflags() -> str:
    """Version stamps as Kubernetes' own build sets them, so ``/version`` says v1.34.4."""
    minor = KUBERNETES_VERSION.split(".")[1]
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = [
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
        for key, value in values.items()
    ]
    return " ".join([*flags, "-s", "-w"])


def build_key() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update(name.encode() + b"\0" + (MODULE_DIR / name).read_bytes() + b"\0")
    digest.update(go_version().encode() + b"\0" + ldflags().encode())
    return digest.hexdigest()[:12]


def binary_path() -> Path:
    return version_dir() / f"controlplane-{build_key()}"


def built() -> Path | None:
    """The cached executable for the current wrapper, or None."""
    try:
        path = binary_path()
    except GoUnavailable:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One build at a time per machine (another clone may be building the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"[k8s build] {message}", file=sys.stderr, flush=True)


def _go(
    args: list[str],
    *,
    progress_total: int = 0,
    timeout: float = 3600,
    cwd: Path = MODULE_DIR,
) -> str:
    """Run ``nice go ARGS`` in a module (the wrapper's by default); with a total, report
    compiled packages."""
    command = ["nice", "-n", "10", go_binary(), *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    started = time.monotonic()
    done = [0]
    finished = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            # `go build -v` names each package it compiles, one a line.
            if progress_total and re.fullmatch(r"[\w./~-]+", line.strip()):
                done[0] += 1
            else:
                errors.append(line)

    def report() -> None:
        while not finished.wait(30):
            elapsed = time.monotonic() - started
            if done[0] >= progress_total:
                _say(f"  linking, {elapsed:.0f} s")
            else:
                _say(f"  compiled {done[0]}/{progress_total} packages, {elapsed:.0f} s")

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    if progress_total:
        threading.Thread(target=report, daemon=True).start()
    assert process.stdout is not None
    try:
        output = process.stdout.read()
        process.wait(timeout=timeout)
    except BaseException:
        process.kill()
        raise
    finally:
        finished.set()
    reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{''.join(errors)}")
    return output


def build(*, force: bool = False) -> Path:
    """The control-plane executable, built first unless cached; prints progress and time."""
    target = binary_path()
    if not force and built() is not None:
        return target
    with _lock(version_dir()):
        if not force and built() is not None:
            return target  # another process built it while this one waited
        started = time.monotonic()
        _say(
            f"building Kubernetes {KUBERNETES_VERSION} and etcd {ETCD_VERSION} "
            f"({', '.join(COMPONENTS)}) into {target}; the first build takes many minutes"
        )
        _say("step 1/2: module downloads and the package list")
        packages = _go(["list", "-deps", "."]).split()  # the standard library's too
        _say(f"  {len(packages)} packages to build, {time.monotonic() - started:.0f} s so far")
        _say("step 2/2: compile and link")
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        _go(
            ["build", "-v", "-trimpath", "-ldflags", ldflags(), "-o", str(partial), "."],
            progress_total=len(packages),
        )
        partial.replace(target)
        for old in version_dir().glob("controlplane-*"):
            if old != target and not old.name.endswith(".partial"):
                old.unlink(missing_ok=True)  # an older wrapper's build
        size = target.stat().st_size / 2**20
        _say(f"built in {time.monotonic() - started:.0f} s ({size:.0f} MiB): {target}")
    return target


def _sources_key(folder: Path) -> str:
    """A hash of a module's go.mod, go.sum and Go files, the Go version and the flags."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.name in ("go.mod", "go.sum") or path.suffix == ".go":
            name = str(path.relative_to(folder)).encode()
            digest.update(name + b"\0" + path.read_bytes() + b"\0")
    digest.update(go_version().encode() + b"\0-s -w")
    return digest.hexdigest()[:12]


def _build_program(folder: Path, package: str, target: Path) -> Path:
    """``go build`` one static program of a module into ``target`` unless it is there."""
    if target.is_file():
        return target
    with _lock(target.parent):
        if target.is_file():
            return target
        started = time.monotonic()
        _say(f"building {package} of {folder} into {target}")
        packages = _go(["list", "-deps", package], cwd=folder).split()
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        _go(
            ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), package],
            progress_total=len(packages),
            cwd=folder,
        )
        partial.replace(target)
        stem = target.name.rsplit("-", 1)[0]
        for old in target.parent.glob(f"{stem}-*"):
            if old != target and not old.name.endswith(".partial"):
                old.unlink(missing_ok=True)
        size = target.stat().st_size / 2**20
        _say(f"built in {time.monotonic() - started:.0f} s ({size:.1f} MiB): {target}")
    return target


def build_coredns() -> Path:
    """CoreDNS with the cluster DNS's plugins (``tests/k8s/coredns/``), built unless cached."""
    folder = cache_root() / f"coredns-{COREDNS_VERSION}"
    return _build_program(COREDNS_DIR, ".", folder / f"coredns-{_sources_key(COREDNS_DIR)}")


def build_image_programs() -> dict[str, Path]:
    """The static programs of the node's images (``pause``, ``probe``), built unless cached."""
    key = _sources_key(IMAGES_DIR)
    folder = cache_root() / "node-images"
    return {
        name: _build_program(IMAGES_DIR, f"./{name}", folder / f"{name}-{key}")
        for name in IMAGE_PROGRAMS
    }


def write_go_mod() -> None:
    """Regenerate ``controlplane/go.mod`` from the pinned versions, then ``go mod tidy``.

    k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...)
    at v0.0.0 and replaces them with folders of its own repository; a module
    that requires it must replace each with the published twin of the same
    release. The list is read from Kubernetes' own go.mod.
    """
    download = subprocess.run(
        [go_binary(), "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
        env=go_env(),
        cwd=MODULE_DIR,
        timeout=600,
    )
    upstream = Path(json.loads(download.stdout)["GoMod"]).read_text()
    staging = sorted(
        set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\1\s*$", upstream, re.M))
    )
    if not staging:
        raise RuntimeError("no staging replacements found in Kubernetes' go.mod")
    twin = staging_version()
    lines = [
        "// Generated by `python -m tests.k8s.build gomod`; go.sum by `go mod tidy`.",
        f"module {MODULE_PATH}",
        "",
        "go 1.24.0",
        "",
        "require (",
        f"\tgo.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        f"\tk8s.io/kubernetes {KUBERNETES_VERSION}",
        ")",
        "",
        "replace (",
        *(f"\t{module} => {module} {twin}" for module in staging),
        ")",
        "",
    ]
    (MODULE_DIR / "go.mod").write_text("\n".join(lines))
    (MODULE_DIR / "go.sum").unlink(missing_ok=True)
    _go(["mod", "tidy"])
    _say(f"wrote {MODULE_DIR / 'go.mod'}: {len(staging)} staging modules at {twin}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    try:
        if command == "build":
            print(build(force="--force" in argv))
        elif command == "path":
            path = built()
            if path is None:
                return 1
            print(path)
        elif command == "gomod":
            write_go_mod()
        elif command == "node":
            print(build_coredns())
            for path in build_image_programs().values():
                print(path)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except GoUnavailable as exc:
        print(f"cannot build the control plane: {exc}", file=sys.stderr)
        if "--optional" in argv:
            print("the tests that need it will be skipped", file=sys.stderr)
            return 0
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
