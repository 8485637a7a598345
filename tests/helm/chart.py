"""Running the real helm (v4) on the chart: lint, template, install --dry-run, and (given
a kubeconfig) install, upgrade and uninstall on a real API server.

The binary comes from the same PyPI package as the operator tests' kubectl
(:mod:`tests.operator.kubectl` extracts both into ``.cache/``). Renders are
cached per argument list: helm takes a fraction of a second per run, but the
validation tests ask for the same few renders many times.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.operator.kubectl import helm
from tests.support import ROOT

CHART = ROOT / "charts" / "webrtc-broker"
VALUES_ALL = Path(__file__).with_name("values-all.yaml")
NAMESPACE = "brokers"
"""The release namespace of every render (values-all.yaml's watchNamespaces include it)."""
RELEASE = "demo"


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_helm(
    *args: str,
    cwd: Path | None = None,
    kubeconfig: Path | None = None,
    home: Path | None = None,
    timeout: float = 120,
) -> HelmResult:
    """Run helm with a throw-away home, so no user configuration leaks in; no cluster is
    reachable unless ``kubeconfig`` names one."""
    home = home or ROOT / ".cache" / "helm-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(kubeconfig or home / "no-kubeconfig"),
    }
    completed = subprocess.run(
        [str(helm()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    return HelmResult(completed.returncode, completed.stdout, completed.stderr)


def value_args(values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


def template(
    values_files: Sequence[Path] = (), sets: Sequence[str] = (), *, namespace: str = NAMESPACE
) -> HelmResult:
    """``helm template`` (test hooks included, as ``helm template`` always renders them)."""
    return run_helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        *value_args(values_files, sets),
    )


@functools.cache
def _render(values_files: tuple[Path, ...], sets: tuple[str, ...]) -> str:
    result = template(values_files, sets)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.output}")
    return result.stdout


def render(values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rendered objects, parsed (a fresh copy each call)."""
    text = _render(tuple(values_files), tuple(sets))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def notes(values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
    """NOTES.txt as ``helm install`` prints it (client-side dry run: no cluster is asked)."""
    result = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *value_args(values_files, sets),
    )
    if result.returncode != 0:
        raise AssertionError(f"helm install --dry-run failed:\n{result.output}")
    _, _, text = result.stdout.partition("NOTES:\n")
    return text


def find(items: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for item in items:
        if item["kind"] == kind and (name is None or item["metadata"]["name"] == name):
            return item
    raise KeyError((kind, name))


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["kind"] for item in items)
