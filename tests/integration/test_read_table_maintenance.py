"""The read table is kept vacuumed and analyzed by its own thresholds when the server's
autovacuum does not: index-only scans stay index-only without anyone running VACUUM."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from projector.maintenance import activity, keep_vacuumed, table_options, vacuum_if_due
from projector.projection import migrate_read_model, row_of
from shared.config import Settings
from tests.helpers import eventually, read_db


def task(number: int) -> dict[str, object]:
    moment = datetime(2026, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": str(uuid.uuid4()),
        "title": f"task {number}",
        "description": None,
        "priority": 1 + number % 5,
        "due_date": None,
        "tags": ["a"],
        "completed": False,
        "completed_at": None,
        "deleted": False,
        "deleted_at": None,
        "created_at": moment,
        "updated_at": moment,
        "version": 1,
    }


async def insert(conn: asyncpg.Connection, count: int) -> None:
    rows = [row_of(task(number), number + 1) for number in range(count)]
    columns = [
        "id", "title", "description", "priority", "due_date", "tags", "completed",
        "completed_at", "deleted", "deleted_at", "created_at", "updated_at", "version",
        "position", "doc",
    ]  # fmt: skip
    await conn.copy_records_to_table("tasks", records=rows, columns=columns)


async def stats_flushed(conn: asyncpg.Connection, inserted: int) -> None:
    """Until the server's statistics count the inserts (flushed about once a second)."""

    async def counted() -> bool:
        return (await activity(conn)).inserted >= inserted

    await eventually(counted, 30)


def test_the_thresholds_are_the_tables_own_over_the_servers_defaults() -> None:
    options = table_options(["autovacuum_vacuum_insert_scale_factor=0.01", "fillfactor=90"])

    assert options["autovacuum_vacuum_insert_scale_factor"] == 0.01
    assert options["autovacuum_vacuum_insert_threshold"] == 1000.0
    assert "fillfactor" not in options


async def test_a_table_past_its_insert_threshold_is_vacuumed_and_one_below_it_is_not(
    settings: Settings,
) -> None:
    await migrate_read_model(settings)
    async with read_db(settings) as conn:
        await insert(conn, 900)
        await stats_flushed(conn, 900)
        below = await vacuum_if_due(conn)
        await insert(conn, 400)
        await stats_flushed(conn, 1300)

        ran = await vacuum_if_due(conn)

        table = await conn.fetchrow(
            "SELECT c.relpages, c.relallvisible, s.last_vacuum, s.last_analyze FROM pg_class c "
            "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'tasks'"
        )
    assert below is None
    assert ran == "vacuum"
    assert table is not None
    assert table["last_vacuum"] is not None
    assert table["last_analyze"] is not None
    assert table["relpages"] > 0
    assert table["relallvisible"] == table["relpages"]


async def test_the_projectors_maintenance_loop_vacuums_a_growing_table(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(read_vacuum_seconds=0.2)
    await migrate_read_model(settings)
    loop = asyncio.create_task(keep_vacuumed(settings, force=True))
    try:
        async with read_db(settings) as conn:
            await insert(conn, 1500)

            async def vacuumed() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables "
                        "WHERE relname = 'tasks'"
                    )
                )

            await eventually(vacuumed, 60)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert loop.cancelled()
