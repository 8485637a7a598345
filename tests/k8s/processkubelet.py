"""A process "kubelet": a node of the real control plane whose pods are local processes.

:class:`ProcessKubelet` stands in for a node's kubelet (and kube-proxy) for
the pods of one namespace, talking to the real API server as the admin:

* it registers a Node (``Ready``, capacity and allocatable cpu, memory and
  pods, address 127.0.0.1) and renews its Lease in ``kube-node-lease``, so
  the node lifecycle controller keeps it Ready and the real scheduler binds
  pods to it;
* the Node carries a ``NoSchedule`` taint naming the namespace, so pods of
  other tests sharing the control plane are never bound to it. The
  BrokerCluster spec has no field for tolerations, so the kubelet adds the
  matching toleration to the namespace's unbound pods itself (a pod's
  tolerations may be added to after creation); this stands in for an
  admission policy of a cluster with dedicated nodes, nothing a kubelet does;
* it watches the Pods bound to its node (field selector
  ``spec.nodeName=<node>``) and runs each pod's container as a process: the
  image's entrypoint (``webrtc-broker``, see the Dockerfile) becomes
  ``python -m webrtc_broker`` from this checkout; env comes from ``value``,
  ``fieldRef`` (``metadata.name``) and ``secretKeyRef`` (Secrets read
  through the API), with ``$(VAR)`` expanded in env values and args as
  Kubernetes does; every container port gets a free local port, a bind
  address of ``0.0.0.0`` becomes ``127.0.0.1`` and a ``--*port`` flag with
  the container port gets the local one;
* as kube-proxy and cluster DNS would, each port of a Service with a
  selector (not headless) gets a local listener that forwards connections to
  a ready pod the Service selects, and ``<service>:<port>`` in an argument
  (short, namespaced or ``.svc`` name) becomes that listener's address. The
  endpoint controllers refuse the pods' loopback address (they log it and
  retry), so no Endpoints or EndpointSlice lists them: the listeners read
  the pods this kubelet runs instead;
* a headless Service (the coordinators' peers) gets such a listener too,
  forwarding to a running pod whether ready or not when the Service
  publishes not-ready addresses; a ``<prefix>COORDINATOR_DNS`` naming it
  (the A records comm servers resolve to find every coordinator replica)
  becomes ``<prefix>COORDINATOR_URLS`` with that listener, one replica's
  worth: the tests running pods here ask for ``coordinator.replicas: 1``;
* it runs the container's ``httpGet`` probes at their ``periodSeconds``; the
  readiness probe (with its ``failureThreshold``) drives the ``Ready`` and
  ``ContainersReady`` conditions, written through ``pods/status`` with phase
  ``Running``, pod IP 127.0.0.1 and the container's status, so the real
  StatefulSet and Deployment controllers count the pods ready;
* a pod being deleted gets SIGTERM, up to its grace period to exit, then
  SIGKILL, and the final delete (``gracePeriodSeconds: 0``, the pod's uid as
  precondition), which is what the StatefulSet controller waits for before
  it makes a pod of the same name again.

What it is not: it cannot run the image, enforce the security context,
resources, volumes or the service account, give pods distinct IPs, or
restart containers (a failed liveness probe is counted in
:attr:`Pod.liveness_failures`, a container that exits unasked is recorded
in :attr:`ProcessKubelet.errors`; tests assert both stay empty). Services
are resolved only in arguments and the coordinator discovery variable, not by a
resolver the processes could ask.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import re
import signal
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.k8s.cluster import ControlPlane
from tests.support import ROOT, free_port

Obj = dict[str, Any]
VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
TAINT_KEY = "webrtc-broker.test/process-kubelet"
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}
ENTRYPOINT = ["webrtc-broker"]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VAR.sub(one, text)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A ``MicroTime`` (a Lease's renewTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass
class Exit:
    """How a container's process ended."""

    code: int
    killed: bool
    """SIGKILL after the grace period (it did not exit on SIGTERM in time)."""
    seconds: float | None = None
    """From SIGTERM to exit; ``None`` when it exited unasked."""


