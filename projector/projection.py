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
        return Change(position, task["version"], row)
    except Undecodable:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Undecodable(f"{type(exc).__name__}: {exc}") from None


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
