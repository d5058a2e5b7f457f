"""A TaskCreated stored in its older form (schema version 1) is upcast when read: the task can be
patched, deleted and read through the API, and the stored row is never rewritten."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx

from shared.config import Settings
from tests.helpers import store_events

# TaskCreated as version 1 of the schema stored it: no idempotency key, no correlation id, and
# therefore no class_version key in the state.
V1_STATE = {
    "timestamp": {"_type_": "datetime_iso", "_data_": "2025-03-04T05:06:07.080910+00:00"},
    "originator_topic": "Task",
    "title": "Written before keys existed",
    "description": "legacy",
    "priority": 2,
    "due_date": "2025-04-01",
    "tags": ["old"],
}


async def insert_v1_task(settings: Settings) -> uuid.UUID:
    task_id = uuid.uuid4()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO tasks_events (originator_id, originator_version, topic, state) "
            "VALUES ($1, 1, 'TaskCreated', $2)",
            task_id,
            json.dumps(V1_STATE).encode(),
        )
    finally:
        await conn.close()
    return task_id


async def test_a_version_one_task_created_can_be_patched_read_and_deleted_through_the_api(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task_id = await insert_v1_task(settings)
    path = f"/api/v1/tasks/{task_id}"

    patched = await client.patch(path, json={"title": "Upcast and edited", "completed": True})
    read = await client.get(path, headers={"X-Min-Position": patched.headers["x-event-position"]})
    deleted = await client.delete(path, headers={"If-Match": '"2"'})

    assert patched.status_code == 200
    task = patched.json()
    assert task["title"] == "Upcast and edited"
    assert task["description"] == "legacy"
    assert task["priority"] == 2
    assert task["due_date"] == "2025-04-01"
    assert task["tags"] == ["old"]
    assert task["created_at"] == "2025-03-04T05:06:07.080910Z"
    assert task["version"] == 2
    assert read.status_code == 200
    assert read.json() == task
    assert deleted.status_code == 204
    rows = await store_events(settings, task_id)
    assert [row["topic"] for row in rows] == ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]
    assert json.loads(rows[0]["state"]) == V1_STATE


async def test_a_version_one_task_created_appears_in_the_tasks_history_with_null_metadata(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task_id = await insert_v1_task(settings)

    history = await client.get(f"/api/v1/tasks/{task_id}/history")

    assert history.status_code == 200
    [created] = history.json()["events"]
    assert created["type"] == "TaskCreated"
    assert created["version"] == 1
    assert created["correlation_id"] is None
    assert created["occurred_at"] == "2025-03-04T05:06:07.080910Z"
