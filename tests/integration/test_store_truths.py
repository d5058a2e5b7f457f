"""Smaller ways the served state could drift from the store, on the real services: a time-travel
answer cached for good while it can still change, a remembered total outliving a rebuild, a
projection position past the store's head kept by a rebuild, and an environment variable that
switches the library to an append without the table lock."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from uuid import UUID

import asyncpg
import httpx
import pytest

from cli import migrate
from command_service.application import TaskApplication
from composition import create_app
from projector.rebuild import rebuild
from shared.config import Settings
from tests.helpers import JSON, read_db, serving, store_events

FIELDS = {"title": "t", "description": None, "priority": 3, "due_date": None, "tags": []}


async def create(client: httpx.AsyncClient, title: str) -> httpx.Response:
    response = await client.post("/api/v1/tasks", headers=JSON, json={"title": title})
    assert response.status_code == 201
    return response


async def test_as_of_is_cached_for_good_only_past_the_safe_margin(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(as_of_settled_seconds=1.0)
    async with serving(create_app(settings)) as client:
        task = (await create(client, "cached")).json()
        path = f"/api/v1/tasks/{task['id']}"
        recent = await client.get(path, params={"as_of": task["created_at"]})
        await asyncio.sleep(1.5)
        settled = await client.get(path, params={"as_of": task["created_at"]})
        by_version = await client.get(path, params={"version": "1"})

    assert recent.status_code == settled.status_code == 200
    assert recent.headers["cache-control"] == "no-cache"
    assert settled.headers["cache-control"] == "max-age=31536000, immutable"
    assert by_version.headers["cache-control"] == "max-age=31536000, immutable"


async def test_a_damaged_read_table_rebuilt_at_the_same_position_gives_the_right_totals(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    written = [await create(client, f"task {n}") for n in range(3)]
    last = written[-1]
    seen = await client.get(
        f"/api/v1/tasks/{last.json()['id']}",
        headers={"X-Min-Position": last.headers["x-event-position"]},
    )
    assert seen.status_code == 200
    head = (await store_events(settings))[-1]["notification_id"]

    async with read_db(settings) as conn:
        await conn.execute("DELETE FROM tasks WHERE id = $1", UUID(written[0].json()["id"]))
    damaged = (await client.get("/api/v1/tasks")).json()
    assert (damaged["total"], len(damaged["items"])) == (2, 2)  # counted and remembered

    await rebuild(settings, io.StringIO())

    repaired = (await client.get("/api/v1/tasks")).json()
    assert (repaired["total"], len(repaired["items"])) == (3, 3)
    async with read_db(settings) as conn:
        assert await conn.fetchval("SELECT position FROM projection_state") == head
        # A position past the store's head (as a forged message could once set it)...
        await conn.execute("UPDATE projection_state SET position = $1", 10**12)

    await rebuild(settings, io.StringIO())

    async with read_db(settings) as conn:  # ...is not kept: the position is what was rebuilt
        assert await conn.fetchval("SELECT position FROM projection_state") == head


async def test_the_db_functions_variable_in_the_environment_does_not_change_the_append(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    monkeypatch.setenv("TASKS_POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    await migrate(settings)
    app = await asyncio.to_thread(TaskApplication, settings)
    locker = await asyncpg.connect(settings.database_url)
    try:
        held = locker.transaction()
        await held.start()
        # Blocks the append's EXCLUSIVE table lock, not a plain INSERT.
        await locker.execute("LOCK TABLE tasks_events IN ROW SHARE MODE")
        appending = threading.Thread(target=app.create_task, args=(FIELDS, "c"), daemon=True)
        appending.start()
        await asyncio.sleep(1.0)
        waited_for_the_lock = appending.is_alive()
        await held.rollback()
        await asyncio.to_thread(appending.join, 10)
    finally:
        await locker.close()
        await asyncio.to_thread(app.close)

    assert waited_for_the_lock, "the append took no table lock: positions may commit out of order"
    assert not appending.is_alive()
    assert len(await store_events(settings)) == 1
