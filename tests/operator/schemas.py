"""Validation against the official Kubernetes schemas and against CRD schemas.

Built-in kinds are checked with the JSON schemas that ``kubernetes-validate``
ships (strict flavour: unknown fields are errors, as with ``kubectl apply
--validate=strict``), for the newest Kubernetes version it knows. Validators
are built once per kind: building one resolves a large definitions file.

Custom resources are checked against their CRD's ``openAPIV3Schema`` with a
JSON-schema validator (the structural subset is plain JSON schema; the
``x-kubernetes-*`` keywords are ignored by it and handled here where they
matter: int-or-string, preserve-unknown-fields). CEL rules
(``x-kubernetes-validations``) are not evaluated; see :func:`cel_rules`.
Defaulting and pruning follow the rules of structural schemas.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

Schema = dict[str, Any]


@functools.cache
def kubernetes_version() -> str:
    """The newest Kubernetes version whose schemas are installed (e.g. ``1.37.0``)."""
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    versions = [
        tuple(int(p) for p in entry.name[1:].split("-")[0].split("."))
        for entry in base.iterdir()
        if entry.name.startswith("v") and entry.name.endswith("-local-strict")
    ]
    return ".".join(str(p) for p in max(versions))


def _schema_file(name: str) -> Any:
    version = kubernetes_version()
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    path = base / f"v{version}-local-strict" / name
    return json.loads(path.read_text())


@functools.cache
def _definitions() -> Resource[Any]:
    return Resource.from_contents(_schema_file("_definitions.json"))


@functools.cache
def official_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The strict validator for a built-in kind; ``KeyError`` if there is no schema for it."""
    group = ""
    if "/" in api_version:
        group = api_version.split("/", maxsplit=1)[0].split(".", maxsplit=1)[0]
    version = api_version.rsplit("/", maxsplit=1)[-1]
    stem = f"{kind.lower()}-{group}-{version}" if group else f"{kind.lower()}-{version}"
    try:
        schema = _schema_file(f"{stem}.json")
    except FileNotFoundError:
        raise KeyError(f"no official schema for {api_version} {kind}") from None
    registry: Registry[Any] = _definitions() @ Registry()
    validator_cls = jsonschema.validators.Draft202012Validator
    return validator_cls(schema, registry=registry)


def readable(errors: Iterable[jsonschema.ValidationError]) -> list[str]:
    """``spec.replicas: -1 is less than the minimum of 0`` lines, sorted."""
    out = []
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        out.append(f"{path}: {error.message}")
    return sorted(out)


def validate_official(obj: dict[str, Any]) -> list[str]:
    """Problems of a built-in object against the official schema ([] when valid)."""
    validator = official_validator(obj["apiVersion"], obj["kind"])
    return readable(validator.iter_errors(obj))


# -- custom resources ---------------------------------------------------------------------------


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    for branch in schema.get("anyOf") or []:
        yield from _walk(branch, path)


def structural_problems(schema: Schema) -> list[str]:
    """Violations of the structural-schema rules the API server enforces on CRDs."""
    problems = []
    for path, node in _walk(schema):
        int_or_string = node.get("x-kubernetes-int-or-string")
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if "type" not in node and not int_or_string and not preserve:
            problems.append(f"{path or '(root)'}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        if int_or_string and node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]:
            problems.append(f"{path}: int-or-string needs anyOf integer/string")
        for banned in ("$ref", "definitions", "dependencies", "patternProperties"):
            if banned in node:
                problems.append(f"{path}: {banned} is not allowed")
    return problems


def cel_rules(schema: Schema) -> list[tuple[str, str, str]]:
    """``(path, rule, message)`` of every CEL rule: tests check the operator enforces them."""
    return [
        (path, rule["rule"], rule.get("message", ""))
        for path, node in _walk(schema)
        for rule in node.get("x-kubernetes-validations") or []
    ]


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Structural defaulting: a missing field with a default gets it, recursively."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def unknown_fields(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare (``kubectl --validate=strict`` refuses them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out += unknown_fields(props[key], item, where)
            elif isinstance(extra, dict):
                out += unknown_fields(extra, item, where)
            elif props is not None and not (path == "" and key in ("apiVersion", "kind")):
                out.append(f'{where}: unknown field "{key}"')
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            out += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return out


def prune(schema: Schema, value: Any, root: bool = True) -> Any:
    """Drop undeclared fields, as the API server does for custom resources."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(value):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            if props is not None and key in props:
                prune(props[key], value[key], root=False)
            elif isinstance(extra, dict):
                prune(extra, value[key], root=False)
            elif props is not None:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            prune(schema["items"], item, root=False)
    return value


def validate_custom(schema: Schema, obj: dict[str, Any]) -> list[str]:
    """Problems of a custom resource against its CRD schema, unknown fields included."""
    body = {k: v for k, v in obj.items() if k != "metadata"}
    trimmed = copy.deepcopy(schema)
    trimmed.get("properties", {}).pop("metadata", None)
    validator = jsonschema.Draft7Validator(trimmed)
    return sorted(readable(validator.iter_errors(body)) + unknown_fields(trimmed, body))
