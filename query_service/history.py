"""Audit replay and time travel, read from the event store with asyncpg and the shared classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.domain import CREATED_FIELDS, Task, format_timestamp, previous_values, task_to_dict
from shared.fold import fold
from shared.store import LAST_POSITION, decode, of_task

HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


def _data(event: Task.Event, previous: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(event, Task.Created):
        return {name: getattr(event, name) for name in CREATED_FIELDS}
    if isinstance(event, Task.Updated):
        return {"changes": event.changes, "previous": previous}
    return {}


async def history(
    conn: asyncpg.Connection | asyncpg.Pool,
    task_id: UUID,
    after_version: int = 0,
    limit: int = HISTORY_LIMIT,
) -> tuple[dict[str, Any], bool] | None:
    """A page of a task's events after `after_version`, and whether more follow; None when the
    task never existed. An update stored before `previous` was kept gets it folded from the
    events before it."""
    rows = await of_task(conn, task_id, after_version, limit=limit + 1)
    if not rows and (after_version == 0 or not await of_task(conn, task_id, limit=1)):
        return None
    more = len(rows) > limit
    events = [decode(row) for row in rows[:limit]]
    task: Task | None = None
    folding = any(isinstance(e, Task.Updated) and e.previous is None for e in events)
    if folding and after_version:
        task = fold(decode(row) for row in await of_task(conn, task_id, upto_version=after_version))
    entries = []
    for row, event in zip(rows, events, strict=False):
        previous = previous_values(event, task)
        if folding:
            task = event.mutate(task)
        entries.append(
            {
                "version": event.originator_version,
                "type": row["topic"],
                "occurred_at": format_timestamp(event.timestamp),
                "position": row["position"],
                "correlation_id": event.correlation_id,
                "actor": event.actor,
                "data": _data(event, previous),
            }
        )
    return {"task_id": str(task_id), "events": entries}, more


async def state_at(
    conn: asyncpg.Connection | asyncpg.Pool,
    task_id: UUID,
    version: int | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any] | None:
    """The task as it was after `version`, or after every event at or before `as_of`."""
    rows = await of_task(conn, task_id, upto_version=LAST_POSITION if version is None else version)
    if version is not None and len(rows) < version:
        return None
    events = [decode(row) for row in rows]
    if as_of is not None:
        events = [event for event in events if event.timestamp <= as_of]
    task = fold(events)
    return task_to_dict(task) if isinstance(task, Task) else None
