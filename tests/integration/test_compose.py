"""The compose file: valid for docker-compose with the example environment and refused without
it, start-up gated on health checks and one-shot steps, least privilege everywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.config import Settings
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (.ci/run installs Debian's package with apt-get)",
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
GATEWAY_CONF = ROOT / "deploy" / "nginx.conf"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq.conf"
APPS = {
    "command": ("command_service", Settings.model_fields["command_port"].default),
    "projector": ("projector", Settings.model_fields["projector_port"].default),
    "query": ("query_service", Settings.model_fields["query_port"].default),
}
DEPENDENCIES = {
    "command": {"migrate"},
    "projector": {"migrate"},
    "query": {"migrate"},
    "migrate": {"postgres", "rabbitmq"},
    "rabbitmq": {"broker-init"},
    "gateway": {"command", "query"},
}
ONE_SHOT = {"migrate", "broker-init"}


def compose(*args: str, env_file: str) -> subprocess.CompletedProcess[str]:
    """docker-compose with only this environment file (no .env, nothing inherited)."""
    return subprocess.run(
        ["docker-compose", "--env-file", env_file, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as docker-compose resolves them (anchors merged, paths absolute)."""
    result = compose("config", env_file=str(ENV_EXAMPLE))
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


def test_docker_compose_accepts_the_file_with_the_example_environment() -> None:
    result = compose("config", "--quiet", env_file=str(ENV_EXAMPLE))

    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_keys_and_passwords(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    without_keys = tmp_path / "no-keys.env"
    without_keys.write_text(
        "".join(
            line + "\n"
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("TASKS_API_KEYS=")
        )
    )

    nothing = compose("config", "--quiet", env_file=str(empty))
    no_keys = compose("config", "--quiet", env_file=str(without_keys))

    assert nothing.returncode != 0
    assert no_keys.returncode != 0
    assert "TASKS_API_KEYS" in no_keys.stderr


def test_the_example_environment_holds_placeholders_for_every_secret() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))

    assert required <= set(values)
    assert all("replace-with" in value for value in values.values())
    assert len(set(values.values())) == len(values)  # no two secrets alike, even as examples


def test_the_stack_is_the_six_services_and_two_one_shot_steps(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres",
        "rabbitmq",
        "command",
        "projector",
        "query",
        "gateway",
        *ONE_SHOT,
    }
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"


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
    for dependency, entry in depends_on.items():
        if dependency in ONE_SHOT:
            assert entry["condition"] == "service_completed_successfully"
        else:
            assert entry["condition"] == "service_healthy"
            assert "healthcheck" in services[dependency]


def test_the_apps_are_one_image_pointed_at_the_compose_addresses(
    services: dict[str, Any],
) -> None:
    apps = [services[name] for name in APPS]

    assert {app["build"]["context"] for app in apps} == {str(ROOT)}
    assert {app["image"] for app in apps} == {apps[0]["image"]}
    for app in apps:
        environment = app["environment"]
        assert environment["TASKS_HOST"] == "0.0.0.0"
        assert environment["TASKS_MIGRATE_ON_START"] == "false"
        assert environment["TASKS_API_KEYS"].startswith('["replace-with')
        assert environment["TASKS_FORWARDED_ALLOW_IPS"] == gateway_address(services)
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "tasks"


def gateway_address(services: dict[str, Any]) -> str:
    address: str = services["gateway"]["networks"]["backend"]["ipv4_address"]
    return address


@pytest.mark.parametrize(
    ("name", "database_user", "broker_user"),
    [
        ("command", "tasks_command", "tasks-relay"),
        ("projector", "tasks_projector", "tasks-projector"),
        ("query", "tasks_query", None),
    ],
)
def test_each_app_connects_as_its_own_role_never_as_a_superuser_or_guest(
    services: dict[str, Any], name: str, database_user: str, broker_user: str | None
) -> None:
    environment = services[name]["environment"]

    assert urlsplit(environment["TASKS_DATABASE_URL"]).username == database_user
    if broker_user is None:
        assert "TASKS_AMQP_URL" not in environment
    else:
        assert urlsplit(environment["TASKS_AMQP_URL"]).username == broker_user
    assert "postgres:" not in environment["TASKS_DATABASE_URL"].split("@")[0]


def test_the_broker_loads_per_role_users_and_so_has_no_guest(services: dict[str, Any]) -> None:
    rabbitmq = services["rabbitmq"]
    loaded = re.search(r"^load_definitions = (\S+)$", RABBITMQ_CONF.read_text(), re.MULTILINE)
    written = services["broker-init"]["command"][-1]

    assert loaded is not None
    assert (str(RABBITMQ_CONF), "/etc/rabbitmq/conf.d/90-tasks.conf") in read_only_binds(rabbitmq)
    volumes = {v["source"]: v["target"] for v in rabbitmq["volumes"] if isinstance(v, dict)} or {
        v.split(":")[0]: v.split(":")[1] for v in rabbitmq["volumes"] if isinstance(v, str)
    }
    init = {v.split(":")[0]: v.split(":")[1] for v in services["broker-init"]["volumes"]}
    assert Path(loaded.group(1)).parent == Path(volumes["broker-definitions"])
    assert Path(written).parent == Path(init["broker-definitions"])
    assert Path(loaded.group(1)).name == Path(written).name
    assert "TASKS_AMQP_URL" not in services["broker-init"]["environment"]


def test_the_gateway_alone_publishes_port_8000_with_the_tested_nginx_configuration(
    services: dict[str, Any],
) -> None:
    gateway = services["gateway"]
    upstreams = re.findall(r"^\s*server (\S+):(\d+);", GATEWAY_CONF.read_text(), re.MULTILINE)

    assert gateway["image"].startswith("nginx:")
    assert published_ports(gateway) == {("8000", "8000")}
    assert (str(GATEWAY_CONF), "/etc/nginx/nginx.conf") in read_only_binds(gateway)
    # Nothing else is published: the apps, PostgreSQL and RabbitMQ are on internal networks.
    assert {name for name, service in services.items() if published_ports(service)} == {"gateway"}
    assert sorted(upstreams) == [
        ("command", str(APPS["command"][1])),
        ("query", str(APPS["query"][1])),
    ]


def test_only_the_gateway_is_on_a_network_with_a_way_out() -> None:
    result = compose("config", env_file=str(ENV_EXAMPLE))
    resolved = yaml.safe_load(result.stdout)
    networks = resolved["networks"]
    attached = {
        name: set(service.get("networks", {})) for name, service in resolved["services"].items()
    }

    assert networks["backend"]["internal"] is True
    assert networks["data"]["internal"] is True
    assert {name for name, on in attached.items() if "edge" in on} == {"gateway"}
    assert attached["gateway"] == {"edge", "backend"}
    assert "backend" not in attached["projector"]  # the gateway never routes to it
    assert resolved["services"]["broker-init"]["network_mode"] == "none"
