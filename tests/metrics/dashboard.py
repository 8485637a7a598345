"""The Grafana dashboard the chart ships, as the tests read it."""

from __future__ import annotations

import json
from typing import Any

from tests.support import ROOT

DASHBOARD = ROOT / "charts" / "webrtc-broker" / "dashboards" / "webrtc-broker.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
"""What Grafana would put in place of the dashboard's variables (all instances)."""


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def dashboard_exprs() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every target in the dashboard, Grafana variables filled in."""
    dashboard = load()
    found: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown Grafana variable in {expr}"
            found.append((panel["title"], expr))
    return found
