"""Checks of deploy/docker-compose.yml and deploy/Dockerfile that need no Docker engine."""

import json
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"

THIRD_PARTY_SERVICES = frozenset({"redis", "postgres", "jaeger", "prometheus", "grafana"})
# Observability services that nothing waits on, so they carry no health check; Prometheus has
# one because Grafana waits for it.
UNCHECKED_SERVICES = frozenset({"jaeger", "grafana"})
ONE_SHOT_SERVICES = frozenset({"migrate"})
SCALABLE_COMMANDS = {
    "relay": ["relay"],
    "payments": ["service", "payments"],
    "inventory": ["service", "inventory"],
    "notifications": ["service", "notifications"],
    "analytics": ["service", "analytics"],
}
READY_CONDITIONS = frozenset({"service_healthy", "service_completed_successfully"})
COMPOSE_CONFIG_TIMEOUT_SECONDS = 60

pytestmark = pytest.mark.timeout(COMPOSE_CONFIG_TIMEOUT_SECONDS + 30)


@cache
def load_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def project_service_names() -> list[str]:
    return sorted(set(load_services()) - THIRD_PARTY_SERVICES)


def long_running_service_names() -> list[str]:
    return sorted(set(load_services()) - ONE_SHOT_SERVICES - UNCHECKED_SERVICES)


def dependent_service_names() -> list[str]:
    return sorted(name for name, service in load_services().items() if "depends_on" in service)


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else command


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Map each named volume of a service to its container path and mode (rw or ro)."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *options = entry.split(":")
        mounts[source] = (target, options[0] if options else "rw")
    return mounts


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Parse the Dockerfile into (INSTRUCTION, arguments) pairs, skipping comments."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", "")
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_project_services_share_image_when_composed() -> None:
    services = load_services()
    names = project_service_names()

    images = {services[name].get("image") for name in names}
    builds = [services[name].get("build") for name in names]
    build = services[names[0]]["build"]

    assert len(images) == 1, f"project services use different images: {images}"
    assert None not in images
    assert all(each == build for each in builds), f"builds differ: {builds}"
    dockerfile = COMPOSE_FILE.parent / build["context"] / build["dockerfile"]
    assert dockerfile.resolve() == DOCKERFILE


@pytest.mark.parametrize("name", sorted(SCALABLE_COMMANDS))
def test_worker_lacks_fixed_names_when_scaled(name: str) -> None:
    service = load_services()[name]

    assert "container_name" not in service, f"{name} cannot scale with a fixed container_name"
    assert "ports" not in service, f"{name} cannot scale with a fixed host port"


@pytest.mark.parametrize(("name", "expected"), sorted(SCALABLE_COMMANDS.items()))
def test_worker_command_matches_cli_when_composed(name: str, expected: list[str]) -> None:
    assert as_argv(load_services()[name]["command"]) == expected


def test_redis_enables_aof_when_started() -> None:
    redis = load_services()["redis"]
    argv = as_argv(redis["command"])

    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in argv
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert "/data" in [entry.split(":")[1] for entry in redis["volumes"]]


@pytest.mark.parametrize("name", dependent_service_names())
def test_dependencies_wait_on_health_when_declared(name: str) -> None:
    services = load_services()
    depends_on = services[name]["depends_on"]

    assert isinstance(depends_on, dict), f"{name} uses the list form, which waits on nothing"
    for target, options in depends_on.items():
        condition = options.get("condition")
        assert condition in READY_CONDITIONS, f"{name} starts without waiting on {target}"
        if condition == "service_healthy":
            assert "healthcheck" in services[target], f"{target} has no health check"
        else:
            assert target in ONE_SHOT_SERVICES, f"{target} is not a one-shot service"


@pytest.mark.parametrize("name", ["gateway", *sorted(SCALABLE_COMMANDS)])
def test_process_starts_after_migration_when_composed(name: str) -> None:
    depends_on = load_services()[name]["depends_on"]

    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_migrate_never_restarts_when_finished() -> None:
    migrate = load_services()["migrate"]

    assert as_argv(migrate["command"]) == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", long_running_service_names())
