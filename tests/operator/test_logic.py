"""The operator's pure functions: spec parsing, patches, status, autoscaling decisions."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker_operator import quantity
from broker_operator.applying import (
    LAST_APPLIED,
    contains,
    last_applied,
    merge_patch,
    patch_for,
    with_last_applied,
)
from broker_operator.autoscaler import Load, Recommendation, decide
from broker_operator.conditions import (
    Observed,
    Problem,
    Stalled,
    Workload,
    compute_status,
    stalled_problem,
)
from broker_operator.kube import ApiError
from broker_operator.metrics import OperatorStats, operator_registry
from broker_operator.reconcile import (
    PASSING,
    REFUSED,
    REFUSED_FIRST,
    REFUSED_MAX,
    RETRY_FIRST,
    RETRY_MAX,
    TERMINATING,
    Failure,
    backoff_delay,
    classify,
    combine,
    immutable_changes,
)
from broker_operator.spec import AutoscalingSpec, SpecError, parse_spec
from tests.support import ROOT


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """What the API server does with a JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# -- spec -------------------------------------------------------------------------------------


def test_spec_defaults_match_the_documented_ones() -> None:
    spec = parse_spec("demo", {"image": "img"})
    assert spec.comm_servers.replicas == 2
    assert spec.comm_servers.drain_seconds == 10
    assert spec.topology.mode == "Mesh"
    assert spec.metrics.enabled is True
    assert spec.autoscaling.enabled is False


def test_spec_errors_name_the_field() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("demo", {"image": "", "commServers": {"replicas": -1, "extra": 1}})
    messages = caught.value.messages
    assert "spec.image: String should have at least 1 character" in messages
    assert "spec.commServers.replicas: Input should be greater than or equal to 0" in messages
    assert "spec.commServers.extra: Extra inputs are not permitted" in messages


def test_placement_defaults_to_none() -> None:
    spec = parse_spec("demo", {"image": "img"})
    for component in (spec.coordinator, spec.comm_servers):
        assert component.node_selector == {}
        assert component.tolerations == []
        assert component.pod_fields() == {}


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        (
            {"tolerations": [{"value": "brokers", "effect": "NoSchedule"}]},
            "spec.commServers.tolerations[0]: a toleration with operator Equal needs a key",
        ),
        (
            {"tolerations": [{"key": "dedicated", "operator": "Exists", "value": "brokers"}]},
            "spec.commServers.tolerations[0]: a toleration with operator Exists takes no value",
        ),
        (
            {"tolerations": [{"key": "a", "tolerationSeconds": 30}]},
            "spec.commServers.tolerations[0]: tolerationSeconds needs effect NoExecute",
        ),
        (
            {"tolerations": [{"key": "a", "operator": "NotIn"}]},
            "spec.commServers.tolerations[0].operator: Input should be 'Exists' or 'Equal'",
        ),
        (
            {"tolerations": [{"key": "a", "effect": "NoRun"}]},
            "spec.commServers.tolerations[0].effect: Input should be 'NoSchedule', "
            "'PreferNoSchedule' or 'NoExecute'",
        ),
        (
            {"tolerations": [{"key": "a", "operator": "Exists"}] * 33},
            "spec.commServers.tolerations: List should have at most 32 items",
        ),
        (
            {"nodeSelector": {"pool": "two words"}},
            "spec.commServers.nodeSelector.pool: String should match pattern",
        ),
        (
            {"nodeSelector": {"bad key": "x", "-leading": "y", "ok/fine": "z"}},
            "spec.commServers.nodeSelector: not label keys ([prefix/]name, letters, digits, "
            "'-', '_', '.'): ['bad key', '-leading']",
        ),
        (
            {"nodeSelector": {f"k{i}": "v" for i in range(33)}},
            "spec.commServers.nodeSelector: Dictionary should have at most 32 items",
        ),
    ],
)
def test_bad_placement_is_refused_readably(placement: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("demo", {"image": "img", "commServers": placement})
    assert any(m.startswith(message) for m in caught.value.messages), caught.value.messages


def test_tolerations_become_pod_tolerations_with_only_the_fields_given() -> None:
    spec = parse_spec(
        "demo",
        {
            "image": "img",
            "coordinator": {
                "nodeSelector": {"example.org/pool": "brokers"},
                "tolerations": [
                    {"key": "dedicated", "value": "brokers", "effect": "NoSchedule"},
                    # An empty value is "no value": the pod API accepts it with Exists.
                    {"key": "spot", "operator": "Exists", "value": ""},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
                ],
            },
        },
    )
    assert spec.coordinator.pod_fields() == {
        "nodeSelector": {"example.org/pool": "brokers"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "brokers", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists"},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
        ],
    }
    assert spec.comm_servers.pod_fields() == {}


# -- applying ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=10,
)
objects = st.dictionaries(st.text(max_size=2), json_values, max_size=4)


