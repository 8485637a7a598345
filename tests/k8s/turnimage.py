"""A coturn image for the local cluster's node, from Debian's ``coturn`` package.

The managed TURN server of a BrokerCluster (``spec.turn.mode: Managed``) runs a
coturn image; nothing may be pulled from a registry here, so the image is made
on this machine: ``mmdebstrap`` of Debian ``bookworm`` (variant ``essential``,
which has ``/bin/sh``, plus ``coturn``) from the machine's apt mirror, written
as the one layer of an OCI image layout whose index names it
``webrtc-broker.test/coturn:<key>``, then imported into the node's containerd
(``ctr -n k8s.io images import``), as the node's own images are
(``tests/k8s/node/images.py``). The operator's coturn Deployment runs
``sh -c ... turnserver`` itself, so the image needs no entrypoint.

Cached outside the checkout (``<key>``: suite, packages, mirror lines,
options)::

    ${XDG_CACHE_HOME:-~/.cache}/webrtc-broker/turn-image/coturn-<key>.oci.tar

Command line: ``python -m tests.k8s.turnimage build|import``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.k8s import image
from tests.k8s.node.images import REPOSITORY, write_image

PACKAGES = ("coturn",)
TURNSERVER = "/usr/bin/turnserver"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "webrtc-broker" / "turn-image"


def key() -> str:
    digest = hashlib.sha256()
    parts = [image.SUITE, *PACKAGES, *image.apt_sources(), *image.DPKG_OPTIONS]
    for part in (*parts, image.architecture()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def reference() -> str:
    return f"{REPOSITORY}/coturn:{key()}"


def archive_path() -> Path:
    return cache_dir() / f"coturn-{key()}.oci.tar"


def _rootfs(target: Path) -> None:
    """Debian's essential packages and coturn, as one tar (mmdebstrap's own format)."""
    command = [
        *("nice", "-n", "10", "mmdebstrap", "--quiet", "--variant=essential"),
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in image.DPKG_OPTIONS),
        "--format=tar",
        image.SUITE,
        str(target),
        *image.apt_sources(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")


def build() -> Path:
    """The archive, built unless cached (one build at a time per machine)."""
    target = archive_path()
    if target.is_file():
        return target
    image.check_tools()
    cache_dir().mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with image._lock():  # the image builder's machine-wide lock: one mmdebstrap at a time
        if target.is_file():
            return target
        rootfs = target.with_name(f"rootfs-{os.getpid()}.tar")
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            print(f"[turn image] mmdebstrap {image.SUITE} + {', '.join(PACKAGES)}", flush=True)
            _rootfs(rootfs)
            settings = {"Env": [f"PATH={PATH}"], "Cmd": [TURNSERVER]}
            write_image(rootfs, reference(), partial, settings, arch=image.architecture())
            partial.replace(target)
        finally:
            rootfs.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        for old in cache_dir().glob("coturn-*.oci.tar"):
            if old != target:
                old.unlink(missing_ok=True)
    size = target.stat().st_size / 2**20
    took = time.monotonic() - started
    print(f"[turn image] built in {took:.0f} s ({size:.0f} MiB): {target}", flush=True)
    return target


def import_into(address: Path) -> str:
    """Build unless cached, then import into the containerd at ``address``; the reference."""
    archive = build()
    present = {row.ref: row.digest for row in image.images(address)}
    if present.get(reference()) != image.archive_digest(archive):
        image.ctr(address, "images", "import", str(archive))
    return reference()


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        print(build())
        return 0
    if argv[:1] == ["import"]:
        address = image.node_address()
        if address is None:
            print("no node runs here", file=sys.stderr)
            return 1
        print(import_into(address))
        return 0
    print("usage: python -m tests.k8s.turnimage build|import", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
