"""The broker's image, built from the repository's Dockerfile without any registry.

The local cluster's node runs the image users build with ``docker build``,
but nothing may be pulled from Docker Hub. So the Dockerfile's ``BASE`` (by
default ``python:3.11-slim``) is replaced by an image made here from Debian's
packages, and the Dockerfile is built unchanged by buildah (daemonless, as
root):

1. base: ``mmdebstrap`` of Debian ``bookworm`` from the machine's configured
   apt mirror (variant ``essential`` plus ``python3``, ``python3-venv``,
   ``python-is-python3``, ``passwd``, ``ca-certificates``: ``python`` with
   venv, ``groupadd`` and ``useradd``, as the Dockerfile expects), a tar that
   buildah turns into ``localhost/webrtc-broker-base:<suite>-<key>``;
2. broker: ``buildah build --build-arg BASE=<that>`` in two passes over one
   layer cache. The build stage (``python -m venv``, ``pip install .`` from
   PyPI) has the host's network, with the host's CA bundle and
   ``/etc/pip.conf`` mounted read-only for its RUN steps only (so a machine
   behind a TLS-inspecting proxy can reach PyPI; neither lands in the image);
   the second pass finds that stage in the cache and runs the runtime stage's
   RUN (``groupadd``/``useradd``) with no network at all;
3. archive: ``buildah push`` to an OCI layout whose index names the image
   ``docker.io/library/webrtc-broker:<version>`` (annotation
   ``io.containerd.image.name``, what the kubelet resolves the manifests'
   ``webrtc-broker:0.1.0`` to; ``org.opencontainers.image.ref.name`` holds
   the tag) for platform linux/<arch>, packed into one tar that
   ``ctr -n k8s.io images import`` accepts.

Everything is cached outside the checkout, so every clone on the machine
(CI's too) reuses it::

    ${XDG_CACHE_HOME:-~/.cache}/webrtc-broker/image-v1/
      base-<suite>-<key>.tar                the Debian root file system (<key>: suite,
                                            packages, mirror lines, options)
      storage-<driver>/                     buildah's storage: the base image (the broker's
                                            leaves it once archived)
      webrtc-broker-<version>-<key>.oci.tar the archive (<key>: the base's key, the
                                            Dockerfile, .dockerignore and every file
                                            the Dockerfile copies)

A changed source builds a new archive (the layers before the first changed
COPY come from the cache) and removes the older one. buildah's storage
driver is overlay when the kernel has it, else vfs; RUN steps are isolated
with runc (``--isolation oci``), or with chroot where runc cannot run
(chroot cannot take the network away: every RUN then has the host's).

Command line (``python -m tests.k8s.image``; ``make k8s-image``)::

    build                      build unless cached; print the archive's path
    import --address SOCKET    build unless cached, then import the archive into
                               the k8s.io namespace of that containerd
    import                     the same into the local node's containerd
                               (--optional: without a running node, build only
                               and say where the archive is)
    path                       print the archive's path if it is built (exit 1 if not)
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s import build as k8s_build

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NODE_STATE = ROOT / ".cache" / "k8s"

CACHE_VERSION = "v1"
"""The layout of the cache folder; a new layout gets a new folder."""

SUITE = "bookworm"
"""Debian 12: its python3 is 3.11, the Python of ``python:3.11-slim``."""

PACKAGES = (
    "passwd",
    "python3",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
    "libstdc++6",
)
"""On top of Debian's essential packages: what the Dockerfile uses (``python``
with venv; ``groupadd``/``useradd``), the CA certificates pip's TLS needs, and
the C++ runtime that wheels of the comm server's dependencies link against
(aiortc's ``av``, protobuf's ``upb``; ``python:3.11-slim`` has it)."""

DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
"""Documentation and translations stay out of the base, licences stay in."""

BASE_CONTAINERFILE = """\
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
"""

REPOSITORY = "docker.io/library/webrtc-broker"
"""The manifests' and the chart's ``webrtc-broker`` as the kubelet resolves it."""

NAMESPACE = "k8s.io"
"""containerd's namespace for the kubelet's images."""

HOST_TRUST = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pip.conf"))
"""Mounted read-only into the build stage's RUN steps when the host has them."""


