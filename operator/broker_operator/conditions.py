"""The ``status`` of a ``BrokerCluster``, derived from what the workloads report.

Pure functions of the live objects, so the status always describes the
cluster as it is rather than what the operator last asked for: the counts
come from the StatefulSets' and the Deployment's own ``status``, and a
workload counts as rolled out only once its controller has seen its latest
generation. Conditions follow the Kubernetes API conventions (``Ready``,
``Progressing``, ``Degraded``; ``lastTransitionTime`` moves only when the
condition's status flips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

RUNNING = "Running"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


@dataclass(frozen=True)
class Observed:
    """The live objects the status is computed from (``None``: not there)."""

    coordinator: Obj | None = None
    servers: Obj | None = None
    hubs: Obj | None = None
    coordinator_service: Obj | None = None


@dataclass(frozen=True)
class Problem:
    """Why the operator could not do its job this time (spec or API errors)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Workload:
    """Replica counts of one Deployment or StatefulSet."""

    desired: int = 0
    ready: int = 0
    current: int = 0
    rolled_out: bool = False

    @classmethod
    def of(cls, obj: Obj | None) -> Workload:
        if obj is None:
            return cls()
        spec, status = obj.get("spec", {}), obj.get("status", {})
        desired = int(spec.get("replicas", 1))
        ready = int(status.get("readyReplicas", 0))
        updated = int(status.get("updatedReplicas", 0))
        seen = int(status.get("observedGeneration", 0)) >= int(
            obj.get("metadata", {}).get("generation", 1)
        )
        revisions_match = status.get("currentRevision") == status.get("updateRevision")
        current = int(status.get("replicas", 0))
        # A Deployment mid-rollout has old pods beside the new ones (maxSurge): ready
        # counts both, so it is rolled out only once no pod of an old revision is left.
        old_pods = obj.get("kind") == "Deployment" and current > updated
        return cls(
            desired=desired,
            ready=ready,
            current=current,
            rolled_out=seen
            and updated >= desired
            and ready >= desired
            and revisions_match
            and not old_pods,
        )

    @property
    def all_ready(self) -> bool:
        return self.ready >= self.desired


@dataclass(frozen=True)
class Summary:
    coordinator: Workload = field(default_factory=Workload)
    servers: Workload = field(default_factory=Workload)
    hubs: Workload | None = None

    @classmethod
    def of(cls, observed: Observed) -> Summary:
        return cls(
            coordinator=Workload.of(observed.coordinator)
            if observed.coordinator is not None
            else Workload(desired=1),
            servers=Workload.of(observed.servers),
            hubs=Workload.of(observed.hubs) if observed.hubs is not None else None,
        )

    @property
    def workloads(self) -> list[Workload]:
        return [self.coordinator, self.servers, *([self.hubs] if self.hubs else [])]

    @property
    def ready(self) -> bool:
        return all(w.all_ready for w in self.workloads)

    @property
    def rolled_out(self) -> bool:
        return all(w.rolled_out for w in self.workloads)

    def describe(self) -> str:
        coordinators, servers = self.coordinator, self.servers
        text = (
            f"{coordinators.ready}/{coordinators.desired} coordinators ready; "
            f"{servers.ready}/{servers.desired} comm servers ready"
        )
        if self.hubs is not None:
            text += f"; {self.hubs.ready}/{self.hubs.desired} hubs ready"
        return text


def condition(
    kind: str,
    *,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
    previous: Sequence[Obj],
) -> dict[str, Any]:
    """One condition; keeps the previous ``lastTransitionTime`` unless the status flipped."""
    value = "True" if status else "False"
    since = now
    for old in previous:
        if old.get("type") == kind and old.get("status") == value:
            since = str(old.get("lastTransitionTime") or now)
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def external_endpoint(service: Obj | None, port: int) -> str | None:
    """``ws://<address>:<port>`` of a LoadBalancer Service once it has an address."""
    if service is None:
        return None
    for ingress in service.get("status", {}).get("loadBalancer", {}).get("ingress", []) or []:
        host = ingress.get("hostname") or ingress.get("ip")
        if host:
            return f"ws://{host}:{port}"
    return None


