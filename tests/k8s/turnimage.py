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
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.k8s import image
from tests.k8s.node.images import REPOSITORY

PACKAGES = ("coturn",)
TURNSERVER = "/usr/bin/turnserver"


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


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _member(name: str, size: int, *, folder: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.size = size
    return info


def _oci_archive(layer: Path, ref: str, out: Path) -> None:
    """An OCI image layout (a tar) of ``ref``: ``layer`` as its one layer, linux/<arch>."""
    arch = image.architecture()
    layer_digest, layer_size = _digest(layer), layer.stat().st_size
    layer_desc: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest,
        "size": layer_size,
    }
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": [TURNSERVER],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    config_desc = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(
        json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_desc["annotations"] = {
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
    }
    manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{digest.split(':')[1]}": data for digest, data in blobs.items()},
    }
    with tarfile.open(out, "w") as tar:
        for folder in ("blobs", "blobs/sha256"):
            tar.addfile(_member(folder, 0, folder=True))
        for name, data in files.items():
            tar.addfile(_member(name, len(data)), io.BytesIO(data))
        with layer.open("rb") as handle:
            name = f"blobs/sha256/{layer_digest.split(':')[1]}"
            tar.addfile(_member(name, layer_size), handle)


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
            _oci_archive(rootfs, reference(), partial)
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