def _say(message: str) -> None:
    print(f"[k8s image] {message}", file=sys.stderr, flush=True)


def version() -> str:
    """The image tag: the project's version, as the chart's appVersion and deploy/ use."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def reference() -> str:
    return f"{REPOSITORY}:{version()}"


def cache_dir() -> Path:
    return k8s_build.cache_root() / f"image-{CACHE_VERSION}"


def architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class Unavailable(RuntimeError):
    """This machine cannot build the image (a program is missing, or not root)."""


def check_tools() -> None:
    if os.geteuid() != 0:
        raise Unavailable("building the image needs root (buildah and mmdebstrap run as root)")
    missing = [tool for tool in ("buildah", "mmdebstrap", "runc") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(
            f"{', '.join(missing)} not installed: "
            "apt-get install buildah mmdebstrap runc (Debian's packages)"
        )


# -- the base ----------------------------------------------------------------


def apt_sources(suite: str = SUITE) -> list[str]:
    """One-line ``deb URI SUITE COMPONENTS`` entries of the machine's apt configuration
    for the suite and its -updates and -security suites (other repositories left out)."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    entries: list[str] = []
    apt = Path("/etc/apt")
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            # deb [options] URI SUITE COMPONENTS...; options (signed-by) are mmdebstrap's to find
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] in wanted:
                entries.append(" ".join(words))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for name in fields.get("suites", "").split():
                    if name in wanted:
                        entries.append(f"deb {uri} {name} {fields.get('components', 'main')}")
    if not entries:
        entries = [
            f"deb http://deb.debian.org/debian {suite} main",
            f"deb http://deb.debian.org/debian {suite}-updates main",
            f"deb http://deb.debian.org/debian-security {suite}-security main",
        ]
    return list(dict.fromkeys(entries))


def base_key() -> str:
    digest = hashlib.sha256()
    parts = [SUITE, *PACKAGES, *apt_sources(), *DPKG_OPTIONS, BASE_CONTAINERFILE, architecture()]
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def base_tar() -> Path:
    return cache_dir() / f"base-{SUITE}-{base_key()}.tar"


def base_reference() -> str:
    return f"localhost/webrtc-broker-base:{SUITE}-{base_key()}"


# -- what the Dockerfile copies ------------------------------------------------


def _ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        return []
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Whether a context path (or a folder above it) matches a .dockerignore pattern."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            # `**/x` matches x at any depth, the top included
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], pattern[3:]
            ):
                return True
    return False


def copied_sources() -> list[str]:
    """The context paths of the Dockerfile's COPY and ADD instructions (not ``--from``)."""
    sources: list[str] = []
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = words[1:]
        if any(word.startswith("--from") for word in arguments):
            continue
        arguments = [word for word in arguments if not word.startswith("--")]
        sources.extend(arguments[:-1])
    return sources


def context_files() -> list[Path]:
    """Every file the build copies into the image, as the build context has them."""
    patterns = _ignore_patterns()
    files: set[Path] = set()
    for source in copied_sources():
        for match in (
            sorted(ROOT.glob(source)) if any(c in source for c in "*?[") else [ROOT / source]
        ):
            candidates = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in candidates:
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and not _ignored(relative, patterns):
                    files.add(path)
    return sorted(files)


def broker_key() -> str:
    digest = hashlib.sha256()
    digest.update(base_key().encode() + b"\0" + DOCKERFILE.read_bytes() + b"\0")
    if DOCKERIGNORE.is_file():
        digest.update(DOCKERIGNORE.read_bytes() + b"\0")
    for path in context_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def archive_path() -> Path:
    return cache_dir() / f"webrtc-broker-{version()}-{broker_key()}.oci.tar"


def built() -> Path | None:
    path = archive_path()
    return path if path.is_file() else None


# -- buildah -------------------------------------------------------------------


