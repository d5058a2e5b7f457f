"""The compose file: valid for docker-compose, six services, start-up gated on health checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from shared.config import Settings
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (.ci/run installs Debian's package with apt-get)",
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
GATEWAY_CONF = ROOT / "deploy" / "nginx.conf"
APPS = {
    "command": ("command_service", Settings.model_fields["command_port"].default),
    "projector": ("projector", Settings.model_fields["projector_port"].default),
    "query": ("query_service", Settings.model_fields["query_port"].default),
}
DEPENDENCIES = {
    "command": {"postgres", "rabbitmq"},
    "projector": {"postgres", "rabbitmq"},
    "query": {"postgres"},
    "gateway": {"command", "query"},
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as docker-compose resolves them (anchors merged, paths absolute)."""
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return resolved


def health_command(service: dict[str, Any]) -> list[str]:
    test: list[str] = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def published_ports(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(published, target) pairs, from the short form (1.x) or the long form (2.x)."""
    pairs = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.add((str(port.get("published")), str(port["target"])))
        else:
            published, _, target = str(port).rpartition(":")
            pairs.add((published.rpartition(":")[2], target))
    return pairs


def read_only_binds(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(host path, container path) of the read-only bind mounts, in either form."""
    binds = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind" and volume.get("read_only"):
                binds.add((volume["source"], volume["target"]))
        elif volume.endswith(":ro"):
            source, target, _ = volume.rsplit(":", 2)
            binds.add((source, target))
    return binds


def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_the_stack_is_exactly_the_six_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "rabbitmq", "command", "projector", "query", "gateway"}


def test_postgres_and_rabbitmq_report_health_with_their_own_tools(
    services: dict[str, Any],
) -> None:
    postgres = health_command(services["postgres"])
    rabbitmq = health_command(services["rabbitmq"])

    assert services["postgres"]["image"] == "postgres:15"
    assert postgres[0] == "pg_isready"
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.10")
    assert rabbitmq == ["rabbitmq-diagnostics", "-q", "ping"]


@pytest.mark.parametrize("name", sorted(APPS))
def test_each_app_runs_its_module_and_checks_its_own_health_endpoint(
    services: dict[str, Any], name: str
) -> None:
    module, port = APPS[name]
    service = services[name]

    probe = health_command(service)

    assert service["command"] == ["python", "-m", module]
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], f"{name} healthcheck", "exec")
    assert f"http://127.0.0.1:{port}/health" in probe[2]
    assert not any(key.endswith("_PORT") for key in service["environment"])


@pytest.mark.parametrize("name", sorted(DEPENDENCIES))
def test_each_app_and_the_gateway_start_only_once_their_dependencies_are_healthy(
    services: dict[str, Any], name: str
) -> None:
    depends_on = services[name]["depends_on"]

    assert set(depends_on) == DEPENDENCIES[name]
    assert {entry["condition"] for entry in depends_on.values()} == {"service_healthy"}
    for dependency in depends_on:
        assert "healthcheck" in services[dependency]


def test_the_apps_are_one_image_pointed_at_the_compose_addresses(
    services: dict[str, Any],
) -> None:
    apps = [services[name] for name in APPS]

    assert {app["build"]["context"] for app in apps} == {str(ROOT)}
    assert {app["image"] for app in apps} == {apps[0]["image"]}
    for app in apps:
        assert app["environment"] == {
            "TASKS_DATABASE_URL": "postgresql://postgres:postgres@postgres:5432/tasks",
            "TASKS_AMQP_URL": "amqp://guest:guest@rabbitmq:5672/",
            "TASKS_HOST": "0.0.0.0",
        }
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "tasks"


def test_the_gateway_alone_publishes_port_8000_with_the_tested_nginx_configuration(
    services: dict[str, Any],
) -> None:
    gateway = services["gateway"]
    upstreams = re.findall(r"^\s*server (\S+):(\d+);", GATEWAY_CONF.read_text(), re.MULTILINE)

    assert gateway["image"].startswith("nginx:")
    assert published_ports(gateway) == {("8000", "8000")}
    assert (str(GATEWAY_CONF), "/etc/nginx/nginx.conf") in read_only_binds(gateway)
    assert all(
        published != "8000"
        for name, service in services.items()
        if name != "gateway"
        for published, _ in published_ports(service)
    )
    assert sorted(upstreams) == [
        ("command", str(APPS["command"][1])),
        ("query", str(APPS["query"][1])),
    ]
