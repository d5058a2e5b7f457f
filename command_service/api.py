"""The REST writes: POST, PATCH and DELETE on `/api/v1/tasks` (the 413/415 gate before them is
`command_service/gate.py`); each parses, calls the application once and answers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from command_service.application import TaskApplication, WriteResult
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
from shared.auth import actor
from shared.errors import NotFound, error_responses
from shared.jsonhttp import (
    POSITION_COOKIE,
    POSITION_COOKIE_MAX_AGE,
    json_response,
    position_cookie,
    request_id_var,
)
from shared.openapi import TASK_CONTENT, TASK_ID


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
    result = await _application(request).update_task_async(
        _task_id(task_id), patch, if_match, request_id_var.get(), actor(request)
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
    result = await _application(request).delete_task_async(
        _task_id(task_id), if_match, request_id_var.get(), actor(request)
    )
    return _written(request, result, 204, body=False)


DIRECT = (
    ("/api/v1/tasks", create_task),
    ("/api/v1/tasks/{task_id}", update_task),
    ("/api/v1/tasks/{task_id}", delete_task),
)
"""The writes, served before the router's walk (`shared/direct.py`)."""