@dataclass(frozen=True)
class Buildah:
    """buildah with the cache's storage: driver overlay if the kernel has it, else vfs."""

    driver: str

    @property
    def root(self) -> Path:
        return cache_dir() / f"storage-{self.driver}"

    @property
    def runroot(self) -> Path:
        # Transient state (locks, mount counts): under /run, like buildah's own default.
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path("/run") / "webrtc-broker-image" / digest

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def run(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.command(*args))} failed ({result.returncode}):\n"
                f"{result.stderr[-4000:]}"
            )
        return result.stdout

    def exists(self, image: str) -> bool:
        result = subprocess.run(
            self.command("inspect", "--type", "image", image),
            capture_output=True,
            timeout=120,
            check=False,
        )
        return result.returncode == 0

    def stream(self, args: list[str], started: float, timeout: float = 3600) -> None:
        """Run a build under ``nice``, printing its STEP lines; its whole output on failure."""
        command = ["nice", "-n", "10", *self.command(*args)]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line)
                if re.match(r"(\[\d+/\d+\] )?STEP \d+/\d+", line):
                    _say(f"  {time.monotonic() - started:5.0f} s  {line.strip()[:100]}")
                elif line.startswith("--> Using cache"):
                    _say("           (cached)")
            process.wait(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({process.returncode}):\n{''.join(lines[-80:])}"
            )


def storage_driver() -> str:
    """overlay when buildah can use it on this kernel and file system, else vfs."""
    probe = Buildah("overlay")
    try:
        probe.run("info", timeout=120)
    except RuntimeError as exc:
        _say(f"overlay storage unavailable, using vfs: {str(exc).splitlines()[-1]}")
        return "vfs"
    return "overlay"


def isolation(buildah: Buildah, base: str) -> str:
    """``oci`` (runc, RUN steps without network) if a container of the base runs so,
    else ``chroot``."""
    container = buildah.run("from", "--pull=never", "--quiet", base).strip()
    try:
        buildah.run("run", "--isolation", "oci", "--network", "none", container, "true")
        return "oci"
    except RuntimeError as exc:
        _say(f"runc isolation failed, using chroot (RUN steps keep the host's network): {exc}")
        return "chroot"
    finally:
        buildah.run("rm", container)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per machine (another clone may be building the same)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_base_tar(started: float) -> Path:
    target = base_tar()
    if target.is_file():
        return target
    sources = apt_sources()
    _say(f"base: mmdebstrap {SUITE} + {', '.join(PACKAGES)} from {sources[0].split()[1]}")
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    command = [
        "nice",
        "-n",
        "10",
        "mmdebstrap",
        "--quiet",
        "--variant=essential",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        "--format=tar",
        SUITE,
        str(partial),
        *sources,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    partial.replace(target)
    for old in cache_dir().glob(f"base-{SUITE}-*.tar"):
        if old != target:
            old.unlink(missing_ok=True)
    size = target.stat().st_size / 2**20
    _say(f"  {time.monotonic() - started:5.0f} s  base root file system ({size:.0f} MiB): {target}")
    return target


def _build_base_image(buildah: Buildah, started: float) -> str:
    image = base_reference()
    if buildah.exists(image):
        return image
    rootfs = _build_base_tar(started)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="base-context-") as context:
        (Path(context) / "Containerfile").write_text(BASE_CONTAINERFILE)
        os.link(rootfs, Path(context) / "rootfs.tar")
        buildah.stream(
            ["build", "--pull=never", "--layers=false", "--force-rm", "-t", image, context],
            started,
        )
    _say(f"  {time.monotonic() - started:5.0f} s  base image {image}")
    return image


def _trust_volumes() -> list[str]:
    return [f"--volume={path}:{path}:ro" for path in HOST_TRUST if path.is_file()]


def _write_archive(buildah: Buildah, image: str, target: Path) -> None:
    """Push the image to an OCI layout, name it for containerd, pack it into one tar."""
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="oci-") as folder:
        layout = Path(folder) / "layout"
        buildah.run("push", "--quiet", "--format", "oci", image, f"oci:{layout}:{image}")
        index_path = layout / "index.json"
        index: dict[str, Any] = json.loads(index_path.read_text())
        for descriptor in index["manifests"]:
            descriptor["annotations"] = {
                "io.containerd.image.name": image,
                "org.opencontainers.image.ref.name": image.rsplit(":", 1)[1],
            }
            descriptor["platform"] = {"architecture": architecture(), "os": "linux"}
        index_path.write_text(json.dumps(index, separators=(",", ":")))
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            for name in ("oci-layout", "index.json"):
                archive.add(layout / name, arcname=name)
            archive.add(layout / "blobs", arcname="blobs")
        partial.replace(target)