def _no_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


@given(desired=objects, live=objects, previous=objects)
def test_patch_brings_live_to_desired(
    desired: dict[str, Any], live: dict[str, Any], previous: dict[str, Any]
) -> None:
    desired, live = _no_nulls(desired), _no_nulls(live)
    patched = apply_merge_patch(live, merge_patch(desired, live, previous))
    assert contains(desired, patched)
    assert merge_patch(desired, patched, previous) == {}, "a second patch changes nothing"


def test_three_way_patch_removes_only_what_the_operator_set() -> None:
    previous = {"metadata": {"annotations": {"ours": "1", "gone": "x"}}}
    desired = with_last_applied({"metadata": {"annotations": {"ours": "1"}}})
    live = {"metadata": {"annotations": {"ours": "1", "gone": "x", "theirs": "y"}}}
    live["metadata"]["annotations"][LAST_APPLIED] = with_last_applied(previous)["metadata"][
        "annotations"
    ][LAST_APPLIED]
    patch = patch_for(desired, live)
    annotations = patch["metadata"]["annotations"]
    assert annotations["gone"] is None
    assert "theirs" not in annotations
    assert last_applied(apply_merge_patch(live, patch)) == {
        "metadata": {"annotations": {"ours": "1"}}
    }


def test_server_defaults_are_not_drift() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 80}]}}
    live = {"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "clusterIP": "1"}}
    assert merge_patch(desired, live, None) == {}


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("0.5", "500m"),
        ("1024Mi", "1Gi"),
        ("1000k", "1M"),
        ("1.5Gi", "1536Mi"),
        ("2", "2"),
        (2, "2"),
        ("1e3", "1k"),
        ("100E-3", "100m"),
        ("+.25", "250m"),
        ("0.0000000001", "1n"),  # finer than nano: rounded up, as the server does
        ("-1.5", "-1500m"),
    ],
)
def test_quantities_compare_by_value(written: str | int, stored: str) -> None:
    assert quantity.same(written, stored)
    assert quantity.same(stored, written)


@pytest.mark.parametrize(
    ("a", "b"),
    [("500m", "501m"), ("1Gi", "1G"), ("1k", "1Ki"), ("1", "1m"), ("1Gi", "big"), ("", "0")],
)
def test_different_quantities_differ(a: str, b: str) -> None:
    assert not quantity.same(a, b)


@pytest.mark.parametrize("text", ["", "Gi", "1 Gi", "1iB", "1.2.3", "1e", "1e1.5", "--1", "1KI"])
def test_quantity_parser_refuses_what_is_not_one(text: str) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)


def test_quantity_parser_reads_every_suffix() -> None:
    assert quantity.parse("3Ki").value == 3 * 1024
    assert quantity.parse("1Ei").value == 2**60
    assert quantity.parse("7n").value == Fraction(7, 10**9)
    assert quantity.parse("7u").value == Fraction(7, 10**6)
    assert quantity.parse("2E").value == 2 * 10**18
    assert quantity.parse("2e18") == quantity.parse("2E")


def test_canonicalised_quantities_are_not_drift() -> None:
    """The server stores ``0.5`` as ``500m``: no patch, nor in a volume claim's request."""
    resources = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}}
    stored = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    desired = {"spec": {"containers": [{"name": "c", "resources": resources}]}}
    live = {"spec": {"containers": [{"name": "c", "resources": stored}]}}
    assert contains(desired, live)
    assert merge_patch(desired, live, None) == {}
    claim = {"spec": {"resources": {"requests": {"storage": "1024Mi"}}}}
    assert merge_patch(claim, {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}, None) == {}
    # A real change is still one, and outside resources strings compare as strings.
    changed = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    assert merge_patch(changed, {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}, None)
    assert merge_patch(
        {"metadata": {"labels": {"v": "0.5"}}}, {"metadata": {"labels": {"v": "500m"}}}, None
    )


# -- status -----------------------------------------------------------------------------------


def workload(replicas: int, ready: int, generation: int = 1, seen: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": seen,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
        },
    }


def status(
    observed: Observed, previous: dict[str, Any], now: str, problem: Problem | None = None
) -> dict[str, Any]:
    return compute_status(
        generation=3,
        observed=observed,
        problem=problem,
        previous=previous,
        now=now,
        endpoint="ws://x",
        selector="a=b",
        port=9090,
    )


