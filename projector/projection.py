"""How an event changes the read table: an idempotent, version-ordered upsert of the full task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any

import asyncpg
import orjson

from shared.config import Settings
from shared.database import ddl_lock, ensure_database
from shared.domain import EVENTS_TABLE, Task, create_mapper, decode, task_to_dict

PROJECTION_LOCK_KEY = 7_301_124_003
"""Held by every apply transaction; `rebuild` holds it while it catches up and swaps tables."""

PROJECTION_CHANNEL = "tasks_projection"
"""NOTIFY channel: the new projection position after every commit (read-your-writes waits)."""

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
    """A message that is not a task event: it goes to the dead-letter queue."""


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


def parse_change(body: bytes) -> Change:
    """Decode a CloudEvent from `tasks.events`; anything malformed raises `Undecodable`."""
    try:
        envelope = orjson.loads(body)
        task = envelope["data"]["task"]
        position = envelope["position"]
        if not isinstance(position, int) or isinstance(position, bool) or position < 1:
            raise Undecodable("position must be a positive integer")
        if envelope.get("specversion") != "1.0":
            raise Undecodable("not a CloudEvents 1.0 event")
        row = row_of(task, position)
        if not isinstance(row[12], int) or row[12] < 1:
            raise Undecodable("task.version must be a positive integer")
        if envelope["subject"] != task["id"] or int(envelope["sequence"]) != task["version"]:
            raise Undecodable("subject/sequence disagree with data.task")
        correlation = envelope.get("correlationid")
        return Change(
            position, task["version"], row, correlation if isinstance(correlation, str) else None
        )
    except Undecodable:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Undecodable(f"{type(exc).__name__}: {exc}") from None


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


def contiguous(after: int, positions: list[int]) -> bool:
    expected = after + 1
    for position in sorted(positions):
        if position != expected:
            return False
        expected += 1
    return True


async def missing_changes(
    store: asyncpg.Connection, after: int, positions: list[int]
) -> list[Change]:
    """Events between `after` and the batch's end that no delivered message carried.

    A broker failover can deliver position 7 before a lost 6 is republished; the projection
    position may only pass 6 once 6 is applied, so the gap is filled from the store.
    Notification ids also have harmless holes (rolled-back appends); those find nothing.
    """
    upto = max(positions)
    ids = await store.fetch(
        f"SELECT DISTINCT originator_id FROM {EVENTS_TABLE} WHERE notification_id > $1 "
        "AND notification_id <= $2 AND NOT (notification_id = ANY($3::bigint[]))",
        after,
        upto,
        positions,
    )
    if not ids:
        return []
    rows = await store.fetch(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE originator_id = ANY($1::uuid[]) AND notification_id <= $2 "
        "ORDER BY originator_id, originator_version",
        [row["originator_id"] for row in ids],
        upto,
    )
    return fold_rows(rows)


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