def test_service_has_healthcheck_when_long_running(name: str) -> None:
    healthcheck = load_services()[name].get("healthcheck", {})
    argv = healthcheck.get("test", [])

    assert not healthcheck.get("disable", False)
    assert argv, f"{name} has no health check"
    assert argv[0] in {"CMD", "CMD-SHELL"}, f"{name} health check is {argv!r}"


@pytest.mark.parametrize("name", project_service_names())
def test_grace_period_outlasts_handlers_when_stopping(name: str) -> None:
    grace_period = load_services()[name]["stop_grace_period"]
    handler_timeout = Settings.model_fields["handler_timeout_seconds"].default

    assert grace_period.endswith("s"), f"{name} stop_grace_period {grace_period!r} is not seconds"
    assert float(grace_period.removesuffix("s")) > handler_timeout


def test_gateway_publishes_http_port_when_composed() -> None:
    gateway = load_services()["gateway"]

    assert gateway["ports"] == ["8080:8080"]
    assert "/health" in " ".join(gateway["healthcheck"]["test"])


def test_invoices_volume_shared_when_notifications_write() -> None:
    services = load_services()
    invoice_dir = services["notifications"]["environment"]["ORDERFLOW_INVOICE_DIR"]

    assert volume_mounts(services["notifications"])["invoices"] == (invoice_dir, "rw")
    assert volume_mounts(services["gateway"])["invoices"] == (invoice_dir, "ro")
    assert services["gateway"]["environment"]["ORDERFLOW_INVOICE_DIR"] == invoice_dir


def test_mail_volume_mounted_when_catcher_runs() -> None:
    catcher = load_services()["smtp-catcher"]
    mail_dir = catcher["environment"]["ORDERFLOW_MAIL_DIR"]

    assert as_argv(catcher["command"]) == ["smtp-catcher"]
    assert volume_mounts(catcher)["mail"] == (mail_dir, "rw")
    assert load_services()["notifications"]["environment"]["ORDERFLOW_SMTP_HOST"] == "smtp-catcher"


def test_dockerfile_uses_slim_python_when_built() -> None:
    instructions = dockerfile_instructions()
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]

    assert bases, "the Dockerfile has no FROM line"
    assert all(base == "python:3.11-slim" for base in bases), f"base images: {bases}"


def test_image_runs_unprivileged_when_started() -> None:
    final_stage = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(final_stage) if keyword == "FROM")
    final_stage = final_stage[last_from:]
    users = [arguments for keyword, arguments in final_stage if keyword == "USER"]
    entrypoints = [arguments for keyword, arguments in final_stage if keyword == "ENTRYPOINT"]

    assert users, "the final stage never sets USER, so the processes run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["orderflow"]


def find_compose_command(candidate: str) -> list[str] | None:
    """Return the argv prefix that runs this Compose implementation, or None if missing."""
    if candidate == "docker-compose":
        binary = shutil.which("docker-compose")
        return [binary] if binary else None

    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=30
    )
    return [docker, "compose"] if probe.returncode == 0 else None


@pytest.mark.parametrize("candidate", ["docker-compose", "docker compose"])
def test_compose_config_passes_when_compose_installed(candidate: str) -> None:
    command = find_compose_command(candidate)
    if command is None:
        pytest.skip(f"`{candidate}` is not installed, so the file is not validated with it")

    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=COMPOSE_CONFIG_TIMEOUT_SECONDS,
    )

    assert result.returncode == 0, result.stderr


def test_prometheus_scrapes_every_process_when_composed() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    scraped = {
        name
        for job in config["scrape_configs"]
        for discovery in job["dns_sd_configs"]
        for name in discovery["names"]
    }

    assert scraped == {"gateway", *SCALABLE_COMMANDS}
