"""Rebuild the read table from the event store without stopping reads, and verify it.

`rebuild` folds the store up to position P into a new table with COPY, builds its indexes,
then, holding the projector's lock, applies P+1 to the end and swaps the tables in one
transaction. `verify` compares every row with the state replayed from the store.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from projector.projection import (
    COLUMNS,
    PROJECTION_CHANNEL,
    PROJECTION_LOCK_KEY,
    fold_rows,
    migrate_read_model,
    row_of,
    upsert_sql,
)
from shared.config import Settings
from shared.domain import EVENTS_TABLE, Task, create_mapper, decode, task_to_dict
from shared.progress import Progress

NEW_TABLE = "tasks_rebuild"
OLD_TABLE = "tasks_old"
BATCH = 5_000

_mapper = create_mapper()


async def folded_tasks(
    store: asyncpg.Connection, upto: int, batch: int = BATCH
) -> AsyncIterator[tuple[Task, int, int]]:
    """Every task folded from its events at or below `upto`, in id order.

    Yields (task, position of its last event, events read). Must run inside a transaction.
    """
    task: Task | None = None
    position = 0
    counted = 0
    cursor = await store.cursor(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id <= $1 "
        "ORDER BY originator_id, originator_version",
        upto,
    )
    # Whole batches per round trip, not one awaited row at a time.
    while rows := await cursor.fetch(batch):
        for row in rows:
            event = decode(_mapper, row)
            if task is not None and task.id != event.originator_id:
                yield task, position, counted
                task, counted = None, 0
            mutated = event.mutate(task)
            assert isinstance(mutated, Task)
            task = mutated
            position = row["notification_id"]
            counted += 1
    if task is not None:
        yield task, position, counted


async def rebuild(settings: Settings, progress_stream: Any = sys.stderr) -> dict[str, Any]:
    """Build a new read table from the store while the old one serves, then swap them."""
    await migrate_read_model(settings)
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    try:
        upto = await store.fetchval(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
        await read.execute(f"DROP TABLE IF EXISTS {NEW_TABLE}")
        await read.execute(
            f"CREATE TABLE {NEW_TABLE} (LIKE tasks INCLUDING DEFAULTS INCLUDING GENERATED)"
        )
        progress = Progress("rebuild", upto, progress_stream)
        columns = COLUMNS.split(", ")
        rows: list[tuple[Any, ...]] = []
        # One COPY in flight while the next batch is read and folded (two connections).
        copying: asyncio.Task[str] | None = None
        async with store.transaction(isolation="repeatable_read", readonly=True):
            async for task, position, counted in folded_tasks(store, upto):
                rows.append(row_of(task_to_dict(task), position))
                progress.advance(counted)
                if len(rows) >= BATCH:
                    if copying is not None:
                        await copying
                    copying = asyncio.create_task(
                        read.copy_records_to_table(NEW_TABLE, records=rows, columns=columns)
                    )
                    rows = []
        if copying is not None:
            await copying
        if rows:
            await read.copy_records_to_table(NEW_TABLE, records=rows, columns=columns)
        progress.advance(0, final=True)
        await _copy_indexes(read, settings.read_dsn)
        caught_up = await _catch_up_and_swap(store, read, upto)
        return {"events": progress.done, "events_per_second": progress.rate, "caught_up": caught_up}
    finally:
        await store.close()
        await read.close()


async def _copy_indexes(read: asyncpg.Connection, dsn: str) -> None:
    """The live table's indexes, recreated on the new table under temporary names.

    Two connections take the next statement from one list, so two cores build at once; the
    GIN indexes (the full-text one costs as much as all the B-trees together) go first.
    """
    rows = await read.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' "
        "AND indexname <> 'tasks_pkey' ORDER BY indexdef NOT LIKE '%USING gin%', indexname"
    )
    statements = [
        f"ALTER TABLE {NEW_TABLE} ADD PRIMARY KEY (id)",
        *(
            row["indexdef"].replace(
                f"INDEX {row['indexname']} ON public.tasks",
                f"INDEX rb_{row['indexname']} ON public.{NEW_TABLE}",
            )
            for row in rows
        ),
    ]
    pending = iter(statements)

    async def build(conn: asyncpg.Connection) -> None:
        for statement in pending:
            await conn.execute(statement)

    other = await asyncpg.connect(dsn)
    try:
        await asyncio.gather(build(read), build(other))
    finally:
        await other.close()


async def _catch_up_and_swap(store: asyncpg.Connection, read: asyncpg.Connection, upto: int) -> int:
    """Holding the projector's lock: apply what the store gained meanwhile, then swap."""
    async with read.transaction():
        await read.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_KEY)
        end = await store.fetchval(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
        ids = await store.fetch(
            f"SELECT DISTINCT originator_id FROM {EVENTS_TABLE} "
            "WHERE notification_id > $1 AND notification_id <= $2",
            upto,
            end,
        )
        if ids:
            rows = await store.fetch(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {EVENTS_TABLE} WHERE originator_id = ANY($1::uuid[]) "
                "AND notification_id <= $2 ORDER BY originator_id, originator_version",
                [row["originator_id"] for row in ids],
                end,
            )
            await read.executemany(upsert_sql(NEW_TABLE), [c.row for c in fold_rows(rows)])
        position = await read.fetchval(
            "UPDATE projection_state SET position = greatest(position, $1) "
            "WHERE name = 'projector' RETURNING position",
            end,
        )
        names = await read.fetch(
            "SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'tasks' AND indexname <> 'tasks_pkey'"
        )
        await read.execute(f"ALTER TABLE tasks RENAME TO {OLD_TABLE}")
        await read.execute(f"ALTER TABLE {NEW_TABLE} RENAME TO tasks")
        await read.execute(f"DROP TABLE {OLD_TABLE}")
        await read.execute(f"ALTER INDEX {NEW_TABLE}_pkey RENAME TO tasks_pkey")
        for row in names:
            await read.execute(f"ALTER INDEX rb_{row['indexname']} RENAME TO {row['indexname']}")
        await read.execute("SELECT pg_notify($1, $2)", PROJECTION_CHANNEL, str(position))
    return int(end) - upto


async def verify(settings: Settings, out: Any = sys.stdout) -> list[str]:
    """Compare every read-table row with the replayed store; returns (and prints) differences.

    Both sides are streamed in id order and merged, so memory stays flat at any size.
    """
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    differences: list[str] = []
    try:
        async with read.transaction(isolation="repeatable_read", readonly=True):
            state = await read.fetchrow(
                "SELECT position, dead_letters FROM projection_state WHERE name = 'projector'"
            )
            assert state is not None
            upto = state["position"]
            progress = Progress("verify", upto, sys.stderr)
            rows = read.cursor("SELECT id, doc FROM tasks ORDER BY id", prefetch=BATCH).__aiter__()
            row = await anext(rows, None)
            async with store.transaction(isolation="repeatable_read", readonly=True):
                async for task, _, counted in folded_tasks(store, upto):
                    progress.advance(counted)
                    while row is not None and row["id"] < task.id:
                        differences.append(f"{row['id']}: in the read table but not in the store")
                        row = await anext(rows, None)
                    expected = task_to_dict(task)
                    if row is None or row["id"] != task.id:
                        differences.append(f"{task.id}: missing from the read table")
                        continue
                    actual = orjson.loads(row["doc"])
                    if actual != expected:
                        differences.append(f"{task.id}: read table {actual} != replay {expected}")
                    row = await anext(rows, None)
            while row is not None:
                differences.append(f"{row['id']}: in the read table but not in the store")
                row = await anext(rows, None)
        progress.advance(0, final=True)
        for line in differences:
            out.write(line + "\n")
        out.write(
            f"verified up to position {upto}: {len(differences)} difference(s), "
            f"{state['dead_letters']} dead-lettered message(s)\n"
        )
    finally:
        await store.close()
        await read.close()
    return differences
