"""values.yaml, values.schema.json and the chart README, against each other and the CRD.

Bad values must fail before anything is rendered, with a message that names
the value and says what is wrong: these tests assert on helm's own output.
The schema's ``brokerCluster.spec`` part repeats the CRD's rules, and
values.yaml repeats the CRD's defaults; both are compared field by field so
that a change to the CRD cannot leave the chart behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import CHART, NAMESPACE, run_helm, template
from tests.operator import schemas
from tests.operator.support import crd_schema

SCHEMA_ERROR = "values don't meet the specifications of the schema(s) in the following chart(s):"


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--set",
            "brokerCluster.spec.commServers.replicas=-1",
            "at '/brokerCluster/spec/commServers/replicas': minimum: got -1, want 0",
        ),
        (
            "--set-string",
            "brokerCluster.spec.commServers.replicas=two",
            "at '/brokerCluster/spec/commServers/replicas': got string, want integer",
        ),
        (
            "--set",
            "brokerCluster.spec.commServers.network.mode=Overlay",
            "at '/brokerCluster/spec/commServers/network/mode': "
            "value must be one of 'PodIP', 'HostNetwork', 'NodePort', 'LoadBalancer'",
        ),
        (
            "--set",
            "brokerCluster.spec.commServers.replicas=300",
            "at '/brokerCluster/spec/commServers/replicas': maximum: got 300, want 256",
        ),
        (
            "--set",
            "brokerCluster.enabled=maybe",
            "at '/brokerCluster/enabled': got string, want boolean",
        ),
        (
            "--set",
            "operator.metricsPort=metrics",
            "at '/operator/metricsPort': got string, want integer",
        ),
        (
            "--set",
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        (
            "--set",
            "brokerCluster.spec.topology.mode=Ring",
            "at '/brokerCluster/spec/topology/mode': value must be one of 'Mesh', 'Hub'",
        ),
        (
            "--set",
            "brokerCluster.spec.comServers.replicas=3",
            "at '/brokerCluster/spec': additional properties 'comServers' not allowed",
        ),
        (
            "--set",
            "brokerCluster.spec.auth.mode=SharedSecret",
            "at '/brokerCluster/spec/auth': missing property 'secretRef'",
        ),
        (
            "--set",
            "brokerCluster.spec.auth.clients.mode=JWT",
            "at '/brokerCluster/spec/auth/clients': missing property 'secretRef'",
        ),
        (
            "--set",
            "brokerCluster.spec.auth.clients.mode=Token",
            "at '/brokerCluster/spec/auth/clients/mode': value must be one of 'None', 'JWT'",
        ),
        (
            "--set",
            "brokerCluster.name=" + "x" * 41,
            "at '/brokerCluster/name': maxLength: got 41, want 40",
        ),
        (
            "--set",
            "operator.watchNamespaces={Team_A}",
            "at '/operator/watchNamespaces/0': 'Team_A' does not match pattern",
        ),
        (
            "--set",
            "brokerCluster.spec.iceServers[0].urls[0]=http://turn.example.org",
            "at '/brokerCluster/spec/iceServers/0/urls/0': "
            "'http://turn.example.org' does not match pattern",
        ),
        (
            "--set",
            "tests.timeoutSeconds=0",
            "at '/tests/timeoutSeconds': exclusiveMinimum: got 0, want 0",
        ),
        (
            "--set",
            "brokerCluster.spec.commServers.tolerations[0].effect=NoRun",
            "at '/brokerCluster/spec/commServers/tolerations/0/effect': "
            "value must be one of 'NoSchedule', 'PreferNoSchedule', 'NoExecute'",
        ),
        (
            # The CRD's CEL rule: an Equal toleration (the default operator) needs a key.
            "--set",
            "brokerCluster.spec.commServers.tolerations[0].value=brokers",
            "at '/brokerCluster/spec/commServers/tolerations/0': missing property 'key'",
        ),
        (
            "--set",
            "brokerCluster.spec.coordinator.nodeSelector.pool=two words",
            "at '/brokerCluster/spec/coordinator/nodeSelector/pool': "
            "'two words' does not match pattern",
        ),
        (
            "--set",
            "brokerCluster.spec.coordinator.nodeSelector.bad key=x",
            "'bad key' does not match pattern",
        ),
        (
            "--set",
            "brokerCluster.spec.commServers.network.mode=NodePort",
            "at '/brokerCluster/spec/commServers/network': missing property 'nodePortBase'",
        ),
        (
            "--set",
            "brokerCluster.spec.turn.mode=Managed",
            "at '/brokerCluster/spec/turn': missing property 'secretRef'",
        ),
        (
            "--set",
            "tests.tolerations=dedicated",
            "at '/tests/tolerations': got string, want array",
        ),
    ],
)
def test_bad_values_are_refused_readably(flag: str, value: str, message: str) -> None:
    for command in ("template", "lint"):
        args = [command, "demo", str(CHART)] if command == "template" else [command, str(CHART)]
        result = run_helm(*args, "--namespace", NAMESPACE, flag, value)
        assert result.returncode != 0, f"helm {command} accepted {value}"
        assert message in result.output, result.output
        if command == "template":
            assert SCHEMA_ERROR in result.output, result.output


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        (
            {"key": "dedicated", "operator": "Exists", "value": "brokers"},
            "at '/brokerCluster/spec/commServers/tolerations/0/value': maxLength: got 7, want 0",
        ),
        (
            {"key": "dedicated", "effect": "NoSchedule", "tolerationSeconds": 30},
            "at '/brokerCluster/spec/commServers/tolerations/0/effect': value must be 'NoExecute'",
        ),
        (
            {"key": "dedicated", "tolerationSeconds": 30},
            "at '/brokerCluster/spec/commServers/tolerations/0': missing property 'effect'",
        ),
        (
            {"key": "dedicated", "operator": "In"},
            "at '/brokerCluster/spec/commServers/tolerations/0/operator': "
            "value must be one of 'Exists', 'Equal'",
        ),
    ],
)
def test_the_crds_toleration_rules_are_said_before_install(
    tmp_path: Path, toleration: dict[str, Any], message: str
) -> None:
    """The CEL rules of the CRD, as the values schema's if/then: helm refuses the values
    instead of the API server refusing the resource halfway through an install."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump({"brokerCluster": {"spec": {"commServers": {"tolerations": [toleration]}}}})
    )
    result = template([values])
    assert result.returncode != 0
    assert message in result.output, result.output


