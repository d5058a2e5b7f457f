"""How stored events change the read table: an idempotent, version-ordered upsert of the full task.

A message from the broker only names a stored event (its position and id); what is applied is
read from the event store and folded with the shared fold, so nothing a message carries can
change a row or move the projection position past the store's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from shared.config import Settings
from shared.database import ddl_lock, ensure_database
from shared.domain import (
    EVENTS_TABLE,
    Task,
    TaskDict,
    create_mapper,
    decode,
    fold_stored,
    task_to_dict,
)
from shared.messaging import event_id
from shared.read_model import PROJECTION_CHANNEL as PROJECTION_CHANNEL

PROJECTION_LOCK_KEY = 7_301_124_003
"""Held by every apply transaction; `rebuild` holds it while it catches up and swaps tables."""

COLUMNS = (
    "id, title, description, priority, due_date, tags, completed, completed_at, "
    "deleted, deleted_at, created_at, updated_at, version, position, doc"
)
UPDATES = ", ".join(f"{name} = EXCLUDED.{name}" for name in COLUMNS.split(", ") if name != "id")


def upsert_sql(table: str = "tasks") -> str:
    # An older or equal version never overwrites a newer row: redeliveries are no-ops.
    return (
        f"INSERT INTO {table} AS t ({COLUMNS}) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
        f"ON CONFLICT (id) DO UPDATE SET {UPDATES} WHERE t.version < EXCLUDED.version"
    )


class Undecodable(ValueError):
    """A message that names no stored event: it goes to the dead-letter queue."""


@dataclass(frozen=True)
class Change:
    """One event as the projector needs it: its position and the task's row after it."""

    position: int
    version: int
    row: tuple[Any, ...]
    correlation_id: str | None = None


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value)


def row_of(task: dict[str, Any], position: int) -> tuple[Any, ...]:
    """The read-table row of a task in its REST representation."""
    return (
        task["id"],
        task["title"],
        task["description"],
        task["priority"],
        date.fromisoformat(task["due_date"]) if task["due_date"] is not None else None,
        task["tags"],
        task["completed"],
        _timestamp(task["completed_at"]),
        task["deleted"],
        _timestamp(task["deleted_at"]),
        _timestamp(task["created_at"]),
        _timestamp(task["updated_at"]),
        task["version"],
        position,
        orjson.dumps(task).decode(),
    )


@dataclass(frozen=True)
class Reference:
    """What the projector takes from a message: which stored event it names, nothing more."""

    position: int
    event_id: str


def parse_reference(body: bytes) -> Reference:
    """The position and id of a CloudEvent; anything else in the message is ignored.

    A body that is not a JSON object with a positive integer `position` and a string `id`
    raises `Undecodable`. The event itself is read from the store at that position.
    """
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise Undecodable("not a JSON object")
    position = envelope.get("position")
    if type(position) is not int or not 1 <= position < 2**63:
        raise Undecodable("position must be a positive 64-bit integer")
    event_id = envelope.get("id")
    if not isinstance(event_id, str):
        raise Undecodable("id must be a string")
    return Reference(position, event_id)


STORED_COLUMNS = "notification_id, originator_id, originator_version, topic, state"
SELECT_POSITIONS = (
    f"SELECT {STORED_COLUMNS} FROM {EVENTS_TABLE} WHERE notification_id = ANY($1::bigint[])"
)
SELECT_PAGE = (
    f"SELECT {STORED_COLUMNS} FROM {EVENTS_TABLE} WHERE notification_id > $1 "
    "AND notification_id <= $2 ORDER BY notification_id LIMIT $3"
)
SELECT_BEFORE = (
    f"SELECT {STORED_COLUMNS} FROM {EVENTS_TABLE} e "
    "JOIN unnest($1::uuid[], $2::bigint[]) AS w(id, below) "
    "ON e.originator_id = w.id AND e.originator_version < w.below "
    "ORDER BY e.originator_id, e.originator_version"
)


async def stored_at(store: asyncpg.Connection, positions: list[int]) -> dict[int, asyncpg.Record]:
    """The stored events at these positions (one query), by position."""
    rows = await store.fetch(SELECT_POSITIONS, positions)
    return {row["notification_id"]: row for row in rows}


def stored_id(row: asyncpg.Record) -> str:
    """The CloudEvent id the relay gives this stored event."""
    return event_id(str(row["originator_id"]), row["originator_version"])


def refusal(reference: Reference, row: asyncpg.Record | None) -> str | None:
    """Why a message may not be applied (None: it names a stored event truly)."""
    if row is None:
        return f"position {reference.position} is not in the event store"
    if stored_id(row) != reference.event_id:
        return f"position {reference.position} holds another event than {reference.event_id!r}"
    return None


async def store_page(
    store: asyncpg.Connection, after: int, upto: int, limit: int
) -> list[asyncpg.Record]:
    """At most `limit` stored events after `after` up to `upto`, in position order."""
    return list(await store.fetch(SELECT_PAGE, after, upto, limit))


