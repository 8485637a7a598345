"""Every cluster's comm servers prove a server secret: the user's, or one the operator makes.

Without one, anyone who reaches the coordinator registers as a comm server and
is handed clients, their tokens and every topic; with client tokens on, the
services refuse to start without it. So a ``BrokerCluster`` that names no
Secret gets a generated one, which every workload reads. These tests check the
manifests alone; ``tests/k8s/test_operator_secret.py`` checks, on the real API
server, that the operator creates it once, owned by the cluster, and never
reads it back or changes it, and that pods run with it.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from broker_operator.manifests import desired_objects
from broker_operator.manifests.secret import GENERATED_KEY, generated_secret
from broker_operator.naming import ClusterRef
from broker_operator.spec import parse_spec

REF = ClusterRef("demo", "default", "uid-1")
WORKLOADS = {
    "Deployment": "WEBRTC_BROKER_COORDINATOR_SERVER_SECRET",
    "StatefulSet": "WEBRTC_BROKER_COMMSERVER_SERVER_SECRET",
}


def server_secret_refs(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Where every workload reads its server secret from, as (Secret, key)."""
    refs = set()
    for item in desired_objects(REF, parse_spec("demo", {"image": "img", **spec})):
        if item["kind"] not in WORKLOADS:
            continue
        (container,) = item["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        source = env[WORKLOADS[item["kind"]]]["valueFrom"]["secretKeyRef"]
        refs.add((source["name"], source["key"]))
    return refs


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"auth": {"clients": {"mode": "JWT", "secretRef": {"name": "tokens"}}}},
        {"topology": {"mode": "Hub"}},
    ],
)
def test_without_a_named_secret_every_workload_reads_the_generated_one(
    spec: dict[str, Any],
) -> None:
    assert server_secret_refs(spec) == {("demo-server-secret", GENERATED_KEY)}


def test_a_named_secret_is_used_instead() -> None:
    spec = {"auth": {"mode": "SharedSecret", "secretRef": {"name": "mine", "key": "token"}}}
    assert server_secret_refs(spec) == {("mine", "token")}


def test_a_generated_secret_is_random_owned_and_unrecorded() -> None:
    first, second = generated_secret(REF), generated_secret(REF)
    values = [base64.b64decode(s["data"][GENERATED_KEY]).decode() for s in (first, second)]
    assert values[0] != values[1]
    assert all(re.fullmatch(r"[\w-]{43}", value) for value in values)  # 32 random bytes
    meta = first["metadata"]
    assert meta["name"] == "demo-server-secret"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"  # deleted with the cluster
    assert "annotations" not in meta  # the value is in no last-applied record
