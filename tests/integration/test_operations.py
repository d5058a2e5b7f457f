"""Operations on real services: published messages match the AsyncAPI document, replay
republishes with the same ids, rebuild swaps tables under read load, verify finds drift."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid

import httpx
import pytest

from command_service.replay import replay
from projector.rebuild import rebuild
from projector.verify import verify
from shared.config import Settings
from tests.asyncapi import validate_event
from tests.helpers import JSON, ROOT, BoundConsumer, read_db, settings_env, store_events


async def create_tasks(client: httpx.AsyncClient, count: int) -> list[dict[str, object]]:
    tasks = []
    for number in range(count):
        response = await client.post(
            "/api/v1/tasks",
            headers=JSON,
            json={"title": f"task {number}", "tags": ["ops"], "priority": 1 + number % 5},
        )
        assert response.status_code == 201
        tasks.append(response.json())
    return tasks


async def wait_projected(client: httpx.AsyncClient, settings: Settings) -> int:
    head = len(await store_events(settings))
    response = await client.get("/api/v1/tasks", headers={"X-Min-Position": str(head)})
    assert response.status_code == 200
    return head


async def test_published_messages_validate_against_the_asyncapi_document(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async with BoundConsumer(settings) as consumer:
        [task] = await create_tasks(client, 1)
        await client.patch(f"/api/v1/tasks/{task['id']}", headers=JSON, json={"priority": 5})
        await client.delete(f"/api/v1/tasks/{task['id']}")

        messages = await consumer.wait_for(3)

    for body in messages:
        validate_event(body)
    assert [body["type"] for body in messages] == [
        "task.created",
        "task.updated",
        "task.soft_deleted",
    ]
    assert [m.type for m in consumer.messages] == [body["type"] for body in messages]


async def test_replay_to_one_queue_republishes_the_same_event_ids(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async with BoundConsumer(settings) as live:
        await create_tasks(client, 5)
        first = await live.wait_for(5)
    async with BoundConsumer(settings) as catching_up:
        progress = io.StringIO()
        count = await replay(settings, 2, 4, catching_up.queue_name, progress_stream=progress)
        replayed = await catching_up.wait_for(3)

    assert count == 3
    assert "3/3 events" in progress.getvalue()
    assert [body["id"] for body in replayed] == [body["id"] for body in first[1:4]]
    assert [body["position"] for body in replayed] == [2, 3, 4]


# In this process, and in three worker processes (more ranges of task ids than cores).
@pytest.mark.parametrize("workers", [1, 3])
async def test_rebuild_under_read_load_serves_every_read_and_leaves_a_verified_table(
    client: httpx.AsyncClient, settings: Settings, workers: int
) -> None:
    await create_tasks(client, 150)
    await wait_projected(client, settings)
    failures: list[int] = []
    reads = 0
    done = asyncio.Event()

    async def read_load() -> None:
        nonlocal reads
        while not done.is_set():
            response = await client.get("/api/v1/tasks?limit=5&tags=ops")
            reads += 1
            if response.status_code != 200 or response.json()["total"] < 150:
                failures.append(response.status_code)

    readers = [asyncio.create_task(read_load()) for _ in range(4)]
    progress = io.StringIO()
    result = await rebuild(settings.model_copy(update={"rebuild_workers": workers}), progress)
    await create_tasks(client, 5)
    await wait_projected(client, settings)
    done.set()
    await asyncio.gather(*readers)

    assert failures == []
    assert reads > 0
    assert result["events"] == 150
    assert "150/150 events" in progress.getvalue()
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()
    page = (await client.get("/api/v1/tasks?limit=1")).json()
    assert page["total"] == 155


async def test_verify_reports_a_drifted_row_and_the_command_exits_non_zero(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    [task] = await create_tasks(client, 1)
    await wait_projected(client, settings)
    async with read_db(settings) as conn:
        await conn.execute(
            "UPDATE tasks SET doc = replace(doc, '\"priority\":1', '\"priority\":2') WHERE id = $1",
            uuid.UUID(str(task["id"])),
        )

    report = io.StringIO()
    differences = await verify(settings, report)

    assert len(differences) == 1
    assert str(task["id"]) in differences[0]
    assert "1 difference(s)" in report.getvalue()
    command = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "cli.py", "verify"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert command.returncode == 1
    assert str(task["id"]) in command.stdout


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rebuilt_table_is_vacuumed_analyzed_and_keeps_its_autovacuum_settings(
    client: httpx.AsyncClient, settings: Settings, workers: int
) -> None:
    await create_tasks(client, 120)
    await wait_projected(client, settings)
    async with read_db(settings) as conn:
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'tasks'")

    await rebuild(settings.model_copy(update={"rebuild_workers": workers}), io.StringIO())

    async with read_db(settings) as conn:
        table = await conn.fetchrow(
            "SELECT c.reloptions, c.relpages, c.relallvisible, c.reltuples, s.last_vacuum, "
            "s.last_analyze FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.relname = 'tasks'"
        )
        async with conn.transaction():
            # The plan the deep offset takes at scale, forced on a small table.
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM tasks WHERE NOT deleted "
                "ORDER BY created_at DESC, id OFFSET 100 LIMIT 20"
            )
    assert table is not None
    assert "autovacuum_vacuum_insert_scale_factor=0.01" in options
    assert table["reloptions"] == options
    assert table["last_vacuum"] is not None
    assert table["last_analyze"] is not None
    assert table["reltuples"] == 120
    assert table["relpages"] > 0
    assert table["relallvisible"] == table["relpages"]
    node = json.loads(plan)[0]["Plan"]
    while node["Node Type"] != "Index Only Scan":
        [node] = node["Plans"]
    assert node["Heap Fetches"] == 0
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()
