"""The one access line per request logs the path without its query string (search terms are the
user's data), unless a setting asks for it."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from composition import create_app
from shared.config import Settings
from tests.helpers import serving

SEARCH = "/api/v1/tasks?q=my+secret+plan&tags=private"


def access_lines(err: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "tasks.http"]


async def test_the_access_line_logs_the_path_without_the_query_string(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    async with serving(create_app(make_settings())) as http:
        answer = await http.get(SEARCH, headers={"X-Request-ID": "no-query-in-log"})
    err = capfd.readouterr().err

    assert answer.status_code == 200
    [line] = [line for line in access_lines(err) if line["correlation_id"] == "no-query-in-log"]
    assert line["path"] == "/api/v1/tasks"
    assert "secret" not in err
    assert "private" not in err


async def test_a_setting_puts_the_query_string_in_the_access_line(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(access_log_query=True)
    async with serving(create_app(settings)) as http:
        await http.get(SEARCH, headers={"X-Request-ID": "query-in-log"})
    err = capfd.readouterr().err

    [line] = [line for line in access_lines(err) if line["correlation_id"] == "query-in-log"]
    assert line["path"] == "/api/v1/tasks?q=my+secret+plan&tags=private"
