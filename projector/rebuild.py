"""Rebuild the read table from the event store without stopping reads.

`rebuild` folds the store up to position P into a new table with COPY (the fast fold straight
from the stored JSON, `fold_stored`), vacuums and analyzes it so index-only scans on it are
index-only from its first read, builds its indexes, then, holding the projector's lock,
applies P+1 to the end and swaps the tables in one transaction. `projector/verify.py` checks
the result against the other fold.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from typing import Any
from uuid import UUID

import asyncpg

from projector.projection import (
    COLUMNS,
    PROJECTION_LOCK_KEY,
    ReadRow,
    migrate_read_model,
    row_of,
    upsert_sql,
)
from shared import store as events
from shared.config import Settings
from shared.domain import TaskDict
from shared.fold import fold_stored
from shared.progress import Progress
from shared.read_model import PROJECTION_CHANNEL

NEW_TABLE = "tasks_rebuild"
OLD_TABLE = "tasks_old"
BATCH = events.BATCH


async def folded_documents(
    store: asyncpg.Connection,
    upto: int,
    batch: int = BATCH,
    ids: tuple[UUID, UUID | None] | None = None,
) -> AsyncIterator[tuple[TaskDict, int, int]]:
    """Every task folded from its events at or below `upto` into its REST form by `fold_stored`,
    in id order; with `ids` (low, high or None), only the tasks whose id is in [low, high).

    Yields (task, position of its last event, events read). Must run inside a transaction.
    """
    async for stored in events.streamed_per_task(events.by_task(store, upto, batch, ids)):
        yield _folded(stored), stored[-1]["position"], len(stored)


def _folded(stored: list[asyncpg.Record]) -> TaskDict:
    """One task's events, in version order, folded from their stored JSON."""
    task: TaskDict | None = None
    for _, task_id, version, topic, state in stored:
        task = fold_stored(task, task_id, version, topic, state)
    assert task is not None
    return task


async def rebuild(settings: Settings, progress_stream: Any = sys.stderr) -> dict[str, Any]:
    """Build a new read table from the store while the old one serves, then swap them.

    With `rebuild_workers` above 1, that many processes fold and copy one range of task ids
    each (the library's decoding and the aggregate's fold are CPU-bound Python).
    """
    await migrate_read_model(settings)
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    try:
        upto = await events.head(store)
        total = await events.count(store, 0, upto)
        await read.execute(f"DROP TABLE IF EXISTS {NEW_TABLE}")
        await read.execute(
            f"CREATE TABLE {NEW_TABLE} (LIKE tasks INCLUDING DEFAULTS INCLUDING GENERATED)"
        )
        await _copy_storage_parameters(read)
        progress = Progress("rebuild", total, progress_stream)
        # Appends commit in position order (the library locks the table to append), so once
        # `upto` is visible every event below it is too: each part may take its own snapshot.
        if settings.rebuild_workers > 1:
            await _copy_in_processes(settings, upto, progress)
        else:
            done = await _copy_part(settings.database_url, settings.read_dsn, upto, None)
            progress.advance(done)
        progress.advance(0, final=True)
        copied = progress.rate
        phases = {"fold_and_copy": time.monotonic() - progress.started}
        # Before the indexes, so the pass is over the heap alone: every page all-visible (index-
        # only scans never visit it) and the planner's statistics fresh, before the first read.
        await read.execute(f"VACUUM (ANALYZE) {NEW_TABLE}")
        phases["vacuum_analyze"] = time.monotonic() - progress.started - sum(phases.values())
        await _copy_indexes(read, settings.read_dsn)
        phases["indexes"] = time.monotonic() - progress.started - sum(phases.values())
        position, caught_up = await _catch_up_and_swap(store, read, upto)
        phases["catch_up_and_swap"] = time.monotonic() - progress.started - sum(phases.values())
        tasks = await read.fetchval("SELECT count(*) FROM tasks")
        return {
            "events": progress.done,
            "events_per_second": copied,
            "caught_up": caught_up,
            "tasks": tasks,
            "position": position,
            "phases_s": phases,
        }
    finally:
        await store.close()
        await read.close()


