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
    task_to_dict,
)

SELECT_EVENTS = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE originator_id = $1 ORDER BY originator_version"
)
SELECT_UP_TO = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE originator_id = $1 AND originator_version <= $2 "
    "ORDER BY originator_version"
)

_mapper = create_mapper()


def _data(event: Task.Event) -> dict[str, Any]:
    if isinstance(event, Task.Created):
        return {
            "title": event.title,
            "description": event.description,
            "priority": event.priority,
            "due_date": event.due_date,
            "tags": event.tags,
        }
    if isinstance(event, Task.Updated):
        return {"changes": event.changes}
    return {}


async def history(conn: asyncpg.Connection | asyncpg.Pool, task_id: UUID) -> dict[str, Any] | None:
    rows = await conn.fetch(SELECT_EVENTS, task_id)
    if not rows:
        return None
    events = []
    for row in rows:
        event = decode(_mapper, row)
        events.append(
            {
                "version": event.originator_version,
                "type": row["topic"],
                "occurred_at": format_timestamp(event.timestamp),
                "position": row["notification_id"],
                "correlation_id": event.correlation_id,
                "data": _data(event),
            }
        )
    return {"task_id": str(task_id), "events": events}


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
