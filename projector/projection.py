"""How stored events change the read table: an idempotent, version-ordered upsert of the full task.

A message from the broker only names a stored event (its position and id); what is applied is
read from the event store and folded with the shared fold, so nothing a message carries can
change a row or move the projection position past the store's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import orjson

from shared.config import Settings
from shared.database import ddl_lock, ensure_database
from shared.domain import TaskDict
from shared.fold import fold_stored
from shared.messaging import event_id
from shared.read_model import PROJECTION_CHANNEL
from shared.store import before_versions

PROJECTION_LOCK_KEY = 7_301_124_003
"""Held by every apply transaction; `rebuild` holds it while it catches up and swaps tables."""


class ReadRow(NamedTuple):
    """A read-table row: the task's fields (`TASK_FIELDS`, in order), then the position of its
    last event and the REST JSON itself. A tuple, as asyncpg's COPY and executemany take it."""

    id: UUID
    title: str
    description: str | None
    priority: int
    due_date: date | None
    tags: list[str]
    completed: bool
    completed_at: datetime | None
    deleted: bool
    deleted_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    version: int
    position: int
    doc: str


COLUMNS = ReadRow._fields
UPDATES = ", ".join(f"{name} = EXCLUDED.{name}" for name in COLUMNS if name != "id")


def upsert_sql(table: str = "tasks") -> str:
    # An older or equal version never overwrites a newer row: redeliveries are no-ops.
    values = ", ".join(f"${number}" for number in range(1, len(COLUMNS) + 1))
    return (
        f"INSERT INTO {table} AS t ({', '.join(COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT (id) DO UPDATE SET {UPDATES} WHERE t.version < EXCLUDED.version"
    )


class Undecodable(ValueError):
    """A message that names no stored event: it goes to the dead-letter queue."""


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value)


def row_of(task: dict[str, Any], position: int) -> ReadRow:
    """The read-table row of a task in its REST representation."""
    return ReadRow(
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


def stored_id(row: asyncpg.Record) -> str:
    """The CloudEvent id the relay gives this stored event."""
    return event_id(str(row["task_id"]), row["version"])


def refusal(reference: Reference, row: asyncpg.Record | None) -> str | None:
    """Why a message may not be applied (None: it names a stored event truly)."""
    if row is None:
        return f"position {reference.position} is not in the event store"
    if stored_id(row) != reference.event_id:
        return f"position {reference.position} holds another event than {reference.event_id!r}"
    return None


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
        task = tasks.get(row["task_id"])
        if row["version"] > (task["version"] if task is not None else 0):
            first.setdefault(row["task_id"], row["version"])
    behind = {
        task_id: version
        for task_id, version in first.items()
        if version - 1 > (tasks[task_id]["version"] if task_id in tasks else 0)
    }
    if not behind:
        return
    for task_id in behind:
        tasks.pop(task_id, None)
    for row in await before_versions(store, behind):
        task_id = row["task_id"]
        tasks[task_id] = fold_stored(
            tasks.get(task_id), task_id, row["version"], row["topic"], row["state"]
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
        current, tasks = await _position_and_rows(conn, list({row["task_id"] for row in rows}))
        fresh = [row for row in rows if row["position"] > current]
        changed: dict[UUID, tuple[TaskDict, int]] = {}
        if fresh:
            await _fill_behind(store, tasks, fresh)
            for row in fresh:
                task_id = row["task_id"]
                task = tasks.get(task_id)
                if task is not None and task["version"] >= row["version"]:
                    continue
                task = fold_stored(task, task_id, row["version"], row["topic"], row["state"])
                tasks[task_id] = task
                changed[task_id] = (task, row["position"])
        if changed:
            await conn.executemany(
                upsert_sql(), [row_of(task, position) for task, position in changed.values()]
            )
        upto = int(max([current, through, *(row["position"] for row in fresh)]))
        await record_position(conn, upto, dead_letters)
    return upto


async def record_position(conn: asyncpg.Connection, position: int, dead_letters: int = 0) -> None:
    """Set the projection position (and count dead letters) and signal it to the query side, in
    the caller's transaction: the signal goes out when the rows it covers commit."""
    await conn.execute(
        "WITH moved AS (UPDATE projection_state SET position = $1, "
        "dead_letters = dead_letters + $2 WHERE name = 'projector' RETURNING position) "
        "SELECT pg_notify($3, position::text) FROM moved",
        position,
        dead_letters,
        PROJECTION_CHANNEL,
    )


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
