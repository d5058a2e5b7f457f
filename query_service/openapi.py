"""What the read routes' OpenAPI document says besides their code: each route's parameters, the
headers its answers carry and its examples.

The list's query parameters are the rows of `queries.PARAMETERS` (filters from
`filters.FILTERS`), and every other parameter here is a `Parameter` row whose schema comes from
the constant its parser checks against, so the document states the limits the code keeps.
"""

from __future__ import annotations

from typing import Any

from query_service import history
from query_service.params import BOOLEAN, MAX_POSITION, MOMENT, Parameter
from query_service.queries import PARAMETERS, POSITION
from shared.errors import error_responses
from shared.jsonhttp import POSITION_COOKIE
from shared.openapi import HISTORY_EXAMPLE, TASK_CONTENT, TASK_EXAMPLE, TASK_ID

READ_ERRORS = error_responses(401, 403, 404, 414, 422, 431, 500, 503)
MIN_POSITION_HEADER = {
    "name": "X-Min-Position",
    "in": "header",
    "required": False,
    "description": "wait until the read model reaches this position (read-your-writes; the "
    "larger of this, min_position and the tasks_position cookie counts); 422 beyond the "
    "store's last position",
    "schema": POSITION,
}
POSITION_COOKIE_PARAMETER = Parameter(
    POSITION_COOKIE,
    "set by every write to its position: a list read waits for the larger of it, "
    "X-Min-Position and min_position; a position never issued is 422",
    POSITION,
)
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


def json_content(schema: str, example: Any) -> dict[str, Any]:
    """An `application/json` answer of the named component schema, with its example."""
    return {
        "application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"},
            "example": example,
        }
    }


LIST_PARAMETERS = [
    *(row.openapi() for row in PARAMETERS.values()),
    MIN_POSITION_HEADER,
    POSITION_COOKIE_PARAMETER.openapi("cookie"),
]
PAGE_EXAMPLE = {
    "items": [TASK_EXAMPLE],
    "total": 21,
    "limit": 20,
    "offset": 0,
    "next_cursor": "q2xk...",
    "next": "/api/v1/tasks?cursor=q2xk...",
}
LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of tasks",
        "content": json_content("TaskPage", PAGE_EXAMPLE),
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
}

TASK_QUERY = (
    Parameter(
        "version",
        "time travel: the task as it was at this version (404 above the current one); not "
        "with as_of; needs a key when keys are set",
        {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
    ),
    Parameter(
        "as_of",
        "time travel: the task after every event at or before this moment (a timestamp with Z "
        "or an offset); not with version; needs a key when keys are set",
        MOMENT.schema,
    ),
    Parameter(
        "include_deleted",
        "true also answers a soft-deleted task (marked deleted); needs a key when keys are set",
        BOOLEAN.schema,
    ),
    PARAMETERS["min_position"],
)
"""The query parameters of a read by id."""
TASK_PARAMETERS = [
    TASK_ID,
    *(row.openapi() for row in TASK_QUERY),
    MIN_POSITION_HEADER,
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "an ETag, a list of them, or *; a match answers 304",
        "schema": {"type": "string"},
    },
]
TASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The task", "content": TASK_CONTENT, "headers": TASK_HEADERS},
    304: {"description": "Not modified (If-None-Match matched)", "headers": TASK_HEADERS},
    **READ_ERRORS,
}

HISTORY_QUERY = (
    Parameter(
        "min_position",
        "accepted for symmetry with other reads; history reads the store, so it answers at once",
        POSITION,
    ),
    Parameter(
        "after_version",
        "the page starts after this version (default 0)",
        {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
    ),
    Parameter(
        "limit",
        f"1 to {history.MAX_HISTORY_LIMIT} events, default {history.HISTORY_LIMIT}",
        {"type": "integer", "minimum": 1, "maximum": history.MAX_HISTORY_LIMIT},
    ),
)
"""The query parameters of a task's history."""
HISTORY_PARAMETERS = [
    TASK_ID,
    HISTORY_QUERY[0].openapi(),
    {
        **MIN_POSITION_HEADER,
        "description": "accepted; history reads the store, so it answers at once",
    },
    *(row.openapi() for row in HISTORY_QUERY[1:]),
]
HISTORY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The task's events, a page at a time",
        "content": json_content("History", HISTORY_EXAMPLE),
        "headers": {
            "Link": {
                "description": 'the next page, rel="next", when more events follow',
                "schema": {"type": "string"},
            }
        },
    },
    **READ_ERRORS,
}


def operation(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[int | str, dict[str, Any]],
    description: str | None = None,
) -> dict[str, Any]:
    """A read route's options for `get_and_head`: its part of the document, and no response
    model (the routes answer JSON they already hold as bytes)."""
    options: dict[str, Any] = {
        "summary": summary,
        "operation_id": operation_id,
        "response_model": None,
        "openapi_extra": {"parameters": parameters},
        "responses": responses,
    }
    if description is not None:
        options["description"] = description
    return options


LIST_TASKS = operation(
    "listTasks",
    "Search, filter, sort and paginate tasks",
    LIST_PARAMETERS,
    LIST_RESPONSES,
    description="`cursor` and `offset` exclude each other; `sort=relevance` needs `q`; a sort "
    'key given twice is 422. Every page links to the next (`Link: rel="next"`, and `next` '
    'in the body) and an offset page after the first to the previous (`rel="prev"`).',
)
GET_TASK = operation(
    "getTask",
    "A task, or its state at a version or moment (time travel)",
    TASK_PARAMETERS,
    TASK_RESPONSES,
    description="Reflects every write acknowledged before the request arrived, for any client, "
    "with no header or cookie: what the read table has not applied yet is read from the "
    "store. `X-Min-Position` or `min_position` also waits for the read model to reach it. "
    "`version` and `as_of` exclude each other (both is 422); either answers from the event "
    "store, deleted states included.",
)
TASK_HISTORY = operation(
    "getTaskHistory",
    "Every event of a task, in version order (audit replay)",
    HISTORY_PARAMETERS,
    HISTORY_RESPONSES,
)
