"""A request writes exactly one JSON log line (none with `TASKS_ACCESS_LOG=false`), and no log
line carries terminal escape codes: the server is started for real and its stderr read."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from tests.helpers import JSON, Process, free_port

pytestmark = pytest.mark.slow


async def requests_logged(settings: Settings, tmp_path: Path) -> tuple[list[str], str]:
    """Three requests with known ids against a real `cli.py serve`; their ids and the log."""
    port = free_port()
    server = Process(
        ["cli.py", "serve"], settings.model_copy(update={"port": port}), port, tmp_path / "s.log"
    )
    await asyncio.to_thread(server.start)
    ids = [f"count-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            created = await http.post(
                "/api/v1/tasks", headers={**JSON, "X-Request-ID": ids[0]}, json={"title": "t"}
            )
            assert created.status_code == 201
            missing = await http.get(
                f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-Request-ID": ids[1]}
            )
            assert missing.status_code == 404
            assert (await http.get("/health", headers={"X-Request-ID": ids[2]})).status_code == 200
    finally:
        await asyncio.to_thread(server.stop)
    return ids, server.log.read_text()


async def test_each_request_writes_one_json_line_and_no_line_has_escape_codes(
    settings: Settings, tmp_path: Path
) -> None:
    ids, log = await requests_logged(settings, tmp_path)

    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    assert "\x1b" not in log
    assert all("\x1b" not in json.dumps(line, ensure_ascii=False) for line in lines)
    assert not [line for line in lines if "color_message" in line]
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    for request_id in ids:
        mine = [line for line in lines if line.get("correlation_id") == request_id]
        assert [line["logger"] for line in mine] == ["tasks.http"], mine
    statuses = [line["status"] for line in lines if line.get("correlation_id") in ids]
    assert statuses == [201, 404, 200]


async def test_access_log_false_writes_no_request_line(settings: Settings, tmp_path: Path) -> None:
    ids, log = await requests_logged(settings.model_copy(update={"access_log": False}), tmp_path)

    lines = [json.loads(line) for line in log.splitlines()]
    assert lines, "the server logged nothing at all: the log was not captured"
    assert not [line for line in lines if line["logger"] in ("tasks.http", "uvicorn.access")]
    assert not [line for line in lines if line.get("correlation_id") in ids]
