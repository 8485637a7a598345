"""How to move a live object to its desired state with one JSON merge patch.

The API server fills in defaults (``imagePullPolicy``, ``clusterIP``,
``terminationMessagePath``...) and other controllers add fields of their
own, so "live equals desired" is never true; "desired is contained in live"
is the test (:func:`contains`). Fields the operator set once but no longer
wants (an annotation after metrics were turned off) must be removed, yet
fields it never set must be left alone: the patch is three-way, like
``kubectl apply``: the last configuration the operator applied is kept in an
annotation, and a key that was there and is no longer desired is set to
``null``.

Lists are replaced whole, as JSON merge patch does: the operator owns the
lists it writes (containers, ports, env).

Below a ``resources`` key (a container's requests and limits, a volume claim's
storage request) values are quantities, which the API server stores in
canonical form (``0.5`` as ``500m``, ``1024Mi`` as ``1Gi``): they compare by
value (:mod:`broker_operator.quantity`), or every resync would patch them again.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from broker_operator import quantity

LAST_APPLIED = "webrtc-broker.io/last-applied"


QUANTITIES = "resources"
"""The key below which values are quantities."""


def contains(desired: Any, live: Any, *, quantities: bool = False) -> bool:
    """True if every field of ``desired`` has the same value in ``live``.

    With ``quantities`` (set below a ``resources`` key), values that are
    quantities compare by value.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(value, live[key], quantities=quantities or key == QUANTITIES)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(
                contains(d, v, quantities=quantities) for d, v in zip(desired, live, strict=True)
            )
        )
    return bool(desired == live) or (quantities and quantity.same(desired, live))


def merge_patch(
    desired: Any, live: Any, last_applied: Any, *, quantities: bool = False
) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that takes ``live`` to ``desired``; ``{}`` if none.

    ``last_applied`` is what the operator applied before (or ``None``): keys it
    had and ``desired`` lacks are deleted from ``live``.
    """
    patch: dict[str, Any] = {}
    previous = last_applied if isinstance(last_applied, dict) else {}
    live_map = live if isinstance(live, dict) else {}
    for key, value in desired.items():
        current = live_map.get(key)
        below = quantities or key == QUANTITIES
        if isinstance(value, dict) and isinstance(current, dict):
            nested = merge_patch(value, current, previous.get(key), quantities=below)
            if nested:
                patch[key] = nested
        elif key not in live_map or not contains(value, current, quantities=below):
            patch[key] = value
    for key in previous:
        if key not in desired and key in live_map:
            patch[key] = None
    return patch


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` carrying itself (minus this annotation) in the last-applied annotation."""
    recorded = copy.deepcopy(desired)
    out = copy.deepcopy(desired)
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[LAST_APPLIED] = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
    return out


def last_applied(live: dict[str, Any]) -> dict[str, Any] | None:
    """What the operator applied to ``live`` last time, if it recorded it."""
    raw = live.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def patch_for(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The patch that takes ``live`` to ``desired`` (already annotated), ``{}`` if in sync."""
    return merge_patch(desired, live, last_applied(live))
