"""A tiny "kubelet": runs the pods of the operator's workloads as local processes.

It reads the Deployment and StatefulSets the operator created in the
emulator and does for each pod what a kubelet and kube-proxy would, on
127.0.0.1 only:

* the image's entrypoint (``webrtc-broker``, see the Dockerfile) becomes
  ``python -m webrtc_broker`` from this checkout;
* env comes from ``value``, ``fieldRef`` (``metadata.name``) and
  ``secretKeyRef`` (read from the emulator's Secrets), with ``$(VAR)``
  expanded in env values and args as Kubernetes does;
* every container port gets a free local port; a bind address of
  ``0.0.0.0`` becomes ``127.0.0.1`` (the "pod IP"), a ``--*port`` flag with
  the container port gets the local one, and ``<service>:<port>`` in an
  argument is routed to the pod behind that Service (cluster DNS);
* probes are the container's own ``httpGet`` probes, against those ports.

What it cannot do: run the image itself, enforce the security context or
resources, or give pods distinct IPs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.operator.apiserver import Store
from tests.support import ROOT, free_port

Obj = dict[str, Any]
VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return VAR.sub(one, text)


@dataclass
class Pod:
    name: str
    workload: Obj
    container: Obj
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> local port
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.workload["spec"]["template"]["metadata"]["labels"]
        return labels

    @property
    def grace_seconds(self) -> int:
        spec = self.workload["spec"]["template"]["spec"]
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


class Kubelet:
    def __init__(self, store: Store, namespace: str, workdir: Path) -> None:
        self.store = store
        self.namespace = namespace
        self.workdir = workdir
        self.pods: list[Pod] = []
        self.http = httpx.AsyncClient(timeout=3)

    def _objects(self, group: str, plural: str) -> list[Obj]:
        return [
            obj
            for (g, p, ns, _), obj in sorted(self.store.objects.items())
            if (g, p, ns) == (group, plural, self.namespace)
        ]

    def schedule(self) -> list[Pod]:
        """One :class:`Pod` per replica of every Deployment and StatefulSet, ports assigned."""
        for kind in ("deployments", "statefulsets"):
            for workload in self._objects("apps", kind):
                name = workload["metadata"]["name"]
                for index in range(int(workload["spec"].get("replicas", 1))):
                    pod_name = (
                        f"{name}-{index}" if kind == "statefulsets" else f"{name}-7d9f-{index}"
                    )
                    (container,) = workload["spec"]["template"]["spec"]["containers"]
                    pod = Pod(pod_name, workload, container)
                    pod.ports = {p["name"]: free_port() for p in container.get("ports", [])}
                    self.pods.append(pod)
        for pod in self.pods:
            pod.env = self._env(pod)
            pod.argv = self._argv(pod)
        return self.pods

    # -- what a kubelet resolves ------------------------------------------------------------

    def _secret(self, name: str, key: str) -> str:
        secret = self.store.objects[("", "secrets", self.namespace, name)]
        return base64.b64decode(secret["data"][key]).decode()

    def _env(self, pod: Pod) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in pod.container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name"
                env[item["name"]] = pod.name
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self._secret(ref["name"], ref["key"])
            else:
                raise AssertionError(f"unsupported env source {source}")
        return env

    def _service_routes(self) -> dict[str, int]:
        """``<service>:<port>`` -> the local port of the first pod the Service selects."""
        routes: dict[str, int] = {}
        for service in self._objects("", "services"):
            selector = service["spec"].get("selector") or {}
            backends = [
                pod for pod in self.pods if all(pod.labels.get(k) == v for k, v in selector.items())
            ]
            if not backends or service["spec"].get("clusterIP") == "None":
                continue
            name = service["metadata"]["name"]
            for port in service["spec"]["ports"]:
                local = backends[0].ports[port["targetPort"]]
                for host in (name, f"{name}.{self.namespace}", f"{name}.{self.namespace}.svc"):
                    routes[f"{host}:{port['port']}"] = local
        return routes

    def _argv(self, pod: Pod) -> list[str]:
        command = pod.container["command"]
        assert command == ["webrtc-broker"], "the image's entrypoint is the console script"
        container_ports = {str(p["containerPort"]): p["name"] for p in pod.container["ports"]}
        routes = self._service_routes()
        args: list[str] = []
        previous = ""
        for raw in pod.container.get("args", []):
            arg = expand(raw, pod.env)
            if previous.endswith("host") and arg == "0.0.0.0":
                arg = "127.0.0.1"
            elif previous.endswith("port") and arg in container_ports:
                arg = str(pod.ports[container_ports[arg]])
            for target, local in routes.items():
                arg = re.sub(rf"//{re.escape(target)}\b", f"//127.0.0.1:{local}", arg)
            args.append(arg)
            previous = raw
        return [sys.executable, "-m", "webrtc_broker", *args]

    # -- running ----------------------------------------------------------------------------

    async def start(self, pod: Pod) -> None:
        pod.log_path = self.workdir / f"{pod.name}.log"
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **pod.env,
        }
        with pod.log_path.open("ab") as log:
            pod.process = await asyncio.create_subprocess_exec(
                *pod.argv, stdout=log, stderr=log, env=environment
            )

    async def probe(self, pod: Pod, which: str) -> bool:
        """One run of the container's ``livenessProbe`` or ``readinessProbe``."""
        spec = pod.container[which]["httpGet"]
        url = f"http://127.0.0.1:{pod.ports[spec['port']]}{spec['path']}"
        try:
            return (await self.http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stop(self, pod: Pod) -> float:
        """SIGTERM, then SIGKILL after the grace period; the seconds it took to exit."""
        process = pod.process
        if process is None or process.returncode is not None:
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), pod.grace_seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
        return loop.time() - started

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(pod) for pod in self.pods))
        await self.http.aclose()

    def logs(self) -> str:
        return "\n".join(f"==== {pod.name} ====\n{pod.log()[-4000:]}" for pod in self.pods)

    def describe(self) -> str:
        return json.dumps({pod.name: pod.argv for pod in self.pods}, indent=1)
