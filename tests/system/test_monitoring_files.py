"""docker/prometheus and docker/grafana: what Prometheus and Grafana load as they are, and every
metric their expressions use is one the platform serves (the real processes' document is
checked in test_metrics_platform.py; here the web's own document and the edge's code)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from django.test import Client

from tests.system.monitoring_files import (
    GRAFANA,
    PROMETHEUS,
    PROMETHEUS_OWN,
    ROOT,
    alert_rules,
    dashboard_exprs,
    dashboards,
    every_expr,
    exposed_names,
    metric_names,
)


def test_expression_names_are_read_like_promql():
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, view) (rate(a_bucket{job="x",s=~"5.."}[5m])))'
        ' > 1e3 and on (x) b_total offset 5m or max(c) - time() < 14 * 86400') == \
        {"a_bucket", "b_total", "c"}


def test_prometheus_config_loads_the_alerts_and_scrapes_web_and_edge():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["thinglinks"]["metrics_path"] == "/metrics"
    assert jobs["thinglinks"]["honor_labels"] is True  # keep each process's role/instance
    assert jobs["thinglinks"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["edge"]["static_configs"][0]["targets"] == ["edge:19100"]


def test_alert_rules_are_complete():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    # What the issue asks to alert on.
    for needed in ("thinglinks_ingest_stream_lag", "thinglinks_ingest_dead_letters_total",
                   "thinglinks_redis_used_memory_bytes", "edge_worker_restarts_total",
                   "edge_tls_certificate_expiry_timestamp_seconds"):
        assert needed in used, needed


@pytest.mark.e2e  # promtool is a process
def test_promtool_accepts_the_alert_rules():
    """Where Prometheus's promtool is installed (Debian's prometheus package), it has the last
    word on the rules file (make trial also evaluates every rule in a running Prometheus)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result


def test_dashboards_load_as_grafana_reads_them():
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = datasource["datasources"]
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "thinglinks.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    boards = dashboards()
    assert set(boards) == {"fleet.json", "edge.json", "ingest.json", "rules.json"}
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))
    for board in boards.values():
        assert board["title"] and isinstance(board["schemaVersion"], int)
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)) and board["panels"]
        for panel in board["panels"]:
            assert panel["type"] in ("timeseries", "stat", "bargauge")
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["datasource"]["uid"] == source["uid"]
            assert panel["targets"]
            for target in panel["targets"]:
                assert target["expr"] and target["refId"]
                assert target["datasource"]["uid"] == source["uid"]


@pytest.mark.django_db
def test_every_expression_names_a_served_metric(redis_prefix):
    """thinglinks_* from the web's own document (every family is registered there, with or
    without samples yet), edge_* from the names the edge's code exposes."""
    web = exposed_names(Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode())
    edge_code = "\n".join(path.read_text() for path in (ROOT / "edge").rglob("*.py"))
    edge = set(re.findall(r'"(edge_[a-z0-9_]+)"', edge_code))
    served = web | edge | PROMETHEUS_OWN
    used = {name for expr in every_expr() for name in metric_names(expr)}
    assert used - served == set()
    # The dashboards show every family of the issue: ingest, rules, Celery, web, host, Redis.
    shown = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    for family in ("thinglinks_ingest_points_total", "thinglinks_ingest_pending",
                   "thinglinks_rule_evaluations_total", "thinglinks_rule_suppressed_total",
                   "thinglinks_celery_queue_length",
                   "thinglinks_http_request_duration_seconds_bucket",
                   "thinglinks_websocket_consumers", "thinglinks_host_cpu_percent",
                   "thinglinks_redis_stream_length", "edge_connections"):
        assert family in shown, family
