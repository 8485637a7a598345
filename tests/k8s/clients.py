"""Helpers for clients outside the cluster talking to a BrokerCluster on the real node.

- :class:`OperatorRun`: the operator as a local process with ``deploy/rbac.yaml``'s
  token, serving one namespace, started and stopped synchronously (so that one
  BrokerCluster can serve every test of a module, across their event loops);
- :class:`KubeBroker`: one BrokerCluster seen from the host: the coordinator through
  its NodePort on the node's address, the comm servers at their pod addresses, the
  pods through the API, ``kubectl scale``, and what went wrong (pods, events, logs);
- :class:`Feed`: a reader of one SDK client that records the numbered messages it
  receives, for counting what arrived;
- :func:`browser_client`: the browser SDK in Debian's Chromium (Playwright), loaded
  from the coordinator's ``/sdk/webrtc-broker.js`` through the NodePort.

Waits that poll the API or the broker run without blocking the event loop: the
SDK clients' keepalives share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.naming import COMMSERVER, COORDINATOR, COORDINATOR_PORT
from tests.browser.pages import BrowserClient, ConsoleLog, PageHost, open_page
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import TOLERATION
from tests.k8s.support import OperatorIdentity, installed_identity, run_kubectl
from tests.operator.support import until
from tests.support import ROOT, free_port
from webrtc_broker.bench.nativepair import CHROMIUM, HEADLESS_ARGS
from webrtc_broker.client import BrokerClient, ReceivedMessage

NAME = "edge"
HTTP_PORT = 7590
DRAIN_SECONDS = 4
LOG_TAIL = 3000

LAUNCH_ARGS = list(HEADLESS_ARGS)


def broker_cluster_body(
    image: str, replicas: int, *, coordinators: int | None = None
) -> dict[str, Any]:
    """A BrokerCluster for the node: its taint tolerated, the image imported there (no
    registry), the coordinator on a NodePort, comm servers at their pod addresses;
    ``coordinators`` replicas of the coordinator (the operator's default when None).

    Requests are small so that three comm servers and the coordinator's replicas (the
    default two) fit the node beside whatever else runs on this 2-core machine.
    """
    small = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BrokerCluster",
        "metadata": {"name": NAME},
        "spec": {
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "coordinator": {
                "serviceType": "NodePort",
                "selector": "least-clients",
                "tolerations": [dict(TOLERATION)],
                "resources": copy.deepcopy(small),
                **({} if coordinators is None else {"replicas": coordinators}),
            },
            "commServers": {
                "replicas": replicas,
                "drainSeconds": DRAIN_SECONDS,
                "httpPort": HTTP_PORT,
                "network": {"mode": "PodIP"},
                "tolerations": [dict(TOLERATION)],
                "resources": copy.deepcopy(small),
            },
        },
    }


@dataclass
class OperatorRun:
    """``webrtc-broker operator`` as a child process with the ServiceAccount's token."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, identity: OperatorIdentity, workdir: Path, namespace: str) -> OperatorRun:
        kubeconfig = identity.kubeconfig(workdir / "operator.kubeconfig")
        log_path = workdir / "operator.log"
        health = free_port()
        args = [
            *(sys.executable, "-m", "webrtc_broker", "operator"),
            *("--metrics-port", str(free_port()), "--health-port", str(health)),
            *("--resync-seconds", "2", "--namespace", namespace),
        ]
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), str(ROOT / "operator"), os.environ.get("PYTHONPATH")])
            ),
        }
        with log_path.open("ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        run = cls(process, log_path)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=2, trust_env=False)
                if answer.status_code == 200:
                    return run
            if process.poll() is not None or time.monotonic() > deadline:
                run.stop()
                raise AssertionError(f"the operator did not come up:\n{run.log()[-LOG_TAIL:]}")
            time.sleep(0.5)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class KubeBroker:
    """The BrokerCluster :data:`NAME` in ``namespace``, reached from the host."""

    plane: ControlPlane
    admin: httpx.Client
    namespace: str
    node_address: str
    home: Path
    containerd: Path
    """The node's containerd socket."""
    http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(timeout=5, trust_env=False)
    )
    node_port: int = 0
    http_port: int = HTTP_PORT
    """The comm servers' ``httpPort`` (their ``/status``)."""

    # --- the API, off the event loop ----------------------------------------

    async def api(self, path: str, **params: str) -> dict[str, Any]:
        answer = await asyncio.to_thread(self.admin.get, path, params=params)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def kubectl(self, *args: str) -> str:
        return await asyncio.to_thread(
            run_kubectl, self.plane, self.home, *args, "--namespace", self.namespace
        )

    async def scale(self, replicas: int) -> None:
        """``kubectl scale bkc`` (the scale subresource), as a user would."""
        await self.kubectl("scale", "bkc", NAME, "--replicas", str(replicas))

    async def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}"
        listed = await self.api(f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=selector)
        items: list[dict[str, Any]] = listed["items"]
        return sorted(items, key=lambda p: str(p["metadata"]["name"]))

    async def pod(self, name: str) -> dict[str, Any] | None:
        answer = await asyncio.to_thread(
            self.admin.get, f"/api/v1/namespaces/{self.namespace}/pods/{name}"
        )
        return answer.json() if answer.status_code == 200 else None

    async def delete_pod(self, name: str) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            self.admin.delete, f"/api/v1/namespaces/{self.namespace}/pods/{name}"
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def kill_container(self, pod: dict[str, Any]) -> None:
        """SIGKILL the pod's container's process through the node's containerd, as the
        kernel's OOM killer would: no SIGTERM, no drain."""
        (status,) = pod["status"]["containerStatuses"]
        container = str(status["containerID"]).removeprefix("containerd://")
        command = ["ctr", "--address", str(self.containerd), "--namespace", "k8s.io"]
        await asyncio.to_thread(
            subprocess.run,
            [*command, "tasks", "kill", "--signal", "SIGKILL", container],
            check=True,
            capture_output=True,
            timeout=30,
        )

    # --- the broker, from the host ------------------------------------------

    @property
    def url(self) -> str:
        """The coordinator's WebSocket through the NodePort on the node's address."""
        return f"ws://{self.node_address}:{self.node_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.node_address}:{self.node_port}"

    async def find_node_port(self) -> int:
        service = await self.api(
            f"/api/v1/namespaces/{self.namespace}/services/{NAME}-{COORDINATOR}"
        )
        assert service["spec"]["type"] == "NodePort", service["spec"]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == COORDINATOR_PORT]
        self.node_port = int(port["nodePort"])
        return self.node_port

    async def coordinator_status(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.http_url}/status")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def coordinator_dropped(self) -> dict[str, float]:
        """The coordinator's ``frames_dropped_total`` by reason, from its ``/metrics``."""
        answer = await self.http.get(f"{self.http_url}/metrics")
        answer.raise_for_status()
        prefix = 'webrtc_broker_coordinator_frames_dropped_total{reason="'
        dropped = {}
        for line in answer.text.splitlines():
            if line.startswith(prefix):
                labels, value = line.rsplit(" ", 1)
                dropped[labels[len(prefix) :].split('"', 1)[0]] = float(value)
        return dropped

    async def server_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """A comm server's ``/status`` at its pod address (the host routes the pod range)."""
        answer = await self.http.get(f"http://{pod['status']['podIP']}:{self.http_port}/status")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def servers(self) -> list[tuple[str, int]]:
        """Registered comm servers at the coordinator: (pod name, alias)."""
        status = await self.coordinator_status()
        return [(s["name"], int(s["alias"])) for s in status["servers"] if s["role"] == "server"]

    async def wait_servers(self, count: int, timeout: float = 180.0) -> dict[str, int]:
        """Exactly ``<name>-commserver-0 .. count-1`` run, are Ready, are registered at
        the coordinator (reached through the NodePort) and each is linked to every
        other; returns pod name -> alias."""
        wanted = {f"{NAME}-{COMMSERVER}-{i}" for i in range(count)}

        async def settled() -> dict[str, int] | None:
            pods = await self.pods(COMMSERVER)
            if {p["metadata"]["name"] for p in pods} != wanted or not all(map(ready, pods)):
                return None
            if any(p["metadata"].get("deletionTimestamp") for p in pods):
                return None
            registered = await self.servers()
            # One registration per pod: a replaced pod's predecessor (same name, another
            # alias) is gone.
            if sorted(name for name, _ in registered) != sorted(wanted):
                return None
            for pod in pods:
                status = await self.server_status(pod)
                if status["servers"] != count - 1:
                    return None
            return dict(registered)

        try:
            found: dict[str, int] = await until(settled, timeout=timeout, interval=0.5)
        except AssertionError:
            print(await self.describe())
            raise
        return found

    async def describe(self) -> str:
        """What ``kubectl get pods``, events and logs would say about the namespace."""
        lines = [f"==== namespace {self.namespace} ===="]
        with contextlib.suppress(Exception):
            for pod in (await self.api(f"/api/v1/namespaces/{self.namespace}/pods"))["items"]:
                name = pod["metadata"]["name"]
                status = pod.get("status", {})
                states = [
                    (c["name"], c.get("restartCount"), list(c.get("state", {})))
                    for c in status.get("containerStatuses", [])
                ]
                lines.append(
                    f"pod {name}: {status.get('phase')} ip={status.get('podIP')} ready="
                    f"{ready(pod)} deleting={bool(pod['metadata'].get('deletionTimestamp'))} "
                    f"{states}"
                )
                log = await asyncio.to_thread(
                    self.admin.get,
                    f"/api/v1/namespaces/{self.namespace}/pods/{name}/log",
                    params={"tailLines": "40"},
                )
                lines.append(f"--- log of {name} ---\n{log.text[-LOG_TAIL:]}")
        with contextlib.suppress(Exception):
            for event in (await self.api(f"/api/v1/namespaces/{self.namespace}/events"))["items"]:
                involved = event["involvedObject"]
                lines.append(
                    f"event {involved.get('kind')}/{involved.get('name')}: {event.get('type')} "
                    f"{event.get('reason')}: {event.get('message')}"
                )
        with contextlib.suppress(Exception):
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{NAME}"
            lines.append(f"BrokerCluster status: {(await self.api(path)).get('status')}")
        return "\n".join(lines)

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class Deployed:
    """A module's BrokerCluster: where it runs and how to reach it."""

    plane: ControlPlane
    namespace: str
    node_address: str
    home: Path
    operator: OperatorRun
    containerd: Path
    http_port: int = HTTP_PORT


