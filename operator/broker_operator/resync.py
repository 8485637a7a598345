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
from typing import Any

from broker_operator import API_VERSION, KIND
from broker_operator.kube import ApiError, KubeClient
from broker_operator.reconcile import TRANSIENT, Reconciler
from broker_operator.served import KopfCoverage, nudge

logger = logging.getLogger(__name__)


async def resync_once(
    client: KubeClient,
    reconciler: Reconciler,
    namespaces: list[str],
    coverage: KopfCoverage | None = None,
) -> int:
    """Reconcile (and autoscale) every resource in ``namespaces`` (empty: all); how many.

    With ``coverage`` (serving every namespace), BrokerClusters that kopf keeps
    not handing to a handler make the operator nudge kopf (:mod:`.served`)."""
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
        live = [b["metadata"].get("uid", "") for b in bodies if not deleting(b)]
        if coverage is not None and coverage.round(live):
            try:
                await nudge(client)
            except TRANSIENT as exc:
                logger.warning("could not touch the BrokerCluster CRD: %s", exc)
    for body in bodies:
        if deleting(body):
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


def deleting(body: dict[str, Any]) -> bool:
    return bool(body.get("metadata", {}).get("deletionTimestamp"))


async def resync_forever(
    client: KubeClient,
    reconciler: Reconciler,
    namespaces: list[str],
    interval: float,
    coverage: KopfCoverage | None = None,
) -> None:
    """:func:`resync_once` every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        await resync_once(client, reconciler, namespaces, coverage)
