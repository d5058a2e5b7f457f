"""Audit replay and time travel, read from the event store with asyncpg and the shared classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.domain import (
    EVENTS_TABLE,
    Task,
    create_mapper,
    decode,
    fold,
    format_timestamp,
    previous_values,
    task_to_dict,
)

HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000

SELECT_EVENTS = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE originator_id = $1 ORDER BY originator_version"
)
SELECT_PAGE = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE originator_id = $1 AND originator_version > $2 "
    "ORDER BY originator_version LIMIT $3"
)
SELECT_UP_TO = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE originator_id = $1 AND originator_version <= $2 "
    "ORDER BY originator_version"
)

_mapper = create_mapper()


def _data(event: Task.Event, previous: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(event, Task.Created):
        return {
            "title": event.title,
            "description": event.description,
            "priority": event.priority,
            "due_date": event.due_date,
            "tags": event.tags,
        }
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
    rows = await conn.fetch(SELECT_PAGE, task_id, after_version, limit + 1)
    if not rows and (after_version == 0 or not await conn.fetch(SELECT_UP_TO, task_id, 1)):
        return None
    more = len(rows) > limit
    events = [decode(_mapper, row) for row in rows[:limit]]
    task: Task | None = None
    folding = any(isinstance(e, Task.Updated) and e.previous is None for e in events)
    if folding and after_version:
        task = fold(
            decode(_mapper, row) for row in await conn.fetch(SELECT_UP_TO, task_id, after_version)
        )
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
                "position": row["notification_id"],
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
    if version is not None:
        rows = await conn.fetch(SELECT_UP_TO, task_id, version)
        if len(rows) < version:
            return None
    else:
        rows = await conn.fetch(SELECT_EVENTS, task_id)
    events = [decode(_mapper, row) for row in rows]
    if as_of is not None:
        events = [event for event in events if event.timestamp <= as_of]
    task = fold(events)
    return task_to_dict(task) if isinstance(task, Task) else None
