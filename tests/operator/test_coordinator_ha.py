"""The coordinator replicas the operator renders: Deployment, peers Service, budget, env.

What the comm servers and coordinators are told is checked against the
services' own settings (:mod:`webrtc_broker.config`): the rendered
environment is loaded into ``CoordinatorConfig`` and ``CommServerConfig`` as
the pods would load it.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker_operator.manifests import desired_objects, key_of, optional_objects
from broker_operator.manifests.coordinator import ALIAS_SPACES
from broker_operator.naming import ClusterRef
from broker_operator.spec import MAX_NAME_LENGTH, SpecError, parse_spec
from tests.operator import schemas
from tests.operator.support import IMAGE
from webrtc_broker.config import CommServerConfig, CoordinatorConfig

REF = ClusterRef("demo", "team-a", "0b5e7a3c-1111-2222-3333-444455556666")
COORDINATOR_PREFIX = "WEBRTC_BROKER_COORDINATOR_"
COMMSERVER_PREFIX = "WEBRTC_BROKER_COMMSERVER_"


def render(ref: ClusterRef = REF, **spec: Any) -> list[dict[str, Any]]:
    return desired_objects(ref, parse_spec(ref.name, {"image": IMAGE, **spec}))


def named(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [i for i in items if i["kind"] == kind and i["metadata"]["name"] == name]
    return found


def maybe(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    found = [i for i in items if i["kind"] == kind and i["metadata"]["name"] == name]
    return found[0] if found else None


def plain_env(workload: dict[str, Any]) -> dict[str, str]:
    """The container's variables with a literal value (not those from Secrets)."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def settings_env(env: dict[str, str], prefix: str) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.startswith(prefix)}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, and In/DoesNotExist expressions) against labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
    return True


def test_default_is_two_replicas_rolled_one_new_before_one_old() -> None:
    deployment = named(render(), "Deployment", "demo-coordinator")
    assert deployment["spec"]["replicas"] == 2
    # No replica unavailable during an upgrade: a new one is added first.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    for replicas in (1, 16):
        items = render(coordinator={"replicas": replicas})
        assert named(items, "Deployment", "demo-coordinator")["spec"]["replicas"] == replicas


@pytest.mark.parametrize("replicas", [0, 17])
def test_replicas_outside_one_to_sixteen_are_refused(replicas: int) -> None:
    with pytest.raises(SpecError, match=r"spec\.coordinator\.replicas"):
        parse_spec("demo", {"image": IMAGE, "coordinator": {"replicas": replicas}})


def test_replicas_draw_alias_spaces_the_coordinator_accepts() -> None:
    env = plain_env(named(render(), "Deployment", "demo-coordinator"))
    assert env[f"{COORDINATOR_PREFIX}ALIAS_SPACES"] == str(ALIAS_SPACES) == "1000"
    # No replica id: every replica draws its own (a Deployment's pods have no ordinal).
    assert f"{COORDINATOR_PREFIX}REPLICA_ID" not in env
    config = CoordinatorConfig(**lowered(settings_env(env, COORDINATOR_PREFIX)))
    assert config.alias_spaces == 1000
    assert config.replica_id is None
    assert config.ready_needs_server is True


