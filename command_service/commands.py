"""The rules that decide whether a command is valid: field rules, PATCH semantics, If-Match."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)

from shared import fields
from shared.domain import Task
from shared.errors import PreconditionFailed, ValidationFailed, validation_details
from shared.fields import (
    DATE_SCHEMA,
    DEFAULT_PRIORITY,
    DESCRIPTION_SCHEMA,
    MAX_DESCRIPTION,
    MAX_PRIORITY,
    MAX_TAGS,
    MAX_TITLE,
    MIN_PRIORITY,
    TAGS_SCHEMA,
    TITLE_SCHEMA,
)
from shared.jsonhttp import valid_token
from shared.text import check_free_text, normalise_tag

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def today_utc() -> date:
    return datetime.now(UTC).date()


def check_title(value: str) -> str:
    title = check_free_text(value).strip()
    if not 1 <= len(title) <= MAX_TITLE:
        raise ValueError(f"Must be 1 to {MAX_TITLE} characters after trimming")
    return title


def check_description(value: str | None) -> str | None:
    if value is not None and len(check_free_text(value)) > MAX_DESCRIPTION:
        raise ValueError(f"Must be at most {MAX_DESCRIPTION} characters")
    return value


def dedupe_tags(tags: list[str]) -> list[str]:
    """Duplicates collapse in first-seen order; the limit counts what is left."""
    distinct = list(dict.fromkeys(tags))
    if len(distinct) > MAX_TAGS:
        raise ValueError(f"At most {MAX_TAGS} distinct tags")
    return distinct


def parse_due_date(value: str | None) -> str | None:
    """Exactly `YYYY-MM-DD` naming a real date; the past is checked where the date changes."""
    if value is None:
        return None
    if not fields.DATE.fullmatch(value):
        raise ValueError("Must be a date in the form YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("Must be a valid calendar date") from None
    return value


def is_past(due_date: str | None) -> bool:
    return due_date is not None and date.fromisoformat(due_date) < today_utc()


def check_not_past(due_date: str | None) -> None:
    if is_past(due_date):
        raise ValidationFailed({"due_date": "Must not be before today (UTC)"})


# Each field's type carries its rule and the JSON Schema that states it: the document is
# generated from the same constants the validators compare against.
Title = Annotated[StrictStr, AfterValidator(check_title), WithJsonSchema(TITLE_SCHEMA)]
Description = Annotated[
    StrictStr, AfterValidator(check_description), WithJsonSchema(DESCRIPTION_SCHEMA)
]
Priority = Annotated[StrictInt, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
DueDate = Annotated[StrictStr, AfterValidator(parse_due_date), WithJsonSchema(DATE_SCHEMA)]
Tag = Annotated[StrictStr, AfterValidator(normalise_tag)]
Tags = Annotated[list[Tag], AfterValidator(dedupe_tags), WithJsonSchema(TAGS_SCHEMA)]


class TaskCreate(BaseModel):
    """Body of `POST /api/v1/tasks`."""

    model_config = ConfigDict(extra="forbid")

    title: Title = Field(description=f"1 to {MAX_TITLE} characters after trimming")
    description: Description | None = Field(
        default=None, description=f"At most {MAX_DESCRIPTION:,} characters"
    )
    priority: Priority = Field(
        default=DEFAULT_PRIORITY,
        description=f"{MIN_PRIORITY} (lowest) to {MAX_PRIORITY} (highest)",
    )
    due_date: DueDate | None = Field(default=None, description="YYYY-MM-DD, not before today (UTC)")
    tags: Tags = Field(
        default_factory=list,
        description=f"At most {MAX_TAGS} after trimming, lower-casing and dedup",
    )


class TaskPatch(BaseModel):
    """Body of `PATCH /api/v1/tasks/{id}`: absent fields stay; `null` clears description or date."""

    model_config = ConfigDict(extra="forbid")

    title: Title = Field(default=None, description="Never null")  # type: ignore[assignment]
    description: Description | None = None
    priority: Priority = Field(default=None, description="Never null")  # type: ignore[assignment]
    due_date: DueDate | None = Field(
        default=None, description="YYYY-MM-DD; a changed date must not be before today (UTC)"
    )
    tags: Tags = Field(default=None, description="Never null; [] clears")  # type: ignore[arg-type]
    completed: StrictBool = Field(default=None, description="Sets or clears completed_at")  # type: ignore[assignment]


UPDATABLE = tuple(TaskPatch.model_fields)
"""The fields a PATCH may change: the PATCH body's."""


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema: its field types say what their validators check."""
    return model.model_json_schema()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses an escaped lone surrogate outright; parse such a body again so the
        # refusal names the field that holds it instead of the whole body.
        if not _ESCAPED_SURROGATE.search(raw):
            raise
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = _loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed({"body": "Must be valid JSON (UTF-8)"}) from None
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    return body


def validate_create(raw: bytes) -> dict[str, Any]:
    """The normalised fields of a new task, or 422 with every problem keyed by field.

    Whether the due date is before today is left to the application: an idempotent retry of a
    request made yesterday still gets its original answer.
    """
    body = parse_body(raw)
    try:
        command = TaskCreate.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(validation_details(list(exc.errors()))) from None
    return command.model_dump()


def validate_patch(raw: bytes) -> dict[str, Any]:
    """The fields present in a PATCH body, validated and normalised (absent fields are absent)."""
    body = parse_body(raw)
    try:
        command = TaskPatch.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(validation_details(list(exc.errors()))) from None
    return {name: getattr(command, name) for name in UPDATABLE if name in body}


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not valid_token(key):
        raise ValidationFailed({"Idempotency-Key": "Must be 1 to 200 visible ASCII characters"})
    return key


def is_task_id(raw: str) -> bool:
    """Only the canonical 8-4-4-4-12 form names a task; anything else is 404 like an unknown id."""
    return fields.TASK_ID.fullmatch(raw) is not None


_ETAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')
# Our ETags are versions in canonical decimal: "01" or "0" is no tag we ever sent.
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def parse_if_match(header: str | None) -> list[int] | None:
    """`None` when absent; `[]` for `*` (anything matches); else the versions listed.

    Weak and strong tags compare alike; a well-formed tag that is not one of ours (`"abc"`,
    `"01"`) is kept as -1 so it can only mismatch.
    """
    if header is None:
        return None
    if header.strip() == "*":
        return []
    versions: list[int] = []
    for part in header.split(","):
        match = _ETAG.fullmatch(part)
        if not match:
            raise ValidationFailed({"If-Match": "Must be *, an entity tag, or a list of them"})
        tag = match.group(2)
        versions.append(int(tag) if _VERSION.fullmatch(tag) else -1)
    return versions


def check_if_match(version: int, if_match: list[int] | None) -> None:
    """412 unless the current version is one the client listed (`*` or no header: any)."""
    if if_match and version not in if_match:
        raise PreconditionFailed(f"Current version is {version}", {"ETag": f'"{version}"'})


def patch_changes(task: Task, patch: dict[str, Any], if_match: list[int] | None) -> dict[str, Any]:
    """What a valid PATCH changes on the task as it stands (412 on a version not listed).

    Only a changed due date is checked: a task that became overdue stays editable.
    """
    changes = {name: value for name, value in patch.items() if getattr(task, name) != value}
    if "due_date" in changes:
        check_not_past(changes["due_date"])
    check_if_match(task.version, if_match)
    return changes