def build(*, force: bool = False) -> Path:
    """The broker's OCI archive, built first unless cached; prints progress and time."""
    check_tools()
    looked = time.monotonic()
    target = archive_path()  # hashes what the Dockerfile copies
    if not force and target.is_file():
        _say(f"cached ({time.monotonic() - looked:.1f} s to check the sources): {target}")
        return target
    with _lock():
        if not force and target.is_file():
            return target  # another process built it while this one waited
        started = time.monotonic()
        _say(f"building {reference()} from {DOCKERFILE} into {target}")
        buildah = Buildah(storage_driver())
        if buildah.root.is_dir():
            # Working containers an interrupted build left (this storage is this tool's).
            buildah.run("rm", "--all")
        base = _build_base_image(buildah, started)
        mode = isolation(buildah, base)
        _say(f"  storage {buildah.driver}, isolation {mode}: {buildah.root}")
        common = [
            "build",
            "--pull=never",
            "--layers",
            "--force-rm",  # a failed step's container too
            "--format=oci",
            f"--isolation={mode}",
            f"--build-arg=BASE={base}",
            f"--file={DOCKERFILE}",
        ]
        _say("broker, build stage (network for pip)")
        buildah.stream(
            [*common, "--network=host", *_trust_volumes(), "--target=build", str(ROOT)], started
        )
        _say("broker, runtime stage (no network)")
        network = "none" if mode == "oci" else "host"
        image = reference()
        buildah.stream([*common, f"--network={network}", f"--tag={image}", str(ROOT)], started)
        _say(f"  {time.monotonic() - started:5.0f} s  archive")
        _write_archive(buildah, image, target)
        for old in cache_dir().glob("webrtc-broker-*.oci.tar"):
            if old != target:
                old.unlink(missing_ok=True)  # older sources' image
        size = target.stat().st_size / 2**20
        _say(f"  {time.monotonic() - started:5.0f} s  archive written ({size:.0f} MiB)")
        # The archive is the product: the image (526 MB unpacked) and its intermediate
        # layers go; every change of sources reinstalls from pip anyway. The base stays.
        buildah.run("rmi", image, timeout=600)
        buildah.run("rmi", "--prune", timeout=600)
        _say(f"built in {time.monotonic() - started:.0f} s ({size:.0f} MiB): {target}")
    return target


# -- containerd ----------------------------------------------------------------


def ctr(address: Path, *args: str, timeout: float = 600) -> str:
    command = ["ctr", "--address", str(address), "--namespace", NAMESPACE, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def archive_digest(archive: Path) -> str:
    """The digest of the archive's image manifest (what ``ctr images ls`` shows)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index: dict[str, Any] = json.load(member)
    return str(index["manifests"][0]["digest"])


def import_archive(address: Path, archive: Path | None = None) -> str:
    """Import the archive into the containerd at ``address`` (namespace k8s.io), unpacked
    for its default snapshotter; returns the image's name."""
    archive = archive or build()
    started = time.monotonic()
    present = {row.ref: row.digest for row in images(address)}
    if present.get(reference()) == archive_digest(archive):
        _say(f"{reference()} is already in {address} ({NAMESPACE}), the same manifest")
        return reference()
    ctr(address, "images", "import", str(archive))
    _say(
        f"imported {reference()} into {address} ({NAMESPACE}) in {time.monotonic() - started:.0f} s"
    )
    return reference()


def tag(address: Path, target: str, source: str | None = None) -> str:
    """Name the imported image (``source``, by default :func:`reference`) ``target`` too,
    in the k8s.io namespace of the containerd at ``address``: the same manifest under a
    second reference (``ctr images tag --force``, so a present ``target`` is renamed)."""
    ctr(address, "images", "tag", "--force", source or reference(), target)
    return target


@dataclass(frozen=True)
class ImageRow:
    ref: str
    digest: str
    platforms: tuple[str, ...]


def images(address: Path) -> list[ImageRow]:
    """``ctr images ls`` of the k8s.io namespace."""
    rows = ctr(address, "images", "ls").splitlines()[1:]
    result = []
    for row in rows:
        words = row.split()
        # REF TYPE DIGEST SIZE(number unit) PLATFORMS LABELS
        if len(words) >= 6:
            result.append(ImageRow(words[0], words[2], tuple(words[5].split(","))))
    return result


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def node_address(state_dir: Path = NODE_STATE) -> Path | None:
    """The socket of the local node's running containerd: named in ``state.json`` or
    found under ``node/``; None when no node runs."""
    candidates: list[Path] = []

    def collect(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str) and value.endswith("containerd.sock"):
            candidates.append(Path(value))

    with contextlib.suppress(OSError, ValueError):
        collect(json.loads((state_dir / "state.json").read_text()))
    node = state_dir / "node"
    if node.is_dir():
        candidates.extend(sorted(node.rglob("containerd.sock")))
    for candidate in candidates:
        if candidate.is_socket() and _connectable(candidate):
            return candidate
    return None


DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
]
"""A private containerd for images only: no CRI (the kubelet's), no other snapshotters."""


