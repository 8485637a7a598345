"""Autoscaling of comm servers from the load the coordinator reports.

The coordinator's ``/status`` lists every registered server with its client
count. The wanted replica count is ``ceil(clients / targetClientsPerServer)``
within ``[minReplicas, maxReplicas]``. Scaling up happens at once; scaling
down only to the highest count recommended during the last
``scaleDownDelaySeconds`` (as the HorizontalPodAutoscaler stabilises), since
removing a server makes its clients reconnect elsewhere and a brief dip in
load is not worth that.

:func:`decide` is pure; :func:`read_load` is the one HTTP call. The decision
is written to the resource's ``scale`` subresource, exactly as ``kubectl
scale`` would, so the usual reconcile moves the StatefulSet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from broker_operator.spec import AutoscalingSpec

STATUS_TIMEOUT = 3.0


@dataclass(frozen=True)
class Load:
    """What the coordinator reported: clients in total and per plain server."""

    clients: int
    per_server: tuple[int, ...] = ()

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Load:
        """Parse the coordinator's ``GET /status`` answer."""
        servers = status.get("servers") or []
        per_server = tuple(
            int(server.get("clients", 0))
            for server in servers
            if server.get("role", "server") == "server"
        )
        total = int(status.get("clients", 0))
        return cls(clients=max(total, sum(per_server)), per_server=per_server)


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    replicas: int
    wanted: int
    reason: str
    history: tuple[Recommendation, ...]


def wanted_replicas(load: Load, policy: AutoscalingSpec) -> int:
    raw = math.ceil(load.clients / policy.target_clients_per_server)
    return min(max(raw, policy.min_replicas), policy.max_replicas)


def decide(
    current: int,
    load: Load,
    policy: AutoscalingSpec,
    history: Sequence[Recommendation],
    now: float,
) -> Decision:
    """The replica count to set now, and the recommendation history to keep.

    ``history`` is what earlier calls returned; an empty one (a fresh
    operator) is seeded with the current count, so a restart never causes an
    immediate scale-down.
    """
    window = policy.scale_down_delay_seconds
    if history:
        kept = [r for r in history if now - r.at <= window]
    else:
        kept = [Recommendation(now, current)]
    wanted = wanted_replicas(load, policy)
    kept.append(Recommendation(now, wanted))
    per = policy.target_clients_per_server
    if wanted >= current:
        replicas = wanted
        verb = "scale up" if wanted > current else "keep"
        reason = f"{verb}: {load.clients} clients at {per} per server need {wanted}"
    else:
        replicas = min(current, max(r.replicas for r in kept))
        if replicas < current:
            reason = f"scale down: {load.clients} clients at {per} per server need {wanted}"
        else:
            reason = (
                f"hold: {load.clients} clients need {wanted}, waiting {window}s before scaling down"
            )
    bounded = min(max(replicas, policy.min_replicas), policy.max_replicas)
    return Decision(replicas=bounded, wanted=wanted, reason=reason, history=tuple(kept))


async def read_load(url: str) -> Load:
    """GET the coordinator's ``/status`` (with aiohttp, kopf's HTTP client: the
    operator's only one); raises ``aiohttp.ClientError`` or ``TimeoutError`` if it cannot."""
    timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        return Load.from_status(await response.json(content_type=None))
