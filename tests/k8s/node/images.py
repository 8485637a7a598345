"""OCI image archives of one static program each, built here and imported into containerd.

Nothing is pulled from a registry: the node's sandbox image (``pause``) and
the tests' image (``probe``) are each one layer holding one static Go
program (``tests/k8s/node/cmd/``) and the empty folders a container needs,
written as an OCI image layout in a tar archive that ``ctr images import``
reads. The tag is a hash of the program, so a changed program is a new
image.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

REPOSITORY = "webrtc-broker.test"
FOLDERS = ("dev", "etc", "proc", "sys", "tmp", "var", "var/run")


def image_ref(name: str, program: Path) -> str:
    """``webrtc-broker.test/NAME:<hash of the program>``."""
    return f"{REPOSITORY}/{name}:{hashlib.sha256(program.read_bytes()).hexdigest()[:12]}"


def _member(name: str, *, folder: bool, size: int = 0, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = mode
    info.size = size
    info.mtime = 0  # the same program gives the same layer digest
    return info


def _layer(program: Path, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in FOLDERS:
            tar.addfile(_member(folder, folder=True, mode=0o1777 if folder == "tmp" else 0o755))
        data = program.read_bytes()
        tar.addfile(_member(name, folder=False, size=len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def oci_archive(program: Path, ref: str, out: Path) -> Path:
    """Write an OCI image layout (a tar archive) of ``ref``: ``/<program name>`` as its
    entrypoint, for linux/amd64."""
    name = ref.rsplit("/", maxsplit=1)[-1].split(":", maxsplit=1)[0]
    return write_image(_layer(program, name), ref, out, {"Entrypoint": [f"/{name}"]})


def write_image(
    layer: bytes | Path, ref: str, out: Path, settings: dict[str, Any], *, arch: str = "amd64"
) -> Path:
    """Write an OCI image layout (a tar archive) of ``ref`` for linux/``arch``: ``layer``
    (a tar, in memory or a file, streamed) as its one layer, ``settings`` as its image
    configuration (``Entrypoint``, ``Cmd``, ``Env``; ``WorkingDir`` is ``/``)."""
    blobs: dict[str, bytes] = {}
    layer_desc: dict[str, Any]
    if isinstance(layer, Path):
        layer_desc = {
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": _file_digest(layer),
            "size": layer.stat().st_size,
        }
    else:
        layer_desc = _blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {**settings, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = _blob(
        blobs, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = _blob(
        blobs, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_desc["annotations"] = {
        "io.containerd.image.name": ref,  # the whole name, as ctr import reads it
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
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for folder in ("blobs", "blobs/sha256"):
            tar.addfile(_member(folder, folder=True))
        for path, data in files.items():
            tar.addfile(_member(path, folder=False, size=len(data), mode=0o644), io.BytesIO(data))
        if isinstance(layer, Path):
            digest: str = layer_desc["digest"]
            size: int = layer_desc["size"]
            member = _member(f"blobs/sha256/{digest.split(':')[1]}", folder=False, size=size)
            member.mode = 0o644
            with layer.open("rb") as handle:
                tar.addfile(member, handle)
    return out
