"""The list filters, one row each: name, what the OpenAPI document says of it (doc and JSON
Schema), how its value is parsed, and the SQL condition it adds.

The list parser, the statement builder and the OpenAPI document all read `FILTERS`, so a new
filter is one new row. Conditions take every value as a `$n` argument and are written in the
order of the filters' names, so the same filters given in another order are the same statement
(one prepared statement, one remembered total).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from query_service.params import (
    BOOLEAN,
    DAY,
    MOMENT,
    Parameter,
    Value,
    csv_pattern,
    parse_csv,
    parse_int,
)
from query_service.search import tsquery_sql
from shared.errors import ValidationFailed
from shared.fields import (
    CONTROL_CHARACTERS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_SCHEMA,
    SPACE,
    TAG_REFUSED,
    trimmed_pattern,
)
from shared.text import MAX_TAG, normalise_tag

MAX_Q = 200


class Sql:
    """Collects `$n` arguments while a statement is written, and the search's tsquery (which
    the relevance sort ranks by)."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.tsquery = "NULL::tsquery"

    def arg(self, value: Any, cast: str = "") -> str:
        self.args.append(value)
        return f"${len(self.args)}{cast}"


Condition = Callable[[Any, Sql], str]
"""The filter's value to its SQL condition, its arguments added to the statement's."""


@dataclass(frozen=True, slots=True)
class Filter:
    """A list filter: its parameter's name and doc, its kind of value (JSON Schema and parser),
    and the SQL condition its value adds."""

    name: str
    doc: str
    value: Value
    condition: Condition

    @property
    def parameter(self) -> Parameter:
        return Parameter(self.name, self.doc, self.value.schema)


def _today() -> date:
    return datetime.now(UTC).date()


def _flag(when_true: str, when_false: str) -> Condition:
    return lambda value, _sql: when_true if value else when_false


def _compare(expression: str, operator: str, cast: str = "") -> Condition:
    return lambda value, sql: f"{expression} {operator} {sql.arg(value, cast)}"


def _level(name: str, value: str) -> int:
    return parse_int(name, value, MIN_PRIORITY, MAX_PRIORITY)


def _levels(name: str, value: str) -> list[int]:
    return sorted({_level(name, item) for item in parse_csv(name, value)})


def _any_level(levels: list[int], sql: Sql) -> str:
    if len(levels) == 1:
        return f"priority = {sql.arg(levels[0])}"
    return f"priority = ANY({sql.arg(levels, '::smallint[]')})"


def _tags(name: str, value: str) -> list[str]:
    tags: list[str] = []
    for item in parse_csv(name, value):
        try:
            tag = normalise_tag(item)  # as on write: a fullwidth `work` finds `work`
        except ValueError as exc:
            raise ValidationFailed({name: str(exc)}) from None
        if tag not in tags:
            tags.append(tag)
    # Sorted, so the same set of tags in another order is the same query (and cursor).
    return sorted(tags)


def _overdue(value: bool, sql: Sql) -> str:
    overdue = f"(due_date < {sql.arg(_today(), '::date')} AND NOT completed)"
    return overdue if value else f"NOT coalesce({overdue}, false)"


def _search(name: str, value: str) -> str:
    if len(value) > MAX_Q:
        raise ValidationFailed({name: f"At most {MAX_Q} characters"})
    return value


def _matches(q: str, sql: Sql) -> str:
    sql.tsquery = tsquery_sql(q, sql.arg)
    return f"search @@ {sql.tsquery}"


LEVEL = Value(PRIORITY_SCHEMA, _level)
LEVELS = Value(
    {
        "type": "string",
        "pattern": csv_pattern(f"{SPACE}0{{0,17}}[{MIN_PRIORITY}-{MAX_PRIORITY}]{SPACE}"),
    },
    _levels,
)
TAGS = Value(
    {"type": "string", "pattern": csv_pattern(trimmed_pattern(MAX_TAG, TAG_REFUSED))}, _tags
)
SEARCH = Value(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_Q,
        "pattern": f"^[^{CONTROL_CHARACTERS}]*$",
    },
    _search,
)

_RANGE = f"{MIN_PRIORITY}-{MAX_PRIORITY}"
_ON_OR_AFTER = "inclusive timestamp with Z or offset"
_OVERDUE = "true: due before today (UTC) and not completed; false: the complement"
_SEARCH = (
    'full text over title and description: web-search syntax (words, "phrases", -excluded, '
    "or), stemmed (English) alongside exact words, the last word also as a prefix"
)

_TEXTS = "::text[]"


def _by_name(*rows: Filter) -> dict[str, Filter]:
    return {row.name: row for row in rows}


FILTERS: dict[str, Filter] = _by_name(
    Filter("completed", "true or false", BOOLEAN, _flag("completed", "NOT completed")),
    Filter("priority", f"CSV of levels {_RANGE}, any of", LEVELS, _any_level),
    Filter("priority_min", f"inclusive lower bound, {_RANGE}", LEVEL, _compare("priority", ">=")),
    Filter("priority_max", f"inclusive upper bound, {_RANGE}", LEVEL, _compare("priority", "<=")),
    Filter("tags", "CSV of tags, tasks having any of them", TAGS, _compare("tags", "&&", _TEXTS)),
    Filter(
        "tags_all", "CSV of tags, tasks having all of them", TAGS, _compare("tags", "@>", _TEXTS)
    ),
    Filter("due_before", "inclusive YYYY-MM-DD bound", DAY, _compare("due_date", "<=")),
    Filter("due_after", "inclusive YYYY-MM-DD bound", DAY, _compare("due_date", ">=")),
    Filter("overdue", _OVERDUE, BOOLEAN, _overdue),
    Filter(
        "has_due_date", "true or false", BOOLEAN, _flag("due_date IS NOT NULL", "due_date IS NULL")
    ),
    Filter("q", _SEARCH, SEARCH, _matches),
    Filter("created_after", _ON_OR_AFTER, MOMENT, _compare("created_at", ">=")),
    Filter("created_before", _ON_OR_AFTER, MOMENT, _compare("created_at", "<=")),
    Filter("updated_after", _ON_OR_AFTER, MOMENT, _compare("updated_at", ">=")),
)
"""Every list filter, in the order the OpenAPI document lists them."""


def where_clause(filters: list[tuple[str, Any]], include_deleted: bool, sql: Sql) -> str:
    conditions = [] if include_deleted else ["NOT deleted"]
    # In a fixed order, so the same filters given in another order are the same statement.
    for name, value in sorted(filters, key=lambda f: str(f[0])):
        conditions.append(FILTERS[name].condition(value, sql))
    return " AND ".join(conditions) or "true"
