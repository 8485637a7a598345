"""The CRD: structural, valid for Kubernetes, in step with the operator's spec model.

The CRD's schema accepts the example and rejects bad resources with
readable messages (JSON-schema validation of the structural subset, unknown
fields refused as ``kubectl --validate=strict`` does). Its CEL rules are not
evaluated here, so each one is checked to have a twin in the operator's own
validation, which turns a violation into a ``Degraded`` condition.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from broker_operator.spec import BrokerClusterSpec, SpecError, parse_spec
from tests.operator import schemas
from tests.operator.support import IMAGE, broker_cluster, crd, crd_schema, example


def spec_schema() -> dict[str, Any]:
    spec: dict[str, Any] = crd_schema()["properties"]["spec"]
    return spec


def validate(body: dict[str, Any]) -> list[str]:
    return schemas.validate_custom(crd_schema(), body)


def test_crd_is_structural_and_valid_for_kubernetes() -> None:
    assert schemas.structural_problems(crd_schema()) == []
    assert schemas.validate_official(crd()) == []
    version = crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.commServers.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Servers", "Ready", "Phase", "Network", "Coordinators", "Endpoint", "Age"]
    # The network mode and the ready coordinators only in wide output: the default
    # table stays as it was.
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) > 0]
    assert wide == ["Network", "Coordinators"]
    status = crd_schema()["properties"]["status"]["properties"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].split(".")
        if path[1] == "status":
            assert status[path[2]]["type"] == column["type"], column["name"]


def test_example_is_accepted_and_defaulted() -> None:
    body = example()
    assert validate(body) == []
    defaulted = schemas.apply_defaults(crd_schema(), copy.deepcopy(body))
    spec = defaulted["spec"]
    assert spec["commServers"]["httpPort"] == 7590
    assert spec["auth"] == {"mode": "None", "clients": {"mode": "None"}}
    assert spec["coordinator"]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert spec["coordinator"]["replicas"] == 2
    parse_spec("demo", spec)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": None}, "spec: 'image' is a required property"),
        (
            {"commServers": {"replicas": -1}},
            "spec.commServers.replicas: -1 is less than the minimum of 0",
        ),
        (
            {"commServers": {"replicas": "two"}},
            "spec.commServers.replicas: 'two' is not of type 'integer'",
        ),
        (
            {"topology": {"mode": "Ring"}},
            "spec.topology.mode: 'Ring' is not one of ['Mesh', 'Hub']",
        ),
        (
            {"iceServers": [{"urls": ["http://example.org"]}]},
            "spec.iceServers.0.urls.0: 'http://example.org' does not match",
        ),
        (
            {"commServers": {"resources": {"limits": {"memory": "lots"}}}},
            "spec.commServers.resources.limits.memory: 'lots' does not match",
        ),
        ({"comServers": {"replicas": 2}}, 'spec.comServers: unknown field "comServers"'),
        (
            {"coordinator": {"replicas": 0}},
            "spec.coordinator.replicas: 0 is less than the minimum of 1",
        ),
        (
            {"coordinator": {"replicas": 17}},
            "spec.coordinator.replicas: 17 is greater than the maximum of 16",
        ),
        (
            {"auth": {"clients": {"mode": "Token"}}},
            "spec.auth.clients.mode: 'Token' is not one of ['None', 'JWT']",
        ),
        (
            {"auth": {"clients": {"mode": "JWT", "secretRef": {"key": "jwt"}}}},
            "spec.auth.clients.secretRef: 'name' is a required property",
        ),
        (
            {"metrics": {"serviceMonitor": {"interval": "soon"}}},
            "spec.metrics.serviceMonitor.interval: 'soon' does not match",
        ),
        (
            {"commServers": {"tolerations": [{"key": "dedicated", "operator": "In"}]}},
            "spec.commServers.tolerations.0.operator: 'In' is not one of ['Exists', 'Equal']",
        ),
        (
            {"coordinator": {"tolerations": [{"key": "dedicated", "effect": "NoRun"}]}},
            "spec.coordinator.tolerations.0.effect: 'NoRun' is not one of",
        ),
        (
            {"commServers": {"tolerations": [{"key": "a", "tolerationSeconds": -1}]}},
            "spec.commServers.tolerations.0.tolerationSeconds: -1 is less than the minimum of 0",
        ),
        (
            {"commServers": {"tolerations": [{"key": "a", "effects": "NoSchedule"}]}},
            'spec.commServers.tolerations[0].effects: unknown field "effects"',
        ),
        (
            {"commServers": {"tolerations": {"key": "a"}}},
            "spec.commServers.tolerations: {'key': 'a'} is not of type 'array'",
        ),
        (
            {"commServers": {"tolerations": [{"operator": "Exists"}] * 33}},
            "spec.commServers.tolerations: [{'operator': 'Exists'}",
        ),
        (
            {"coordinator": {"nodeSelector": {"pool": "brokers only"}}},
            "spec.coordinator.nodeSelector.pool: 'brokers only' does not match",
        ),
        (
            {"coordinator": {"nodeSelector": {"pool": 3}}},
            "spec.coordinator.nodeSelector.pool: 3 is not of type 'string'",
        ),
        (
            {"commServers": {"nodeSelector": {f"k{i}": "v" for i in range(33)}}},
            "spec.commServers.nodeSelector: {'k0': 'v'",
        ),
    ],
)
def test_bad_resources_are_rejected_readably(change: dict[str, Any], message: str) -> None:
    body = broker_cluster(**{k: v for k, v in change.items() if v is not None})
    if change.get("image", "") is None:
        del body["spec"]["image"]
    problems = validate(body)
    assert any(p.startswith(message) for p in problems), problems


def _model_schema() -> dict[str, Any]:
    """pydantic's JSON schema of the spec with ``$ref``s inlined."""
    raw = BrokerClusterSpec.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].split("/")[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema: dict[str, Any] = inline(raw)
    return schema


def _unwrap(node: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` in pydantic is ``anyOf: [X, null]``; the CRD just omits the field."""
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and "type" not in node:
        return {**branches[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _compare(crd_node: dict[str, Any], model_node: dict[str, Any], path: str) -> list[str]:
    model_node = _unwrap(model_node)
    problems = []
    keywords = (
        "enum",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
    )
    for keyword in keywords:
        if crd_node.get(keyword) != model_node.get(keyword):
            problems.append(
                f"{path}: {keyword} {crd_node.get(keyword)} != {model_node.get(keyword)}"
            )
    if "pattern" in model_node and crd_node.get("pattern") != model_node["pattern"]:
        problems.append(f"{path}: pattern differs")
    if crd_node.get("type") == "object" and "properties" in crd_node:
        crd_props = crd_node["properties"]
        model_props = model_node.get("properties", {})
        if set(crd_props) != set(model_props):
            problems.append(f"{path}: fields {sorted(crd_props)} != {sorted(model_props)}")
        for name in set(crd_props) & set(model_props):
            problems += _compare(crd_props[name], model_props[name], f"{path}.{name}")
    if isinstance(crd_node.get("additionalProperties"), dict):
        problems += _compare(
            crd_node["additionalProperties"],
            model_node.get("additionalProperties", {}),
            f"{path}.*",
        )
    if crd_node.get("type") == "array" and "items" in crd_node:
        problems += _compare(crd_node["items"], model_node.get("items", {}), f"{path}[]")
    return problems


def test_crd_schema_and_operator_model_agree() -> None:
    assert _compare(spec_schema(), _model_schema(), "spec") == []
    # Same defaults: the API server's defaulting and the model's produce the same spec.
    defaulted = schemas.apply_defaults(crd_schema(), broker_cluster())["spec"]
    modelled = parse_spec("demo", {"image": IMAGE}).model_dump(by_alias=True, exclude_none=True)
    assert defaulted == _without_empty(modelled)


def _without_empty(node: Any) -> Any:
    """The model's empty maps and lists are absent fields in the API server's view."""
    if isinstance(node, dict):
        return {k: _without_empty(v) for k, v in node.items() if v not in ({}, [])}
    return node


CEL_TWINS: dict[str, tuple[str, dict[str, Any], str]] = {
    "self.metadata.name.size() <= 40": ("x" * 41, {}, "longer than 40 characters"),
    "!has(self.mode) || self.mode != 'SharedSecret' || has(self.secretRef)": (
        "demo",
        {"auth": {"mode": "SharedSecret"}},
        "auth.secretRef is required",
    ),
    "!has(self.mode) || self.mode != 'JWT' || has(self.secretRef)": (
        "demo",
        {"auth": {"clients": {"mode": "JWT"}}},
        "spec.auth.clients: auth.clients.secretRef is required when auth.clients.mode is JWT",
    ),
    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas": (
        "demo",
        {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
        "minReplicas (3) must not exceed maxReplicas (2)",
    ),
    "(has(self.operator) && self.operator == 'Exists') || has(self.key)": (
        "demo",
        {"commServers": {"tolerations": [{"operator": "Equal", "value": "brokers"}]}},
        "spec.commServers.tolerations[0]: a toleration with operator Equal needs a key",
    ),
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''": (
        "demo",
        {
            "coordinator": {
                "tolerations": [{"key": "dedicated", "operator": "Exists", "value": "x"}]
            }
        },
        "spec.coordinator.tolerations[0]: a toleration with operator Exists takes no value",
    ),
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')": (
        "demo",
        {
            "commServers": {
                "tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]
            }
        },
        "spec.commServers.tolerations[0]: tolerationSeconds needs effect NoExecute",
    ),
    "!has(self.mode) || self.mode != 'NodePort' || has(self.nodePortBase)": (
        "demo",
        {"commServers": {"network": {"mode": "NodePort"}}},
        "network.nodePortBase is required when network.mode is NodePort",
    ),
    (
        "!has(self.commServers) || !has(self.commServers.network) || "
        "!has(self.commServers.network.mode) || self.commServers.network.mode != 'NodePort' || "
        "!has(self.commServers.network.nodePortBase) || self.commServers.network.nodePortBase + "
        "((has(self.autoscaling) && has(self.autoscaling.enabled) && self.autoscaling.enabled) ? "
        "(has(self.autoscaling.maxReplicas) ? self.autoscaling.maxReplicas : 10) : "
        "(has(self.commServers.replicas) ? self.commServers.replicas : 2)) <= 32768"
    ): (
        "demo",
        {
            "commServers": {
                "replicas": 2,
                "network": {"mode": "NodePort", "nodePortBase": 32760},
            },
            "autoscaling": {"enabled": True, "maxReplicas": 10},
        },
        "nodePortBase (32760) + 10 comm servers go beyond NodePort 32767",
    ),
    "!has(self.mode) || self.mode == 'None' || has(self.secretRef)": (
        "demo",
        {"turn": {"mode": "External", "urls": ["turn:turn.example.org:3478"]}},
        "turn.secretRef is required when turn.mode is External or Managed",
    ),
    "!has(self.mode) || self.mode != 'External' || (has(self.urls) && size(self.urls) > 0)": (
        "demo",
        {"turn": {"mode": "External", "secretRef": {"name": "turn"}}},
        "turn.urls are required when turn.mode is External",
    ),
    "!has(self.mode) || self.mode != 'Managed' || has(self.managed)": (
        "demo",
        {"turn": {"mode": "Managed", "secretRef": {"name": "turn"}}},
        "turn.managed is required when turn.mode is Managed",
    ),
    (
        "!has(self.relayPortMin) || !has(self.relayPortMax) || "
        "self.relayPortMin <= self.relayPortMax"
    ): (
        "demo",
        {
            "turn": {
                "mode": "Managed",
                "secretRef": {"name": "turn"},
                "managed": {
                    "allowedPeerNetworks": ["10.0.0.0/8"],
                    "relayPortMin": 50000,
                    "relayPortMax": 49999,
                },
            }
        },
        "turn.managed.relayPortMin must not exceed relayPortMax",
    ),
}


def test_every_cel_rule_is_enforced_by_the_operator_too() -> None:
    rules = {rule for _, rule, _ in schemas.cel_rules(crd_schema())}
    assert rules == set(CEL_TWINS)
    for name, spec, message in CEL_TWINS.values():
        body = broker_cluster(**spec)
        assert validate(body) == [], "the OpenAPI part accepts it: only CEL refuses"
        with pytest.raises(SpecError) as caught:
            parse_spec(name, body["spec"])
        assert message in str(caught.value)


def test_placement_is_accepted_defaulted_and_parsed() -> None:
    toleration = {"key": "dedicated", "value": "brokers", "effect": "NoSchedule"}
    body = broker_cluster(
        coordinator={"nodeSelector": {"example.org/pool": "brokers"}},
        commServers={
            "nodeSelector": {"kubernetes.io/hostname": "node-1"},
            "tolerations": [
                toleration,
                {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                {"key": "gpu", "operator": "Exists", "value": ""},
            ],
        },
    )
    assert validate(body) == []
    defaulted = schemas.apply_defaults(crd_schema(), copy.deepcopy(body))["spec"]
    # The API server fills in the operator (Equal, as the pod API reads a missing one).
    assert defaulted["commServers"]["tolerations"][0] == {**toleration, "operator": "Equal"}
    assert "tolerations" not in defaulted["coordinator"]
    parsed = parse_spec("demo", defaulted)
    assert parsed.coordinator.node_selector == {"example.org/pool": "brokers"}
    assert parsed.coordinator.tolerations == []
    assert [t.operator for t in parsed.comm_servers.tolerations] == ["Equal", "Exists", "Exists"]


def test_placement_maps_and_lists_are_atomic_like_the_pod_specs() -> None:
    """Server-side apply replaces them whole, as it does a pod's: a merged toleration
    list from two managers could tolerate what neither asked for."""
    for component in ("coordinator", "commServers"):
        fields = spec_schema()["properties"][component]["properties"]
        assert fields["nodeSelector"]["x-kubernetes-map-type"] == "atomic"
        assert fields["tolerations"]["x-kubernetes-list-type"] == "atomic"


def test_client_jwt_auth_is_accepted_and_defaulted() -> None:
    body = broker_cluster(auth={"clients": {"mode": "JWT", "secretRef": {"name": "tokens"}}})
    assert validate(body) == []
    defaulted = schemas.apply_defaults(crd_schema(), copy.deepcopy(body))
    assert defaulted["spec"]["auth"] == {
        "mode": "None",
        "clients": {"mode": "JWT", "secretRef": {"name": "tokens", "key": "secret"}},
    }
    parsed = parse_spec("demo", defaulted["spec"])
    assert parsed.auth.clients.secret_ref is not None
    assert parsed.auth.clients.secret_ref.key == "secret"
