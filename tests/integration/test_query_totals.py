"""Remembered totals stay exact: every page's total is the count at its own X-Projection-Position,
whether writes come between reads, concurrently with them, or without the watcher hearing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import httpx
import pytest

from composition import create_query_app
from projector.projection import migrate_read_model, record_position, row_of, upsert_sql
from shared.config import Settings
from tests.helpers import serving
from tests.integration.test_query_list import make_task

Task = dict[str, Any]
FILTERS = [
    {"limit": "3"},
    {"tags": "work", "limit": "2"},
    {"tags": "work", "sort": "title", "offset": "5"},
    {"completed": "false", "priority_min": "3"},
]


def counts(task: Task, params: dict[str, str]) -> bool:
    """The few filters these tests use, in plain Python."""
    return (
        not task["deleted"]
        and ("tags" not in params or "work" in task["tags"])
        and ("completed" not in params or not task["completed"])
        and ("priority_min" not in params or task["priority"] >= int(params["priority_min"]))
    )


def total_at(tasks: list[Task], position: int, params: dict[str, str]) -> int:
    """Each task here is one event: the read table at `position` holds the first `position`."""
    return sum(counts(task, params) for task in tasks[:position])


async def write(conn: asyncpg.Connection, task: Task, position: int, *, notify: bool) -> None:
    if notify:
        async with conn.transaction():
            await conn.execute(upsert_sql(), *row_of(task, position))
            await record_position(conn, position)
        return
    # The projector's write without its NOTIFY, as when the watcher's listener is reconnecting.
    async with conn.transaction():
        await conn.execute(upsert_sql(), *row_of(task, position))
        await conn.execute(
            "UPDATE projection_state SET position = $1 WHERE name = 'projector'", position
        )


@pytest.fixture
async def world(settings: Settings) -> Any:
    rng = random.Random(77)
    tasks = [make_task(rng) for _ in range(140)]
    await migrate_read_model(settings)
    conn = await asyncpg.connect(settings.read_dsn)
    app = create_query_app(settings)
    try:
        for position, task in enumerate(tasks[:40], start=1):
            await write(conn, task, position, notify=True)
        async with serving(app) as http:
            yield http, conn, tasks, app
    finally:
        await conn.close()


async def read(http: httpx.AsyncClient, params: dict[str, str]) -> tuple[int, int]:
    response = await http.get("/api/v1/tasks", params=params)
    assert response.status_code == 200, response.text
    return int(response.headers["x-projection-position"]), response.json()["total"]


async def test_a_write_between_two_identical_list_reads_is_in_the_second_total(
    world: Any,
) -> None:
    http, conn, tasks, app = world
    wrong = []

    for position in range(41, 71):
        before = [await read(http, params) for params in FILTERS]
        again = [await read(http, params) for params in FILTERS]
        await write(conn, tasks[position - 1], position, notify=position % 2 == 0)
        after = [await read(http, params) for params in FILTERS]
        for params, seen in zip(FILTERS * 3, before + again + after, strict=True):
            if seen[1] != total_at(tasks, seen[0], params):
                wrong.append((params, seen))
        if [p for p, _ in after] != [position] * len(FILTERS):
            wrong.append(("position after the write", after))

    assert wrong == []
    # The second of each pair of identical reads was answered from a remembered total.
    assert app.state.totals.hits >= 30 * len(FILTERS)


async def test_totals_read_while_writes_land_are_each_exact_for_their_own_position(
    world: Any,
) -> None:
    http, conn, tasks, _ = world
    seen: list[tuple[dict[str, str], int, int]] = []
    writing = True

    async def reader(params: dict[str, str]) -> None:
        while writing:
            position, total = await read(http, params)
            seen.append((params, position, total))

    readers = [asyncio.create_task(reader(params)) for params in FILTERS * 2]
    for position in range(41, 141):
        await write(conn, tasks[position - 1], position, notify=position % 3 != 0)
        await asyncio.sleep(0)
    writing = False
    await asyncio.gather(*readers)

    wrong = [
        (params, position, total)
        for params, position, total in seen
        if total != total_at(tasks, position, params)
    ]
    assert wrong == []
    assert len({position for _, position, _ in seen}) > 1