@dataclass
class Pod:
    """One pod bound to the node, as the kubelet runs it."""

    obj: Obj
    """The pod as the kubelet last saw it."""
    container: Obj
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> local port
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    started_at: str = ""
    ready: bool = False
    ready_changed_at: str = ""
    liveness_failures: int = 0
    """Liveness probe failures after it first passed (a real kubelet would restart)."""
    terminating: asyncio.Task[None] | None = None
    exit: Exit | None = None
    deleted: bool = False
    """The final delete went through (or the pod was gone)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("labels") or {})

    @property
    def grace_seconds(self) -> int:
        return int(self.obj["spec"].get("terminationGracePeriodSeconds", 30))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def port(self, target: str | int) -> int | None:
        """The local port of a container port given by name or number."""
        if isinstance(target, str) and not target.isdigit():
            return self.ports.get(target)
        for spec in self.container.get("ports", []):
            if spec["containerPort"] == int(target):
                return self.ports.get(spec["name"])
        return None

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


@dataclass
class ServiceProxy:
    """A local listener for one Service port (what kube-proxy and cluster DNS give a pod)."""

    service: str
    port: int
    selector: dict[str, str]
    target: str | int
    not_ready_too: bool = False
    """A headless Service's ``publishNotReadyAddresses``: pods count before they are ready."""
    server: asyncio.Server | None = None

    @property
    def local_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


