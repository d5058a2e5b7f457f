"""Sort keys, one row each: the SQL expression, whether it holds nulls, whether its plain order
is best first, and how a cursor's value of it is read back; and the ORDER BY and the keyset
predicate written from those rows.

Expressions never come from input: a sort key names a row. Titles compare through the
`title_order` collation (projector/schema.sql): case- and accent-insensitive. Nulls come last in
both directions, and every order ends with the id, so the order is total and a cursor's place in
it exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from query_service.cursors import (
    Reader,
    read_date,
    read_keys,
    read_moment,
    read_priority,
    read_rank,
    read_title,
)
from query_service.filters import Sql
from query_service.params import Value, csv_pattern, parse_csv
from shared.errors import ValidationFailed
from shared.fields import SPACE

Sort = list[tuple[str, bool]]
"""(key, descending) pairs, the first one leading."""


@dataclass(frozen=True, slots=True)
class SortKey:
    expression: str
    """SQL; `{query}` stands for the search's tsquery."""
    nullable: bool
    read: Reader
    best_first: bool = False
    """The plain (unprefixed) order is descending: `relevance` puts the best match first."""


SORT_KEYS: dict[str, SortKey] = {
    "created_at": SortKey("created_at", False, read_moment),
    "updated_at": SortKey("updated_at", False, read_moment),
    "due_date": SortKey("due_date", True, read_date),
    "priority": SortKey("priority", False, read_priority),
    "title": SortKey("title COLLATE title_order", False, read_title),
    "relevance": SortKey("ts_rank(search, {query})", False, read_rank, best_first=True),
}
DEFAULT_SORT: Sort = [("created_at", True)]
SORT_DOC = (
    "CSV of created_at, updated_at, due_date, priority, title (case- and accent-insensitive) "
    "and, with q only, relevance (best match first); '-' reverses a key; default -created_at; "
    "ties broken by id"
)


def parse_sort(name: str, value: str) -> Sort:
    keys: Sort = []
    for item in parse_csv(name, value):
        descending = item.startswith("-")
        key = item.removeprefix("-")
        if key not in SORT_KEYS:
            raise ValidationFailed({name: f"Unknown sort key {key!r}"})
        if any(existing == key for existing, _ in keys):
            raise ValidationFailed({name: f"Sort key {key!r} given twice"})
        keys.append((key, descending))
    return keys


SORT = Value(
    {"type": "string", "pattern": csv_pattern(f"{SPACE}-?(?:{'|'.join(SORT_KEYS)}){SPACE}")},
    parse_sort,
)


def descends(name: str, descending: bool) -> bool:
    return descending != SORT_KEYS[name].best_first


def sort_expression(name: str, sql: Sql) -> str:
    return SORT_KEYS[name].expression.format(query=sql.tsquery)


def ordered(expression: str, name: str, descending: bool) -> str:
    """`expression` in the direction of the sort key, nulls last."""
    key = SORT_KEYS[name]
    direction = "DESC" if descending != key.best_first else "ASC"
    return f"{expression} {direction}{' NULLS LAST' if key.nullable else ''}"


def order_clause(sort: Sort, sql: Sql) -> str:
    parts = [ordered(sort_expression(name, sql), name, descending) for name, descending in sort]
    return ", ".join([*parts, "id ASC"])


def keyset_clause(sort: Sort, after: list[Any], sql: Sql) -> str:
    """Rows strictly after the cursor in the sort order (nulls last in both directions)."""
    values, last_id = after[:-1], after[-1]
    expression = f"id > {sql.arg(last_id)}"
    for (name, descending), value in reversed(list(zip(sort, values, strict=True))):
        column, nullable = sort_expression(name, sql), SORT_KEYS[name].nullable
        if value is None:
            expression = f"({column} IS NULL AND {expression})"
            continue
        placeholder = sql.arg(value)
        later = f"{column} {'<' if descends(name, descending) else '>'} {placeholder}"
        if nullable:
            later = f"({later} OR {column} IS NULL)"
        expression = f"({later} OR ({column} = {placeholder} AND {expression}))"
    first_name, first_descending = sort[0]
    if not SORT_KEYS[first_name].nullable:
        # A redundant bound on the leading key lets the index range-scan from the cursor.
        bound = sql.arg(values[0])
        direction = "<=" if descends(first_name, first_descending) else ">="
        expression = f"{sort_expression(first_name, sql)} {direction} {bound} AND {expression}"
    return expression


def cursor_keys(sort: Sort, values: list[Any]) -> list[Any]:
    """A cursor's sort keys as typed values for `sort`, then the id; 422 for any other shape."""
    return read_keys(values, [(SORT_KEYS[name].read, SORT_KEYS[name].nullable) for name, _ in sort])
