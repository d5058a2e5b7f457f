"""The event feed: stored events as the wire's CloudEvents, in position order, from the store.

A page is keyset-paged on the position and reads at most `SCAN_ROWS` stored events past
`after` when it filters, so every page costs the same however deep or however selective; a
page that may have more (including an empty page whose window ended before the store's head)
links to the next with `after=<last position examined>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from query_service.params import MAX_POSITION, parse_int, parse_timestamp, query_items
from shared import fields, store
from shared.domain import EVENT_TYPES, Task
from shared.errors import ValidationFailed, error_responses
from shared.jsonhttp import get_and_head
from shared.messaging import envelope_after

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SCAN_ROWS = 10_000
"""Stored events a filtered page examines at most (its cost bound)."""
MAX_TEXT = 200
TOPICS = {kind: topic for topic, kind in EVENT_TYPES.items()}


@dataclass
class FeedQuery:
    after: int = 0
    limit: int = DEFAULT_LIMIT
    task_id: UUID | None = None
    topics: list[str] = field(default_factory=list)
    actor: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    given: list[tuple[str, str]] = field(default_factory=list)

    @property
    def window(self) -> int:
        """Stored events one page examines: a page and one more, or, when filters other than
        the task (whose events an index finds) may skip events, at most `SCAN_ROWS`."""
        filtered = any((self.topics, self.actor, self.correlation_id, self.since, self.until))
        return SCAN_ROWS if filtered else self.limit + 1

    def next_link(self, after: int) -> str:
        items = [("after", str(after))] + [(k, v) for k, v in self.given if k != "after"]
        return f'</api/v1/events?{urlencode(items)}>; rel="next"'


def _text(name: str, value: str) -> str:
    if not 1 <= len(value) <= MAX_TEXT or not value.isprintable():
        raise ValidationFailed({name: f"1 to {MAX_TEXT} printable characters"})
    return value


def _task_id(_: str, value: str) -> UUID:
    try:
        task_id = UUID(value)
    except ValueError:
        raise ValidationFailed({"task_id": "Must be a task id (UUID)"}) from None
    if str(task_id) != value.lower():
        raise ValidationFailed({"task_id": "Must be a task id (UUID)"})
    return task_id


def _types(name: str, value: str) -> list[str]:
    topics = []
    for item in value.split(","):
        if item not in TOPICS:
            raise ValidationFailed({name: f"Each must be one of {', '.join(TOPICS)}"})
        topics.append(TOPICS[item])
    return topics


Parser = Callable[[str, str], Any]
PARAMETERS: dict[str, tuple[str, Parser]] = {
    "after": (
        "position to continue after (default 0: from the start)",
        lambda name, value: parse_int(name, value, 0, MAX_POSITION),
    ),
    "limit": (
        f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}",
        lambda name, value: parse_int(name, value, 1, MAX_LIMIT),
    ),
    "task_id": ("only this task's events", _task_id),
    "type": (
        "CloudEvent types (task.created, task.updated, task.soft_deleted), "
        "repeatable or comma-separated",
        _types,
    ),
    "actor": (
        "only events made with this API key name (anonymous, unknown); 1 to 200 printable "
        "characters",
        _text,
    ),
    "correlation_id": (
        "only events of this request (its X-Request-ID); 1 to 200 printable characters",
        _text,
    ),
    "since": ("event time at or after this timestamp (Z or an offset)", parse_timestamp),
    "until": ("event time before this timestamp (Z or an offset)", parse_timestamp),
}


_TOPIC = "(?:" + "|".join(re.escape(kind) for kind in TOPICS) + ")"
# "Printable" (`str.isprintable`) is a set of Unicode categories, which a portable JSON Schema
# pattern cannot name: the document gives the length, the description the rest.
_PRINTABLE: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
FEED_SCHEMAS: dict[str, dict[str, Any]] = {
    "after": {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    "task_id": {"type": "string", "format": "uuid"},
    "type": {"type": "string", "pattern": f"^{_TOPIC}(?:,{_TOPIC})*$"},
    "actor": _PRINTABLE,
    "correlation_id": _PRINTABLE,
    "since": fields.TIMESTAMP_SCHEMA,
    "until": fields.TIMESTAMP_SCHEMA,
}
"""Each feed parameter's JSON Schema, from the constants its parser uses."""


