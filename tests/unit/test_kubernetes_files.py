"""Structure of the Kubernetes manifests; no cluster runs here, so nothing is applied."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import SERVICES

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"

pytestmark = pytest.mark.timeout(10)


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]


def deployments() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in documents("orderflow.yaml")
        if doc["kind"] == "Deployment"
    }


def test_every_process_has_deployment() -> None:
    names = set(deployments())

    assert names == {f"orderflow-{name}" for name in ("gateway", "relay", *SERVICES)}


@pytest.mark.parametrize("name", sorted(deployments()))
def test_deployment_selector_matches_template(name: str) -> None:
    spec = deployments()[name]["spec"]
    container = spec["template"]["spec"]["containers"][0]

    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert container["image"] == "orderflow:latest"
    assert {"configMapRef": {"name": "orderflow"}} in container["envFrom"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 15


def test_scaled_objects_target_consumer_groups() -> None:
    scaled = documents("keda.yaml")
    targets = {doc["spec"]["scaleTargetRef"]["name"] for doc in scaled}
    groups = {doc["spec"]["triggers"][0]["metadata"]["consumerGroup"] for doc in scaled}

    assert targets == {f"orderflow-{name}" for name in SERVICES}
    assert groups == {"payments", "inventory", "email", "analytics"}
    assert all(doc["spec"]["triggers"][0]["type"] == "redis-streams" for doc in scaled)
    assert targets <= set(deployments())


def test_keda_address_variable_is_configured() -> None:
    config = documents("config.yaml")[0]["data"]
    variables = {
        doc["spec"]["triggers"][0]["metadata"]["addressFromEnv"] for doc in documents("keda.yaml")
    }

    assert variables <= set(config)
