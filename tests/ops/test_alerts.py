"""Prometheus alert rules and the Grafana dashboard: valid, unit-tested, and naming pushed metrics only."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from hub_pipelines.core.ops_metrics import METRIC_NAMES, ORDERS_LEDGER_METRIC_NAMES
from hub_pipelines.settings import PROJECT_ROOT
from tests.services import require_binary

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "hub_pipelines.json"
PUSHED = set(METRIC_NAMES) | set(ORDERS_LEDGER_METRIC_NAMES)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
REQUIRED_ALERTS = {
    "HubStepErrorRateHigh",
    "HubConsumerLagHigh",
    "HubOrderLedgerStale",
    "HubDailyRollupsStale",
    "HubPublishedMediaStale",
    "HubCircuitBreakerOpen",
    "HubQuarantineGrowing",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool", install="apt-get install -y prometheus")


def referenced_metrics(expression: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bhub_[a-z_]+\b", expression):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in PUSHED:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    tested = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_unit_tests_cover_at_least_two_alerts() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(tested & REQUIRED_ALERTS) >= 2


def test_every_required_alert_exists_with_severity_and_runbook() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) >= REQUIRED_ALERTS
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")


def test_alert_rules_reference_only_metrics_the_workflows_push() -> None:
    referenced = set().union(*(referenced_metrics(rule["expr"]) for rule in rules()))
    assert referenced
    assert referenced <= PUSHED, referenced - PUSHED


def test_runbook_anchors_of_alerts_exist_in_the_runbook() -> None:
    runbook = (PROJECT_ROOT / "docs" / "operations.md").read_text().lower()
    for rule in rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert re.search(rf"^#+ .*{re.escape(anchor)}", runbook, flags=re.MULTILINE), anchor


def test_dashboard_is_valid_json_with_unique_panel_ids_and_a_row_per_workflow() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    rows = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}

    assert len(ids) == len(set(ids))
    assert {"Media", "Orders", "Analytics"} <= rows
    assert all(panel.get("targets") for panel in dashboard["panels"] if panel["type"] != "row")


def test_dashboard_plots_every_pushed_metric_and_nothing_else() -> None:
    referenced = set().union(*(referenced_metrics(expression) for expression in dashboard_expressions()))
    assert referenced == PUSHED
