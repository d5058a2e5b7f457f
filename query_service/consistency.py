"""Read-your-writes: the positions a client asks a read to reflect, and a task by id as of the
store, whatever the projector has reached.

A read by id reflects every acknowledged write: the read table's row is checked against the
store's events of that task (in the same statement when both share a database), and the events
the row has not seen yet are folded onto it with the shared fold. Positions (the
`tasks_position` cookie, `X-Min-Position`, `min_position`) are what a list read waits for; a
position beyond the store's last one was never issued and is refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from starlette.requests import Request

from query_service.params import MAX_POSITION, parse_int
from shared.domain import TaskDict
from shared.errors import ValidationFailed
from shared.fold import fold_stored
from shared.jsonhttp import POSITION_COOKIE
from shared.store import head, later_events

HEADER = "X-Min-Position"
PARAMETER = "min_position"

READ_ROW = (
    "SELECT s.position, t.doc, t.version, t.deleted FROM projection_state s "
    "LEFT JOIN tasks t ON t.id = $1 WHERE s.name = 'projector'"
)
LATER_EVENTS = later_events("$1", "$2")
READ_ROW_AND_LATER_EVENTS = (
    "SELECT s.position, t.doc, t.version, t.deleted, e.event_version, e.topic, e.state "
    "FROM projection_state s LEFT JOIN tasks t ON t.id = $1 "
    f"LEFT JOIN LATERAL ({later_events('$1', 'coalesce(t.version, 0)')}) e ON true "
    "WHERE s.name = 'projector'"
)
"""One round trip, one snapshot: the read table's row and the store's events after it. When the
row is current (the common case) the lateral part is one probe of the store's primary key that
finds nothing. `OFFSET 0` keeps the subquery from being flattened into a join, whose generic plan
(the one a prepared statement settles on) would read every event of the task and filter them."""


def requested_positions(
    request: Request, parameter: int | None, cookie: bool = False
) -> dict[str, int]:
    """Each position the request names, by where it came from; a malformed one is 422."""
    positions: dict[str, int] = {}
    if parameter is not None:
        positions[PARAMETER] = parameter
    header = request.headers.get("x-min-position")
    if header is not None:
        positions[HEADER] = parse_int(HEADER, header, 0, MAX_POSITION)
    if cookie:
        value = request.cookies.get(POSITION_COOKIE)
        if value is not None:
            positions[POSITION_COOKIE] = parse_int(POSITION_COOKIE, value, 0, MAX_POSITION)
    return positions


async def store_head(store: asyncpg.Pool) -> int:
    """The event store's last position (0 while the store has no table yet)."""
    try:
        return await head(store)
    except asyncpg.UndefinedTableError:
        return 0


async def check_issued(store: asyncpg.Pool, positions: dict[str, int], reached: int) -> None:
    """422 naming every position beyond the store's last one: no write was acknowledged there,
    so no wait would ever end. Positions the read model has `reached` need no look."""
    if max(positions.values(), default=0) <= reached:
        return
    last = await store_head(store)
    beyond = {
        name: f"Position {value} was never issued (the store's last position is {last})"
        for name, value in positions.items()
        if value > last
    }
    if beyond:
        raise ValidationFailed(beyond)


@dataclass(frozen=True)
class Found:
    """A task by id: its REST JSON (None when unknown or deleted) and the projection position."""

    position: int
    doc: bytes | None
    version: int = 0


async def read_task(state: Any, task_id: UUID, include_deleted: bool = False) -> Found:
    """The task as of every write acknowledged before this call, from the read table and, for
    whatever the projector has not applied yet, from the store; a deleted task only when asked."""
    if state.store_pool is state.read_pool:
        try:
            rows = await state.read_pool.fetch(READ_ROW_AND_LATER_EVENTS, task_id)
        except asyncpg.UndefinedTableError:
            pass  # the store has no table yet (no write ever): the read table alone answers
        else:
            later = [row for row in rows if row["event_version"] is not None]
            return _current(task_id, rows[0], later, include_deleted)
    row = await state.read_pool.fetchrow(READ_ROW, task_id)
    later = await _later_events(state.store_pool, task_id, row["version"])
    return _current(task_id, row, later, include_deleted)


async def _later_events(
    store: asyncpg.Pool, task_id: UUID, version: int | None
) -> list[asyncpg.Record]:
    try:
        return await store.fetch(LATER_EVENTS, task_id, version or 0)
    except asyncpg.UndefinedTableError:
        return []


def _current(
    task_id: UUID, row: asyncpg.Record, later: list[asyncpg.Record], include_deleted: bool
) -> Found:
    position = row["position"]
    if not later:
        if row["doc"] is None or (row["deleted"] and not include_deleted):
            return Found(position, None)
        return Found(position, row["doc"].encode(), row["version"])
    task: TaskDict | None = orjson.loads(row["doc"]) if row["doc"] is not None else None
    for event in sorted(later, key=lambda event: event["event_version"]):
        task = fold_stored(task, task_id, event["event_version"], event["topic"], event["state"])
    assert task is not None
    if task["deleted"] and not include_deleted:
        return Found(position, None)
    return Found(position, orjson.dumps(task), task["version"])
