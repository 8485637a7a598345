"""Whether kopf hands the BrokerClusters to the handlers, and a nudge when it does not.

Serving every namespace, kopf watches CustomResourceDefinitions and, on each
event of one, reads the API's discovery again to learn which resources are
served. A CRD appears in discovery a moment after the event that marks it
Established, so kopf can read discovery too early and not serve a CRD
installed after the operator started until that CRD changes again. The
resync would still reconcile those BrokerClusters, but only every few
seconds, and kopf's handlers would never see their changes.

The resync notices it: it lists BrokerClusters that kopf has never handed to a
handler. After :data:`GRACE_ROUNDS` such rounds (kopf may just be slower than
the resync), the operator sets an annotation on the CRD: an event of the CRD,
on which kopf reads discovery again, complete by now.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable

from broker_operator import GROUP, PLURAL
from broker_operator.kube import MERGE_PATCH, KubeClient

logger = logging.getLogger(__name__)

CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"
NUDGE_ANNOTATION = f"{GROUP}/discovery-nudged-at"
GRACE_ROUNDS = 2
"""Resync rounds a BrokerCluster may go unhandled by kopf before the nudge."""


class KopfCoverage:
    """Which BrokerClusters kopf has handed to a handler, as the resync sees them."""

    def __init__(self, grace_rounds: int = GRACE_ROUNDS) -> None:
        self._handled: set[str] = set()
        self._grace = grace_rounds
        self._rounds_missed = 0
        self.nudges = 0

    def handled(self, uid: str) -> None:
        """kopf called a handler for the BrokerCluster ``uid``."""
        self._handled.add(uid)

    def round(self, listed: Iterable[str]) -> bool:
        """One resync round listed these uids; True when kopf is to be nudged now."""
        if not set(listed) - self._handled:
            self._rounds_missed = 0
            return False
        self._rounds_missed += 1
        if self._rounds_missed < self._grace:
            return False
        self._rounds_missed = 0
        self.nudges += 1
        return True


async def nudge(client: KubeClient) -> None:
    """Annotate the BrokerCluster CRD: the event makes kopf read discovery again."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"metadata": {"annotations": {NUDGE_ANNOTATION: now}}}
    logger.warning("kopf has not served some BrokerClusters; touching their CRD to rescan")
    await client.request("PATCH", CRD_PATH, patch, content_type=MERGE_PATCH)
