"""Fixtures: real PostgreSQL and RabbitMQ, a database and broker names of its own for every test
that asks, all removed afterwards; processes started for real on free ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from bench.stack import drop_broker_topology
from composition import create_app
from shared.config import Settings
from shared.database import drop_database
from tests.helpers import serving

BASE_DATABASE_URL = os.environ.get(
    "TASKS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BASE_AMQP_URL = os.environ.get("TASKS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    """Local services when reachable; testcontainers when Docker is there; else a clear error."""
    if _reachable(BASE_DATABASE_URL, 5432) and _reachable(BASE_AMQP_URL, 5672):
        yield BASE_DATABASE_URL, BASE_AMQP_URL
        return
    if shutil.which("docker") is None or not os.path.exists("/var/run/docker.sock"):
        pytest.exit(
            "PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) must be running, "
            "or a Docker engine must be available for testcontainers. Start them with "
            "'pg_ctlcluster 15 main start' and 'rabbitmq-server -detached', or set "
            "TASKS_TEST_DATABASE_URL / TASKS_TEST_AMQP_URL.",
            returncode=3,
        )
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        PostgresContainer("postgres:15-alpine") as pg,
        RabbitMqContainer("rabbitmq:3.10-management-alpine") as mq,
    ):
        db_url = pg.get_connection_url(driver=None)
        amqp_url = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        yield db_url, amqp_url


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def make_settings(service_urls: tuple[str, str]) -> Iterator[Callable[..., Settings]]:
    """Settings with a fresh database and fresh exchange/queue names; dropped afterwards."""
    made: list[Settings] = []
    db_url, amqp_url = service_urls

    def make(**overrides: object) -> Settings:
        suffix = uuid.uuid4().hex[:10]
        values: dict[str, object] = {
            "database_url": _with_database(db_url, f"tasks_test_{suffix}"),
            "amqp_url": amqp_url,
            "exchange": f"test.{suffix}.events",
            "projector_queue": f"test.{suffix}.projector",
            "dead_letter_queue": f"test.{suffix}.projector.dlq",
            "relay_poll_seconds": 0.2,
        }
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]
        made.append(settings)
        return settings

    yield make
    for settings in made:
        # Clean up through the real broker even if a test pointed the app elsewhere.
        asyncio.run(_cleanup(settings.model_copy(update={"amqp_url": amqp_url})))


async def _cleanup(settings: Settings) -> None:
    await drop_database(settings.database_url)
    if settings.read_database_url:
        await drop_database(settings.read_database_url)
    await drop_broker_topology(settings)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The single-process app in this event loop (relay and projector included), over ASGI."""
    app = create_app(settings)
    async with serving(app) as http:
        yield http
