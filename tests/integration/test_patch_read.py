"""A PATCH or DELETE reads its task with asyncpg on the event loop, not through the library's
repository: what it reads must be what the repository gives, after every kind of event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from command_service.application import TaskApplication
from shared.config import Settings
from shared.domain import task_to_dict
from shared.errors import NotFound, PreconditionFailed


@pytest.fixture
async def application(
    client: httpx.AsyncClient, settings: Settings
) -> AsyncIterator[TaskApplication]:
    """A second application on the store the client's app migrated, with its own reader."""
    app = TaskApplication(settings, {"CREATE_TABLE": "n"})
    app.reader = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        yield app
    finally:
        await app.reader.close()
        app.close()


async def current(app: TaskApplication, task_id: uuid.UUID) -> tuple[dict[str, Any], int, int]:
    """The task, version and position an empty PATCH (a no-op) reads on the event loop."""
    result = await app.update_task_async(task_id, {}, None, None)
    assert not result.appended
    return dict(result.task), result.version, result.position


async def test_the_event_loop_read_is_the_repositorys_task_version_and_position(
    client: httpx.AsyncClient, application: TaskApplication
) -> None:
    created = await client.post(
        "/api/v1/tasks",
        json={"title": "Read me", "description": "x", "tags": ["a"], "due_date": "2999-01-01"},
    )
    task_id = uuid.UUID(created.json()["id"])
    patches: list[dict[str, Any]] = [
        {"title": "Renamed", "priority": 5},
        {"completed": True},
        {"description": None, "tags": ["b", "c"]},
        {"completed": False, "due_date": None},
    ]
    for patch in [{}, *patches]:
        if patch:
            answered = await client.patch(f"/api/v1/tasks/{task_id}", json=patch)
            assert answered.status_code == 200, answered.text
        task, version, position = await current(application, task_id)
        stored = await asyncio.to_thread(application.repository.get, task_id)

        assert task == task_to_dict(stored)
        assert version == stored.version
        assert position == await asyncio.to_thread(application.position_of, task_id, version)

    written = await application.update_task_async(task_id, {"priority": 1}, [5], "req-1", "ann")
    assert written.appended
    assert written.version == 6
    assert written.task == task_to_dict(application.repository.get(task_id))
    with pytest.raises(PreconditionFailed):
        await application.update_task_async(task_id, {"priority": 2}, [5], None)


async def test_an_unknown_or_deleted_task_is_not_found_on_the_event_loop_read(
    client: httpx.AsyncClient, application: TaskApplication
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "Gone soon"})
    task_id = uuid.UUID(created.json()["id"])
    assert (await client.delete(f"/api/v1/tasks/{task_id}")).status_code == 204

    with pytest.raises(NotFound, match="deleted"):
        await application.update_task_async(task_id, {"title": "Back"}, None, None)
    with pytest.raises(NotFound):
        await application.update_task_async(uuid.uuid4(), {"title": "Never"}, None, None)


async def test_a_delete_on_the_event_loop_checks_if_match_and_appends_one_event(
    client: httpx.AsyncClient, application: TaskApplication
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "Delete me"})
    task_id = uuid.UUID(created.json()["id"])

    with pytest.raises(PreconditionFailed):
        await application.delete_task_async(task_id, [2], None)
    deleted = await application.delete_task_async(task_id, [1], "req-2", "ann")

    assert deleted.appended
    assert deleted.version == 2
    assert deleted.task["deleted"] is True
    assert deleted.task == task_to_dict(application.repository.get(task_id))
    with pytest.raises(NotFound, match="deleted"):
        await application.delete_task_async(task_id, None, None)
