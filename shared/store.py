"""The one module that knows the event store's table, which the eventsourcing library owns.

The library names it after the application (`Tasks`): `tasks_events`, one row per event, its
position the `notification_id`. Every statement on it is written here, and every row read from
it comes back under the same names, whatever the caller: `position`, `task_id`, `version`,
`topic`, `state`. Appends commit in position order (the library locks the table to append), so a
reader that has seen a position has seen every one below it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg
import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

from shared.domain import UNKNOWN_ACTOR, Task

EVENTS_TABLE = "tasks_events"
"""Also the NOTIFY channel the command service signals after each commit (the relay listens)."""
LAST_POSITION = 2**63 - 1
BATCH = 5_000
"""Rows per round trip when a whole store is streamed (rebuild, verify)."""

ROW = (
    "notification_id AS position, originator_id AS task_id, originator_version AS version, "
    "topic, state"
)
"""What every statement here selects of a stored event."""

HEAD = f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}"
COUNT = f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2"
PAGE = (
    f"SELECT {ROW} FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2 "
    "ORDER BY notification_id LIMIT $3"
)
AT_POSITIONS = f"SELECT {ROW} FROM {EVENTS_TABLE} WHERE notification_id = ANY($1::bigint[])"
BEFORE_VERSIONS = (
    f"SELECT {ROW} FROM {EVENTS_TABLE} e JOIN unnest($1::uuid[], $2::bigint[]) AS w(id, below) "
    "ON e.originator_id = w.id AND e.originator_version < w.below "
    "ORDER BY e.originator_id, e.originator_version"
)
OF_TASK = (
    f"SELECT {ROW} FROM {EVENTS_TABLE} WHERE originator_id = $1 AND originator_version > $2 "
    "AND originator_version <= $3 ORDER BY originator_version LIMIT $4"
)
UP_TO_VERSIONS = (
    f"SELECT {ROW} FROM {EVENTS_TABLE} e JOIN unnest($1::uuid[], $2::bigint[]) AS w(id, upto) "
    "ON e.originator_id = w.id AND e.originator_version <= w.upto "
    "ORDER BY e.originator_id, e.originator_version"
)
TOUCHED = (
    f"SELECT {ROW} FROM {EVENTS_TABLE} WHERE originator_id IN (SELECT originator_id "
    f"FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2) "
    "AND notification_id <= $2 ORDER BY originator_id, originator_version"
)
ONE_EVENT = (
    f"SELECT notification_id AS position, topic, state FROM {EVENTS_TABLE} "
    "WHERE originator_id = %s AND originator_version = %s"
)
"""For the command service's psycopg connections: the position, topic and bytes of one event."""