@contextlib.contextmanager
def deployed_cluster(
    control_plane: ControlPlane,
    node_address: str,
    containerd: Path,
    workdir: Path,
    body: dict[str, Any],
    *,
    http_port: int = HTTP_PORT,
) -> Iterator[Deployed]:
    """The operator serving a namespace of its own and the BrokerCluster ``body`` in it;
    the namespaces (and with them the pods and Services) removed at the end, and the
    operator's log checked for tracebacks."""
    with installed_identity(control_plane, workdir) as identity:
        namespace = identity.clusters_namespace
        operator = OperatorRun.start(identity, workdir, namespace)
        try:
            with control_plane.client(timeout=30) as admin:
                answer = admin.post(
                    f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", json=body
                )
                assert answer.status_code == 201, answer.text
            yield Deployed(
                control_plane, namespace, node_address, workdir, operator, containerd, http_port
            )
        finally:
            code = operator.stop()
            log = operator.log()
            print(f"operator exit code {code}")
            assert "Traceback" not in log, log[-4000:]


@contextlib.asynccontextmanager
async def broker_from_host(
    deployed: Deployed, request: pytest.FixtureRequest
) -> AsyncIterator[KubeBroker]:
    """The BrokerCluster seen from the host once its coordinator has a NodePort; pods,
    events and the operator's log printed when the test failed."""
    with deployed.plane.client(timeout=30) as admin:
        kube = KubeBroker(
            deployed.plane,
            admin,
            deployed.namespace,
            deployed.node_address,
            deployed.home,
            deployed.containerd,
            http_port=deployed.http_port,
        )
        try:
            await until(kube.find_node_port, timeout=120, interval=0.5)
            yield kube
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(await kube.describe())
                print(deployed.operator.log()[-4000:])
            await kube.aclose()


