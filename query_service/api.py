"""The REST reads: list with search/filter/sort/paginate, task by id, history, time travel."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from query_service import history as store
from query_service.consistency import (
    PARAMETER,
    check_issued,
    read_task,
    requested_positions,
)
from query_service.cursors import load_secret
from query_service.events import router as events_router
from query_service.queries import (
    MAX_POSITION,
    PARAMETER_SCHEMAS,
    PARAMETERS,
    ListQuery,
    list_statements,
    parse_int,
    parse_list_query,
    parse_timestamp,
    query_items,
)
from query_service.totals import TotalCache
from query_service.watcher import PositionWatcher
from shared.config import Settings
from shared.errors import NotFound, ServiceUnavailable, ValidationFailed, error_responses
from shared.health import postgres_check
from shared.openapi import HISTORY_EXAMPLE, TASK_CONTENT, TASK_EXAMPLE
from shared.server import from_environment
from shared.web import (
    POSITION_COOKIE,
    Resource,
    get_and_head,
    json_response,
    make_app,
    raw_json_response,
)

TASK_PARAMETERS = frozenset({"version", "as_of", "min_position", "include_deleted"})
HISTORY_PARAMETERS = frozenset({"min_position", "after_version", "limit"})


def _requested_positions(request: Request, params: dict[str, str]) -> dict[str, int]:
    """`X-Min-Position` and `min_position` (from already collected parameters) of a read by id;
    it needs no cookie: it reflects every acknowledged write of its task anyway."""
    given = params.get(PARAMETER)
    return requested_positions(
        request, parse_int(PARAMETER, given, 0, MAX_POSITION) if given is not None else None
    )


async def _await_positions(request: Request, positions: dict[str, int]) -> None:
    """Wait for the largest position asked for, once it is known to have been issued."""
    if positions:
        state = request.app.state
        await check_issued(state.store_pool, positions, state.watcher.position)
        await state.watcher.wait_for(max(positions.values()))


def _reading(position: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Projection-Position": str(position), "Cache-Control": "no-cache", **(extra or {})}


router = APIRouter(prefix="/api/v1/tasks", tags=["tasks (read)"])
READ_ERRORS = error_responses(401, 403, 404, 414, 422, 431, 500, 503)
POSITION = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}
MIN_POSITION_HEADER = {
    "name": "X-Min-Position",
    "in": "header",
    "required": False,
    "description": "wait until the read model reaches this position (read-your-writes; the "
    "larger of this, min_position and the tasks_position cookie counts); 422 beyond the "
    "store's last position",
    "schema": POSITION,
}
MIN_POSITION = {
    "name": "min_position",
    "in": "query",
    "required": False,
    "description": PARAMETERS["min_position"].doc,
    "schema": POSITION,
}
POSITION_COOKIE_PARAMETER = {
    "name": POSITION_COOKIE,
    "in": "cookie",
    "required": False,
    "description": "set by every write to its position: a list read waits for the larger of "
    "it, X-Min-Position and min_position; a position never issued is 422",
    "schema": POSITION,
}
LIST_PARAMETERS = [row.openapi() for row in PARAMETERS.values()] + [
    MIN_POSITION_HEADER,
    POSITION_COOKIE_PARAMETER,
]
TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "the task's id (canonical 8-4-4-4-12 form; any other string is 404)",
    "schema": {"type": "string", "format": "uuid"},
}
READ_HEADERS: dict[str, Any] = {
    "X-Projection-Position": {
        "description": "how far the read model had caught up when the read ran",
        "schema": {"type": "integer", "minimum": 0},
    }
}
TASK_HEADERS: dict[str, Any] = {
    **READ_HEADERS,
    "ETag": {
        "description": "the task's version in quotes",
        "schema": {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
    },
}
PAGE_EXAMPLE = {
    "items": [TASK_EXAMPLE],
    "total": 21,
    "limit": 20,
    "offset": 0,
    "next_cursor": "q2xk...",
    "next": "/api/v1/tasks?cursor=q2xk...",
}


@get_and_head(
    router,
    "",
    summary="Search, filter, sort and paginate tasks",
    description="`cursor` and `offset` exclude each other; `sort=relevance` needs `q`; a sort "
    'key given twice is 422. Every page links to the next (`Link: rel="next"`, and `next` '
    'in the body) and an offset page after the first to the previous (`rel="prev"`).',
    operation_id="listTasks",
    response_model=None,
    openapi_extra={"parameters": LIST_PARAMETERS},
    responses={
        200: {
            "description": "A page of tasks",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/TaskPage"},
                    "example": PAGE_EXAMPLE,
                }
            },
            "headers": {
                **READ_HEADERS,
                "Link": {
                    "description": 'the next page (rel="next") and, on an offset page after '
                    'the first, the previous one (rel="prev"); absent on a last first page',
                    "schema": {"type": "string"},
                },
            },
        },
        **READ_ERRORS,
    },
)
async def list_tasks(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    secret: bytes = request.app.state.cursor_secret
    query = parse_list_query(
        query_items(request.scope["query_string"]),
        max_offset=settings.max_offset,
        secret=secret,
    )
    await _await_positions(request, requested_positions(request, query.min_position, cookie=True))
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
    next_cursor = query.next_cursor(page[-1], secret) if more else None
    links = _page_links(query, next_cursor)
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
        + b',"next":'
        + orjson.dumps(links.get("next"))
        + b"}"
    )
    request.app.state.watcher.advance(position)
    extra = {"Link": ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())}
    return raw_json_response(body, headers=_reading(position, extra if links else None))


def _page_links(query: ListQuery, next_cursor: str | None) -> dict[str, str]:
    """`next` by cursor (it carries the walk); `prev` on an offset page after the first."""
    links: dict[str, str] = {}
    if next_cursor is not None:
        links["next"] = query.page_url(cursor=next_cursor)
    if query.offset:
        links["prev"] = query.page_url(offset=max(0, query.offset - query.limit))
    return links


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
        total = totals.total(statements.total_key, position, rows[0]["generation"])
        if total is not None:
            return position, total, rows
    rows = await state.list_pool.fetch(statements.sql, *statements.args)
    position, total = rows[0]["position"], rows[0]["total"]
    totals.remember(statements.total_key, position, total, rows[0]["generation"])
    return position, total, rows


_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _task_id(raw: str) -> UUID:
    """The canonical hyphenated form only, as on write; anything else is an unknown task."""
    if not _ID.fullmatch(raw):
        raise NotFound(f"No task {raw[:100]}: not a task id")
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
    description="Reflects every write acknowledged before the request arrived, for any client, "
    "with no header or cookie: what the read table has not applied yet is read from the "
    "store. `X-Min-Position` or `min_position` also waits for the read model to reach it. "
    "`version` and `as_of` exclude each other (both is 422); either answers from the event "
    "store, deleted states included.",
    operation_id="getTask",
    response_model=None,
    openapi_extra={
        "parameters": [
            TASK_ID,
            {
                "name": "version",
                "in": "query",
                "required": False,
                "description": "time travel: the task as it was at this version (404 above the "
                "current one); not with as_of; needs a key when keys are set",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
            },
            {
                "name": "as_of",
                "in": "query",
                "required": False,
                "description": "time travel: the task after every event at or before this "
                "moment (a timestamp with Z or an offset); not with version; needs a key when "
                "keys are set",
                "schema": PARAMETER_SCHEMAS["created_after"],
            },
            {
                "name": "include_deleted",
                "in": "query",
                "required": False,
                "description": "true also answers a soft-deleted task (marked deleted); needs a "
                "key when keys are set",
                "schema": {"type": "boolean"},
            },
            MIN_POSITION,
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
        200: {"description": "The task", "content": TASK_CONTENT, "headers": TASK_HEADERS},
        304: {"description": "Not modified (If-None-Match matched)", "headers": TASK_HEADERS},
        **READ_ERRORS,
    },
)
async def get_task(task_id: str, request: Request) -> Response:
    params = _single_params(request)
    if "version" in params and "as_of" in params:
        raise ValidationFailed({"as_of": "Give either version or as_of, not both"})
    positions = _requested_positions(request, params)
    # Time travel answers deleted tasks anyway (marked deleted); the value is still checked.
    include_deleted = "include_deleted" in params and _bool_param(params, "include_deleted")
    if "version" in params or "as_of" in params:
        return await _time_travel(request, task_id, params)
    uuid = _task_id(task_id)
    await _await_positions(request, positions)
    try:
        found = await read_task(request.app.state, uuid, include_deleted)
    except asyncpg.UndefinedTableError:
        raise ServiceUnavailable(
            "The read model is not initialised yet", {"Retry-After": "1"}
        ) from None
    request.app.state.watcher.advance(found.position)
    if found.doc is None:
        raise NotFound(
            f"No task {uuid} (unknown, or deleted: include_deleted=true shows deleted tasks)",
            headers={"X-Projection-Position": str(found.position)},
        )
    headers = _reading(found.position, {"ETag": f'"{found.version}"'})
    if _matches(request.headers.get("if-none-match"), found.version):
        return Response(status_code=304, headers=headers)
    return raw_json_response(found.doc, headers=headers)


def _bool_param(params: dict[str, str], name: str) -> bool:
    if params[name] not in ("true", "false"):
        raise ValidationFailed({name: "Must be true or false"})
    return params[name] == "true"


def _matches(header: str | None, version: int) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    tags = {part.strip().removeprefix("W/") for part in header.split(",")}
    return f'"{version}"' in tags


async def _time_travel(request: Request, task_id: str, params: dict[str, str]) -> Response:
    version = (
        parse_int("version", params["version"], 1, MAX_POSITION) if "version" in params else None
    )
    as_of = parse_timestamp("as_of", params["as_of"]) if "as_of" in params else None
    uuid = _task_id(task_id)
    task = await store.state_at(request.app.state.store_pool, uuid, version, as_of)
    if task is None:
        moment = f"version {version}" if version is not None else f"as_of {params['as_of']}"
        raise NotFound(f"Task {uuid} has no state at {moment}")
    # An event's time is taken before its commit (which may wait behind the append lock), so
    # only a moment the safe margin ago is settled; a version, once stored, never changes.
    margin = timedelta(seconds=request.app.state.settings.as_of_settled_seconds)
    settled = as_of is None or as_of < datetime.now(UTC) - margin
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
    operation_id="getTaskHistory",
    response_model=None,
    openapi_extra={
        "parameters": [
            TASK_ID,
            {
                "name": "min_position",
                "in": "query",
                "required": False,
                "description": "accepted for symmetry with other reads; history reads the "
                "store, so it answers at once",
                "schema": POSITION,
            },
            {
                **MIN_POSITION_HEADER,
                "description": "accepted; history reads the store, so it answers at once",
            },
            {
                "name": "after_version",
                "in": "query",
                "required": False,
                "description": "the page starts after this version (default 0)",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"1 to {store.MAX_HISTORY_LIMIT} events, "
                f"default {store.HISTORY_LIMIT}",
                "schema": {"type": "integer", "minimum": 1, "maximum": store.MAX_HISTORY_LIMIT},
            },
        ]
    },
    responses={
        200: {
            "description": "The task's events, a page at a time",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/History"},
                    "example": HISTORY_EXAMPLE,
                }
            },
            "headers": {
                "Link": {
                    "description": 'the next page, rel="next", when more events follow',
                    "schema": {"type": "string"},
                }
            },
        },
        **READ_ERRORS,
    },
)
async def task_history(task_id: str, request: Request) -> Response:
    params = _single_params(request, HISTORY_PARAMETERS)
    # Validated like every read's; the store already holds every acknowledged write.
    _requested_positions(request, params)
    after = parse_int("after_version", params.get("after_version", "0"), 0, MAX_POSITION)
    limit = parse_int(
        "limit", params.get("limit", str(store.HISTORY_LIMIT)), 1, store.MAX_HISTORY_LIMIT
    )
    uuid = _task_id(task_id)
    found = await store.history(request.app.state.store_pool, uuid, after, limit)
    if found is None:
        raise NotFound(f"No task {task_id} has ever existed")
    body, more = found
    headers = {"Cache-Control": "no-cache"}
    if more:
        last = body["events"][-1]["version"]
        headers["Link"] = (
            f'</api/v1/tasks/{uuid}/history?after_version={last}&limit={limit}>; rel="next"'
        )
    return json_response(body, headers=headers)


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
    # With a read database of its own, every read by id also asks the store (one more query):
    # the store's pool is sized like the read pool.
    state.store_pool = (
        state.read_pool
        if settings.read_dsn == settings.database_url
        else await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.read_pool_max,
            reset=_keep_session,
        )
    )
    state.cursor_secret = await load_secret(settings)
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
        [router, events_router],
        resources,
        [postgres_check],
    )


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process builds its app from its environment."""
    return from_environment(create_app)