TMPFS_SIZE = "3g"
"""Room for the archive's content and its unpacked layers (139 MB + 526 MB) and a container."""


class PrivateContainerd:
    """Debian's containerd with its own root, state and socket in a temporary folder
    (never the system's /run/containerd socket); the CRI plugin off. Stopping it kills
    its shims, unmounts what it left mounted and removes the folder.

    containerd 1.6 puts its shims' sockets in /run/containerd/s/ whatever its state
    folder (named by a hash of its own socket's path, so they never meet another
    containerd's); each shim removes its socket when its container is deleted."""

    def __init__(self) -> None:
        if shutil.which("containerd") is None or shutil.which("ctr") is None:
            raise Unavailable("containerd not installed: apt-get install containerd")
        # Short: the socket path must fit a sockaddr_un (108 bytes).
        self.folder = Path(tempfile.mkdtemp(prefix="wb-ctrd-"))
        self.address = self.folder / "containerd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        # Its root on a tmpfs of its own (when it can be mounted): deleting an unpacked
        # image file by file is slow on a disk mounted with online discard, unmounting is not.
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={TMPFS_SIZE},mode=0700",
                "tmpfs",
                str(self.folder),
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        config = self.folder / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.folder / "root"}"',
                    f'state = "{self.folder / "state"}"',
                    f"disabled_plugins = {json.dumps(DISABLED_PLUGINS)}",
                    "[grpc]",
                    f'  address = "{self.address}"',
                    "[ttrpc]",
                    f'  address = "{self.address}.ttrpc"',
                    "[debug]",
                    '  address = ""',
                    "[metrics]",
                    '  address = ""',
                    '[plugins."io.containerd.internal.v1.opt"]',
                    f'  path = "{self.folder / "opt"}"',
                    "",
                ]
            )
        )
        log = (self.folder / "containerd.log").open("wb")
        self.process = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.process.returncode}):\n{self.log()}")
            if self.address.is_socket() and _connectable(self.address):
                with contextlib.suppress(RuntimeError):
                    ctr(self.address, "version", timeout=10)
                    return
            time.sleep(0.2)
        raise RuntimeError(f"containerd did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "containerd.log"
        return path.read_text(errors="replace")[-8000:] if path.is_file() else ""

    def _shims(self) -> list[int]:
        """Processes started for this containerd (its shims name its socket)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.address).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids

    def _mounts(self) -> list[str]:
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(self.folder) or point.startswith(f"{self.folder}/"):
                points.append(point)
        return points

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self._shims():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in reversed(self._mounts()):  # the deepest were mounted last
            subprocess.run(["umount", "--lazy", point], check=False, timeout=60)
        # rm skips anything still mounted (a mount that would not go) rather than
        # deleting through it.
        subprocess.run(
            ["rm", "-rf", "--one-file-system", str(self.folder)], check=False, timeout=600
        )

    def __enter__(self) -> PrivateContainerd:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        elif command == "import":
            if "--address" in argv:
                address: Path | None = Path(argv[argv.index("--address") + 1])
            else:
                address = node_address()
            archive = build()
            if address is None:
                message = (
                    f"no local node's containerd runs (looked in {NODE_STATE}): "
                    f"built only, the archive is {archive}"
                )
                if "--optional" in argv:
                    _say(message)
                    return 0
                _say(message)
                return 1
            print(import_archive(address, archive))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Unavailable as exc:
        _say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
