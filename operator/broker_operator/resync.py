"""The periodic, level-based resync: every resource, every few seconds.

kopf reacts to changes of the ``BrokerCluster`` itself; this loop catches
everything else: an owned object edited or deleted by hand (drift), pods
becoming ready (status), load changing (autoscaling). It lists the
resources through the API each round rather than trusting a cache, so a
resource kopf has not seen yet, or one whose watch event was lost, is still
reconciled.
"""

from __future__ import annotations

import asyncio
import logging

from broker_operator import API_VERSION, KIND
from broker_operator.kube import ApiError, KubeClient
from broker_operator.reconcile import TRANSIENT, Reconciler

logger = logging.getLogger(__name__)


async def resync_once(client: KubeClient, reconciler: Reconciler, namespaces: list[str]) -> int:
    """Reconcile (and autoscale) every resource in ``namespaces`` (empty: all); how many."""
    bodies = []
    complete = True
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        try:
            bodies += await client.list_objects(API_VERSION, KIND, namespace)
        except TRANSIENT as exc:
            complete = False
            logger.warning("resync cannot list %s in %s: %s", KIND, namespace or "*", exc)
    if complete:
        # Forget resources deleted while kopf was not looking (metrics, autoscaler memory).
        reconciler.retain({(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bodies})
    for body in bodies:
        if body.get("metadata", {}).get("deletionTimestamp"):
            continue
        try:
            await reconciler.reconcile(body, autoscale=True)
        except (ApiError, KeyError, ValueError) as exc:
            meta = body.get("metadata", {})
            logger.warning(
                "resync of %s/%s failed: %s", meta.get("namespace"), meta.get("name"), exc
            )
    reconciler.stats.resyncs += 1
    return len(bodies)


async def resync_forever(
    client: KubeClient, reconciler: Reconciler, namespaces: list[str], interval: float
) -> None:
    """:func:`resync_once` every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        await resync_once(client, reconciler, namespaces)
