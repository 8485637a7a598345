"""One reconcile of one ``BrokerCluster``: parse, apply, observe, autoscale, report.

Level-based and idempotent: every run computes the whole desired state from
the spec alone, brings each owned object to it (create if missing, patch if
different, nothing if equal) and writes the status from what the workloads
report. Running it again changes nothing, which is what makes operator
restarts, retries and the periodic resync safe.

Two rules keep it from doing harm:

* an invalid spec changes nothing in the cluster: the status says
  ``Degraded`` and why, and the objects keep running as they were;
* an object it did not create (no owner reference to this resource) is
  never patched or deleted, even if its name matches.

Each object is applied on its own: one the API server refuses does not stop
the others. What a refusal means decides when it is tried again
(:func:`classify`): a conflict, throttling, a server error or a lost
connection passes, so the object is retried with a growing delay; a request
the server judged (400 Bad Request, 403 Forbidden by RBAC or an admission
check such as a ResourceQuota, 422 Invalid) gets the same answer until
something changes, so it is reported (``Degraded`` with the server's message,
and an Event) and tried again only for a new generation of the spec or after
a long delay. A namespace being deleted refuses new objects for good: the
cluster is going away, and nothing more is created for it. A StatefulSet
whose immutable fields must change is replaced (:meth:`Reconciler._replace`).

A rollout has a deadline (``spec.progressDeadlineSeconds``): a workload not
rolled out that long makes the cluster ``Degraded``, with the reason its
controllers give (:mod:`.conditions`).

kopf is not imported here: the same sequence runs from kopf's handlers
(on create, spec change and operator start) and from the periodic resync
(:mod:`.resync`), and Events are posted through :class:`KubeClient` in both
cases.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp

from broker_operator import API_VERSION, KIND
from broker_operator.applying import merge_patch, patch_for, with_last_applied
from broker_operator.autoscaler import Recommendation, decide, read_load
from broker_operator.conditions import (
    FAILED_CREATE,
    FAILED_SCHEDULING,
    POD_FAILURES,
    Observed,
    Problem,
    Stalled,
    Workload,
    compute_status,
    deadline_exceeded,
    stalled_problem,
    workload_condition,
)
from broker_operator.kube import ApiError, KubeClient, resource_of
from broker_operator.manifests import (
    Manifest,
    ObjectKey,
    commserver,
    desired_objects,
    key_of,
    optional_objects,
)
from broker_operator.manifests.commserver import server_replicas
from broker_operator.manifests.secret import generated_secret, uses_generated_secret
from broker_operator.metrics import OperatorStats
from broker_operator.naming import (
    COMMSERVER,
    COORDINATOR,
    COORDINATOR_PORT,
    HUB,
    MANAGED_BY,
    ClusterRef,
)
from broker_operator.spec import BrokerClusterSpec, SpecError, parse_spec
from webrtc_broker.config import OperatorConfig

logger = logging.getLogger(__name__)

SECRET_RECHECK_SECONDS = 60.0
"""How long a generated server secret is taken to exist without asking again. A
conflict may come from the Secret of a deleted cluster of the same name that the
garbage collector has not removed yet; asking again now and then recreates it."""

TRANSIENT = (ApiError, aiohttp.ClientError, asyncio.TimeoutError)
"""Failures of a request: the API server refused or could not be reached
(:func:`classify` tells which are worth retrying soon)."""


class Failure(enum.Enum):
    """What a failed request means (:func:`classify`), so when to try it again."""

    PASSING = "passing"
    """Conflict, throttling, a server error, a lost connection: soon, with backoff."""
    REFUSED = "refused"
    """The server judged the request: the same answer until the spec or cluster changes."""
    TERMINATING = "terminating"
    """The namespace is being deleted: nothing more is created there."""


PASSING, REFUSED, TERMINATING = Failure.PASSING, Failure.REFUSED, Failure.TERMINATING

RETRY_FIRST, RETRY_MAX = 1.0, 300.0
"""Delay before retrying an object after a passing failure, doubled each time, up to the max
(the resync's period comes on top: an object is retried at the first resync after it)."""
REFUSED_FIRST, REFUSED_MAX = 300.0, 3600.0
"""The same after a refusal, within one generation of the spec: whatever made the server
refuse (a quota, a policy) may have changed meanwhile."""

NAMESPACE_TERMINATING = "because it is being terminated"
"""In the NamespaceLifecycle admission plugin's 403 refusing new objects in a namespace
that is being deleted."""

IMMUTABLE_STATEFULSET_FIELDS = frozenset(
    {"selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"}
)
"""StatefulSet spec fields the API server refuses to change (422): the operator sets these."""

REPLACE_WAIT = 10.0
"""Seconds a replaced StatefulSet is waited for to be gone (the garbage collector removes
its orphan finalizer first) before it is created again; later, the next reconcile does."""


def classify(exc: BaseException) -> Failure:
    """What a failed request means: :data:`PASSING`, :data:`REFUSED` or :data:`TERMINATING`.

    Conflicts (409: someone wrote first), throttling (429), server errors (5xx),
    timeouts (408), refused credentials (401: they are read again) and lost
    connections pass. Other answers are the server's judgement of the request
    and repeat until the request or the cluster changes: 400, 403 (RBAC, a
    quota, Pod Security or another admission check), 404 (a missing kind or
    namespace), 422 (invalid).
    """
    if not isinstance(exc, ApiError):
        return PASSING
    if exc.status in (401, 408, 409, 429) or exc.status >= 500:
        return PASSING
    if exc.status == 403 and NAMESPACE_TERMINATING in exc.message:
        return TERMINATING
    return REFUSED


@dataclass
class Backoff:
    """An object whose last apply failed: the problem to report until it is retried."""

    uid: str
    generation: int
    problem: Problem
    attempts: int
    retry_at: float

    def holds(self, uid: str, generation: int, now: float) -> bool:
        """True while the object is not to be tried again (a new generation always is)."""
        return self.uid == uid and self.generation == generation and now < self.retry_at


def backoff_delay(kind: Failure, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1`` after failures of ``kind``."""
    first, most = (RETRY_FIRST, RETRY_MAX) if kind == PASSING else (REFUSED_FIRST, REFUSED_MAX)
    if kind == TERMINATING:
        return most
    return float(min(first * 2 ** max(attempts - 1, 0), most))


PRIORITY = ("NamespaceTerminating", "NameConflict", "ApplyRejected", "ApplyFailed")
"""Which reason ``Degraded`` shows when several objects failed: the most final first."""


def combine(problems: list[Problem]) -> Problem | None:
    """One problem for the status: the most final reason, every message once."""
    if not problems:
        return None
    ranked = sorted(
        problems,
        key=lambda p: PRIORITY.index(p.reason) if p.reason in PRIORITY else len(PRIORITY),
    )
    messages = list(dict.fromkeys(p.message for p in ranked))
    return Problem(ranked[0].reason, "; ".join(messages))


def immutable_changes(patch: Mapping[str, Any]) -> list[str]:
    """The immutable StatefulSet fields a patch would change, sorted."""
    return sorted(IMMUTABLE_STATEFULSET_FIELDS & set(patch.get("spec") or {}))


@dataclass(frozen=True)
class Note:
    """A Kubernetes Event to post about the resource: ``Normal``/``Warning``, reason, message."""

    type: str
    reason: str
    message: str


@dataclass
class Outcome:
    """What one reconcile did, for the caller (kopf handler, resync loop, tests)."""

    status: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    problem: Problem | None = None
    notes: list[Note] = field(default_factory=list)

    @property
    def retry(self) -> bool:
        """True when a failure passes (see :func:`classify`): worth trying again soon."""
        return self.problem is not None and self.problem.reason == "ApplyFailed"


def _degraded_message(status: Mapping[str, Any]) -> str | None:
    """The message of a ``Degraded=True`` condition already reported (not repeated as an Event)."""
    for item in status.get("conditions") or []:
        if item.get("type") == "Degraded" and item.get("status") == "True":
            return str(item.get("message"))
    return None


def _degraded_reason(status: Mapping[str, Any]) -> str | None:
    """The reason of a ``Degraded=True`` condition already reported."""
    for item in status.get("conditions") or []:
        if item.get("type") == "Degraded" and item.get("status") == "True":
            return str(item.get("reason"))
    return None


def _event_time(event: Mapping[str, Any]) -> str:
    """When an event last happened (core/v1 or events.k8s.io fields), as sortable text."""
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def _latest(
    events: list[dict[str, Any]], reasons: tuple[str, ...], kinds: tuple[str, ...], workload: str
) -> str | None:
    """The newest message of one of ``reasons`` about ``workload`` or its pods/ReplicaSets.

    Objects a workload makes are named ``<workload>-<suffix>``.
    """
    found = None
    for event in events:
        involved = event.get("involvedObject") or {}
        name = str(involved.get("name", ""))
        if (
            event.get("reason") in reasons
            and involved.get("kind") in kinds
            and (name == workload or name.startswith(f"{workload}-"))
        ):
            found = str(event.get("message") or event.get("reason"))
    return found


def load_balancer_host(service: Mapping[str, Any] | None) -> str | None:
    """The first address a Service's load balancer reports (an IP, else a hostname)."""
    if service is None:
        return None
    for ingress in (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []:
        host = ingress.get("ip") or ingress.get("hostname")
        if host:
            return str(host)
    return None


def join_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pod_index(meta: Mapping[str, Any]) -> int | None:
    """A StatefulSet pod's ordinal: its pod-index label, else its name's suffix."""
    labels = meta.get("labels") or {}
    suffix = str(meta.get("name", "")).rpartition("-")[2]
    text = str(labels.get(commserver.POD_INDEX_LABEL) or suffix)
    return int(text) if text.isdigit() else None


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def rfc3339(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class NotOwnedError(Exception):
    """An object with the name the operator wants exists and belongs to someone else."""


class Reconciler:
    """Reconciles ``BrokerCluster`` bodies; one instance per operator process."""

    def __init__(
        self,
        client: KubeClient,
        stats: OperatorStats,
        config: OperatorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.stats = stats
        self.config = config
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._history: dict[tuple[str, str], tuple[Recommendation, ...]] = {}
        self._secret_made: dict[tuple[str, str], tuple[str, float]] = {}
        """For each resource whose generated server secret exists: its uid, and when
        that was last confirmed (no need to ask again for a while)."""
        self._monitor_warned: dict[tuple[str, str], tuple[str, int]] = {}
        """For each resource told that the ServiceMonitor API is missing: the uid and
        generation it was told at. Told once per generation, not on every resync."""
        self._backoff: dict[tuple[str, str], dict[ObjectKey, Backoff]] = {}
        """For each resource, its objects whose last apply failed, until they are retried."""
        self._unrolled: dict[tuple[str, str], dict[ObjectKey, tuple[tuple[str, int], float]]] = {}
        """For each resource, its workloads not rolled out: the (uid, generation) seen so,
        and since when (the rollout deadline runs from there)."""

    def retain(self, existing: set[tuple[str, str]]) -> None:
        """Forget every resource not in ``existing`` (``(namespace, name)`` pairs)."""
        for namespace, name in set(self.stats.phases) | set(self._history):
            if (namespace, name) not in existing:
                self.forget(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept in memory about a deleted resource."""
        self._locks.pop((namespace, name), None)
        self._history.pop((namespace, name), None)
        self._secret_made.pop((namespace, name), None)
        self._monitor_warned.pop((namespace, name), None)
        self._backoff.pop((namespace, name), None)
        self._unrolled.pop((namespace, name), None)
        self.stats.forget(namespace, name)

    async def reconcile(self, body: Mapping[str, Any], *, autoscale: bool = False) -> Outcome:
        """Bring the cluster to ``body``'s spec; with ``autoscale``, run the autoscaler too.

        Reconciles of one resource never overlap (kopf's handlers and the
        resync loop may both ask at once).
        """
        meta = body["metadata"]
        lock = self._locks.setdefault((meta["namespace"], meta["name"]), asyncio.Lock())
        async with lock:
            # The caller's copy may predate the previous reconcile's status write (or the
            # resource may be gone): work from the API server's current object.
            key = ObjectKey(API_VERSION, KIND, meta["namespace"], meta["name"])
            try:
                current = await self.client.get(key)
            except TRANSIENT:
                current = dict(body)
            if current is None:
                return Outcome(status={})
            current_meta = current["metadata"]
            ref = ClusterRef(current_meta["name"], current_meta["namespace"], current_meta["uid"])
            notes: list[Note] = []
            outcome = await self._reconcile(ref, current, notes, autoscale)
            outcome.notes = notes
        await self._post(ref, notes)
        return outcome

    async def _reconcile(
        self, ref: ClusterRef, body: Mapping[str, Any], notes: list[Note], autoscale: bool
    ) -> Outcome:
        generation = int(body["metadata"].get("generation", 1))
        spec: BrokerClusterSpec | None = None
        problem: Problem | None = None
        changes: list[str] = []
        try:
            spec = parse_spec(ref.name, body.get("spec"))
        except SpecError as exc:
            problem = Problem("InvalidSpec", f"spec refused, nothing changed: {exc}")
        if spec is not None:
            problems: list[Problem] = []
            changes = await self._apply_all(ref, spec, notes, generation, problems)
            problem = combine(problems)
        autoscaling: dict[str, Any] | None = None
        previous = dict(body.get("status") or {})
        if autoscale and spec is not None and problem is None and spec.autoscaling.enabled:
            autoscaling = await self._autoscale(ref, spec, previous, notes)
        status = await self._report(
            ref,
            spec=spec,
            generation=generation,
            problem=problem,
            previous=previous,
            autoscaling=autoscaling,
            notes=notes,
        )
        self._count(
            ref, status=status, problem=problem, changes=changes, notes=notes, previous=previous
        )
        return Outcome(status=status, changes=changes, problem=problem)

    def _count(
        self,
        ref: ClusterRef,
        *,
        status: Mapping[str, Any],
        problem: Problem | None,
        changes: list[str],
        notes: list[Note],
        previous: Mapping[str, Any],
    ) -> None:
        self.stats.phases[(ref.namespace, ref.name)] = str(status["phase"])
        if problem is None:
            self.stats.reconciles["ok"] += 1
        elif problem.reason in ("InvalidSpec", "NameConflict"):
            self.stats.reconciles["invalid"] += 1
        else:
            self.stats.reconciles["error"] += 1
        if problem is not None and _degraded_message(previous) != problem.message:
            notes.append(Note("Warning", problem.reason, problem.message))
        notes.extend(Note("Normal", "Applied", change) for change in changes)

    # -- applying ---------------------------------------------------------------------------

    async def _apply_all(
        self,
        ref: ClusterRef,
        spec: BrokerClusterSpec,
        notes: list[Note],
        generation: int,
        problems: list[Problem],
    ) -> list[str]:
        """Apply every object on its own; what failed goes to ``problems``."""
        changes: list[str] = []
        steps: list[tuple[ObjectKey, Callable[[], Awaitable[str | None]]]] = []
        if uses_generated_secret(spec):
            # First: the pods of every workload read it.
            secret = ObjectKey("v1", "Secret", ref.namespace, ref.server_secret)
            steps.append((secret, lambda: self._ensure_server_secret(ref, spec)))
        wanted = desired_objects(ref, spec)
        for manifest in wanted:
            steps.append((key_of(manifest), partial(self._apply, ref, manifest, notes, generation)))
        wanted_keys = {key_of(manifest) for manifest in wanted}
        for key in optional_objects(ref):
            if key not in wanted_keys:
                steps.append((key, partial(self._remove, ref, key)))
        # Per-pod Services of pods scaled away (or of a mode left): found by their label.
        pruned = ObjectKey("v1", "Service", ref.namespace, f"{ref.headless_service}-*")
        steps.append((pruned, partial(self._prune_pod_services, ref, wanted_keys)))
        if spec.comm_servers.network.mode == "LoadBalancer":
            annotated = ObjectKey("v1", "Pod", ref.namespace, f"{ref.headless_service}-*")
            steps.append((annotated, partial(self._annotate_load_balancers, ref, spec)))
        backoffs = self._backoff.setdefault((ref.namespace, ref.name), {})
        for entry in backoffs.values():
            if entry.problem.reason == "NamespaceTerminating" and entry.holds(
                ref.uid, generation, self.clock()
            ):
                # Every create would be refused alike: none is tried.
                problems.append(entry.problem)
                return changes
        for key, step in steps:
            held = backoffs.get(key)
            if held is not None and held.holds(ref.uid, generation, self.clock()):
                problems.append(held.problem)
                continue
            try:
                change = await step()
            except NotOwnedError as exc:
                problems.append(Problem("NameConflict", str(exc)))
                continue
            except TRANSIENT as exc:
                held = self._failed(ref, key, exc, generation, held)
                backoffs[key] = held
                problems.append(held.problem)
                if held.problem.reason == "NamespaceTerminating":
                    break  # nothing new can be made there
                continue
            backoffs.pop(key, None)
            if change:
                changes.append(change)
        return changes

    def _failed(
        self,
        ref: ClusterRef,
        key: ObjectKey,
        exc: BaseException,
        generation: int,
        before: Backoff | None,
    ) -> Backoff:
        """The backoff after ``exc`` failed an apply of ``key``, and the problem it reports."""
        kind = classify(exc)
        attempts = 1
        if before is not None and before.uid == ref.uid and before.generation == generation:
            attempts = before.attempts + 1
        delay = backoff_delay(kind, attempts)
        if kind == TERMINATING:
            assert isinstance(exc, ApiError)
            problem = Problem(
                "NamespaceTerminating",
                f"namespace {ref.namespace} is being deleted, nothing more is created: "
                f"{exc.message}",
            )
        elif kind == REFUSED:
            assert isinstance(exc, ApiError)
            problem = Problem(
                "ApplyRejected",
                f"{key} refused ({exc.status} {exc.reason}): {exc.message}; tried again when "
                f"the spec changes, or in {delay:.0f}s",
            )
        else:
            problem = Problem("ApplyFailed", f"could not apply {key}: {exc}")
        logger.warning("%s/%s: %s", ref.namespace, ref.name, problem.message)
        return Backoff(ref.uid, generation, problem, attempts, self.clock() + delay)

    async def _apply(
        self, ref: ClusterRef, manifest: Manifest, notes: list[Note], generation: int
    ) -> str | None:
        key = key_of(manifest)
        desired = with_last_applied(manifest)
        live = await self.client.get(key)
        if live is None:
            try:
                await self.client.create(desired)
            except ApiError as exc:
                if exc.not_found and key.kind == "ServiceMonitor":
                    told = self._monitor_warned.get((ref.namespace, ref.name))
                    if told != (ref.uid, generation):
                        self._monitor_warned[(ref.namespace, ref.name)] = (ref.uid, generation)
                        notes.append(
                            Note(
                                "Warning",
                                "ServiceMonitorUnavailable",
                                "metrics.serviceMonitor.enabled is set but the ServiceMonitor "
                                "API (Prometheus operator) is not installed; skipped",
                            )
                        )
                    return None
                if not exc.conflict:
                    raise
                live = await self.client.get(key)  # made concurrently: patch it instead
                if live is None:
                    raise
            else:
                if key.kind == "ServiceMonitor":  # the API is there now: tell again if it goes
                    self._monitor_warned.pop((ref.namespace, ref.name), None)
                self.stats.applied["created"] += 1
                return f"created {key}"
        if not owned_by(live, ref.uid):
            raise NotOwnedError(
                f"{key} exists but is not owned by this {KIND}; rename or delete it"
            )
        if live.get("metadata", {}).get("deletionTimestamp"):
            return None  # being replaced (or collected): created again once gone
        patch = patch_for(desired, live)
        if not patch:
            return None
        try:
            await self.client.merge_patch(key, patch)
        except ApiError as exc:
            immutable = immutable_changes(patch) if key.kind == "StatefulSet" else []
            if exc.status == 422 and immutable:
                return await self._replace(key, desired, live, immutable)
            raise
        self.stats.applied["updated"] += 1
        return f"updated {key}"

    async def _replace(
        self, key: ObjectKey, desired: dict[str, Any], live: Mapping[str, Any], fields: list[str]
    ) -> str:
        """Delete a StatefulSet whose immutable ``fields`` must change, leaving its pods, and
        create it again: the new one adopts the pods by their labels.

        The pods run on meanwhile (``propagationPolicy: Orphan``); a pod whose template
        changed is then replaced by the StatefulSet's update strategy, as on any change.
        """
        uid = live.get("metadata", {}).get("uid")
        options: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Orphan",
        }
        if uid:
            options["preconditions"] = {"uid": uid}
        path = resource_of(key).path(key.namespace, key.name)
        # The policy also in the query, where an audit log records it.
        await self.client.request("DELETE", path, options, params={"propagationPolicy": "Orphan"})
        self.stats.applied["deleted"] += 1
        what = (
            f"replaced {key}: {', '.join(fields)} cannot change in place; deleted with "
            "propagationPolicy Orphan (its pods keep running) and created again, adopting them"
        )
        deadline = self.clock() + REPLACE_WAIT
        while await self.client.get(key) is not None:
            if self.clock() >= deadline:
                return f"{what} (the create follows once the old one is gone)"
            await asyncio.sleep(0.2)
        await self.client.create(desired)
        self.stats.applied["created"] += 1
        return what

    async def _ensure_server_secret(self, ref: ClusterRef, spec: BrokerClusterSpec) -> str | None:
        """Create the generated server secret if the spec names none and it is missing.

        Create-only (the operator may not read Secrets): a conflict means it
        exists already. It is never patched, so its value never changes.
        """
        if not uses_generated_secret(spec):
            return None
        known = self._secret_made.get((ref.namespace, ref.name))
        now = self.clock()
        if known is not None and known[0] == ref.uid and now - known[1] < SECRET_RECHECK_SECONDS:
            return None
        try:
            await self.client.create(generated_secret(ref))
        except ApiError as exc:
            if not exc.conflict:
                raise
            created = False
        else:
            created = True
        self._secret_made[(ref.namespace, ref.name)] = (ref.uid, now)
        if not created:
            return None
        self.stats.applied["created"] += 1
        return f"created Secret {ref.namespace}/{ref.server_secret}"

    async def _prune_pod_services(self, ref: ClusterRef, wanted: set[ObjectKey]) -> str | None:
        """Delete this cluster's per-pod Services that the spec no longer wants."""
        selector = f"app.kubernetes.io/instance={ref.name},{commserver.POD_SERVICE_LABEL}=true"
        found = await self.client.list_objects("v1", "Service", ref.namespace, selector)
        gone = []
        for item in found:
            key = key_of({**item, "metadata": {"namespace": ref.namespace, **item["metadata"]}})
            if key in wanted or not owned_by(item, ref.uid):
                continue
            if await self.client.delete(key):
                self.stats.applied["deleted"] += 1
                gone.append(key.name)
        return f"deleted per-pod Services {', '.join(sorted(gone))}" if gone else None

    async def _annotate_load_balancers(
        self, ref: ClusterRef, spec: BrokerClusterSpec
    ) -> str | None:
        """Tell each comm-server pod its load balancer's address (LoadBalancer mode).

        The pod reads the annotation through the downward API and waits for it
        before starting (see :mod:`.manifests.commserver`); a pod whose load
        balancer has no address yet is left waiting.
        """
        port = spec.comm_servers.network.udp_port
        # Listed, not read one by one: the operator's roles let it list pods, not get them.
        selector = ref.label_selector(COMMSERVER)
        listed = await self.client.list_objects("v1", "Pod", ref.namespace, selector)
        pods = {str(pod["metadata"].get("name")): pod for pod in listed}
        told = []
        for index in range(server_replicas(spec)):
            name = commserver.pod_service_name(ref, index)
            pod = pods.get(name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            service = await self.client.get(ObjectKey("v1", "Service", ref.namespace, name))
            host = load_balancer_host(service)
            if host is None:
                continue
            pod_key = ObjectKey("v1", "Pod", ref.namespace, name)
            address = join_host_port(host, port)
            annotations = pod.get("metadata", {}).get("annotations") or {}
            if annotations.get(commserver.ADVERTISE_ANNOTATION) == address:
                continue
            patch = {"metadata": {"annotations": {commserver.ADVERTISE_ANNOTATION: address}}}
            await self.client.merge_patch(pod_key, patch)
            told.append(f"{name}={address}")
        return f"annotated pods with their load balancers: {', '.join(told)}" if told else None

    async def _advertised(self, ref: ClusterRef, spec: BrokerClusterSpec) -> list[dict[str, str]]:
        """Each comm server and the address:port it advertises, from its pod (node address,
        ordinal) or its load balancer; empty in PodIP mode (pod addresses, any port)."""
        network = spec.comm_servers.network
        if network.mode == "PodIP":
            return []
        selector = ref.label_selector(COMMSERVER)
        try:
            found = await self.client.list_objects("v1", "Pod", ref.namespace, selector)
        except TRANSIENT as exc:
            logger.warning("cannot list the pods of %s/%s: %s", ref.namespace, ref.name, exc)
            return []
        out = []
        for pod in sorted(found, key=lambda item: str(item["metadata"].get("name"))):
            meta = pod.get("metadata") or {}
            name = str(meta.get("name"))
            host_ip = (pod.get("status") or {}).get("hostIP")
            entry = {"name": name, "node": str((pod.get("spec") or {}).get("nodeName") or "")}
            if network.mode == "HostNetwork" and host_ip:
                entry["address"] = join_host_port(host_ip, network.udp_port)
            elif network.mode == "NodePort" and host_ip and network.node_port_base is not None:
                index = pod_index(meta)
                if index is not None:
                    entry["address"] = join_host_port(host_ip, network.node_port_base + index)
            elif network.mode == "LoadBalancer":
                address = (meta.get("annotations") or {}).get(commserver.ADVERTISE_ANNOTATION)
                if address:
                    entry["address"] = str(address)
            out.append(entry)
        return out

    async def _remove(self, ref: ClusterRef, key: ObjectKey) -> str | None:
        """Delete an optional object the spec no longer wants, if this resource owns it."""
        return f"deleted {key}" if await self._delete_if_owned(ref, key) else None

    async def _delete_if_owned(self, ref: ClusterRef, key: ObjectKey) -> bool:
        try:
            live = await self.client.get(key)
        except ApiError as exc:
            if exc.not_found:  # the kind itself is unknown (no ServiceMonitor CRD)
                return False
            raise
        if live is None or not owned_by(live, ref.uid):
            return False
        deleted = await self.client.delete(key)
        if deleted:
            self.stats.applied["deleted"] += 1
        return deleted

    # -- observing and reporting -------------------------------------------------------------

    async def _observe(self, ref: ClusterRef, spec: BrokerClusterSpec | None) -> Observed:
        ns = ref.namespace

        async def get(api_version: str, kind: str, name: str) -> dict[str, Any] | None:
            try:
                return await self.client.get(ObjectKey(api_version, kind, ns, name))
            except TRANSIENT:
                return None

        hubs = await get("apps/v1", "StatefulSet", ref.object_name(HUB))
        if spec is not None and spec.topology.mode != "Hub":
            hubs = None
        return Observed(
            coordinator=await get("apps/v1", "Deployment", ref.object_name(COORDINATOR)),
            servers=await get("apps/v1", "StatefulSet", ref.object_name(COMMSERVER)),
            hubs=hubs,
            coordinator_service=await get("v1", "Service", ref.coordinator_service),
        )

    async def _report(
        self,
        ref: ClusterRef,
        *,
        spec: BrokerClusterSpec | None,
        generation: int,
        problem: Problem | None,
        previous: dict[str, Any],
        autoscaling: dict[str, Any] | None,
        notes: list[Note],
    ) -> dict[str, Any]:
        observed = await self._observe(ref, spec)
        stalled = None
        if spec is not None:
            stalled = await self._stalled(ref, observed, spec.progress_deadline_seconds)
        status = compute_status(
            generation=generation,
            observed=observed,
            problem=problem,
            previous=previous,
            now=rfc3339(self.clock()),
            endpoint=ref.coordinator_endpoint(),
            selector=ref.label_selector(COMMSERVER),
            port=COORDINATOR_PORT,
            stalled=stalled,
        )
        if problem is None and stalled is not None and _degraded_reason(previous) != stalled.reason:
            # Told once per cause: the controllers' messages (pod names) change every try.
            notes.append(Note("Warning", stalled.reason, stalled.message))
        if spec is not None:
            advertised = await self._advertised(ref, spec)
            if advertised:
                status["advertised"] = advertised
        if autoscaling is not None:
            status["autoscaler"] = autoscaling
        elif spec is not None and spec.autoscaling.enabled and "autoscaler" in previous:
            status["autoscaler"] = previous["autoscaler"]
        # The operator owns the whole status: keys it no longer reports are removed.
        mine = {k: v for k, v in previous.items() if k != "kopf"}
        patch = merge_patch(status, mine, mine)
        if patch:
            key = ObjectKey(API_VERSION, KIND, ref.namespace, ref.name)
            try:
                await self.client.merge_patch(key, {"status": patch}, subresource="status")
            except TRANSIENT as exc:
                logger.warning(
                    "could not write the status of %s/%s: %s", ref.namespace, ref.name, exc
                )
        return status

    async def _stalled(self, ref: ClusterRef, observed: Observed, deadline: int) -> Problem | None:
        """Rollouts past ``deadline``, and why (``None``: none).

        A workload's clock starts when the operator first sees its generation not
        rolled out (an operator restart starts it again) and stops once it is; a
        Deployment whose controller reports ``ProgressDeadlineExceeded`` is past it
        too. The causes come from the workloads' conditions and the namespace's
        Warning events (read only then): pods the controllers failed to create,
        pods the scheduler could not place.
        """
        now = self.clock()
        clocks = self._unrolled.setdefault((ref.namespace, ref.name), {})
        workloads = [
            ("coordinator Deployment", "Deployment", observed.coordinator),
            ("comm-server StatefulSet", "StatefulSet", observed.servers),
            ("hub StatefulSet", "StatefulSet", observed.hubs),
        ]
        late: list[tuple[str, Mapping[str, Any], Workload]] = []
        seen: set[ObjectKey] = set()
        for title, kind, obj in workloads:
            if obj is None:
                continue
            meta = obj.get("metadata", {})
            key = ObjectKey("apps/v1", kind, ref.namespace, str(meta.get("name")))
            seen.add(key)
            workload = Workload.of(obj)
            if workload.rolled_out:
                clocks.pop(key, None)
                continue
            stamp = (str(meta.get("uid")), int(meta.get("generation", 1)))
            known = clocks.get(key)
            if known is None or known[0] != stamp:
                clocks[key] = known = (stamp, now)
            if now - known[1] >= deadline or deadline_exceeded(obj):
                late.append((f"{title} {key.name}", obj, workload))
        for key in set(clocks) - seen:
            del clocks[key]
        if not late:
            return None
        warnings = await self._warnings(ref.namespace)
        stalled = []
        for title, obj, workload in late:
            name = str(obj["metadata"]["name"])
            failures: list[str] = []
            failure = workload_condition(obj, "ReplicaFailure")
            if failure is not None and failure.get("status") == "True":
                failures.append(str(failure.get("message") or failure.get("reason")))
            # FailedCreate: about the StatefulSet, or the Deployment's ReplicaSets.
            created = _latest(warnings, (FAILED_CREATE,), ("StatefulSet", "ReplicaSet"), name)
            if created and not failures:
                failures.append(created)
            unscheduled = _latest(warnings, (FAILED_SCHEDULING,), ("Pod",), name)
            failing = _latest(warnings, POD_FAILURES, ("Pod",), name)
            stalled.append(
                Stalled(
                    title,
                    workload,
                    tuple(failures),
                    (unscheduled,) if unscheduled else (),
                    (failing,) if failing else (),
                )
            )
        return stalled_problem(stalled, deadline)

    async def _warnings(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Warning events, newest last; none if they cannot be read."""
        path = f"/api/v1/namespaces/{namespace}/events"
        try:
            answer = await self.client.request(
                "GET", path, params={"fieldSelector": "type=Warning"}
            )
        except TRANSIENT as exc:
            logger.warning("cannot read the events of %s: %s", namespace, exc)
            return []
        items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
        return sorted(items, key=_event_time)

    # -- autoscaling ------------------------------------------------------------------------------

    def status_url(self, ref: ClusterRef) -> str:
        return self.config.status_url.format(
            service=ref.coordinator_service, namespace=ref.namespace, port=COORDINATOR_PORT
        )

    async def _autoscale(
        self,
        ref: ClusterRef,
        spec: BrokerClusterSpec,
        previous: Mapping[str, Any],
        notes: list[Note],
    ) -> dict[str, Any]:
        before = dict(previous.get("autoscaler") or {})
        url = self.status_url(ref)
        try:
            load = await read_load(url)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            before["lastError"] = f"cannot read the coordinator's load from {url}: {exc}"[:300]
            return before
        now = self.clock()
        current = spec.comm_servers.replicas
        memory_key = (ref.namespace, ref.name)
        decision = decide(current, load, spec.autoscaling, self._history.get(memory_key, ()), now)
        self._history[memory_key] = decision.history
        result: dict[str, Any] = {
            "clients": load.clients,
            "wantedReplicas": decision.wanted,
            "lastDecision": decision.reason,
        }
        if "lastScaleTime" in before:
            result["lastScaleTime"] = before["lastScaleTime"]
        if decision.replicas != current:
            key = ObjectKey(API_VERSION, KIND, ref.namespace, ref.name)
            try:
                await self.client.merge_patch(
                    key, {"spec": {"replicas": decision.replicas}}, subresource="scale"
                )
            except TRANSIENT as exc:
                result["lastError"] = f"cannot scale: {exc}"[:300]
                return result
            direction = "up" if decision.replicas > current else "down"
            self.stats.scalings[direction] += 1
            result["lastScaleTime"] = rfc3339(now)
            notes.append(
                Note(
                    "Normal",
                    "Scaled",
                    f"comm servers {current} -> {decision.replicas}: {decision.reason}",
                )
            )
        return result

    # -- events -------------------------------------------------------------------------------

    async def _post(self, ref: ClusterRef, notes: list[Note]) -> None:
        """Post ``notes`` as core/v1 Events about the resource; failures only get logged."""
        for note in notes:
            now = rfc3339(self.clock())
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": ref.name,
                    "namespace": ref.namespace,
                    "uid": ref.uid,
                },
                "type": note.type,
                "reason": note.reason,
                "message": note.message[:1024],
                "source": {"component": MANAGED_BY},
                "reportingComponent": MANAGED_BY,
                "reportingInstance": socket.gethostname(),
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            try:
                await self.client.create(event)
            except TRANSIENT as exc:
                logger.warning("cannot post an event about %s/%s: %s", ref.namespace, ref.name, exc)
