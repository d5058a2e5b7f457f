"""The REST reads: list with search/filter/sort/paginate, task by id, history, time travel.

Each route parses its parameters, calls one function and answers; the list's orchestration
is query_service/listing.py, the parameters' rules query_service/params.py and queries.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Request
from starlette.responses import Response

from query_service import history as store
from query_service import openapi
from query_service.consistency import PARAMETER, check_issued, read_task, requested_positions
from query_service.listing import read_page
from query_service.params import (
    MAX_POSITION,
    parse_bool,
    parse_int,
    parse_timestamp,
    query_items,
    unique_params,
)
from query_service.queries import parse_list_query
from shared import fields
from shared.errors import NotFound, ServiceUnavailable, ValidationFailed
from shared.jsonhttp import get_and_head, json_response, raw_json_response

TASK_PARAMETERS = frozenset(row.name for row in openapi.TASK_QUERY)
HISTORY_PARAMETERS = frozenset(row.name for row in openapi.HISTORY_QUERY)

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks (read)"])


def _params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    return unique_params(query_items(request.scope["query_string"]), allowed)


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


def _task_id(raw: str) -> UUID:
    """The canonical hyphenated form only, as on write; anything else is an unknown task."""
    if not fields.TASK_ID.fullmatch(raw):
        raise NotFound(f"No task {raw[:100]}: not a task id")
    return UUID(raw)


def _matches(header: str | None, version: int) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    tags = {part.strip().removeprefix("W/") for part in header.split(",")}
    return f'"{version}"' in tags


@get_and_head(router, "", **openapi.LIST_TASKS)
async def list_tasks(request: Request) -> Response:
    state = request.app.state
    query = parse_list_query(
        query_items(request.scope["query_string"]),
        max_offset=state.settings.max_offset,
        secret=state.cursor_secret,
    )
    await _await_positions(request, requested_positions(request, query.min_position, cookie=True))
    page = await read_page(state, query)
    return raw_json_response(page.body, headers=_reading(page.position, page.link_header()))


@get_and_head(router, "/{task_id}", **openapi.GET_TASK)
async def get_task(task_id: str, request: Request) -> Response:
    params = _params(request, TASK_PARAMETERS)
    if "version" in params and "as_of" in params:
        raise ValidationFailed({"as_of": "Give either version or as_of, not both"})
    positions = _requested_positions(request, params)
    # Time travel answers deleted tasks anyway (marked deleted); the value is still checked.
    include_deleted = "include_deleted" in params and parse_bool(
        "include_deleted", params["include_deleted"]
    )
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


DIRECT = (("/api/v1/tasks/{task_id}", get_task),)
"""The read by id, the hottest read, served before the router's walk (`shared/direct.py`)."""


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


@get_and_head(router, "/{task_id}/history", **openapi.TASK_HISTORY)
async def task_history(task_id: str, request: Request) -> Response:
    params = _params(request, HISTORY_PARAMETERS)
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