@dataclass
class Feed:
    """One subscriber and what it received: bodies ``b"<n>"`` (numbered messages) are
    recorded in arrival order, anything else (probes) is counted apart."""

    name: str
    client: BrokerClient
    numbers: list[int] = field(default_factory=list)
    other: int = 0
    arrivals: list[float] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    """The servers the client was on when messages arrived, each once, in order."""
    task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.client:
            self.record(message)

    def record(self, message: ReceivedMessage) -> None:
        if not self.servers or self.servers[-1] != self.client.server_alias:
            self.servers.append(self.client.server_alias)
        if message.body.isdigit():
            self.numbers.append(int(message.body))
            self.arrivals.append(time.monotonic())
        else:
            self.other += 1

    def has(self, numbers: set[int]) -> bool:
        return numbers <= set(self.numbers)

    def gaps(self) -> list[tuple[int, int]]:
        """Runs of numbers missing between the first and the last received."""
        seen = sorted(set(self.numbers))
        return [(a + 1, b - 1) for a, b in itertools.pairwise(seen) if b > a + 1]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Publisher:
    """Publishes ``b"<n>"`` on ``topic`` at ``rate`` per second until stopped; records the
    numbers whose ``publish`` returned (and the errors of those that raised)."""

    client: BrokerClient
    topic: str
    rate: float = 20.0
    published: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    _next: int = 0

    def start(self) -> Publisher:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            number = self._next
            self._next += 1
            try:
                self.client.publish(self.topic, str(number).encode(), reliable=True)
            except Exception as exc:  # DisconnectedError while moving; recorded, not fatal
                self.errors.append(f"{number}: {exc!r}")
            else:
                self.published.append(number)
            await asyncio.sleep(1 / self.rate)

    @property
    def last(self) -> int:
        return self.published[-1] if self.published else -1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --- the browser SDK ---------------------------------------------------------