def lowered(env: dict[str, str]) -> dict[str, Any]:
    """Variables as the settings' field names, for a config built without os.environ."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        field = name.removeprefix(COORDINATOR_PREFIX).removeprefix(COMMSERVER_PREFIX).lower()
        out[field] = value
    return out


@pytest.mark.parametrize(
    ("spec", "needs_server"),
    [
        ({}, True),
        ({"commServers": {"replicas": 1}}, True),
        ({"commServers": {"replicas": 0}}, False),
        # The autoscaler keeps at least minReplicas (1 or more) comm servers.
        ({"commServers": {"replicas": 0}, "autoscaling": {"enabled": True}}, True),
        ({"commServers": {"replicas": 0}, "topology": {"mode": "Hub"}}, False),
    ],
)
def test_readiness_waits_for_a_server_only_when_there_are_servers(
    spec: dict[str, Any], needs_server: bool
) -> None:
    env = plain_env(named(render(**spec), "Deployment", "demo-coordinator"))
    assert (env.get(f"{COORDINATOR_PREFIX}READY_NEEDS_SERVER") == "true") is needs_server


def test_comm_servers_find_every_replica_through_the_peers_service() -> None:
    items = render(topology={"mode": "Hub"})
    deployment = named(items, "Deployment", "demo-coordinator")
    peers = named(items, "Service", "demo-coordinator-peers")
    assert schemas.validate_official(peers) == []
    assert peers["spec"]["clusterIP"] == "None"
    # A replica is ready only once a server linked to it: unready ones must resolve.
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert selects(
        {"matchLabels": peers["spec"]["selector"]},
        deployment["spec"]["template"]["metadata"]["labels"],
    )
    assert peers["spec"]["ports"] == [
        {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["name"] == "http"
    for name in ("demo-commserver", "demo-hub"):
        statefulset = named(items, "StatefulSet", name)
        (server,) = statefulset["spec"]["template"]["spec"]["containers"]
        assert "--coordinator-url" not in server["args"]
        env = plain_env(statefulset)
        assert f"{COMMSERVER_PREFIX}COORDINATOR_URL" not in env
        assert f"{COMMSERVER_PREFIX}COORDINATOR_URLS" not in env
        host = env[f"{COMMSERVER_PREFIX}COORDINATOR_DNS"]
        assert host == "demo-coordinator-peers.team-a.svc"
        assert host.split(".")[0] == peers["metadata"]["name"]
        config = CommServerConfig(**lowered(settings_env(env, COMMSERVER_PREFIX)))
        assert config.coordinator_dns == host
        assert config.coordinator_dns_port == 9090
        assert config.coordinator_urls == [], "no single URL besides the replicas"


def test_client_service_stays_the_one_address_of_every_ready_replica() -> None:
    items = render(coordinator={"serviceType": "NodePort"})
    service = named(items, "Service", "demo-coordinator")
    assert service["spec"]["type"] == "NodePort"
    assert "clusterIP" not in service["spec"]
    assert "publishNotReadyAddresses" not in service["spec"]
    deployment = named(items, "Deployment", "demo-coordinator")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_longest_cluster_name_still_names_the_peers_service() -> None:
    ref = ClusterRef("n" * MAX_NAME_LENGTH, "team-a", "uid")
    peers = named(render(ref), "Service", f"{ref.name}-coordinator-peers")
    assert len(peers["metadata"]["name"]) <= 63, "a Service name is a DNS label"
    assert schemas.validate_official(peers) == []


def test_replicas_prefer_nodes_of_their_own() -> None:
    deployment = named(render(), "Deployment", "demo-coordinator")
    pod = deployment["spec"]["template"]["spec"]
    (preferred,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert (
        "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]
    ), "more replicas than nodes must still run"
    assert preferred["weight"] == 100
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(term["labelSelector"], labels)
    # Only this cluster's coordinators: not its comm servers, not another cluster's.
    assert not selects(term["labelSelector"], {**labels, "app.kubernetes.io/instance": "other"})
    assert not selects(
        term["labelSelector"], {**labels, "app.kubernetes.io/component": "commserver"}
    )


def test_placement_keeps_the_spread() -> None:
    placement = {
        "nodeSelector": {"example.org/pool": "control"},
        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
    }
    pod = named(render(coordinator=placement), "Deployment", "demo-coordinator")["spec"][
        "template"
    ]["spec"]
    assert pod["nodeSelector"] == placement["nodeSelector"]
    assert pod["tolerations"] == placement["tolerations"]
    assert "podAntiAffinity" in pod["affinity"]


def test_two_replicas_or_more_get_a_budget_of_one() -> None:
    items = render(coordinator={"replicas": 3})
    budget = named(items, "PodDisruptionBudget", "demo-coordinator")
    assert schemas.validate_official(budget) == []
    assert budget["spec"]["maxUnavailable"] == 1
    deployment = named(items, "Deployment", "demo-coordinator")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    # The comm servers keep theirs.
    assert maybe(items, "PodDisruptionBudget", "demo-commserver") is not None


def test_a_single_replica_has_no_budget_and_a_leftover_one_is_removed() -> None:
    items = render(coordinator={"replicas": 1})
    assert maybe(items, "PodDisruptionBudget", "demo-coordinator") is None
    # What the reconciler deletes when the spec no longer wants it (owned ones only).
    leftover = key_of(named(render(), "PodDisruptionBudget", "demo-coordinator"))
    assert leftover in optional_objects(REF)
    assert leftover not in {key_of(item) for item in items}


def test_every_optional_object_is_one_some_spec_renders() -> None:
    """Each key the reconciler deletes when unwanted is one some spec renders: a key
    spelled differently from its object would leave that object behind for ever."""
    specs: list[dict[str, Any]] = [
        {"coordinator": {"replicas": 2}, "topology": {"mode": "Hub"}},
        {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "turn": {
                "mode": "Managed",
                "secretRef": {"name": "t"},
                "managed": {"allowedPeerNetworks": ["10.0.0.0/8"]},
            },
        },
    ]
    rendered = {key_of(item) for spec in specs for item in render(**spec)}
    assert set(optional_objects(REF)) <= rendered


def test_service_monitor_scrapes_each_coordinator_once() -> None:
    items = render(metrics={"serviceMonitor": {"enabled": True}})
    (monitor,) = [i for i in items if i["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]
    scraped = [
        item["metadata"]["name"]
        for item in items
        if item["kind"] == "Service" and selects(selector, item["metadata"]["labels"])
    ]
    coordinator_pods = named(items, "Deployment", "demo-coordinator")["spec"]["selector"][
        "matchLabels"
    ]
    through = [
        name
        for name in scraped
        if named(items, "Service", name)["spec"]["selector"] == coordinator_pods
    ]
    assert through == ["demo-coordinator"], "the peers Service reaches the same pods"
    assert "demo-commserver" in scraped
