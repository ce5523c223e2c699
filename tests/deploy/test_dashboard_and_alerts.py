"""The Grafana dashboard and the Prometheus alert rules: every query parses as PromQL and names
only metrics the workers or kling-queue-exporter really export; the rules are wired into
Prometheus in docker-compose."""

from __future__ import annotations

import json
from typing import Any

import promql_parser
import pytest
import yaml

from devstack.processes import ROOT
from tests.deploy.exported import exported_metric_names, worker_metric_names

DASHBOARD = ROOT / "config" / "grafana" / "kling-fleet.json"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "config" / "prometheus" / "prometheus.yml"
#: The alerts the operations guide promises (issue 14).
REQUIRED_ALERTS = {
    "KlingQueueAgeRising",
    "KlingAccountPaused",
    "KlingResultPublishFailures",
    "KlingNoWorkerConsuming",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (raises ValueError if it is not PromQL)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_metric_names_check_catches_a_name_nobody_exports() -> None:
    assert metric_names('sum(rate(kling_jobs_total{status="failed"}[5m])) / 2') == {
        "kling_jobs_total"
    }
    assert "kling_jobs_total" in exported_metric_names()
    assert "kling_queue_ready_messages" in exported_metric_names()
    assert "kling_worker_unacked_jobs" in worker_metric_names()
    assert "kling_queue_depth" not in exported_metric_names()
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names("sum(rate(kling_jobs_total[5m])")


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_dashboard_query_names_only_exported_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)

    assert names, f"{title}: names no metric"
    assert names <= exported_metric_names(), f"{title}: {names - exported_metric_names()}"


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    named = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    for needed in (
        "kling_queue_ready_messages",
        "kling_worker_unacked_jobs",
        "kling_queue_oldest_message_age_seconds",
        "kling_dead_letters_waiting",
        "kling_jobs_total",
        "kling_fleet_calls_in_flight",
        "kling_fleet_call_limit",
        "kling_account_paused",
    ):
        assert needed in named
    dashboard = json.loads(DASHBOARD.read_text())
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert dashboard["uid"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_names_only_exported_metrics_and_says_why(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])

    assert names
    assert names <= exported_metric_names(), names - exported_metric_names()
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["summary"]


def test_the_required_alerts_exist() -> None:
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS


def test_prometheus_loads_the_rules_and_scrapes_the_queue_exporter() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in prometheus["volumes"]}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert config["rule_files"] == ["alerts.yml"]
    # Relative rule files are read beside the config file: both are mounted there.
    assert mounts["./config/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert mounts["./config/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert jobs["kling-queue"]["static_configs"][0]["targets"] == ["queue-exporter:9809"]
    assert "queue-exporter" in compose["services"]