def later_events(task_id: str, version: str) -> str:
    """A task's events after a version, as `event_version, topic, state`, with the two given as
    SQL expressions. `OFFSET 0` keeps it from being flattened when it is the lateral part of a
    larger statement: the probe of the store's primary key stays an index condition."""
    return (
        f"SELECT originator_version AS event_version, topic, state FROM {EVENTS_TABLE} "
        f"WHERE originator_id = {task_id} AND originator_version > {version} "
        "ORDER BY originator_version OFFSET 0"
    )


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON format, decoded with orjson (the store's hottest read path).

    Encoding stays the library's own, so stored bytes are exactly what it would write.
    """

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)  # e.g. lone surrogates, which orjson refuses
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        """The library's object hook, applied bottom-up to every JSON object as its own decoder
        does. Only containers are visited: most values are strings and numbers."""
        if type(value) is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._revive(item)
            return self._decode_obj(value) if len(value) == 2 else value
        if type(value) is list:
            return [
                self._revive(item) if type(item) is dict or type(item) is list else item
                for item in value
            ]
        return value


def create_transcoder() -> JSONTranscoder:
    transcoder = FastJSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return transcoder


mapper = Mapper[UUID](transcoder=create_transcoder())
"""Stored events to event classes and back, as the library's application maps them."""


def decode(row: Any) -> Task.Event:
    """One stored event (a row read here, or any mapping with its names) as its event class."""
    event = mapper.to_domain_event(
        StoredEvent(
            originator_id=row["task_id"],
            originator_version=row["version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
    )
    assert isinstance(event, Task.Event)
    return event


Reader = asyncpg.Connection | asyncpg.Pool


async def head(store: Reader) -> int:
    """The last position (0 for an empty store)."""
    return int(await store.fetchval(HEAD))


async def count(store: Reader, after: int = 0, upto: int = LAST_POSITION) -> int:
    """How many events are stored after `after`, up to `upto`."""
    return int(await store.fetchval(COUNT, after, upto))


async def page(
    store: Reader, after: int, limit: int, upto: int = LAST_POSITION
) -> list[asyncpg.Record]:
    """At most `limit` events after `after` (up to `upto`), in position order."""
    return list(await store.fetch(PAGE, after, upto, limit))


async def at_positions(store: Reader, positions: Sequence[int]) -> dict[int, asyncpg.Record]:
    """The events at these positions, by position (one query; absent ones are missing)."""
    return {row["position"]: row for row in await store.fetch(AT_POSITIONS, list(positions))}


async def before_versions(store: Reader, below: dict[UUID, int]) -> list[asyncpg.Record]:
    """Each task's events before the version given for it, by task and version."""
    return list(await store.fetch(BEFORE_VERSIONS, list(below), list(below.values())))


async def up_to_versions(store: Reader, upto: dict[UUID, int]) -> list[asyncpg.Record]:
    """Each task's events up to the version given for it, by task and version."""
    return list(await store.fetch(UP_TO_VERSIONS, list(upto), list(upto.values())))


async def of_task(
    store: Reader,
    task_id: UUID,
    after_version: int = 0,
    upto_version: int = LAST_POSITION,
    limit: int = LAST_POSITION,
) -> list[asyncpg.Record]:
    """One task's events after `after_version` up to `upto_version`, at most `limit`, in order."""
    return list(await store.fetch(OF_TASK, task_id, after_version, upto_version, limit))


async def touched(store: Reader, after: int, upto: int) -> list[asyncpg.Record]:
    """Every event up to `upto` of the tasks with an event in (after, upto], by task and version:
    what it takes to fold those tasks to position `upto`."""
    return list(await store.fetch(TOUCHED, after, upto))


async def by_task(
    store: asyncpg.Connection,
    upto: int,
    batch: int,
    ids: tuple[UUID, UUID | None] | None = None,
) -> AsyncIterator[list[asyncpg.Record]]:
    """The events at or below `upto` (with `ids`, of the tasks in [low, high)), by task and
    version, `batch` rows per round trip. Must run inside a transaction (a server cursor)."""
    where = "notification_id <= $1"
    args: list[int | UUID] = [upto]
    if ids is not None:
        where += " AND originator_id >= $2"
        args.append(ids[0])
        if ids[1] is not None:
            where += " AND originator_id < $3"
            args.append(ids[1])
    order = "ORDER BY originator_id, originator_version"
    cursor = await store.cursor(f"SELECT {ROW} FROM {EVENTS_TABLE} WHERE {where} {order}", *args)
    while rows := await cursor.fetch(batch):
        yield rows


def per_task(rows: Sequence[asyncpg.Record]) -> Iterator[list[asyncpg.Record]]:
    """Rows ordered by task and version, one list per task."""
    current: list[asyncpg.Record] = []
    for row in rows:
        if current and current[0]["task_id"] != row["task_id"]:
            yield current
            current = []
        current.append(row)
    if current:
        yield current


async def streamed_per_task(
    batches: AsyncIterator[list[asyncpg.Record]],
) -> AsyncIterator[list[asyncpg.Record]]:
    """`per_task` over a stream of batches: a task whose events span two batches is one list."""
    pending: list[asyncpg.Record] = []
    async for rows in batches:
        for events in per_task(rows):
            if pending and pending[0]["task_id"] != events[0]["task_id"]:
                yield pending
                pending = []
            pending.extend(events)
    if pending:
        yield pending


class EventFilter(Protocol):
    """What a page of the event feed keeps of the events it examines."""

    @property
    def task_id(self) -> UUID | None: ...
    @property
    def topics(self) -> Sequence[str]: ...
    @property
    def actor(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def since(self) -> datetime | None: ...
    @property
    def until(self) -> datetime | None: ...


def window_statement(
    after: int, window: int, limit: int, only: EventFilter
) -> tuple[str, list[Any]]:
    """One statement over the `window` events after `after`: the last position and the number
    examined (`scanned`, `examined`, on every row), and at most `limit` of them that `only`
    keeps (a row of nulls when none does). Filters on stored attributes read the stored JSON."""
    args: list[Any] = [after, window]
    scope = "notification_id > $1"
    if only.task_id is not None:
        args.append(only.task_id)
        scope += f" AND originator_id = ${len(args)}"
    conditions = ["true"]
    if only.topics:
        args.append(list(only.topics))
        conditions.append(f"w.topic = ANY(${len(args)}::text[])")
    stored = "convert_from(w.state, 'UTF8')::jsonb"
    for value, expression in (
        (only.actor, f"coalesce({stored} ->> 'actor', '{UNKNOWN_ACTOR}') = $"),
        (only.correlation_id, f"({stored} ->> 'correlation_id') = $"),
        (only.since, f"({stored} #>> '{{timestamp,_data_}}')::timestamptz >= $"),
        (only.until, f"({stored} #>> '{{timestamp,_data_}}')::timestamptz < $"),
    ):
        if value is not None:
            args.append(value)
            conditions.append(f"{expression}{len(args)}")
    args.append(limit)
    sql = (
        f"WITH w AS (SELECT {ROW} FROM {EVENTS_TABLE} WHERE {scope} "
        "ORDER BY notification_id LIMIT $2) "
        "SELECT s.scanned, s.examined, r.* FROM"
        " (SELECT max(position) AS scanned, count(*) AS examined FROM w) s"
        " LEFT JOIN LATERAL ("
        "  SELECT w.position, w.task_id, w.version, w.topic, w.state"
        f"  FROM w WHERE {' AND '.join(conditions)}"
        f"  ORDER BY w.position LIMIT ${len(args)}) r ON true "
        "ORDER BY r.position"
    )
    return sql, args
