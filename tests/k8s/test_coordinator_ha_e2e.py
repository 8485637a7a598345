"""Two coordinator replicas on the real node: discovery, readiness, and a rollout under probes.

The chart is installed with ``helm install`` as in ``test_install_e2e.py`` (its
``release`` fixture and values, with ``coordinator.replicas: 2`` and two comm
servers), so the operator runs in a pod and the BrokerCluster is what a user
gets:

1. both coordinator pods become Ready (each only once a comm server linked to
   it: ``READY_NEEDS_SERVER``), the status counts 2/2, every comm server's
   ``/status`` shows a registered link to each coordinator pod (found through
   the headless ``<name>-coordinator-peers`` Service), and each coordinator's
   ``/status`` lists both comm servers;
2. ``kubectl rollout restart deployment/<name>-coordinator`` while ``helm test``
   runs back to back, from just before the restart until the rollout is
   complete: every run passes (two clients connect through the coordinator's
   Service and round-trip a message), the Deployment never has fewer than two
   ready replicas (``maxSurge: 1``, ``maxUnavailable: 0``), and afterwards the
   comm servers are linked to the two new pods.

Printed (``-s``): the phases' durations, how many ``helm test`` runs the rollout
spanned, how long the rollout took, and the probe's attempts per run (its own
retries would hide a refused connection from the helm test's result).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from broker_operator.naming import COMMSERVER, COORDINATOR, COORDINATOR_PORT
from tests.helm.chart import CHART, HelmResult
from tests.k8s.cluster import ControlPlane
from tests.k8s.support import install_crd, run_kubectl
from tests.k8s.test_install_e2e import (  # noqa: F401 - fixtures: admin, release
    GONE_TIMEOUT,
    OPERATOR_SELECTOR,
    RUNNING_TIMEOUT,
    Release,
    admin,
    brokers_ready,
    chart_values,
    component,
    on_the_node,
    operator_ready,
    release,
)
from tests.k8s.workloads import (
    Phases,
    cluster_status,
    describe,
    list_pods,
    wait_for,
    wait_running,
)

pytestmark = pytest.mark.timeout(900)

REPLICAS = 2
SERVERS = 2
HTTP_PORT = 7590
PROBE_TIMEOUT = 60
"""The probe's own deadline in each ``helm test``: short, so a broker that stops
answering fails the run instead of being waited out."""
ROLLOUT_TIMEOUT = 300.0
LINK_TIMEOUT = 60.0
"""Comm servers re-resolve the peers Service every 10 s; links follow within that."""
SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
"""Requests that let the operator, three coordinators (a rollout's surge), two comm
servers and the test pod fit the node beside what else runs on the machine."""
ATTEMPT = re.compile(r"\(attempt (\d+)\)")
RETRIED = re.compile(r"attempt \d+ failed")


def ha_values(image: str, namespace: str) -> dict[str, Any]:
    values = chart_values(image, namespace)
    spec = values["brokerCluster"]["spec"]
    spec["coordinator"].update(replicas=REPLICAS, resources=SMALL)
    spec["commServers"].update(replicas=SERVERS, resources=SMALL, httpPort=HTTP_PORT)
    values["tests"]["timeoutSeconds"] = PROBE_TIMEOUT
    return values


def status_of(http: httpx.Client, pod: dict[str, Any], port: int) -> dict[str, Any]:
    """A pod's ``/status`` at its address (the host routes the node's pod range)."""
    answer = http.get(f"http://{pod['status']['podIP']}:{port}/status")
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def registered_links(status: dict[str, Any]) -> set[str]:
    """The hosts of a comm server's coordinator links in state ``registered``."""
    return {
        str(urlsplit(link["url"]).hostname)
        for link in status.get("coordinators") or []
        if link.get("state") == "registered"
    }


def linked_to_every_coordinator(
    api: httpx.Client, http: httpx.Client, namespace: str, name: str
) -> dict[str, set[str]] | None:
    """Each comm server's registered links, once they are exactly the coordinator pods'
    addresses (every one of them, and no other)."""
    coordinators = list_pods(api, namespace, component(name, COORDINATOR))
    addresses = {p["status"].get("podIP") for p in coordinators}
    if len(coordinators) != REPLICAS or None in addresses:
        return None
    links = {}
    for server in list_pods(api, namespace, component(name, COMMSERVER)):
        try:
            links[server["metadata"]["name"]] = registered_links(status_of(http, server, HTTP_PORT))
        except (httpx.HTTPError, KeyError):
            return None
    if len(links) != SERVERS or any(found != addresses for found in links.values()):
        return None
    return links


