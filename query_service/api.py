"""The REST reads: list with search/filter/sort/paginate, task by id, history, time travel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from query_service import history as store
from query_service.queries import (
    MAX_POSITION,
    PARAMETERS,
    ListQuery,
    cursor_values,
    encode_cursor,
    list_statements,
    parse_int,
    parse_list_query,
    parse_timestamp,
    query_items,
)
from query_service.totals import TotalCache
from shared.config import Settings
from shared.domain import EVENTS_TABLE
from shared.errors import NotFound, ServiceUnavailable, ValidationFailed, error_responses
from shared.health import postgres_check
from shared.server import from_environment
from shared.web import Resource, get_and_head, json_response, make_app, raw_json_response

log = logging.getLogger("tasks.query")

PROJECTION_CHANNEL = "tasks_projection"
TASK_PARAMETERS = frozenset({"version", "as_of", "min_position"})
HISTORY_PARAMETERS = frozenset({"min_position"})


class PositionWatcher:
    """How far the read model has caught up: LISTEN for the projector's signal, poll as fallback."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.position = 0
        self.changed = asyncio.Event()

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.changed.set()
            self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self.settings.read_dsn)
                try:
                    await conn.add_listener(
                        PROJECTION_CHANNEL, lambda _c, _p, _ch, payload: self.advance(int(payload))
                    )
                    while True:
                        self.advance(await self.read())
                        await asyncio.sleep(5.0)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens
                log.warning("position watcher reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)

    async def read(self) -> int:
        try:
            value = await self.pool.fetchval(
                "SELECT position FROM projection_state WHERE name = 'projector'"
            )
        except asyncpg.UndefinedTableError:
            return 0
        return int(value or 0)

    async def wait_for(self, position: int, store_pool: asyncpg.Pool) -> None:
        """Return once the read model has reached `position`; 503 past the bound."""
        if self.position >= position:
            return
        # The signal may not have arrived yet (or the listener is reconnecting): ask once.
        self.advance(await self.read())
        if self.position >= position:
            return
        unavailable = ServiceUnavailable(
            f"The read model has not reached position {position} yet", {"Retry-After": "1"}
        )
        if position > await _store_head(store_pool):
            raise unavailable
        deadline = time.monotonic() + self.settings.min_position_wait_seconds
        while self.position < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise unavailable
            # Woken by NOTIFY; the periodic re-read only covers a lost listener connection.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
            if self.position < position:
                self.advance(await self.read())


async def _store_head(store_pool: asyncpg.Pool) -> int:
    """The event store's last position (0 while the store has no table yet)."""
    try:
        head = await store_pool.fetchval(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
    except asyncpg.UndefinedTableError:
        return 0
    return int(head or 0)


def _min_position(request: Request, param: int | None) -> int | None:
    """`X-Min-Position` or `min_position`; when both are given, the larger."""
    header = request.headers.get("x-min-position")
    value = param
    if header is not None:
        value = max(value or 0, parse_int("X-Min-Position", header, 0, MAX_POSITION))
    return value


def _requested_position(request: Request, params: dict[str, str]) -> int | None:
    """As `_min_position`, with `min_position` taken from already collected parameters."""
    given = params.get("min_position")
    return _min_position(
        request, parse_int("min_position", given, 0, MAX_POSITION) if given is not None else None
    )


async def _await_position(request: Request, minimum: int | None) -> None:
    if minimum:
        state = request.app.state
        await state.watcher.wait_for(minimum, state.store_pool)


def _reading(position: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Projection-Position": str(position), "Cache-Control": "no-cache", **(extra or {})}


router = APIRouter(prefix="/api/v1/tasks", tags=["tasks (read)"])
READ_ERRORS = error_responses(401, 403, 404, 414, 422, 431, 500, 503)
MIN_POSITION_HEADER = {
    "name": "X-Min-Position",
    "in": "header",
    "required": False,
    "description": "wait until the read model reaches this position (read-your-writes)",
    "schema": {"type": "integer", "minimum": 0},
}
LIST_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": "string"},
    }
    for name, text in PARAMETERS.items()
] + [MIN_POSITION_HEADER]


@get_and_head(
    router,
    "",
    summary="Search, filter, sort and paginate tasks",
    response_model=None,
    openapi_extra={"parameters": LIST_PARAMETERS},
    responses={
        200: {
            "description": "A page of tasks",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskPage"}}},
        },
        **READ_ERRORS,
    },
)
async def list_tasks(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    query = parse_list_query(
        query_items(request.scope["query_string"]),
        max_offset=settings.max_offset,
        secret=settings.cursor_secret.encode(),
    )
    await _await_position(request, _min_position(request, query.min_position))
    try:
        async with _list_turn(request.app.state, settings):
            position, total, rows = await _page_and_total(request.app.state, query)
    except asyncpg.UndefinedTableError:
        raise ServiceUnavailable(
            "The read model is not initialised yet", {"Retry-After": "1"}
        ) from None
    except asyncpg.QueryCanceledError:
        raise ServiceUnavailable(
            "The list query ran past its time budget; narrow it or try again later",
            {"Retry-After": "1"},
        ) from None
    page = [row for row in rows if row["doc"] is not None]
    more = len(page) > query.limit
    page = page[: query.limit]
    next_cursor = None
    if more:
        next_cursor = encode_cursor(
            cursor_values(query, page[-1]),
            query.fingerprint(settings.cursor_secret.encode()),
            settings.cursor_secret.encode(),
        )
    body = (
        b'{"items":['
        + ",".join(row["doc"] for row in page).encode()
        + b'],"total":'
        + str(total).encode()
        + b',"limit":'
        + str(query.limit).encode()
        + b',"offset":'
        + orjson.dumps(query.offset)
        + b',"next_cursor":'
        + orjson.dumps(next_cursor)
        + b"}"
    )
    request.app.state.watcher.advance(position)
    return raw_json_response(body, headers=_reading(position))


@contextlib.asynccontextmanager
async def _list_turn(state: Any, settings: Settings) -> AsyncIterator[None]:
    """A turn among the list queries: at most `list_concurrency` run at once, and one that
    cannot start within `list_queue_seconds` is 503 (never a hang)."""
    try:
        async with asyncio.timeout(settings.list_queue_seconds):
            await state.list_slots.acquire()  # gives the turn back if cancelled once granted
    except TimeoutError:
        raise ServiceUnavailable(
            "Too many list queries at once; try again later", {"Retry-After": "1"}
        ) from None
    try:
        yield
    finally:
        state.list_slots.release()


async def _page_and_total(state: Any, query: ListQuery) -> tuple[int, int, list[asyncpg.Record]]:
    """The page, its exact total and the position they both describe.

    When a total for these filters is remembered at a position no older than the watcher's,
    the page alone is read; its snapshot's position says whether the total still holds.
    Otherwise (or when the position has moved) one statement reads page, total and position.
    """
    statements = list_statements(query)
    totals: TotalCache = state.totals
    known = totals.position_of(statements.total_key)
    if known is not None and known >= state.watcher.position:
        rows = await state.list_pool.fetch(statements.page_sql, *statements.args)
        position = rows[0]["position"]
        total = totals.total(statements.total_key, position)
        if total is not None:
            return position, total, rows
    rows = await state.list_pool.fetch(statements.sql, *statements.args)
    position, total = rows[0]["position"], rows[0]["total"]
    totals.remember(statements.total_key, position, total)
    return position, total, rows


_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _task_id(raw: str) -> UUID:
    """The canonical hyphenated form only, as on write; anything else is an unknown task."""
    if not _ID.fullmatch(raw):
        raise NotFound()
    return UUID(raw)


def _single_params(request: Request, allowed: frozenset[str] = TASK_PARAMETERS) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in query_items(request.scope["query_string"]):
        if name not in allowed:
            raise ValidationFailed({name[:100]: "Unknown parameter"})
        if name in params:
            raise ValidationFailed({name: "Given more than once"})
        params[name] = value
    return params


@get_and_head(
    router,
    "/{task_id}",
    summary="A task, or its state at a version or moment (time travel)",
    response_model=None,
    openapi_extra={
        "parameters": [
            {
                "name": "version",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": "as_of",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "date-time"},
            },
            {
                "name": "min_position",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
            },
            MIN_POSITION_HEADER,
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "an ETag, a list of them, or *; a match answers 304",
                "schema": {"type": "string"},
            },
        ]
    },
    responses={
        200: {
            "description": "The task",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Task"}}},
        },
        304: {"description": "Not modified"},
        **READ_ERRORS,
    },
)
async def get_task(task_id: str, request: Request) -> Response:
    params = _single_params(request)
    if "version" in params and "as_of" in params:
        raise ValidationFailed({"as_of": "Give either version or as_of, not both"})
    minimum = _requested_position(request, params)
    if "version" in params or "as_of" in params:
        return await _time_travel(request, task_id, params)
    uuid = _task_id(task_id)
    await _await_position(request, minimum)
    try:
        row = await request.app.state.read_pool.fetchrow(
            "SELECT s.position, t.doc, t.version FROM projection_state s "
            "LEFT JOIN tasks t ON t.id = $1 AND NOT t.deleted WHERE s.name = 'projector'",
            uuid,
        )
    except asyncpg.UndefinedTableError:
        raise ServiceUnavailable(
            "The read model is not initialised yet", {"Retry-After": "1"}
        ) from None
    position = row["position"]
    request.app.state.watcher.advance(position)
    if row["doc"] is None:
        raise NotFound(headers={"X-Projection-Position": str(position)})
    etag = f'"{row["version"]}"'
    headers = _reading(position, {"ETag": etag})
    if _matches(request.headers.get("if-none-match"), row["version"]):
        return Response(status_code=304, headers=headers)
    return raw_json_response(row["doc"].encode(), headers=headers)


def _matches(header: str | None, version: int) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    tags = {part.strip().removeprefix("W/") for part in header.split(",")}
    return f'"{version}"' in tags


async def _time_travel(request: Request, task_id: str, params: dict[str, str]) -> Response:
    version = None
    if "version" in params:
        version = parse_int("version", params["version"], 1, MAX_POSITION)
    as_of = parse_timestamp("as_of", params["as_of"]) if "as_of" in params else None
    uuid = _task_id(task_id)
    task = await store.state_at(request.app.state.store_pool, uuid, version, as_of)
    if task is None:
        raise NotFound()
    settled = as_of is None or as_of < datetime.now(UTC)
    headers = {
        "ETag": f'"{task["version"]}"',
        "Cache-Control": "max-age=31536000, immutable" if settled else "no-cache",
        "X-Projection-Position": str(request.app.state.watcher.position),
    }
    if request.app.state.settings.api_keys:
        # A key was needed: no shared cache may keep it, nor hand it to another key's holder.
        headers["Cache-Control"] = f"private, {headers['Cache-Control']}"
        headers["Vary"] = "Authorization"
    if _matches(request.headers.get("if-none-match"), task["version"]):
        return Response(status_code=304, headers=headers)
    return json_response(task, headers=headers)


@get_and_head(
    router,
    "/{task_id}/history",
    summary="Every event of a task, in version order (audit replay)",
    response_model=None,
    openapi_extra={
        "parameters": [
            {
                "name": "min_position",
                "in": "query",
                "required": False,
                "description": "accepted for symmetry with other reads; history reads the "
                "store, so it answers at once",
                "schema": {"type": "integer", "minimum": 0},
            },
            {
                **MIN_POSITION_HEADER,
                "description": "accepted; history reads the store, so it answers at once",
            },
        ]
    },
    responses={
        200: {
            "description": "The task's events",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/History"}}},
        },
        **READ_ERRORS,
    },
)
async def task_history(task_id: str, request: Request) -> Response:
    params = _single_params(request, HISTORY_PARAMETERS)
    # Validated like every read's; the store already holds every acknowledged write.
    _requested_position(request, params)
    body = await store.history(request.app.state.store_pool, _task_id(task_id))
    if body is None:
        raise NotFound()
    return json_response(body, headers={"Cache-Control": "no-cache"})


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (a round trip per request).

    Reads never change session state (no SET, LISTEN, advisory locks or open cursors on pool
    connections; the watcher listens on a connection of its own), and asyncpg itself still
    rolls back any transaction left open before this runs.
    """


@contextlib.asynccontextmanager
async def read_pools(state: Any, settings: Settings) -> AsyncIterator[None]:
    state.read_pool = await asyncpg.create_pool(
        settings.read_dsn,
        min_size=settings.read_pool_min,
        max_size=settings.read_pool_max,
        reset=_keep_session,
    )
    # List queries apart: the heavy ones wait for their own connections, reads by id never do.
    state.list_pool = await asyncpg.create_pool(
        settings.read_dsn,
        min_size=1,
        max_size=settings.list_concurrency,
        reset=_keep_session,
        server_settings={"statement_timeout": str(settings.list_statement_timeout_ms)},
    )
    state.list_slots = asyncio.Semaphore(settings.list_concurrency)
    state.store_pool = (
        state.read_pool
        if settings.read_dsn == settings.database_url
        else await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=4, reset=_keep_session
        )
    )
    state.totals = TotalCache()
    state.watcher = PositionWatcher(settings, state.read_pool)
    state.watcher.advance(await state.watcher.read())
    watching = asyncio.create_task(state.watcher.run(), name="position-watcher")
    try:
        yield
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        if state.store_pool is not state.read_pool:
            await state.store_pool.close()
        await state.list_pool.close()
        await state.read_pool.close()


def create_app(settings: Settings) -> FastAPI:
    resources: list[Resource] = [read_pools]
    return make_app(
        "Tasks query service",
        settings,
        [router],
        resources,
        [postgres_check],
    )


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process builds its app from its environment."""
    return from_environment(create_app)