class ProcessKubelet:
    """A node named ``node`` running the pods of ``namespace`` as processes (see the module)."""

    def __init__(self, plane: ControlPlane, namespace: str, workdir: Path) -> None:
        self.plane = plane
        self.namespace = namespace
        self.workdir = workdir
        self.node = f"process-node-{uuid.uuid4().hex[:8]}"
        self.pods: dict[str, Pod] = {}  # by uid, every pod it ran
        self.proxies: dict[tuple[str, int], ServiceProxy] = {}
        self.errors: list[str] = []
        """What went wrong while it ran: a failed request, a container that exited unasked."""
        self.toleration = {
            "key": TAINT_KEY,
            "operator": "Equal",
            "value": namespace,
            "effect": "NoSchedule",
        }
        context = ssl.create_default_context(cafile=str(plane.pki / "ca.crt"))
        context.load_cert_chain(plane.pki / "admin.crt", plane.pki / "admin.key")
        self.api = httpx.AsyncClient(base_url=plane.server, verify=context, timeout=10)
        self.http = httpx.AsyncClient(timeout=3)  # probes and tests, on 127.0.0.1
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ProcessKubelet:
        await self.start()
        return self

    async def start(self) -> None:
        """Register the Node and its Lease, then watch pods (:meth:`close` undoes it all)."""
        await self._register()
        self._tasks = [
            asyncio.create_task(self._guard("lease", self._renew_lease())),
            asyncio.create_task(
                self._guard(
                    "tolerations",
                    self._watch(f"/api/v1/namespaces/{self.namespace}/pods", {}, self._tolerate),
                )
            ),
            asyncio.create_task(
                self._guard(
                    "pods",
                    self._watch(
                        "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}, self._sync
                    ),
                )
            ),
        ]

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching, stop every process (SIGTERM, grace), remove its pods and the Node."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        pods = list(self.pods.values())
        for pod in pods:
            for task in pod.tasks:
                task.cancel()
            await asyncio.gather(*pod.tasks, return_exceptions=True)
        for pod in pods:
            if pod.terminating is not None:
                await asyncio.gather(pod.terminating, return_exceptions=True)
        await asyncio.gather(*(self._stop(pod, pod.grace_seconds) for pod in pods))
        for pod in pods:
            if not pod.deleted:
                await self._final_delete(pod.obj)
        for proxy in self.proxies.values():
            if proxy.server is not None:
                proxy.server.close()
        with contextlib.suppress(httpx.HTTPError):
            await self.api.delete(
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
            )
            await self.api.delete(f"/api/v1/nodes/{self.node}")
        await self.api.aclose()
        await self.http.aclose()

    async def _guard(self, what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported through errors, which tests assert
            self.errors.append(f"{what}: {exc!r}")

    # -- the Node ---------------------------------------------------------------------------

    def _node(self) -> Obj:
        stamp = now()

        def condition(kind: str, status: str, reason: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": "process kubelet",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }

        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {"taints": [{k: v for k, v in self.toleration.items() if k != "operator"}]},
            "status": {
                "capacity": CAPACITY,
                "allocatable": CAPACITY,
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                    condition("Ready", "True", "KubeletReady"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node},
                ],
                "nodeInfo": {
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": os.uname().release,
                    "osImage": "process kubelet",
                    "containerRuntimeVersion": "process://",
                    "kubeletVersion": "v1.34.4",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    async def _register(self) -> None:
        answer = await self.api.post("/api/v1/nodes", json=self._node())
        assert answer.status_code == 201, answer.text
        node = answer.json()  # the status comes with it, as a kubelet registers
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node,
                        "uid": node["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now(),
            },
        }
        answer = await self.api.post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json=lease
        )
        assert answer.status_code == 201, answer.text

    async def _renew_lease(self) -> None:
        """What keeps the node lifecycle controller from marking the node unreachable."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                answer = await self.api.patch(
                    path,
                    json={"spec": {"renewTime": micro_now()}},
                    headers={"Content-Type": MERGE},
                )
                if answer.status_code != 200:
                    self.errors.append(f"lease renewal: {answer.status_code} {answer.text}")
            except httpx.HTTPError as exc:
                self.errors.append(f"lease renewal: {exc!r}")

    async def node_ready(self) -> bool:
        """Whether the Node is Ready and has no taint but its own (the not-ready one is gone)."""
        node = (await self.api.get(f"/api/v1/nodes/{self.node}")).json()
        taints = {t["key"] for t in node["spec"].get("taints", [])}
        ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
        return taints == {TAINT_KEY} and bool(ready) and ready[0]["status"] == "True"

    # -- watching ---------------------------------------------------------------------------

    async def _watch(
        self, path: str, params: dict[str, str], handle: Callable[[str, Obj], Awaitable[None]]
    ) -> None:
        """List, then watch from the list's resourceVersion; again whenever the watch ends."""
        while True:
            answer = await self.api.get(path, params=params)
            answer.raise_for_status()
            listing = answer.json()
            for item in listing["items"]:
                await self._handle(handle, "ADDED", item)
            watch = {
                **params,
                "watch": "true",
                "resourceVersion": listing["metadata"]["resourceVersion"],
                "timeoutSeconds": "300",
            }
            with contextlib.suppress(httpx.HTTPError):
                async with self.api.stream("GET", path, params=watch, timeout=None) as response:
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                            break
                        await self._handle(handle, event["type"], event["object"])
            await asyncio.sleep(0.2)

    async def _handle(
        self, handle: Callable[[str, Obj], Awaitable[None]], kind: str, obj: Obj
    ) -> None:
        """One event; a failure is recorded and the watch goes on (a kubelet retries)."""
        try:
            await handle(kind, obj)
        except Exception as exc:  # reported through errors, which tests assert
            self.errors.append(f"{kind} {obj['metadata'].get('name')}: {exc!r}")

    async def _tolerate(self, kind: str, obj: Obj) -> None:
        """Give an unbound pod of the namespace the toleration of this node's taint."""
        spec = obj["spec"]
        tolerations = spec.get("tolerations") or []
        if kind == "DELETED" or spec.get("nodeName") or self.toleration in tolerations:
            return
        if obj["metadata"].get("deletionTimestamp"):
            return
        answer = await self.api.patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{obj['metadata']['name']}",
            json={
                "metadata": {"uid": obj["metadata"]["uid"]},
                "spec": {"tolerations": [*tolerations, self.toleration]},
            },
            headers={"Content-Type": STRATEGIC},
        )
        if answer.status_code not in (200, 404, 409):
            self.errors.append(f"toleration of {obj['metadata']['name']}: {answer.text}")

    async def _sync(self, kind: str, obj: Obj) -> None:
        """One event about a pod bound to this node: start it, terminate it, or forget it."""
        meta = obj["metadata"]
        pod = self.pods.get(meta["uid"])
        if meta["namespace"] != self.namespace:
            self.errors.append(f"a pod of another namespace was bound here: {meta['name']}")
            return
        if pod is not None:
            pod.obj = obj
        if kind == "DELETED":
            if pod is not None:
                pod.deleted = True
                if pod.terminating is None:  # deleted without a grace period
                    pod.terminating = asyncio.create_task(self._terminate(pod, 0))
            return
        if meta.get("deletionTimestamp"):
            if pod is None:  # never started here
                await self._final_delete(obj)
            elif pod.terminating is None:
                grace = int(meta.get("deletionGracePeriodSeconds", pod.grace_seconds))
                pod.terminating = asyncio.create_task(self._terminate(pod, grace))
            return
        if pod is None and obj.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            pod = await self._admit(obj)
            self.pods[pod.uid] = pod
            await self._start(pod)

    # -- what a kubelet resolves ------------------------------------------------------------

    async def _admit(self, obj: Obj) -> Pod:
        containers = obj["spec"]["containers"]
        assert len(containers) == 1, "one container a pod"
        (container,) = containers
        pod = Pod(obj, container)
        pod.ports = {p["name"]: free_port() for p in container.get("ports", [])}
        pod.env = self._found_by_dns(await self._env(pod), await self._peer_routes())
        pod.argv = self._argv(pod, await self._routes())
        return pod

    async def secret(self, name: str, key: str) -> str:
        answer = await self.api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        answer.raise_for_status()
        return base64.b64decode(answer.json()["data"][key]).decode()

    async def _env(self, pod: Pod) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in pod.container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name", source
                env[item["name"]] = pod.name
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = await self.secret(ref["name"], ref["key"])
            else:
                raise AssertionError(f"unsupported env source {source}")
        return env

    async def _routes(self) -> dict[str, int]:
        """``<service>:<port>`` (every name cluster DNS gives it) -> its local listener."""
        answer = await self.api.get(f"/api/v1/namespaces/{self.namespace}/services")
        answer.raise_for_status()
        routes: dict[str, int] = {}
        for service in answer.json()["items"]:
            selector = service["spec"].get("selector") or {}
            if not selector or service["spec"].get("clusterIP") == "None":
                continue
            name = service["metadata"]["name"]
            for port in service["spec"]["ports"]:
                proxy = await self._proxy(name, port["port"], selector, port["targetPort"])
                for host in self._dns_names(name):
                    routes[f"{host}:{port['port']}"] = proxy.local_port
        return routes

    async def _peer_routes(self) -> dict[str, ServiceProxy]:
        """Headless Services with a selector: every name cluster DNS gives one -> a listener
        per port, forwarding to a running pod it selects (ready or not, when it publishes
        not-ready addresses)."""
        answer = await self.api.get(f"/api/v1/namespaces/{self.namespace}/services")
        answer.raise_for_status()
        routes: dict[str, ServiceProxy] = {}
        for service in answer.json()["items"]:
            spec = service["spec"]
            selector = spec.get("selector") or {}
            if not selector or spec.get("clusterIP") != "None":
                continue
            name = service["metadata"]["name"]
            not_ready_too = bool(spec.get("publishNotReadyAddresses"))
            for port in spec["ports"]:
                proxy = await self._proxy(
                    name, port["port"], selector, port["targetPort"], not_ready_too=not_ready_too
                )
                for host in self._dns_names(name):
                    routes[f"{host}:{port['port']}"] = proxy
        return routes

    def _dns_names(self, service: str) -> tuple[str, ...]:
        ns = self.namespace
        return (
            service,
            f"{service}.{ns}",
            f"{service}.{ns}.svc",
            f"{service}.{ns}.svc.cluster.local",
        )

    @staticmethod
    def _found_by_dns(env: dict[str, str], peers: dict[str, ServiceProxy]) -> dict[str, str]:
        """``<prefix>COORDINATOR_DNS`` naming a headless Service (with ``..._DNS_PORT``)
        becomes ``<prefix>COORDINATOR_URLS``: that Service's listener.

        Process pods all live on 127.0.0.1, so there is no A record per pod to give
        them: the comm server gets one URL, a listener that forwards to a running
        coordinator pod. That is every replica only while there is one, which is what
        the tests running pods here ask for (``coordinator.replicas: 1``).
        """
        found = dict(env)
        for key, host in env.items():
            if not key.endswith("COORDINATOR_DNS"):
                continue
            port = found.pop(f"{key}_PORT", "9090")
            proxy = peers.get(f"{host}:{port}")
            assert proxy is not None, f"{key}={host} names no headless Service here"
            del found[key]
            urls = [f"ws://127.0.0.1:{proxy.local_port}"]
            found[f"{key.removesuffix('DNS')}URLS"] = json.dumps(urls)
        return found

    def _argv(self, pod: Pod, routes: dict[str, int]) -> list[str]:
        assert pod.container["command"] == ENTRYPOINT, (
            "the image's entrypoint is the console script"
        )
        container_ports = {str(p["containerPort"]): p["name"] for p in pod.container["ports"]}
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

    # -- Services ---------------------------------------------------------------------------

    async def _proxy(
        self,
        service: str,
        port: int,
        selector: dict[str, str],
        target: str | int,
        *,
        not_ready_too: bool = False,
    ) -> ServiceProxy:
        key = (service, port)
        if key not in self.proxies:
            proxy = ServiceProxy(service, port, selector, target, not_ready_too)

            async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._forward(proxy, reader, writer)

            proxy.server = await asyncio.start_server(forward, "127.0.0.1", 0)
            self.proxies[key] = proxy
        return self.proxies[key]

    def endpoints(self, proxy: ServiceProxy) -> list[Pod]:
        """The pods a Service selects that it routes to: ready ones (its ready endpoints),
        or every running one for a headless Service that publishes not-ready addresses."""
        return [
            pod
            for pod in self.pods.values()
            if pod.running
            and (pod.ready or proxy.not_ready_too)
            and pod.terminating is None
            and selects(proxy.selector, pod.labels)
        ]

    async def _forward(
        self, proxy: ServiceProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        backends = self.endpoints(proxy)
        port = backends[0].port(proxy.target) if backends else None
        if port is None:  # no ready endpoint: the connection is refused
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def service_url(self, service: str, port: int, scheme: str = "ws") -> str:
        """The local address of a Service's port, for clients (as from inside the cluster)."""
        return f"{scheme}://127.0.0.1:{self.proxies[(service, port)].local_port}"

    # -- running ----------------------------------------------------------------------------

    async def _start(self, pod: Pod) -> None:
        pod.log_path = self.workdir / f"{pod.name}-{pod.uid[:8]}.log"
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
        pod.started_at = pod.ready_changed_at = now()
        await self._write_status(pod)
        pod.tasks = [
            asyncio.create_task(self._guard(f"{pod.name} readiness", self._readiness(pod))),
            asyncio.create_task(self._guard(f"{pod.name} liveness", self._liveness(pod))),
            asyncio.create_task(self._guard(f"{pod.name} exit", self._watch_exit(pod))),
        ]

    async def probe(self, pod: Pod, which: str) -> bool:
        """One run of the container's ``livenessProbe`` or ``readinessProbe``."""
        spec = pod.container[which]
        get = spec["httpGet"]
        url = f"http://127.0.0.1:{pod.port(get['port'])}{get['path']}"
        try:
            answer = await self.http.get(url, timeout=spec.get("timeoutSeconds", 1))
        except httpx.HTTPError:
            return False
        return 200 <= answer.status_code < 400

    async def _readiness(self, pod: Pod) -> None:
        spec = pod.container.get("readinessProbe")
        failures = 0
        while pod.running and pod.terminating is None:
            ready = True
            if spec is not None:
                if await self.probe(pod, "readinessProbe"):
                    failures = 0
                else:
                    failures += 1
                # Not ready until it first passes; then only after failureThreshold in a row.
                ready = failures == 0 or (pod.ready and failures < spec.get("failureThreshold", 3))
            if ready != pod.ready and pod.running and pod.terminating is None:
                pod.ready = ready
                pod.ready_changed_at = now()
                await self._write_status(pod)
            await asyncio.sleep(spec.get("periodSeconds", 10) if spec else 10)

    async def _liveness(self, pod: Pod) -> None:
        spec = pod.container.get("livenessProbe")
        if spec is None:
            return
        passed = False
        while pod.running and pod.terminating is None:
            alive = await self.probe(pod, "livenessProbe")
            if alive:
                passed = True
            elif passed and pod.terminating is None:
                pod.liveness_failures += 1
            await asyncio.sleep(spec.get("periodSeconds", 10))

    async def _watch_exit(self, pod: Pod) -> None:
        assert pod.process is not None
        code = await pod.process.wait()
        if pod.terminating is None and not self._closing:  # nobody asked it to stop
            pod.exit = Exit(code, killed=False)
            pod.ready = False
            self.errors.append(f"{pod.name} exited unasked with {code}:\n{pod.log()[-2000:]}")
            await self._write_status(pod)

    def _status(self, pod: Pod) -> Obj:
        ready = "True" if pod.ready else "False"
        state: Obj
        if pod.exit is None:
            state = {"running": {"startedAt": pod.started_at}}
        else:
            state = {
                "terminated": {
                    "exitCode": pod.exit.code,
                    "reason": "Completed" if pod.exit.code == 0 else "Error",
                    "startedAt": pod.started_at,
                    "finishedAt": now(),
                }
            }
        pid = pod.process.pid if pod.process is not None else 0
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.started_at,
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "True",
                    "lastTransitionTime": pod.started_at,
                },
                {"type": "Initialized", "status": "True", "lastTransitionTime": pod.started_at},
                {
                    "type": "ContainersReady",
                    "status": ready,
                    "lastTransitionTime": pod.ready_changed_at,
                },
                {"type": "Ready", "status": ready, "lastTransitionTime": pod.ready_changed_at},
            ],
            "containerStatuses": [
                {
                    "name": pod.container["name"],
                    "image": pod.container["image"],
                    "imageID": "",
                    "containerID": f"process://{pid}",
                    "ready": pod.ready,
                    "started": pod.exit is None,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }

    async def _write_status(self, pod: Pod) -> None:
        """The pod's status through ``pods/status``, as a kubelet reports it."""
        answer = await self.api.patch(
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
            json={"metadata": {"uid": pod.uid}, "status": self._status(pod)},
            headers={"Content-Type": STRATEGIC},
        )
        if answer.status_code == 200:
            pod.obj = answer.json()
        elif answer.status_code not in (404, 409):  # gone already, or a newer pod of that name
            self.errors.append(f"status of {pod.name}: {answer.status_code} {answer.text}")

    # -- stopping ---------------------------------------------------------------------------

    async def _stop(self, pod: Pod, grace: int) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; what happened is ``pod.exit``."""
        process = pod.process
        if process is None or process.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        killed = False
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            killed = True
            process.kill()
            await process.wait()
        assert process.returncode is not None
        pod.exit = Exit(process.returncode, killed, loop.time() - started)

    async def _terminate(self, pod: Pod, grace: int) -> None:
        """A pod being deleted: stop its process within the grace period, then the final delete."""
        pod.ready = False
        await self._stop(pod, grace)
        if not pod.deleted:
            pod.ready_changed_at = now()
            await self._write_status(pod)
            await self._final_delete(pod.obj)
            pod.deleted = True

    async def _final_delete(self, obj: Obj) -> None:
        meta = obj["metadata"]
        answer = await self.api.request(
            "DELETE",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            json={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]},
            },
        )
        if answer.status_code not in (200, 404, 409):
            self.errors.append(
                f"final delete of {meta['name']}: {answer.status_code} {answer.text}"
            )

    # -- for tests --------------------------------------------------------------------------

    def running(self, prefix: str) -> list[Pod]:
        """The pods whose name starts with ``prefix`` and whose process runs, by name."""
        found = [p for p in self.pods.values() if p.name.startswith(prefix) and p.running]
        return sorted(found, key=lambda p: p.name)

    def logs(self) -> str:
        return "\n".join(
            f"==== {pod.name} ({pod.uid[:8]}) ====\n{pod.log()[-4000:]}"
            for pod in self.pods.values()
        )

    def describe(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "errors": self.errors,
                "pods": {f"{p.name} {p.uid[:8]}": p.argv for p in self.pods.values()},
            },
            indent=1,
        )
