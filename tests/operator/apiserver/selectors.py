"""Label and field selectors, as in ``?labelSelector=a=b,c in (d,e),!f``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _term(term: str) -> Predicate:
    if match := _SET.match(term):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in term:
        key, value = (s.strip() for s in term.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "==" in term or "=" in term:
        key, value = (s.strip() for s in re.split("==?", term, maxsplit=1))
        return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    return lambda labels: term in labels


def label_predicate(selector: str | None) -> Predicate:
    terms = [_term(t) for t in _split(selector or "")]
    return lambda labels: all(t(labels) for t in terms)


def field_predicate(selector: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Only ``metadata.name`` and ``metadata.namespace`` (what every resource supports)."""
    checks = []
    for term in _split(selector or ""):
        negate = "!=" in term
        key, value = (s.strip() for s in re.split("!=|==?", term, maxsplit=1))
        if key not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f'field label not supported: "{key}"')
        field = key.split(".", 1)[1]
        checks.append((field, value, negate))

    def check(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return all((meta.get(f) == v) != neg for f, v, neg in checks)

    return check