def test_wrong_type_in_a_values_file_is_refused(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("brokerCluster:\n  spec:\n    commServers: [2]\n")
    result = template([values])
    assert result.returncode != 0
    assert "at '/brokerCluster/spec/commServers': got array, want object" in result.output


@pytest.mark.parametrize(
    "value",
    [
        "brokerCluster.spec.commServers.replicas=0",
        "brokerCluster.spec.commServers.replicas=256",
        "brokerCluster.spec.commServers.network.mode=HostNetwork",
        "brokerCluster.spec.auth.clients.mode=None",
        "brokerCluster.name=" + "x" * 40,
        "global.anything=1",
        "brokerCluster.spec.commServers.tolerations[0].operator=Exists",
        "brokerCluster.spec.coordinator.nodeSelector.example\\.org/pool=brokers",
        "brokerCluster.spec.commServers.network.mode=NodePort,"
        "brokerCluster.spec.commServers.network.nodePortBase=32766",
        "brokerCluster.spec.commServers.network.mode=LoadBalancer",
        "brokerCluster.spec.turn.mode=External,brokerCluster.spec.turn.urls={turn:t.example.org},"
        "brokerCluster.spec.turn.secretRef.name=turn",
    ],
)
def test_edge_values_are_accepted(value: str) -> None:
    result = template(sets=[value])
    assert result.returncode == 0, result.output


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [
                "brokerCluster.spec.autoscaling.minReplicas=5",
                "brokerCluster.spec.autoscaling.maxReplicas=3",
            ],
            "brokerCluster.spec.autoscaling.minReplicas (5) must not exceed maxReplicas (3)",
        ),
        (
            [
                "brokerCluster.spec.commServers.network.mode=NodePort",
                "brokerCluster.spec.commServers.network.nodePortBase=32767",
            ],
            "brokerCluster.spec.commServers.network.nodePortBase (32767) + 2 comm servers go "
            "beyond NodePort 32767",
        ),
        (
            [
                "brokerCluster.spec.commServers.network.mode=NodePort",
                "brokerCluster.spec.commServers.network.nodePortBase=32760",
                "brokerCluster.spec.autoscaling.enabled=true",
            ],
            "nodePortBase (32760) + 10 comm servers go beyond NodePort 32767",
        ),
        (
            ["operator.watchNamespaces={team-a}"],
            'operator.watchNamespaces [team-a] leaves out "brokers", the namespace of the '
            "chart's BrokerCluster: add it or set brokerCluster.enabled=false",
        ),
    ],
)
def test_rules_beyond_the_schema_fail_rendering_readably(sets: list[str], message: str) -> None:
    result = template(sets=sets)
    assert result.returncode != 0
    assert message in result.output, result.output