def conditions(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["lastTransitionTime"]) for c in result["conditions"]}


def test_status_phases_and_transition_times() -> None:
    starting = status(Observed(coordinator=workload(1, 0), servers=workload(2, 1)), {}, "t1")
    assert starting["phase"] == "Progressing"
    assert starting["readyServers"] == 1
    assert conditions(starting)["Ready"] == ("False", "t1")

    running = status(Observed(coordinator=workload(1, 1), servers=workload(2, 2)), starting, "t2")
    assert running["phase"] == "Running"
    assert conditions(running)["Ready"] == ("True", "t2")
    assert conditions(running)["Degraded"] == ("False", "t1"), "unchanged: time kept"

    rolling = status(
        Observed(coordinator=workload(1, 1), servers=workload(2, 2, generation=2, seen=1)),
        running,
        "t3",
    )
    assert rolling["phase"] == "Progressing", "the controller has not seen the new generation"

    broken = status(
        Observed(coordinator=workload(1, 1), servers=workload(2, 2)),
        running,
        "t4",
        Problem("InvalidSpec", "bad"),
    )
    assert broken["phase"] == "Degraded"
    assert conditions(broken)["Degraded"] == ("True", "t4")
    assert conditions(broken)["Ready"] == ("True", "t2"), "still serving with the old spec"
    assert broken["observedGeneration"] == 3


def test_status_counts_coordinator_replicas() -> None:
    servers = workload(2, 2)
    one_down = status(Observed(coordinator=workload(2, 1), servers=servers), {}, "t1")
    assert (one_down["coordinators"], one_down["readyCoordinators"]) == (2, 1)
    assert one_down["coordinatorReady"] is True, "clients still have a replica"
    assert one_down["phase"] == "Progressing"
    ready = {c["type"]: c for c in one_down["conditions"]}["Ready"]
    assert ready["message"] == "1/2 coordinators ready; 2/2 comm servers ready"
    none = status(Observed(coordinator=workload(2, 0), servers=servers), {}, "t2")
    assert none["coordinatorReady"] is False
    missing = status(Observed(servers=servers), {}, "t3")
    assert (missing["readyCoordinators"], missing["coordinatorReady"]) == (0, False)
    both = status(Observed(coordinator=workload(2, 2), servers=servers), {}, "t4")
    assert both["phase"] == "Running"


def test_a_coordinator_rollout_lasts_until_no_old_replica_is_left() -> None:
    """maxSurge: the new replicas are up and ready while an old one still runs."""
    surging: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 2,
            "readyReplicas": 3,
        },
    }
    assert not Workload.of(surging).rolled_out
    done = {**surging, "status": {**surging["status"], "replicas": 2, "readyReplicas": 2}}
    assert Workload.of(done).rolled_out
    result = status(Observed(coordinator=surging, servers=workload(2, 2)), {}, "t")
    assert result["phase"] == "Progressing"


def test_a_stalled_rollout_is_degraded_and_no_longer_progressing() -> None:
    observed = Observed(coordinator=workload(1, 0), servers=workload(2, 0))
    stuck = Stalled(
        "comm-server StatefulSet demo-commserver",
        Workload(desired=2),
        failures=('pods "demo-commserver-0" is forbidden: exceeded quota: q',),
    )
    stalled = stalled_problem([stuck], 600)
    assert stalled is not None and stalled.reason == "PodCreationFailed"
    assert "exceeded quota" in stalled.message and "0/2 pods ready" in stalled.message
    result = compute_status(
        generation=1,
        observed=observed,
        problem=None,
        previous={},
        now="t",
        endpoint="ws://x",
        selector="a=b",
        port=9090,
        stalled=stalled,
    )
    assert result["phase"] == "Degraded"
    found = {c["type"]: c for c in result["conditions"]}
    assert found["Progressing"]["status"] == "False"
    assert found["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    assert found["Degraded"]["reason"] == "PodCreationFailed"


def test_a_stalled_rollout_names_its_most_telling_cause() -> None:
    pending = Stalled("x", Workload(desired=1), unscheduled=("0/0 nodes are available",))
    silent = Stalled("y", Workload(desired=1))
    assert stalled_problem([], 1) is None
    unscheduled = stalled_problem([pending, silent], 5)
    assert unscheduled is not None and unscheduled.reason == "PodsUnschedulable"
    assert "pending" in unscheduled.message and "0/0 nodes" in unscheduled.message
    pulling = Stalled("z", Workload(desired=1), failing=('Failed to pull image "x"',))
    failing = stalled_problem([silent, pulling], 5)
    assert failing is not None and failing.reason == "PodsFailing"
    assert 'pods are failing: Failed to pull image "x"' in failing.message
    quiet = stalled_problem([silent], 5)
    assert quiet is not None and quiet.reason == "ProgressDeadlineExceeded"
    assert "pending or not ready" in quiet.message


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (409, "the object has been modified", PASSING),
        (429, "too many requests", PASSING),
        (500, "etcdserver: request timed out", PASSING),
        (503, "unavailable", PASSING),
        (401, "Unauthorized", PASSING),
        (400, "bad request", REFUSED),
        (422, "StatefulSet is invalid", REFUSED),
        (403, 'services "x" is forbidden: exceeded quota: q', REFUSED),
        (
            403,
            "unable to create new content in namespace b because it is being terminated",
            TERMINATING,
        ),
    ],
)
def test_api_errors_are_classified(status: int, message: str, kind: Failure) -> None:
    assert classify(ApiError(status, "Reason", message)) == kind