async def store_head(store: asyncpg.Connection) -> int:
    return int(
        await store.fetchval(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
    )


async def read_position(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval("SELECT position FROM projection_state WHERE name = 'projector'")
    )


async def _position_and_rows(
    conn: asyncpg.Connection, ids: list[UUID]
) -> tuple[int, dict[UUID, TaskDict]]:
    """The projection position and the read-table rows of these tasks, in one round trip."""
    records = await conn.fetch(
        "SELECT s.position, t.id, t.doc FROM projection_state s "
        "LEFT JOIN tasks t ON t.id = ANY($1::uuid[]) WHERE s.name = 'projector'",
        ids,
    )
    tasks = {r["id"]: orjson.loads(r["doc"]) for r in records if r["id"] is not None}
    return int(records[0]["position"]), tasks


async def _fill_behind(
    store: asyncpg.Connection, tasks: dict[UUID, TaskDict], rows: list[asyncpg.Record]
) -> None:
    """A task whose read-table row is missing events before `rows` (a damaged or lagging row)
    is folded from its stored history up to them instead."""
    first: dict[UUID, int] = {}
    for row in rows:
        task = tasks.get(row["originator_id"])
        if row["originator_version"] > (task["version"] if task is not None else 0):
            first.setdefault(row["originator_id"], row["originator_version"])
    behind = {
        task_id: version
        for task_id, version in first.items()
        if version - 1 > (tasks[task_id]["version"] if task_id in tasks else 0)
    }
    if not behind:
        return
    for task_id in behind:
        tasks.pop(task_id, None)
    history = await store.fetch(SELECT_BEFORE, list(behind), list(behind.values()))
    for row in history:
        task_id = row["originator_id"]
        tasks[task_id] = fold_stored(
            tasks.get(task_id), task_id, row["originator_version"], row["topic"], row["state"]
        )


async def apply_stored(
    conn: asyncpg.Connection,
    store: asyncpg.Connection,
    rows: list[asyncpg.Record],
    dead_letters: int = 0,
    through: int = 0,
) -> int:
    """Fold stored events (in position order) onto the read table in one transaction.

    Events at or below the projection position are skipped, and so is a version a row
    already has. The position becomes the highest of `rows` (or `through`, a stored position
    set aside); it never passes what the store holds. Returns the new position.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_KEY)
        current, tasks = await _position_and_rows(
            conn, list({row["originator_id"] for row in rows})
        )
        fresh = [row for row in rows if row["notification_id"] > current]
        changed: dict[UUID, tuple[TaskDict, int]] = {}
        if fresh:
            await _fill_behind(store, tasks, fresh)
            for row in fresh:
                task_id = row["originator_id"]
                task = tasks.get(task_id)
                if task is not None and task["version"] >= row["originator_version"]:
                    continue
                task = fold_stored(
                    task, task_id, row["originator_version"], row["topic"], row["state"]
                )
                tasks[task_id] = task
                changed[task_id] = (task, row["notification_id"])
        if changed:
            await conn.executemany(
                upsert_sql(), [row_of(task, position) for task, position in changed.values()]
            )
        upto = int(max([current, through, *(row["notification_id"] for row in fresh)]))
        await conn.execute(
            "WITH moved AS (UPDATE projection_state SET position = $1, "
            "dead_letters = dead_letters + $2 WHERE name = 'projector' RETURNING position) "
            "SELECT pg_notify($3, position::text) FROM moved",
            upto,
            dead_letters,
            PROJECTION_CHANNEL,
        )
    return upto


_mapper = create_mapper()


def fold_rows(rows: list[asyncpg.Record]) -> list[Change]:
    """Events-table rows ordered by task and version → each task's row after its last event."""
    out: list[Change] = []
    task: Task | None = None
    position = 0

    def emit(done: Task) -> None:
        out.append(Change(position, done.version, row_of(task_to_dict(done), position)))

    for record in rows:
        event = decode(_mapper, record)
        if task is not None and task.id != event.originator_id:
            emit(task)
            task = None
        mutated = event.mutate(task)
        assert isinstance(mutated, Task)
        task, position = mutated, record["notification_id"]
    if task is not None:
        emit(task)
    return out


async def apply(conn: asyncpg.Connection, changes: list[Change], dead_letters: int = 0) -> int:
    """Apply a batch in one transaction, record the position, signal it; returns the position."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_KEY)
        if changes:
            await conn.executemany(upsert_sql(), [change.row for change in changes])
        position = max((change.position for change in changes), default=0)
        new_position: int = await conn.fetchval(
            "UPDATE projection_state SET position = greatest(position, $1), "
            "dead_letters = dead_letters + $2 WHERE name = 'projector' RETURNING position",
            position,
            dead_letters,
        )
        await conn.execute("SELECT pg_notify($1, $2)", PROJECTION_CHANNEL, str(new_position))
    return new_position


def schema_sql() -> str:
    return resources.files("projector").joinpath("schema.sql").read_text()


async def migrate_read_model(settings: Settings) -> None:
    await ensure_database(settings.read_dsn)
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        async with ddl_lock(conn):
            await conn.execute(schema_sql())
    finally:
        await conn.close()
