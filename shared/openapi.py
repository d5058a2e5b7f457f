"""JSON schemas of what the API returns, shared by every service's OpenAPI document."""

from __future__ import annotations

from typing import Any

from shared.errors import ERROR_SCHEMA

_TIMESTAMP = {"type": "string", "format": "date-time", "example": "2026-11-26T09:30:00.123456Z"}
_NULLABLE_TIMESTAMP = {"anyOf": [_TIMESTAMP, {"type": "null"}]}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "title",
        "description",
        "priority",
        "due_date",
        "tags",
        "completed",
        "completed_at",
        "deleted",
        "deleted_at",
        "created_at",
        "updated_at",
        "version",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"anyOf": [{"type": "string", "maxLength": 10000}, {"type": "null"}]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "due_date": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
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
    "required": ["items", "total", "limit", "offset", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "offset": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
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
                    "data",
                ],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]},
                    "occurred_at": _TIMESTAMP,
                    "position": {"type": "integer", "minimum": 1},
                    "correlation_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "data": {"type": "object"},
                },
            },
        },
    },
}

COMMON_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR_SCHEMA,
    "Task": TASK_SCHEMA,
    "TaskPage": TASK_PAGE_SCHEMA,
    "History": HISTORY_SCHEMA,
}
