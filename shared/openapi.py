"""JSON schemas of what the API returns, shared by every service's OpenAPI document."""

from __future__ import annotations

from importlib import resources
from typing import Any

from shared import fields
from shared.domain import TASK_FIELDS
from shared.errors import ADVICE, ERROR_SCHEMA, TITLES

_TIMESTAMP = {"type": "string", "format": "date-time", "example": "2026-11-26T09:30:00.123456Z"}
_NULLABLE_TIMESTAMP = {"anyOf": [_TIMESTAMP, {"type": "null"}]}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(TASK_FIELDS),
    "properties": {
        "id": fields.TASK_ID_SCHEMA,
        "title": {"type": "string", "minLength": 1, "maxLength": fields.MAX_TITLE},
        "description": {
            "anyOf": [{"type": "string", "maxLength": fields.MAX_DESCRIPTION}, {"type": "null"}]
        },
        "priority": fields.PRIORITY_SCHEMA,
        "due_date": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": fields.MAX_TAGS},
        "completed": {"type": "boolean"},
        "completed_at": _NULLABLE_TIMESTAMP,
        "deleted": {"type": "boolean"},
        "deleted_at": _NULLABLE_TIMESTAMP,
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "version": {"type": "integer", "minimum": 1},
    },
}

TASK_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["items", "total", "limit", "offset", "next_cursor", "next"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "offset": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "next": {
            "description": "the next page's URL (the cursor alone carries filter and sort)",
            "anyOf": [{"type": "string"}, {"type": "null"}],
        },
    },
}

HISTORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["task_id", "events"],
    "properties": {
        "task_id": {"type": "string", "format": "uuid"},
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "version",
                    "type",
                    "occurred_at",
                    "position",
                    "correlation_id",
                    "actor",
                    "data",
                ],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]},
                    "occurred_at": _TIMESTAMP,
                    "position": {"type": "integer", "minimum": 1},
                    "correlation_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "actor": {
                        "type": "string",
                        "description": "the API key's name; anonymous without keys, unknown "
                        "for events stored before actors were recorded",
                    },
                    "data": {
                        "type": "object",
                        "description": "TaskCreated: the created fields; TaskUpdated: "
                        "changes (new values) and previous (old values); TaskSoftDeleted: {}",
                    },
                },
            },
        },
    },
}

READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"const": "ready"},
        "checks": {"type": "object", "additionalProperties": {"enum": ["ok", "failing"]}},
        "relay_lag": {"$ref": "#/components/schemas/Lag"},
        "projection_lag": {"$ref": "#/components/schemas/Lag"},
    },
}
LAG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "positions": {"type": "integer", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
    },
}

TASK_EXAMPLE: dict[str, Any] = {
    "id": "9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11",
    "title": "Write the quarterly report",
    "description": "Numbers from finance first",
    "priority": 4,
    "due_date": "2026-12-15",
    "tags": ["work", "urgent"],
    "completed": False,
    "completed_at": None,
    "deleted": False,
    "deleted_at": None,
    "created_at": "2026-11-26T09:30:00.123456Z",
    "updated_at": "2026-11-26T09:30:00.123456Z",
    "version": 1,
}
HISTORY_EXAMPLE: dict[str, Any] = {
    "task_id": TASK_EXAMPLE["id"],
    "events": [
        {
            "version": 1,
            "type": "TaskCreated",
            "occurred_at": TASK_EXAMPLE["created_at"],
            "position": 17,
            "correlation_id": "3f9c2a4be1d04c51",
            "data": {k: TASK_EXAMPLE[k] for k in ("title", "description", "priority", "tags")},
        }
    ],
}
TASK_CONTENT: dict[str, Any] = {
    "application/json": {"schema": {"$ref": "#/components/schemas/Task"}, "example": TASK_EXAMPLE}
}

COMMON_SCHEMAS: dict[str, dict[str, Any]] = {
    "Ready": READY_SCHEMA,
    "Lag": LAG_SCHEMA,
    "Error": ERROR_SCHEMA,
    "Task": TASK_SCHEMA,
    "TaskPage": TASK_PAGE_SCHEMA,
    "History": HISTORY_SCHEMA,
}


BEARER = "bearer"
"""The security scheme's name; `shared/auth.py` puts on each `/api/` operation its scope."""

REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "1 to 200 visible ASCII characters, echoed on the answer and recorded as the "
    "correlation id of the events the request appends; any other value is ignored and a new "
    "id generated",
    "schema": {"type": "string"},
}
TASK_ID: dict[str, Any] = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "the task's id (canonical 8-4-4-4-12 form; any other string is 404)",
    "schema": fields.TASK_ID_SCHEMA,
}
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "the request's id (the one sent, or a generated one)",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
    },
    "Cache-Control": {
        "description": "no-cache on reads (revalidate with the ETag), immutable on settled "
        "time-travel reads, no-store on writes",
        "schema": {"type": "string"},
    },
    "X-Projection-Position": {
        "description": "how far the read model had caught up when the read ran",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {"description": "Bearer", "schema": {"const": "Bearer"}},
    "Allow": {"description": "the methods this URL serves", "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"const": "1"}},
}
ERROR_EXAMPLES: dict[int, Any] = {
    412: "The task is at version 3; If-Match named another",
    422: {"priority": "Must be between 1 and 5"},
    503: "The read model has not reached position 17 yet",
}


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Ready: every dependency this process needs answers",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Ready"},
                "example": {
                    "status": "ready",
                    "checks": {"postgres": "ok"},
                    "projection_lag": {"positions": 0, "seconds": 0.0},
                },
            }
        },
    },
    503: {
        "description": "Not ready: details names each failing check",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": {"error": "Service unavailable", "details": {"postgres": "unreachable"}},
            }
        },
    },
}


def finish_document(schema: dict[str, Any]) -> None:
    """What every operation shares: the request id in and out, an example of every error, and
    the headers errors carry."""
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            # A parameter described by the route replaces FastAPI's bare one of the same name.
            described = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
            operation["parameters"] = [*described.values(), REQUEST_ID]
            api = path.startswith("/api/")
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                headers["X-Request-ID"] = RESPONSE_HEADERS["X-Request-ID"]
                if api:
                    headers["Cache-Control"] = RESPONSE_HEADERS["Cache-Control"]
                code = int(status)
                if api and code == 401:
                    headers["WWW-Authenticate"] = RESPONSE_HEADERS["WWW-Authenticate"]
                if api and code == 503:
                    headers["Retry-After"] = RESPONSE_HEADERS["Retry-After"]
                if code >= 400:
                    details = ERROR_EXAMPLES.get(code, ADVICE.get(code))
                    response["content"]["application/json"].setdefault(
                        "example", {"error": TITLES[code], "details": details}
                    )


def merge_documents(title: str, *documents: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI document from several services' (paths and components united)."""
    merged: dict[str, Any] = {
        "openapi": documents[0]["openapi"],
        "info": {**documents[0]["info"], "title": title},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    for document in documents:
        for path, operations in document.get("paths", {}).items():
            merged["paths"].setdefault(path, {}).update(operations)
        components = document.get("components", {})
        merged["components"]["schemas"].update(components.get("schemas", {}))
        merged["components"]["securitySchemes"].update(components.get("securitySchemes", {}))
    merged["paths"] = dict(sorted(merged["paths"].items()))
    merged["components"]["schemas"] = dict(sorted(merged["components"]["schemas"].items()))
    return merged


WHOLE_API = resources.files("shared").joinpath("openapi.json")
"""The whole API (reads and writes) in one document, generated by `cli.py openapi`."""
