"""List queries within their budgets: a list query that cannot get its turn, or runs past the
statement timeout, is 503 with `Retry-After` in the error shape; reads by id go on meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg

from composition import create_app
from projector.projection import migrate_read_model
from shared.config import Settings
from tests.helpers import JSON, serving
from tests.integration.test_query_plans import bulk_load


async def test_a_list_query_without_a_turn_is_503_while_reads_by_id_go_on(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(list_concurrency=1, list_queue_seconds=0.2)
    app = create_app(settings)
    async with serving(app) as http:
        created = await http.post("/api/v1/tasks", headers=JSON, json={"title": "t"})
        path = f"/api/v1/tasks/{created.json()['id']}"
        wait = {"X-Min-Position": created.headers["x-event-position"]}
        await http.get(path, headers=wait)
        await app.state.list_slots.acquire()  # a heavy list query holds the only turn
        try:
            started = time.monotonic()
            refused = await http.get("/api/v1/tasks")
            waited = time.monotonic() - started
            by_id = await http.get(path)
        finally:
            app.state.list_slots.release()
        listed = await http.get("/api/v1/tasks")

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "Service unavailable"
    assert isinstance(refused.json()["details"], str)
    assert 0.2 <= waited < 10
    assert by_id.status_code == 200
    assert listed.status_code == 200
    assert listed.json()["total"] == 1


async def test_a_list_query_past_the_statement_timeout_is_503(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(list_statement_timeout_ms=1)
    await migrate_read_model(settings)
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        await bulk_load(conn, 20_000)
        task_id = await conn.fetchval("SELECT id FROM tasks WHERE NOT deleted LIMIT 1")
    finally:
        await conn.close()
    async with serving(create_app(settings)) as http:
        slow = await http.get("/api/v1/tasks?q=-report+-draft&sort=title,-priority&offset=15000")
        by_id = await http.get(f"/api/v1/tasks/{task_id}")

    assert slow.status_code == 503
    assert slow.headers["retry-after"] == "1"
    assert slow.json()["error"] == "Service unavailable"
    assert "time budget" in slow.json()["details"]
    assert by_id.status_code == 200  # reads by id have their own pool, without that timeout