# -- the schema and values.yaml against the CRD -------------------------------------------------

RULES = (
    "type",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
)
"""The validation keywords the CRD uses; the values schema must carry each of them."""


def rules(node: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, str, str]]:
    """``(path, keyword, value)`` for every validation keyword, with int-or-string as a type."""
    for keyword in RULES:
        if keyword in node:
            yield path, keyword, json.dumps(node[keyword])
    if node.get("x-kubernetes-int-or-string"):
        yield path, "type", json.dumps(["integer", "string"])
    for name, sub in (node.get("properties") or {}).items():
        yield path, "property", name
        yield from rules(sub, f"{path}.{name}")
    for name in node.get("required") or []:
        yield path, "required", name
    if isinstance(node.get("additionalProperties"), dict):
        yield from rules(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        yield from rules(node["items"], f"{path}[]")


def test_values_schema_has_every_rule_of_the_crd() -> None:
    crd_spec = crd_schema()["properties"]["spec"]
    values_spec = values_schema()["properties"]["brokerCluster"]["properties"]["spec"]
    expected = set(rules(crd_spec)) - {("spec", "required", "image")}  # the chart supplies it
    expected -= {("spec.image", "minLength", "1")}  # empty means "the chart's image"
    assert set(rules(values_spec)) - {("spec.image", "minLength", "0")} == expected


def test_values_schema_refuses_unknown_keys_everywhere() -> None:
    def objects(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "properties" in node:
            yield path, node
            for name, sub in node["properties"].items():
                yield from objects(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from objects(node["items"], f"{path}[]")

    for path, node in objects(values_schema(), "(root)"):
        assert node.get("additionalProperties") is False, path


def test_values_yaml_spec_holds_the_crd_defaults() -> None:
    spec = default_values()["brokerCluster"]["spec"]
    assert spec.pop("image") == ""
    assert spec["coordinator"].pop("serviceAnnotations") == {}
    assert spec.pop("iceServers") == []
    assert spec["commServers"]["network"].pop("serviceAnnotations") == {}
    assert spec["turn"].pop("urls") == []
    assert spec["metrics"]["serviceMonitor"].pop("labels") == {}
    for component in ("coordinator", "commServers"):
        # No default in the CRD: absent and empty both mean "any node".
        assert spec[component].pop("nodeSelector") == {}
        assert spec[component].pop("tolerations") == []
    defaulted = schemas.apply_defaults(crd_schema()["properties"]["spec"], {})
    assert defaulted.pop("imagePullPolicy") == default_values()["image"]["pullPolicy"]
    assert spec == defaulted


# -- the README --------------------------------------------------------------------------------


def value_paths(node: dict[str, Any], path: str = "") -> Iterator[str]:
    """Every value the schema knows: objects are walked, maps and lists of scalars are leaves."""
    if "properties" in node:
        for name, sub in node["properties"].items():
            yield from value_paths(sub, f"{path}.{name}" if path else name)
    elif node.get("type") == "array" and "properties" in (node.get("items") or {}):
        yield path
        yield from value_paths(node["items"], f"{path}[]")
    else:
        yield path


def readme_rows() -> list[str]:
    text = (CHART / "README.md").read_text()
    return re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)


def test_readme_lists_every_value_once() -> None:
    rows = [row for row in readme_rows() if not row.startswith(("CRD ", "ServiceAccount"))]
    listed = [row for row in rows if "." in row or row in values_schema()["properties"]]
    assert sorted(listed) == sorted(set(listed)), "a value is listed twice"
    assert set(listed) == set(value_paths(values_schema()))


def test_every_value_in_values_yaml_is_in_the_schema() -> None:
    known = set(value_paths(values_schema()))

    def leaves(value: Any, path: str) -> Iterator[str]:
        if isinstance(value, dict) and value and path not in known:
            for key, item in value.items():
                yield from leaves(item, f"{path}.{key}" if path else key)
        else:
            yield path

    assert set(leaves(default_values(), "")) <= known