def parse_feed_query(items: list[tuple[str, str]]) -> FeedQuery:
    query = FeedQuery(given=items)
    seen: set[str] = set()
    for name, value in items:
        if name not in PARAMETERS:
            raise ValidationFailed({name[:100]: "Unknown parameter"})
        if name in seen and name != "type":
            raise ValidationFailed({name: "Given more than once"})
        seen.add(name)
        parsed = PARAMETERS[name][1](name, value)
        if name == "type":
            query.topics.extend(parsed)
        else:
            setattr(query, name, parsed)
    return query


async def wire_events(
    conn: asyncpg.Pool | asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> list[dict[str, Any]]:
    """The CloudEvents of `rows`, in their order, each with its task folded from its history
    exactly as the relay folds it (one query for every task of the page)."""
    upto: dict[UUID, int] = {}
    for row in rows:
        upto[row["task_id"]] = max(upto.get(row["task_id"], 0), row["version"])
    wanted = {row["position"] for row in rows}
    envelopes: dict[int, dict[str, Any]] = {}
    for history in store.per_task(await store.up_to_versions(conn, upto)):
        task: Task | None = None
        for stored in history:
            event = store.decode(stored)
            if stored["position"] in wanted:
                envelopes[stored["position"]], task = envelope_after(
                    event, stored["position"], task
                )
            else:
                task = event.mutate(task)
    return [envelopes[row["position"]] for row in rows]


async def feed_page(
    conn: asyncpg.Pool | asyncpg.Connection, query: FeedQuery
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the feed and the position to continue after, None when nothing may follow."""
    sql, args = store.window_statement(query.after, query.window, query.limit + 1, query)
    try:
        result = await conn.fetch(sql, *args)
    except asyncpg.UndefinedTableError:  # a store no one has written to yet
        return [], None
    scanned, examined = result[0]["scanned"], result[0]["examined"]
    rows = [row for row in result if row["position"] is not None]
    page = rows[: query.limit]
    if len(rows) > query.limit:
        return await wire_events(conn, page), page[-1]["position"]
    following = scanned if examined >= query.window else None
    return await wire_events(conn, page), following


router = APIRouter(prefix="/api/v1/events", tags=["events"])
CLOUDEVENT = {
    "type": "object",
    "description": "As published to RabbitMQ (the AsyncAPI document at /asyncapi.yaml)",
    "required": ["specversion", "id", "source", "type", "subject", "time", "position", "data"],
}


@get_and_head(
    router,
    "",
    summary="Stored events as CloudEvents, exactly as published, in position order",
    description=(
        "Reads the event store (never the read model), so it holds all of history. A filtered "
        f"page examines at most {SCAN_ROWS} stored events: it may be short, or empty, and "
        'still link to the next page. `Link: <...>; rel="next"` is present while more may '
        "follow; a consumer at the head keeps polling with `after=<last position>`."
    ),
    operation_id="listEvents",
    response_model=None,
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": FEED_SCHEMAS[name],
            }
            for name, (text, _) in PARAMETERS.items()
        ]
    },
    responses={
        200: {
            "description": "A JSON array of CloudEvents (structured mode), as on the broker",
            "content": {
                BATCH_CONTENT_TYPE: {
                    "schema": {"type": "array", "items": {"type": "object"}},
                    "example": [
                        {
                            "specversion": "1.0",
                            "id": "17",
                            "source": "/tasks",
                            "type": "task.created",
                            "subject": "9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11",
                            "time": "2026-11-26T09:30:00.123456Z",
                            "position": 17,
                            "data": {},
                        }
                    ],
                }
            },
            "headers": {
                "Link": {
                    "description": 'the next page, rel="next", when more may follow',
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(401, 403, 414, 422, 431, 500, 503),
    },
)
async def event_feed(request: Request) -> Response:
    query = parse_feed_query(query_items(request.scope["query_string"]))
    events, following = await feed_page(request.app.state.store_pool, query)
    headers = {"Cache-Control": "no-cache"}
    if following is not None:
        headers["Link"] = query.next_link(following)
    body = b"[" + b",".join(orjson.dumps(event) for event in events) + b"]"
    return Response(body, headers=headers, media_type=BATCH_CONTENT_TYPE)
