"""The provisioned Grafana dashboard: valid files, and every query names a real metric."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import shared.metrics  # noqa: F401 - registers orderflow's metrics

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "orderflow.json"
METRIC_NAME = re.compile(r"\borderflow_[a-z_]+\b")
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}

pytestmark = pytest.mark.timeout(10)


def exported_names() -> set[str]:
    names: set[str] = set()
    families: list[Metric] = list(REGISTRY.collect())
    for family in families:
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return panels


def test_dashboard_has_required_fields_when_provisioned() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    assert dashboard["uid"] == "orderflow"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["panels"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_provisioning_points_at_dashboard_folder() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "orderflow.yml").read_text(encoding="utf-8")
    )
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )

    assert provider["apiVersion"] == 1
    assert provider["providers"][0]["type"] == "file"
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["uid"] == "prometheus"


@pytest.mark.parametrize("panel", dashboard_panels(), ids=lambda panel: panel["title"])
def test_panel_queries_name_exported_metrics(panel: dict[str, Any]) -> None:
    exported = exported_names()
    expressions = [target["expr"] for target in panel["targets"]]
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}

    assert expressions
    assert named, f"panel {panel['title']!r} queries no orderflow metric"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    assert panel["datasource"]["uid"] == "prometheus"


def test_dashboard_covers_throughput_latency_backlog() -> None:
    queried = {
        name
        for panel in dashboard_panels()
        for target in panel["targets"]
        for name in METRIC_NAME.findall(target["expr"])
    }

    assert "orderflow_events_handled_total" in queried
    assert "orderflow_order_processing_seconds_bucket" in queried
    assert "orderflow_stream_backlog_entries" in queried