def test_connection_errors_pass() -> None:
    assert classify(TimeoutError()) == PASSING
    assert classify(OSError("connection refused")) == PASSING


def test_backoff_grows_to_its_limit() -> None:
    assert backoff_delay(PASSING, 1) == RETRY_FIRST
    assert backoff_delay(PASSING, 2) == 2 * RETRY_FIRST
    assert backoff_delay(PASSING, 100) == RETRY_MAX
    assert backoff_delay(REFUSED, 1) == REFUSED_FIRST
    assert backoff_delay(REFUSED, 100) == REFUSED_MAX
    assert backoff_delay(TERMINATING, 1) == REFUSED_MAX


def test_the_most_final_problem_names_the_reason() -> None:
    assert combine([]) is None
    both = combine([Problem("ApplyFailed", "a"), Problem("ApplyRejected", "b")])
    assert both == Problem("ApplyRejected", "b; a")
    same = combine([Problem("NameConflict", "c"), Problem("NameConflict", "c")])
    assert same == Problem("NameConflict", "c")


def test_immutable_statefulset_fields_in_a_patch() -> None:
    patch = {"spec": {"serviceName": "x", "template": {}, "selector": {}}}
    assert immutable_changes(patch) == ["selector", "serviceName"]
    assert immutable_changes({"spec": {"replicas": 3}}) == []
    assert immutable_changes({"metadata": {}}) == []


def test_load_balancer_address_becomes_the_external_endpoint() -> None:
    service = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
    result = status(Observed(coordinator_service=service), {}, "t")
    assert result["externalEndpoint"] == "ws://203.0.113.7:9090"


# -- autoscaler -------------------------------------------------------------------------------

POLICY = AutoscalingSpec(
    enabled=True,
    min_replicas=2,
    max_replicas=6,
    target_clients_per_server=100,
    scale_down_delay_seconds=60,
)


def test_load_from_the_coordinators_status() -> None:
    load = Load.from_status(
        {
            "servers": [
                {"alias": 1, "role": "server", "clients": 40},
                {"alias": 2, "role": "hub", "clients": 0},
                {"alias": 3, "role": "server", "clients": 75},
            ],
            "clients": 110,
        }
    )
    assert load == Load(clients=115, per_server=(40, 75))


def test_scale_up_at_once_and_within_bounds() -> None:
    assert decide(2, Load(450), POLICY, (), 0.0).replicas == 5
    assert decide(2, Load(10_000), POLICY, (), 0.0).replicas == 6
    assert decide(4, Load(0), POLICY, [Recommendation(-100.0, 4)], 0.0).replicas == 2


def test_scale_down_waits_for_the_delay() -> None:
    history: tuple[Recommendation, ...] = ()
    replicas = 5
    for now in (0.0, 30.0, 59.0):
        decision = decide(replicas, Load(150), POLICY, history, now)
        history = decision.history
        assert decision.replicas == 5, "a fresh operator never scales down at once"
        assert decision.reason.startswith("hold")
    decision = decide(replicas, Load(150), POLICY, history, 61.0)
    assert decision.replicas == 2
    assert decision.reason.startswith("scale down")


# -- metrics ----------------------------------------------------------------------------------


def test_docs_list_every_operator_metric() -> None:
    text = generate_latest(operator_registry(OperatorStats())).decode()
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.name.startswith("webrtc_broker_operator_")
    }
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^- `(webrtc_broker_operator_[a-z_]+)`", doc, re.MULTILINE))
    assert documented == exposed