def wait_links(
    api: httpx.Client, http: httpx.Client, namespace: str, name: str, what: str
) -> dict[str, set[str]]:
    return wait_for(
        lambda: linked_to_every_coordinator(api, http, namespace, name),
        timeout=LINK_TIMEOUT,
        what=what,
        admin=api,
        namespaces=[namespace],
    )


@dataclass
class HelmTestLoop:
    """``helm test`` run back to back in a thread until :meth:`stop`."""

    release: Release
    runs: list[tuple[float, float, HelmResult]] = field(default_factory=list)
    """(start, end, result) of every run, on the monotonic clock."""
    started: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="helm-test-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.started.set()
            result = self.release(
                "test",
                self.release.name,
                "--logs",
                "--timeout",
                f"{PROBE_TIMEOUT + 60}s",
                timeout=PROBE_TIMEOUT + 120,
            )
            self.runs.append((began, time.monotonic(), result))

    def stop(self) -> None:
        """Let the run in progress finish, and start no other."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=PROBE_TIMEOUT + 180)


def rollout_complete(deployment: dict[str, Any], old: set[str], pods: list[dict[str, Any]]) -> bool:
    """The Deployment's controller saw the restart, every replica is updated, ready and
    available, and no pod of before the restart is left (not even terminating)."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    seen = int(status.get("observedGeneration", 0)) >= int(deployment["metadata"]["generation"])
    counts = [
        int(status.get(key, 0))
        for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    ]
    leftover = {p["metadata"]["uid"] for p in pods} & old
    return seen and counts == [int(spec["replicas"])] * 4 and not leftover


def all_pods(api: httpx.Client, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods of ``selector``, terminating ones included."""
    answer = api.get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector})
    answer.raise_for_status()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@dataclass
class Rollout:
    """A coordinator rollout watched to its end, with the helm tests run meanwhile."""

    restarted: float
    seconds: float
    fewest_ready: int
    runs: list[tuple[float, float, HelmResult]]

    @property
    def failed(self) -> list[str]:
        return [result.output for _, _, result in self.runs if result.returncode != 0]

    @property
    def retried(self) -> list[str]:
        """Why the probe's failed attempts failed, in every run (its log, ``--logs``)."""
        return [
            line.strip()
            for _, _, result in self.runs
            for line in result.output.splitlines()
            if RETRIED.search(line)
        ]

    @property
    def attempts(self) -> list[int]:
        """The probe's attempt that succeeded, per run (0: none did)."""
        found = [ATTEMPT.search(result.output) for _, _, result in self.runs]
        return [int(match.group(1)) if match else 0 for match in found]


def rollout_under_helm_tests(
    api: httpx.Client, installed: Release, name: str, old: set[str], home: Path
) -> Rollout:
    """``kubectl rollout restart`` of the coordinators once a ``helm test`` is under way;
    helm tests back to back until the rollout is complete, and the run then in progress."""
    namespace = installed.namespace
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}-{COORDINATOR}"
    loop = HelmTestLoop(installed)
    loop.start()
    try:
        assert loop.started.wait(30), "the helm test loop did not start"
        time.sleep(1)  # the first run's probe is under way before the restart
        restarted = time.monotonic()
        out = run_kubectl(
            installed.plane,
            home,
            *("rollout", "restart", f"deployment/{name}-{COORDINATOR}"),
            *("--namespace", namespace),
        )
        assert "restarted" in out, out
        fewest_ready = REPLICAS
        while True:
            deployment = api.get(path).json()
            ready = int((deployment.get("status") or {}).get("readyReplicas", 0))
            fewest_ready = min(fewest_ready, ready)
            pods = all_pods(api, namespace, component(name, COORDINATOR))
            if rollout_complete(deployment, old, pods):
                break
            assert time.monotonic() < restarted + ROLLOUT_TIMEOUT, (
                f"rollout not complete within {ROLLOUT_TIMEOUT:.0f} s: "
                f"{deployment.get('status')}\n{describe(api, namespace)}"
            )
            time.sleep(0.5)
        seconds = time.monotonic() - restarted
    finally:
        loop.stop()
    return Rollout(restarted, seconds, fewest_ready, loop.runs)


def apply_crd(plane: ControlPlane, home: Path) -> None:
    """deploy/crd.yaml applied and Established. ``kubectl wait`` refuses a CRD that has
    no conditions yet (one created a moment ago): it is asked again then."""
    for attempt in range(10):
        try:
            install_crd(plane, home)
        except AssertionError as exc:
            if "accessor error" not in str(exc) or attempt == 9:
                raise
            time.sleep(1)
        else:
            return