async def _copy_part(
    store_dsn: str,
    read_dsn: str,
    upto: int,
    ids: tuple[UUID, UUID | None] | None,
    done: Synchronized[int] | None = None,
) -> int:
    """Fold the tasks in `ids` (all with None) into the new table; returns the events read.

    One COPY is in flight while the next batch is read and folded (two connections); `done`,
    when given, is raised by the events of each batch sent.
    """
    store = await asyncpg.connect(store_dsn)
    read = await asyncpg.connect(read_dsn)
    columns = list(COLUMNS)
    rows: list[ReadRow] = []
    read_events = unreported = 0
    copying: asyncio.Task[str] | None = None
    try:
        async with store.transaction(isolation="repeatable_read", readonly=True):
            async for document, position, counted in folded_documents(store, upto, ids=ids):
                rows.append(row_of(document, position))
                read_events += counted
                unreported += counted
                if len(rows) >= BATCH:
                    if copying is not None:
                        await copying
                    copying = asyncio.create_task(
                        read.copy_records_to_table(NEW_TABLE, records=rows, columns=columns)
                    )
                    rows = []
                    if done is not None:
                        with done.get_lock():
                            done.value += unreported
                        unreported = 0
        if copying is not None:
            await copying
        if rows:
            await read.copy_records_to_table(NEW_TABLE, records=rows, columns=columns)
        return read_events
    finally:
        await store.close()
        await read.close()


_done: Synchronized[int] | None = None
"""In a worker process: the shared count of events folded, for the parent's progress bar."""


def _share_count(done: Synchronized[int]) -> None:
    global _done  # set once per worker process, by the pool's initializer
    _done = done


def _copy_part_in_process(
    store_dsn: str, read_dsn: str, upto: int, ids: tuple[UUID, UUID | None]
) -> int:
    return asyncio.run(_copy_part(store_dsn, read_dsn, upto, ids, _done))


async def _copy_in_processes(settings: Settings, upto: int, progress: Progress) -> None:
    """`rebuild_workers` processes, one equal range of the (uniform) task-id space each."""
    parts = settings.rebuild_workers
    bounds: list[UUID | None] = [UUID(int=k * (2**128 // parts)) for k in range(parts)]
    bounds.append(None)
    context = multiprocessing.get_context("spawn")
    done = context.Value("q", 0)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(parts, context, _share_count, (done,)) as pool:
        running = [
            loop.run_in_executor(
                pool,
                _copy_part_in_process,
                settings.database_url,
                settings.read_dsn,
                upto,
                (low, high),
            )
            for low, high in itertools.pairwise(bounds)
            if low is not None
        ]
        pending: set[asyncio.Future[int]] = set(running)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            progress.advance(done.value - progress.done)
        read_events = sum(part.result() for part in running)
    progress.advance(read_events - progress.done)


async def _copy_storage_parameters(read: asyncpg.Connection) -> None:
    """The live table's storage parameters (its autovacuum settings) on the new table too:
    `CREATE TABLE … (LIKE …)` does not copy them."""
    options = await read.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'tasks'::regclass")
    if options:
        await read.execute(f"ALTER TABLE {NEW_TABLE} SET ({', '.join(options)})")


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


async def _catch_up_and_swap(
    store: asyncpg.Connection, read: asyncpg.Connection, upto: int
) -> tuple[int, int]:
    """Holding the projector's lock: apply what the store gained meanwhile, then swap.

    Returns the position swapped in and the number of events stored after `upto`."""
    async with read.transaction():
        await read.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_KEY)
        end = await events.head(store)
        touched = await events.touched(store, upto, end)
        await read.executemany(
            upsert_sql(NEW_TABLE),
            [
                row_of(_folded(stored), stored[-1]["position"])
                for stored in events.per_task(touched)
            ],
        )
        # What was rebuilt, not `greatest`: a position past the store's head is not kept. A new
        # generation: remembered totals of the old table no longer hold, even at this position.
        position = await read.fetchval(
            "UPDATE projection_state SET position = $1, generation = generation + 1 "
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
    return end, await events.count(store, upto, end)
