"""The chart's alert rules and Grafana dashboard read metrics the agent really exports, and the
dashboard has the shape Grafana imports (promtool checks the rules themselves, see
tests/integration/test_monitoring_rules.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import virtual_kubelet.kube.metrics
import virtual_kubelet.metrics  # noqa: F401  (registers the agent's metrics)

FILES = Path(__file__).resolve().parents[2] / "charts" / "virtual-kubelet" / "files"
METRIC = re.compile(r"\b(virtual_kubelet_[a-z_]+)")


def exported() -> set[str]:
    """Every series name the agent's registry can produce (histogram buckets and the like)."""
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        names.update(REGISTRY._collector_to_names[collector])
    return {n for n in names if n.startswith("virtual_kubelet_")}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FILES / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_expressions() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]


def test_rules_and_dashboard_read_only_metrics_the_agent_exports() -> None:
    known = exported()
    assert "virtual_kubelet_sync_duration_seconds_bucket" in known
    for expr in rule_expressions() + dashboard_expressions():
        unknown = set(METRIC.findall(expr)) - known
        assert not unknown, (expr, unknown)


def test_the_issue_s_signals_are_covered() -> None:
    text = " ".join(dashboard_expressions())
    for metric in (
        "virtual_kubelet_pods",  # pods by phase
        "virtual_kubelet_provider_calls_total",  # provider calls and errors
        "virtual_kubelet_provider_call_duration_seconds_bucket",  # provider call latency
        "virtual_kubelet_sync_duration_seconds_bucket",  # latency of pod work
        "virtual_kubelet_lease_renewal_age_seconds",  # heartbeat
        "virtual_kubelet_kubelet_api_requests_total",  # kubelet API
        "virtual_kubelet_leader",
    ):
        assert metric in text, metric


def test_dashboard_has_the_shape_grafana_imports() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        assert panel["type"] in {"stat", "timeseries", "gauge", "table"}, panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            # Each panel follows the namespace and pod selectors.
            assert "$namespace" in target["expr"], target
            assert "$pod" in target["expr"], target
