"""The REST writes: POST, PATCH and DELETE on `/api/v1/tasks`, and the 413/415 gate before them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from command_service.application import TaskApplication, WriteResult, migrate_store
from command_service.commands import (
    TaskCreate,
    TaskPatch,
    body_schema,
    check_idempotency_key,
    is_task_id,
    parse_if_match,
    validate_create,
    validate_patch,
)
from command_service.relay import asyncapi_router, relay_ready, relay_task
from shared.auth import actor
from shared.config import Settings
from shared.errors import NotFound, error_response, error_responses
from shared.health import postgres_check, rabbitmq_check
from shared.openapi import TASK_CONTENT, whole_api_router
from shared.server import from_environment
from shared.web import (
    POSITION_COOKIE,
    POSITION_COOKIE_MAX_AGE,
    Resource,
    json_response,
    make_app,
    position_cookie,
    request_id_var,
)

MEDIA_TYPES = {
    "POST": {"application/json"},
    "PATCH": {"application/json", "application/merge-patch+json"},
}
CHARSETS = {"", "charset=utf-8", 'charset="utf-8"'}
SIZED = {"POST", "PATCH", "DELETE"}
"""Methods whose bodies are held to the size limit (a DELETE's body is not read otherwise)."""


DISCARD_FACTOR = 4
"""A refused body up to this many times the limit is read to its end before the 413."""


class BodyGate:
    """413 for bodies over the limit (chunked ones too) and 415 for other types, before parsing.

    A DELETE is held to the limit too (413 before any other answer), its type is not checked.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in SIZED or not _routed(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._discard(receive, int(length) if length.isdigit() else 0)
            await _reply(scope, receive, send, 413, self._too_large())
            return
        media = headers.get(b"content-type", b"").decode("latin-1").lower()
        kind, _, params = media.partition(";")
        charset = params.replace(" ", "").replace("\t", "")
        accepted = MEDIA_TYPES.get(scope["method"])
        if accepted is not None and (kind.strip() not in accepted or charset not in CHARSETS):
            types = " or ".join(sorted(accepted))
            advice = {"Content-Type": f"Send {types}, with charset=utf-8 or no charset"}
            await _reply(scope, receive, send, 415, advice)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._discard(receive, 0)
                await _reply(scope, receive, send, 413, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"Bodies are limited to {self.max_bytes} bytes"

    async def _discard(self, receive: Receive, declared: int) -> None:
        """Read (without keeping) a refused body a sender is still writing, up to a bound.

        Answering before the body is read and closing makes a proxy in front (the gateway)
        fail to write the rest and answer 502 instead of our 413; a body far above the limit
        is cut off instead.
        """
        if declared > DISCARD_FACTOR * self.max_bytes:
            return
        read = 0
        while read <= DISCARD_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _routed(scope: Scope) -> bool:
    """Some route serves this method on this path; otherwise the router's 404 or 405 comes first.
    (Outside an app, as in the gate's unit tests, every request is gated.)"""
    app = scope.get("app")
    if app is None:
        return True
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


async def _reply(
    scope: Scope, receive: Receive, send: Send, status: int, details: dict[str, str] | str
) -> None:
    response = error_response(status, details, {"Connection": "close"} if status == 413 else None)
    await response(scope, receive, send)


def _task_id(raw: str) -> UUID:
    if not is_task_id(raw):
        raise NotFound(f"No task {raw[:100]}: not a task id")
    return UUID(raw)


def _session_position(request: Request, result: WriteResult) -> int:
    """The position the session cookie carries after this write: its own, or for a no-op or a
    replay (whose position is an earlier event's) the session's if that is later. An append is
    later than any position a client held when sending it, and resets a bogus cookie."""
    if result.appended:
        return result.position
    held = request.cookies.get(POSITION_COOKIE, "")
    if held.isascii() and held.isdigit() and len(held) <= 18:
        return max(result.position, int(held))
    return result.position


def _written(request: Request, result: WriteResult, status: int, body: bool = True) -> Response:
    headers = {
        "ETag": f'"{result.version}"',
        "X-Event-Position": str(result.position),
        "Cache-Control": "no-store",
        "Set-Cookie": position_cookie(_session_position(request, result)),
    }
    if status == 201:
        headers["Location"] = f"/api/v1/tasks/{result.task['id']}"
    if not body:
        return Response(status_code=status, headers=headers)
    return json_response(result.task, status, headers)


def _application(request: Request) -> TaskApplication:
    application: TaskApplication = request.app.state.tasks
    return application


def _body_schema(model: type[Any], media_types: tuple[str, ...]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": schema} for media in media_types},
        }
    }


router = APIRouter(prefix="/api/v1/tasks", tags=["tasks (write)"])
WRITE_SCHEMAS = {"TaskCreate": body_schema(TaskCreate), "TaskPatch": body_schema(TaskPatch)}
WRITE_ERRORS = error_responses(401, 403, 408, 413, 414, 415, 422, 431, 500)


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema,
    }


