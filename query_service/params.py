"""Query-string parameters, strictly: the query string split as strict UTF-8, one parser per kind
of value (each 422 names the parameter), and a parameter's row in the OpenAPI document.

Every read route parses its parameters with these, so one kind of value is refused alike, with
the same message, wherever it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote_plus

from shared import fields, text
from shared.errors import ValidationFailed

# Positions and versions are PostgreSQL bigints: 19 digits, up to 2**63 - 1.
MAX_POSITION = 2**63 - 1
"""The largest position a parameter or header may name (18 digits)."""
MAX_CSV = 50
_INT = re.compile(r"[0-9]{1,19}")
# The patterns are called module-qualified (`fields.DATE.fullmatch`): Python 3.11 compiles a
# method call on a name imported with `from` as an attribute load and a call, which costs a bound
# method per call on this hot path.


@dataclass(frozen=True, slots=True)
class Value:
    """A kind of parameter value: its JSON Schema, and its parser, (name, raw) to the value or a
    422 naming the parameter. The schema says what the parser accepts, from the same rules."""

    schema: dict[str, Any]
    parse: Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class Parameter:
    """A parameter as the OpenAPI document describes it: its name, its doc and JSON Schema."""

    name: str
    doc: str
    schema: dict[str, Any]

    def openapi(self, where: str = "query") -> dict[str, Any]:
        return {
            "name": self.name,
            "in": where,
            "required": False,
            "description": self.doc,
            "schema": self.schema,
        }


def query_items(raw: bytes) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, as Starlette splits them, but strict UTF-8:
    percent-encoded bytes that are not UTF-8 (a lone surrogate's among them) are a 422 naming
    the parameter, where Starlette would quietly turn them into U+FFFD."""
    items = []
    for pair in raw.decode("latin-1").split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        try:
            name = unquote_plus(name, errors="strict")
        except UnicodeDecodeError:
            raise ValidationFailed(
                {unquote_plus(name, errors="replace")[:100]: "Must be valid UTF-8"}
            ) from None
        try:
            items.append((name, unquote_plus(value, errors="strict")))
        except UnicodeDecodeError:
            raise ValidationFailed({name[:100]: "Must be valid UTF-8"}) from None
    return items


def unique_params(
    items: list[tuple[str, str]],
    allowed: Container[str],
    check: Callable[[str, str], str] | None = None,
) -> dict[str, str]:
    """The parameters by name: each one known and given once, and its value passing `check`
    (one item after the other, so the first wrong item is the one a 422 names)."""
    params: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            raise ValidationFailed({name[:100]: "Unknown parameter"})
        if name in params:
            raise ValidationFailed({name: "Given more than once"})
        params[name] = value if check is None else check(name, value)
    return params


def parse_given(name: str, value: str) -> str:
    """Not empty, and (as on write) no C0 control but tab and newline, no DEL or C1 control."""
    if value == "":
        raise ValidationFailed({name: "Must not be empty"})
    if text.FORBIDDEN.search(value):
        raise ValidationFailed({name: "Must not contain control characters"})
    return value


def parse_bool(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise ValidationFailed({name: "Must be true or false"})
    return value == "true"


def parse_int(name: str, value: str, low: int, high: int) -> int:
    if not _INT.fullmatch(value) or not low <= int(value) <= high:
        raise ValidationFailed({name: f"Must be an integer from {low} to {high}"})
    return int(value)


def parse_csv(name: str, value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ValidationFailed({name: "Empty item in list"})
    if len(items) > MAX_CSV:
        raise ValidationFailed({name: f"At most {MAX_CSV} items"})
    return items


def csv_pattern(item: str) -> str:
    """The JSON Schema pattern of what `parse_csv` accepts, each item matching `item`."""
    return f"^{item}(?:,{item}){{0,{MAX_CSV - 1}}}$"


def parse_date(name: str, value: str) -> date:
    try:
        if not fields.DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed({name: "Must be a date YYYY-MM-DD"}) from None


def parse_timestamp(name: str, value: str) -> datetime:
    try:
        if not fields.TIMESTAMP.fullmatch(value):
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            {name: "Must be an ISO 8601 timestamp with Z or an offset"}
        ) from None
    try:
        # In UTC it must stay within years 1-9999 (0001-01-01T00:00:00+01:00 does not).
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed({name: "Out of range (years 1 to 9999 in UTC)"}) from None


BOOLEAN = Value({"type": "boolean"}, parse_bool)
DAY = Value(fields.DATE_SCHEMA, parse_date)
MOMENT = Value(fields.TIMESTAMP_SCHEMA, parse_timestamp)