def install_ha(installed: Release, image: str, workdir: Path) -> str:
    """The chart with two coordinators and two comm servers; the BrokerCluster's name."""
    values = workdir / "values.yaml"
    values.write_text(yaml.safe_dump(ha_values(image, installed.namespace)))
    # The control plane may hold an older CRD, which would prune coordinator.replicas.
    apply_crd(installed.plane, workdir)
    out = installed.ok(
        "install", installed.name, str(CHART), "--create-namespace", "--values", str(values)
    )
    assert "STATUS: deployed" in out, out
    manifest = installed.ok("get", "manifest", installed.name)
    (cluster,) = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "BrokerCluster"]
    assert cluster["spec"]["coordinator"]["replicas"] == REPLICAS
    return str(cluster["metadata"]["name"])


def test_two_coordinators_survive_a_rollout_under_helm_tests(
    broker_image: str,  # the node's fixture too: the image is imported there
    admin: httpx.Client,  # noqa: F811 - the fixture imported above
    release: Release,  # noqa: F811
    tmp_path: Path,
) -> None:
    phases = Phases("coordinator HA")
    namespace = release.namespace
    name = install_ha(release, broker_image, tmp_path)
    phases.mark("helm install")
    selector = f"app.kubernetes.io/instance={release.name},{OPERATOR_SELECTOR}"
    operator_ready(admin, namespace, selector, phases)

    # 1. Both coordinators Ready (each once a comm server linked to it), both linked to.
    coordinators, servers = brokers_ready(admin, namespace, name, phases, servers=SERVERS)
    on_the_node([*coordinators, *servers], broker_image)
    status = wait_running(admin, namespace, name, timeout=RUNNING_TIMEOUT)
    assert (status["coordinators"], status["readyCoordinators"]) == (REPLICAS, REPLICAS), status
    assert status["coordinatorReady"] is True, status
    phases.mark("BrokerCluster Running")
    with httpx.Client(timeout=5, trust_env=False) as http:
        what = "every comm server registered with both coordinator pods"
        print(f"comm servers' registered links: {wait_links(admin, http, namespace, name, what)}")
        server_names = sorted(p["metadata"]["name"] for p in servers)
        for pod in coordinators:
            seen = status_of(http, pod, COORDINATOR_PORT)
            listed = sorted(s["name"] for s in seen["servers"] if s["role"] == "server")
            assert listed == server_names, (pod["metadata"]["name"], seen)
            assert seen["alias_spaces"] == 1000, seen
            print(f"coordinator {pod['metadata']['name']}: alias space {seen['replica']}")
        phases.mark("links checked")

        # 2. A rollout of the coordinators while helm tests run back to back.
        old = {p["metadata"]["uid"] for p in coordinators}
        rollout = rollout_under_helm_tests(admin, release, name, old, tmp_path)
        phases.mark("rollout under helm tests")
        runs = rollout.runs
        print(
            f"rollout of {REPLICAS} coordinators took {rollout.seconds:.1f} s; helm test ran "
            f"{len(runs)} times back to back over it, {len(rollout.failed)} failed; "
            f"the probe's successful attempt per run: {rollout.attempts}; "
            f"fewest ready coordinators: {rollout.fewest_ready}"
        )
        for line in rollout.retried:
            print(f"  probe retried: {line}")
        assert not rollout.failed, "\n---\n".join(rollout.failed) + describe(admin, namespace)
        assert runs[0][0] < rollout.restarted, "a run was under way at the restart"
        assert runs[-1][1] > rollout.restarted + rollout.seconds, "and one at the end"
        for _, _, result in runs:
            lines = [line.split() for line in result.output.splitlines()]
            assert ["Phase:", "Succeeded"] in lines, result.output
        assert rollout.fewest_ready >= REPLICAS, "a replica went before its successor was ready"

        # The comm servers followed: linked to the two new pods, and to nothing else.
        new = list_pods(admin, namespace, component(name, COORDINATOR))
        assert len(new) == REPLICAS and not {p["metadata"]["uid"] for p in new} & old
        what = "every comm server registered with both new coordinator pods"
        print(f"after the rollout: {wait_links(admin, http, namespace, name, what)}")
    status = cluster_status(admin, namespace, name)
    assert status["readyCoordinators"] == REPLICAS, status
    phases.mark("links follow the new pods")

    out = release.ok("uninstall", release.name, "--wait", "--timeout", "120s")
    assert f'release "{release.name}" uninstalled' in out, out
    wait_for(
        lambda: not list_pods(admin, namespace),
        timeout=GONE_TIMEOUT,
        what="every pod of the release gone after helm uninstall",
        admin=admin,
        namespaces=(namespace,),
    )
    print(phases.summary())
