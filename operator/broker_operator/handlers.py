"""kopf's side: which events trigger a reconcile, and with which settings kopf runs.

The handlers are thin on purpose; every one of them calls the same
:meth:`Reconciler.reconcile`, because the operator is level-based: whatever
happened (the resource was created, its spec changed, the operator
restarted), the answer is to bring the cluster to the spec.

What kopf does not do here is the periodic resync (drift, readiness in the
status, autoscaling): kopf timers put a finalizer on every resource, and a
finalizer makes ``kubectl delete`` hang whenever the operator is down. The
resync is a plain loop instead (:mod:`.resync`), and deletion is left to
Kubernetes' garbage collector through owner references.

Handlers are registered on an explicit registry (not kopf's global one) so
that tests can build as many operators as they like.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.login import credentials
from broker_operator.reconcile import Reconciler
from broker_operator.served import KopfCoverage

STORAGE_PREFIX = "kopf.webrtc-broker.io"


def operator_settings(*, clusterwide: bool = True) -> kopf.OperatorSettings:
    """kopf's settings for a single, standalone operator replica.

    * standalone: no peering objects (the operator Deployment runs one
      replica with the ``Recreate`` strategy);
    * scanning when serving all namespaces: kopf watches the CRDs, so a
      BrokerCluster CRD installed (or reinstalled) after the operator started
      is served at once, not only by the next resync; that takes list and
      watch on CustomResourceDefinitions, which ``deploy/rbac.yaml``'s
      ClusterRole grants. Serving named namespaces grants nothing
      cluster-wide (``deploy/namespaced/``), so there kopf scans once, at
      start, and the resync serves a CRD installed later;
    * kopf's bookkeeping lives in annotations under our own prefix, so the
      status holds only what users read;
    * only warnings become Events: the reconciler posts the meaningful
      ones itself.
    """
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = not clusterwide
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    retry: float,
    coverage: KopfCoverage | None = None,
) -> None:
    """Register the operator's handlers for ``BrokerCluster`` on ``registry``; each call
    is noted in ``coverage`` (what kopf serves, as the resync checks)."""

    async def reconcile_now(body: kopf.Body, **_: Any) -> None:
        if coverage is not None:
            coverage.handled(str(body.get("metadata", {}).get("uid", "")))
        outcome = await reconciler.reconcile(body)
        if outcome.retry and outcome.problem is not None:
            raise kopf.TemporaryError(outcome.problem.message, delay=retry)

    async def forget(name: str | None, namespace: str | None, **_: Any) -> None:
        if name and namespace:
            reconciler.forget(namespace, name)

    # In-cluster, then kubeconfig, as the KubeClient logs in;
    # an explicit registry gets none of kopf's default login handlers.
    kopf.on.login(registry=registry, id="login")(credentials)
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.resume(*resource, registry=registry, id="reconcile")(reconcile_now)
    kopf.on.create(*resource, registry=registry, id="reconcile")(reconcile_now)
    kopf.on.update(*resource, registry=registry, id="reconcile", field="spec")(reconcile_now)
    # Optional: no finalizer. Owner references let Kubernetes delete the objects,
    # even when the operator is not running.
    kopf.on.delete(*resource, registry=registry, id="forget", optional=True)(forget)
