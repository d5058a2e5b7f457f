"""Secrets stay secret: database and broker passwords and API keys appear in no log line and in
no response, even while the broker refuses the service's password and errors are logged."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from shared.config import Settings
from tests.helpers import JSON, ROOT, eventually, free_port, running, settings_env

pytestmark = pytest.mark.slow


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def secret(kind: str) -> str:
    return f"{kind}{uuid.uuid4().hex}"


async def test_passwords_and_api_keys_never_appear_in_logs_or_response_bodies(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    pg_password, mq_password, api_key = secret("pgpw"), secret("mqpw"), secret("apikey")
    base = make_settings()
    # PostgreSQL here trusts local connections, so its password is accepted and merely carried;
    # RabbitMQ refuses this one, so every broker connection fails and is logged.
    settings = make_settings(
        database_url=with_password(base.database_url, "postgres", pg_password),
        amqp_url=with_password(base.amqp_url, "guest", mq_password),
        api_keys=[api_key],
        log_level="DEBUG",
    )
    secrets = (pg_password, mq_password, api_key)
    auth = {"Authorization": f"Bearer {api_key}"}
    responses: list[httpx.Response] = []

    with running(settings, tmp_path, ["cli.py", "serve"], "port", "serve") as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            await eventually(lambda: "reconnecting" in service.log.read_text(), 60)
            for method, path, headers, body in [
                ("GET", "/health", {}, None),
                ("GET", "/ready", {}, None),
                ("GET", "/metrics", {}, None),
                ("GET", "/openapi.json", {}, None),
                ("POST", "/api/v1/tasks", JSON, {"title": "no key"}),
                ("POST", "/api/v1/tasks", {**JSON, "Authorization": "Bearer wrong"}, {}),
                ("POST", "/api/v1/tasks", {**JSON, **auth}, {"title": 7}),
                ("POST", "/api/v1/tasks", {**JSON, **auth}, {"title": "stored"}),
                ("GET", f"/api/v1/tasks/{uuid.uuid4()}", auth, None),
                ("GET", "/api/v1/tasks?limit=0", auth, None),
                ("GET", "/api/v1/tasks", auth, None),
                ("DELETE", "/api/v1/tasks/x", auth, None),
            ]:
                responses.append(await http.request(method, path, headers=headers, json=body))
            await eventually(lambda: service.log.read_text().count("reconnecting") >= 2, 60)
    log = service.log.read_text()

    statuses = [response.status_code for response in responses]
    # The list after the write waits for the session's cookie, and the projector cannot reach
    # the broker (its password is refused): past the bound it is 503, the service really behind.
    assert statuses == [200, 503, 200, 200, 401, 403, 422, 201, 404, 422, 503, 404]
    assert "rabbitmq" in responses[1].json()["details"]
    assert "ACCESS_REFUSED" in log or "authentication" in log.lower()
    for value in secrets:
        assert value not in log
        for response in responses:
            assert value not in response.text
            assert value not in str(response.headers)


@pytest.mark.parametrize("command", ["migrate", "rebuild", "verify"])
def test_an_operation_that_cannot_reach_its_database_does_not_print_the_password(
    make_settings: Callable[..., Settings], command: str
) -> None:
    password = secret("pgpw")
    base = make_settings()
    unreachable = urlsplit(with_password(base.database_url, "postgres", password))
    # A port nothing listens on: the connection error and its traceback are printed.
    settings = base.model_copy(
        update={
            "database_url": urlunsplit(
                unreachable._replace(netloc=unreachable.netloc.replace(":5432", f":{free_port()}"))
            )
        }
    )

    done = subprocess.run(
        [sys.executable, "cli.py", command],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode != 0
    assert "Connect call failed" in done.stderr or "refused" in done.stderr.lower()
    assert password not in done.stdout + done.stderr
