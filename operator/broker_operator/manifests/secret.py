"""The server secret the operator generates when a ``BrokerCluster`` names none.

Comm servers register at the coordinator with a shared server secret. Without
one, anyone who can reach the coordinator registers as a comm server and is
handed clients (and, with client tokens, their tokens) and every topic's
messages; the services even refuse to check client tokens without it. So
every cluster gets one: the user's (``auth.mode: SharedSecret``), or else a
random one in a Secret the operator creates and owns (deleted with the
cluster by Kubernetes' garbage collector).

The generated Secret is created when it is missing (the operator asks at
most once a minute, by trying to create it: it may not read Secrets) and
never read or changed: a new value would split running pods (which keep the
old one in their environment) from new ones. Its value never appears in a manifest the
operator records (no last-applied annotation), in a log or an Event. A Secret
of that name made by someone else is used as it is.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from broker_operator.naming import SERVER_SECRET, ClusterRef
from broker_operator.spec import BrokerClusterSpec

GENERATED_KEY = "secret"
SECRET_BYTES = 32
"""Random bytes of a generated secret (43 URL-safe characters)."""


def uses_generated_secret(spec: BrokerClusterSpec) -> bool:
    """True unless the spec names a Secret of its own."""
    return spec.auth.mode != "SharedSecret" or spec.auth.secret_ref is None


def server_secret_source(ref: ClusterRef, spec: BrokerClusterSpec) -> tuple[str, str]:
    """The Secret name and key the pods read the server secret from."""
    named = spec.auth.secret_ref
    if uses_generated_secret(spec) or named is None:
        return ref.server_secret, GENERATED_KEY
    return named.name, named.key


def generated_secret(ref: ClusterRef) -> dict[str, Any]:
    """A new Secret with a fresh random server secret, owned by the cluster."""
    value = secrets.token_urlsafe(SECRET_BYTES)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": ref.metadata(ref.server_secret, SERVER_SECRET),
        "type": "Opaque",
        "data": {GENERATED_KEY: base64.b64encode(value.encode()).decode()},
    }
