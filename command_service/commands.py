"""The rules that decide whether a command is valid: field rules, PATCH semantics, If-Match."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from shared.errors import ValidationFailed, validation_details

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Control characters other than tab and newline, and surrogates (unpaired ones survive json.loads).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")

MAX_TAGS = 20
UPDATABLE = ("title", "description", "priority", "due_date", "tags", "completed")


def today_utc() -> date:
    return datetime.now(UTC).date()


def check_text(value: str) -> str:
    if _FORBIDDEN.search(value):
        raise ValueError("Must not contain control characters, NUL or unpaired surrogates")
    return value


def check_title(value: str) -> str:
    title = check_text(value).strip()
    if not 1 <= len(title) <= 200:
        raise ValueError("Must be 1 to 200 characters after trimming")
    return title


def check_description(value: str | None) -> str | None:
    if value is not None and len(check_text(value)) > 10_000:
        raise ValueError("Must be at most 10000 characters")
    return value


def normalise_tag(value: str) -> str:
    tag = check_text(value).strip().lower()
    if not 1 <= len(tag) <= 50:
        raise ValueError("Each tag must be 1 to 50 characters after trimming")
    if "," in tag:
        raise ValueError("Tags must not contain commas")
    return tag


def normalise_tags(values: list[str]) -> list[str]:
    """Trimmed, lower-cased, duplicates collapsed in first-seen order, at most 20."""
    errors: dict[str, str] = {}
    tags: list[str] = []
    for index, value in enumerate(values):
        try:
            tag = normalise_tag(value)
        except ValueError as exc:
            errors[f"tags.{index}"] = str(exc)
            continue
        if tag not in tags:
            tags.append(tag)
    if errors:
        raise ValidationFailed(errors)
    if len(tags) > MAX_TAGS:
        raise ValidationFailed({"tags": f"At most {MAX_TAGS} distinct tags"})
    return tags


def parse_due_date(value: str | None) -> str | None:
    """Exactly `YYYY-MM-DD` naming a real date; the past is checked where the date changes."""
    if value is None:
        return None
    if not _DATE.match(value):
        raise ValueError("Must be a date in the form YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("Must be a valid calendar date") from None
    return value


def check_not_past(due_date: str | None) -> None:
    if due_date is not None and date.fromisoformat(due_date) < today_utc():
        raise ValidationFailed({"due_date": "Must not be in the past"})


Priority = Annotated[StrictInt, Field(ge=1, le=5)]


class TaskCreate(BaseModel):
    """Body of `POST /api/v1/tasks`."""

    model_config = ConfigDict(extra="forbid")

    title: StrictStr = Field(
        description="1 to 200 characters after trimming", examples=["Write the report"]
    )
    description: StrictStr | None = Field(default=None, description="At most 10,000 characters")
    priority: Priority = Field(default=3, description="1 (lowest) to 5 (highest)")
    due_date: StrictStr | None = Field(
        default=None, description="YYYY-MM-DD, not before today (UTC)"
    )
    tags: list[StrictStr] = Field(default_factory=list, description="At most 20; normalised")

    _title = field_validator("title")(check_title)
    _description = field_validator("description")(check_description)
    _due_date = field_validator("due_date")(parse_due_date)


class TaskPatch(BaseModel):
    """Body of `PATCH /api/v1/tasks/{id}`: absent fields stay; `null` clears description or date."""

    model_config = ConfigDict(extra="forbid")

    title: StrictStr = Field(default=None, description="Never null")  # type: ignore[assignment]
    description: StrictStr | None = None
    priority: Priority = Field(default=None, description="Never null")  # type: ignore[assignment]
    due_date: StrictStr | None = None
    tags: list[StrictStr] = Field(default=None, description="Never null; [] clears")  # type: ignore[arg-type]
    completed: StrictBool = Field(default=None, description="Sets or clears completed_at")  # type: ignore[assignment]

    _title = field_validator("title")(check_title)
    _description = field_validator("description")(check_description)
    _due_date = field_validator("due_date")(parse_due_date)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed({"body": "Must be valid JSON (UTF-8)"}) from None
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    return body


def validate_create(raw: bytes) -> dict[str, Any]:
    """The normalised fields of a new task, or 422 with every problem keyed by field."""
    body = parse_body(raw)
    try:
        command = TaskCreate.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(validation_details(list(exc.errors()))) from None
    fields = command.model_dump()
    fields["tags"] = normalise_tags(command.tags)
    check_not_past(command.due_date)
    return fields


def validate_patch(raw: bytes) -> dict[str, Any]:
    """The fields present in a PATCH body, validated and normalised (absent fields are absent)."""
    body = parse_body(raw)
    try:
        command = TaskPatch.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(validation_details(list(exc.errors()))) from None
    patch = {name: getattr(command, name) for name in UPDATABLE if name in body}
    if "tags" in patch:
        patch["tags"] = normalise_tags(patch["tags"])
    return patch


_ETAG = re.compile(r'\s*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)")\s*')


def parse_if_match(header: str | None) -> list[int] | None:
    """`None` when absent; `[]` for `*` (anything matches); else the versions listed."""
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
        versions.append(int(tag) if tag.isdigit() else -1)
    return versions