def workload_condition(obj: Obj | None, kind: str) -> Obj | None:
    """One of a Deployment's own conditions (``Progressing``, ``ReplicaFailure``)."""
    for item in (obj or {}).get("status", {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def deadline_exceeded(obj: Obj | None) -> bool:
    """The Deployment controller itself gave up: ``Progressing=False ProgressDeadlineExceeded``."""
    found = workload_condition(obj, "Progressing")
    return (
        found is not None
        and found.get("status") == "False"
        and found.get("reason") == "ProgressDeadlineExceeded"
    )


FAILED_CREATE = "FailedCreate"
FAILED_SCHEDULING = "FailedScheduling"
POD_FAILURES = ("Failed", "BackOff", "FailedMount", "FailedCreatePodSandBox", "Unhealthy")
"""Reasons of the kubelet's Warning events about a pod that is placed but does not run or
become ready: an image it cannot pull, a container that crashes, a volume it cannot mount,
a failing probe."""
CAUSE_LENGTH = 300
"""Longest piece of a controller's message quoted in a condition."""


@dataclass(frozen=True)
class Stalled:
    """A workload whose rollout passed the deadline, with what its controllers said."""

    title: str
    """``comm-server StatefulSet demo-commserver``."""
    workload: Workload
    failures: tuple[str, ...] = ()
    """Why pods could not be created (ReplicaFailure, FailedCreate events)."""
    unscheduled: tuple[str, ...] = ()
    """Why created pods were not scheduled (FailedScheduling events)."""
    failing: tuple[str, ...] = ()
    """Why placed pods do not run or become ready (the kubelet's events)."""


def stalled_problem(stalled: Sequence[Stalled], deadline: int) -> Problem | None:
    """``Degraded``'s reason and message for rollouts past ``deadline`` (``None``: none).

    The reason names the first cause found, most telling first: pods the
    controllers could not create (a quota, Pod Security, a webhook), pods no
    node would take, pods the kubelet cannot run (an image it cannot pull, a
    crashing container), or only that the pods are not ready.
    """
    if not stalled:
        return None
    parts = []
    for item in stalled:
        text = (
            f"{item.title}: {item.workload.ready}/{item.workload.desired} pods ready "
            f"after {deadline}s"
        )
        if item.failures:
            text += "; pods cannot be created: " + " | ".join(
                cause[:CAUSE_LENGTH] for cause in item.failures
            )
        elif item.unscheduled:
            text += "; pods are pending, unschedulable: " + " | ".join(
                cause[:CAUSE_LENGTH] for cause in item.unscheduled
            )
        elif item.failing:
            text += "; pods are failing: " + " | ".join(
                cause[:CAUSE_LENGTH] for cause in item.failing
            )
        else:
            text += "; pods are pending or not ready"
        parts.append(text)
    if any(item.failures for item in stalled):
        reason = "PodCreationFailed"
    elif any(item.unscheduled for item in stalled):
        reason = "PodsUnschedulable"
    elif any(item.failing for item in stalled):
        reason = "PodsFailing"
    else:
        reason = "ProgressDeadlineExceeded"
    return Problem(reason, "rollout stalled: " + "; ".join(parts))


def compute_status(
    *,
    generation: int,
    observed: Observed,
    problem: Problem | None,
    previous: Obj,
    now: str,
    endpoint: str,
    selector: str,
    port: int,
    stalled: Problem | None = None,
) -> dict[str, Any]:
    """The whole ``status`` to write (it replaces the operator's previous one).

    ``problem`` is what stopped the operator from applying the spec;
    ``stalled``, a rollout past its deadline (:func:`stalled_problem`).
    Either makes the phase ``Degraded``; ``problem`` names the reason when
    both are there.
    """
    summary = Summary.of(observed)
    old_conditions = list(previous.get("conditions") or [])
    progressing = not summary.rolled_out
    degraded = problem or stalled
    if degraded is not None:
        phase = DEGRADED
    elif summary.ready and not progressing:
        phase = RUNNING
    else:
        phase = PROGRESSING
    if stalled is not None:
        progress = ("ProgressDeadlineExceeded", stalled.message)
    elif progressing:
        progress = ("RollingOut", "workloads are rolling out: " + summary.describe())
    else:
        progress = ("Stable", "every workload runs the latest spec")
    conditions = [
        condition(
            "Ready",
            status=summary.ready,
            reason="AllReady" if summary.ready else "NotReady",
            message=summary.describe(),
            generation=generation,
            now=now,
            previous=old_conditions,
        ),
        # As a Deployment's: False once the deadline passed (no progress expected).
        condition(
            "Progressing",
            status=progressing and stalled is None,
            reason=progress[0],
            message=progress[1],
            generation=generation,
            now=now,
            previous=old_conditions,
        ),
        condition(
            "Degraded",
            status=degraded is not None,
            reason=degraded.reason if degraded else "AsExpected",
            message=degraded.message if degraded else "the spec is valid and applied",
            generation=generation,
            now=now,
            previous=old_conditions,
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "replicas": summary.servers.current,
        "servers": summary.servers.desired,
        "readyServers": summary.servers.ready,
        "coordinators": summary.coordinator.desired,
        "readyCoordinators": summary.coordinator.ready,
        # Clients can connect: the Service has a ready replica to send them to.
        "coordinatorReady": summary.coordinator.ready >= 1,
        "coordinatorEndpoint": endpoint,
        "selector": selector,
        "conditions": conditions,
    }
    if summary.hubs is not None:
        status["readyHubs"] = summary.hubs.ready
    external = external_endpoint(observed.coordinator_service, port)
    if external:
        status["externalEndpoint"] = external
    return status