# The tags this service parses: no comma inside (it splits the list on commas); obs-text
# (\\x80-\\xff) is accepted too, but left out here: header generators cannot send it.
_TAG = '(?:W/)?"[\\x21\\x23-\\x2b\\x2d-\\x7e]*"'
IF_MATCH = _header(
    "If-Match",
    "*, an entity tag (the task's version in quotes, as in its ETag; W/ tags compare alike), "
    "or a comma-separated list of them; a malformed header is 422, a mismatch 412",
    {
        "type": "string",
        # Spaces and tabs (HTTP's optional whitespace) around tags and commas.
        "pattern": f"^[ \\t]*(?:\\*|{_TAG}[ \\t]*(?:,[ \\t]*{_TAG}[ \\t]*)*)$",
        "example": '"1"',
    },
)
IDEMPOTENCY_KEY = _header(
    "Idempotency-Key",
    "1 to 200 visible ASCII characters: a retry with the same key and an equal body returns "
    "the original answer and appends nothing; the same key with another body is 422",
    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
)
TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "the task's id (canonical 8-4-4-4-12 form; any other string is 404)",
    "schema": {"type": "string", "format": "uuid"},
}
WRITTEN_HEADERS = {
    "ETag": {
        "description": "the task's version after the write, in quotes",
        "schema": {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
    },
    "X-Event-Position": {
        "description": "global position of the event appended (for a no-op, the task's last "
        "event; for an idempotent replay, the original one): read-your-writes",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Set-Cookie": {
        "description": f"{POSITION_COOKIE}=<position>; Max-Age={POSITION_COOKIE_MAX_AGE}; "
        "Path=/api/v1; HttpOnly; "
        "SameSite=Lax: a session's later list reads wait for the read model to reach it "
        "(a no-op or a replay never lowers it)",
        "schema": {"type": "string"},
    },
}


def _links(task_id: str, *targets: str) -> dict[str, Any]:
    """OpenAPI links from a write to what can follow it on the same task (stateful fuzzing)."""
    operations = {
        "GetTask": "getTask",
        "UpdateTask": "updateTask",
        "DeleteTask": "deleteTask",
        "GetHistory": "getTaskHistory",
    }
    # A read by id reflects every acknowledged write: the id is all a link needs to pass.
    return {
        name: {"operationId": operations[name], "parameters": {"path.task_id": task_id}}
        for name in targets
    }


@router.post(
    "",
    status_code=201,
    summary="Create a task",
    operation_id="createTask",
    response_model=None,
    openapi_extra={
        **_body_schema(TaskCreate, ("application/json",)),
        "parameters": [IDEMPOTENCY_KEY],
    },
    responses={
        201: {
            "description": "Created",
            "content": TASK_CONTENT,
            "headers": {
                "Location": {
                    "description": "the task's URL, /api/v1/tasks/{id}",
                    "schema": {"type": "string"},
                },
                **WRITTEN_HEADERS,
            },
            "links": _links(
                "$response.body#/id", "GetTask", "UpdateTask", "DeleteTask", "GetHistory"
            ),
        },
        **WRITE_ERRORS,
    },
)
async def create_task(request: Request) -> Response:
    fields = validate_create(await request.body())
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    result = await _application(request).create_task_async(
        fields, request_id_var.get(), key, getattr(request.state, "api_key_id", ""), actor(request)
    )
    return _written(request, result, 201)


@router.patch(
    "/{task_id}",
    summary="Update some fields of a task",
    operation_id="updateTask",
    response_model=None,
    openapi_extra={
        **_body_schema(TaskPatch, ("application/json", "application/merge-patch+json")),
        "parameters": [TASK_ID, IF_MATCH],
    },
    responses={
        200: {
            "description": "Updated (or, for a body that changes nothing, the current task)",
            "content": TASK_CONTENT,
            "headers": WRITTEN_HEADERS,
            "links": _links(
                "$response.body#/id", "GetTask", "UpdateTask", "DeleteTask", "GetHistory"
            ),
        },
        **WRITE_ERRORS,
        **error_responses(404, 412),
    },
)
async def update_task(task_id: str, request: Request) -> Response:
    patch = validate_patch(await request.body())
    if_match = parse_if_match(request.headers.get("if-match"))
    result = await run_in_threadpool(
        _application(request).update_task,
        _task_id(task_id),
        patch,
        if_match,
        request_id_var.get(),
        actor(request),
    )
    return _written(request, result, 200)


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Soft-delete a task",
    operation_id="deleteTask",
    response_model=None,
    openapi_extra={"parameters": [TASK_ID, IF_MATCH]},
    responses={
        204: {
            "description": "Deleted",
            "headers": WRITTEN_HEADERS,
            "links": _links("$request.path.task_id", "GetTask", "GetHistory"),
        },
        **WRITE_ERRORS,
        **error_responses(404, 412),
    },
)
async def delete_task(task_id: str, request: Request) -> Response:
    if_match = parse_if_match(request.headers.get("if-match"))
    result = await run_in_threadpool(
        _application(request).delete_task,
        _task_id(task_id),
        if_match,
        request_id_var.get(),
        actor(request),
    )
    return _written(request, result, 204, body=False)