_CONNECT = """
async ([sdkUrl, url, credentials, options]) => {
  const sdk = await import(sdkUrl);
  window.inbox = [];
  window.closeReason = null;
  window.reconnects = [];
  try {
    const started = performance.now();
    const client = await sdk.BrokerClient.connect(url, credentials, options);
    const took = performance.now() - started;
    window.client = client;
    client.on("message", (m) => window.inbox.push({
      sender: m.sender, text: m.text, reliable: m.reliable, topic: m.topic ?? null,
      identity: m.identityText ?? null, role: m.role ?? null,
    }));
    client.on("close", (reason) => { window.closeReason = reason; });
    client.on("reconnecting", (reason) => { window.reconnects.push({ reason }); });
    client.on("reconnected", (c) => {
      window.reconnects.at(-1).server = c.serverAlias;
      window.reconnects.at(-1).alias = c.alias;
    });
    return { alias: client.alias, server: client.serverAlias,
             capabilities: client.serverCapabilities, took };
  } catch (error) {
    return { error: `${error.name}: ${error.message}` };
  }
}
"""


@contextlib.asynccontextmanager
async def chromium(console: ConsoleLog) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; its pages leave (``pagehide``) before it closes."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian's chromium package)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            for context in browser.contexts:
                for page in context.pages:
                    with contextlib.suppress(Exception):
                        await page.evaluate(
                            "() => dispatchEvent(new PageTransitionEvent('pagehide',"
                            " {persisted: false}))"
                        )
            await browser.close()


async def browser_client(
    browser: Browser,
    host: PageHost,
    broker: KubeBroker,
    console: ConsoleLog,
    credentials: str,
    **options: Any,
) -> tuple[BrowserClient, float]:
    """The browser SDK in a page of another origin (``host``, on 127.0.0.1), imported
    from the coordinator through the NodePort and connected there; with the time
    ``connect`` took (seconds)."""
    page = await open_page(browser, host.url, console, credentials)
    sdk_url = f"{broker.http_url}/sdk/webrtc-broker.js"
    info = await page.evaluate(_CONNECT, [sdk_url, broker.url, credentials, options])
    assert "error" not in info, f"{info['error']}\n{console.dump()}"
    return BrowserClient(page, info), float(info["took"]) / 1000
