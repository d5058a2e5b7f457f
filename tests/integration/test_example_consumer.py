"""The example consumer (examples/consumer.py), run as another service would run it against the
real broker and API, ends holding exactly the tasks the API shows, whichever way it catches up."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import pytest

from shared.config import Settings
from tests.helpers import JSON, ROOT, running


async def write(api: httpx.AsyncClient, count: int, tag: str) -> int:
    """Tasks created, some updated, some deleted; the position of the last write."""
    position = 0
    for number in range(count):
        created = await api.post("/api/v1/tasks", json={"title": f"{tag} {number}"}, headers=JSON)
        path = f"/api/v1/tasks/{created.json()['id']}"
        answers = [created]
        if number % 2:
            answers.append(await api.patch(path, json={"priority": 5, "tags": [tag]}, headers=JSON))
        if number % 3 == 2:
            answers.append(await api.delete(path))
        for answer in answers:
            assert answer.status_code in (200, 201, 204), answer.text
            position = int(answer.headers["x-event-position"])
    return position


@pytest.mark.parametrize("catch_up", ["feed", "stream"])
async def test_the_example_consumer_ends_with_the_same_tasks_as_the_api(
    make_settings: Callable[..., Settings], tmp_path: Path, catch_up: str
) -> None:
    settings = make_settings()
    queue = f"{settings.exchange}.example"
    dump = tmp_path / "tasks.json"
    with running(settings, tmp_path, ["cli.py", "serve"], "port", "api") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
            await write(api, 12, "before")
            consumer = await asyncio.create_subprocess_exec(
                sys.executable,
                "examples/consumer.py",
                *("--amqp-url", settings.amqp_url, "--exchange", settings.exchange),
                *("--event-log", settings.event_log_stream, "--api-url", server.url),
                *("--queue", queue, "--catch-up", catch_up),
                *("--exit-when-idle", "3", "--dump", str(dump)),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                assert consumer.stdout is not None
                started = await asyncio.wait_for(consumer.stdout.readline(), 60)
                # Written while it consumes: they reach it live (or through the catch-up).
                last = await write(api, 6, "live")
                out, err = await asyncio.wait_for(consumer.communicate(), 90)
            finally:
                if consumer.returncode is None:
                    consumer.kill()
                    await consumer.wait()
                connection = await aio_pika.connect(settings.amqp_url)
                async with connection:
                    await (await connection.channel()).queue_delete(queue)
            shown = await api.get(
                "/api/v1/tasks",
                params={"include_deleted": "true", "limit": "100"},
                headers={"X-Min-Position": str(last)},
            )

    assert started.startswith(b"consuming"), err
    assert consumer.returncode == 0, err
    assert shown.status_code == 200
    held = json.loads(dump.read_text())
    assert held == {task["id"]: task for task in shown.json()["items"]}
    assert len(held) == 18
    assert sum(task["deleted"] for task in held.values()) == 6
    assert b"18 tasks" in out
