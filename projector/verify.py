"""Verify the read table: every row against the task replayed from the event store.

The replay goes through the event classes (`fold`, the library's own decoding), the other fold
than the one the projector and `rebuild` use (`fold_stored`), so a read table they wrote is
checked against the reference. Both sides are streamed in id order and merged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from shared import store as events
from shared.config import Settings
from shared.domain import Task, task_to_dict
from shared.failures import OperatorError
from shared.fold import fold
from shared.progress import Progress


async def folded_tasks(
    store: asyncpg.Connection, upto: int, batch: int = events.BATCH
) -> AsyncIterator[tuple[Task, int]]:
    """Every task folded through its event classes from its events at or below `upto`, in id
    order, with the number of events read. Must run inside a transaction."""
    async for stored in events.streamed_per_task(events.by_task(store, upto, batch)):
        task = fold(events.decode(row) for row in stored)
        assert isinstance(task, Task)
        yield task, len(stored)


def field_differences(task_id: UUID, actual: dict[str, Any], expected: dict[str, Any]) -> str:
    """One line naming the task and each field whose values differ, read table then store."""
    fields = sorted(set(actual) | set(expected))
    missing = object()
    changed = [
        f"{name}: read table {_shown(actual.get(name, missing))}, "
        f"store {_shown(expected.get(name, missing))}"
        for name in fields
        if actual.get(name, missing) != expected.get(name, missing)
    ]
    return f"task {task_id} differs: " + "; ".join(changed)


def _shown(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return "(absent)"


async def verify(settings: Settings, out: Any = sys.stdout) -> list[str]:
    """Compare every read-table row with the replayed store; returns (and prints) differences,
    one line per task naming the fields that differ with both values, then a summary line.

    Both sides are streamed in id order and merged, so memory stays flat at any size.
    """
    started = time.monotonic()
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    differences: list[str] = []
    tasks = 0
    try:
        async with read.transaction(isolation="repeatable_read", readonly=True):
            state = await read.fetchrow(
                "SELECT position, dead_letters FROM projection_state WHERE name = 'projector'"
            )
            if state is None:
                raise OperatorError("the read table has no projection state: run migrate first")
            upto = state["position"]
            rows = read.cursor(
                "SELECT id, doc FROM tasks ORDER BY id", prefetch=events.BATCH
            ).__aiter__()
            row = await anext(rows, None)
            async with store.transaction(isolation="repeatable_read", readonly=True):
                progress = Progress("verify", await events.count(store, 0, upto), sys.stderr)
                async for task, counted in folded_tasks(store, upto):
                    progress.advance(counted)
                    tasks += 1
                    while row is not None and row["id"] < task.id:
                        differences.append(
                            f"task {row['id']}: in the read table but not in the store"
                        )
                        row = await anext(rows, None)
                    expected = task_to_dict(task)
                    if row is None or row["id"] != task.id:
                        differences.append(f"task {task.id}: missing from the read table")
                        continue
                    actual = orjson.loads(row["doc"])
                    if actual != expected:
                        differences.append(field_differences(task.id, actual, expected))
                    row = await anext(rows, None)
            while row is not None:
                differences.append(f"task {row['id']}: in the read table but not in the store")
                row = await anext(rows, None)
        progress.advance(0, final=True)
        for line in differences:
            out.write(line + "\n")
        out.write(
            f"verified {tasks} tasks ({progress.done} events) up to position {upto}: "
            f"{len(differences)} difference(s), {state['dead_letters']} dead-lettered "
            f"message(s) in {time.monotonic() - started:.1f} s\n"
        )
    finally:
        await store.close()
        await read.close()
    return differences