@contextlib.asynccontextmanager
async def event_store(state: Any, settings: Settings) -> AsyncIterator[None]:
    """The library's application over a migrated store."""
    if settings.migrate_on_start:
        await migrate_store(settings)
    state.tasks = await asyncio.to_thread(TaskApplication, settings, {"CREATE_TABLE": "n"})
    try:
        yield
    finally:
        await asyncio.to_thread(state.tasks.close)


async def commit_ready(state: Any) -> tuple[str, bool, dict[str, Any]]:
    """503 while the group-commit thread is dead or stuck (it is replaced when found so)."""
    application: TaskApplication | None = getattr(state, "tasks", None)
    problem = application.committer.problem() if application is not None else None
    if problem is not None:
        return "commit", False, {"failure": f"the group-commit thread {problem}; restarted"}
    return "commit", True, {}


def create_app(settings: Settings) -> FastAPI:
    resources: list[Resource] = [event_store]
    if settings.run_relay:
        resources.append(relay_task)
    app = make_app(
        "Tasks command service",
        settings,
        [router, asyncapi_router, whole_api_router],
        resources,
        [postgres_check, commit_ready]
        + ([rabbitmq_check, relay_ready] if settings.run_relay else []),
        WRITE_SCHEMAS,
        # Inside the request-id and metrics middleware, so 413 and 415 are counted and echo it.
        [(BodyGate, {"max_bytes": settings.max_body_bytes})],
    )
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process builds its app from its environment."""
    return from_environment(create_app)
