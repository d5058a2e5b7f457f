"""List parameters to one SQL statement: filters, multi-key sort, offset or cursor, exact total.

Every list parameter is a row of `PARAMETERS` (the filters are `filters.FILTERS`'s rows), which
the parser checks names against and the OpenAPI document lists; a request's filter and sort
parameters, as given, are its walk, which a cursor carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from query_service.cursors import cursor_values, decode_cursor, encode_cursor, invalid
from query_service.filters import FILTERS, Sql, where_clause
from query_service.params import (
    BOOLEAN,
    MAX_POSITION,
    Parameter,
    parse_given,
    parse_int,
    unique_params,
)
from query_service.sorting import (
    DEFAULT_SORT,
    SORT,
    SORT_DOC,
    Sort,
    cursor_keys,
    keyset_clause,
    order_clause,
    ordered,
    sort_expression,
)
from shared.config import Settings
from shared.errors import ValidationFailed

DEFAULT_MAX_OFFSET: int = Settings.model_fields["max_offset"].default
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
LIST_PATH = "/api/v1/tasks"
POSITION: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}

PARAMETERS: dict[str, Parameter] = {
    row.name: row
    for row in (
        *(each.parameter for each in FILTERS.values()),
        Parameter("include_deleted", "true also returns soft-deleted tasks", BOOLEAN.schema),
        Parameter("sort", SORT_DOC, SORT.schema),
        # Defaults are in the descriptions only: a client generated from a `default` would send
        # it, and an offset sent with a cursor is 422.
        Parameter(
            "limit",
            f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        ),
        # The setting's default: a deployment that changes it serves another maximum.
        Parameter(
            "offset",
            "0 to the maximum offset setting, default 0; not with cursor",
            {"type": "integer", "minimum": 0, "maximum": DEFAULT_MAX_OFFSET},
        ),
        Parameter(
            "cursor",
            "opaque cursor from next_cursor (or the next link); it carries the filter and sort, "
            "so it continues the walk alone; other filter or sort parameters, or offset, are 422",
            {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_=-]+$"},
        ),
        Parameter(
            "min_position",
            "wait until the read model reaches this position (read-your-writes); 422 beyond the "
            "store's last position, 503 with Retry-After if not reached in time",
            POSITION,
        ),
    )
}
"""Every list parameter, in the order the OpenAPI document lists them. What JSON Schema cannot
say is in the descriptions: a sort key given twice, `relevance` without `q`, `cursor` with
`offset`, and the maximum offset (a setting)."""
WALK_EXCLUDED = frozenset({"cursor", "limit", "offset", "min_position"})
"""Parameters that do not define the walk; every other one is carried by a cursor."""


@dataclass
class ListQuery:
    filters: list[tuple[str, Any]] = field(default_factory=list)
    include_deleted: bool = False
    sort: Sort = field(default_factory=DEFAULT_SORT.copy)
    limit: int = DEFAULT_LIMIT
    offset: int | None = 0
    after: list[Any] | None = None
    min_position: int | None = None
    walk: list[tuple[str, str]] = field(default_factory=list)
    """The filter, sort and include_deleted parameters as given: what a cursor carries."""
    limit_given: bool = False

    def walk_key(self) -> bytes:
        """The walk after normalisation: equal for the same filter and sort in any spelling."""
        return orjson.dumps(
            [sorted(self.filters, key=lambda f: f[0]), self.include_deleted, self.sort],
            default=str,
        )

    def next_cursor(self, row: Any, secret: bytes) -> str:
        return encode_cursor(cursor_values([name for name, _ in self.sort], row), self.walk, secret)

    def page_url(self, cursor: str | None = None, offset: int | None = None) -> str:
        """A URL of another page of this walk: by cursor (which carries the walk) or offset."""
        items: list[tuple[str, str]] = []
        if cursor is not None:
            items.append(("cursor", cursor))
        else:
            items.extend(self.walk)
            items.append(("offset", str(offset or 0)))
        if self.limit_given:
            items.append(("limit", str(self.limit)))
        return f"{LIST_PATH}?{urlencode(items)}"


def _collect(items: list[tuple[str, str]]) -> dict[str, str]:
    return unique_params(items, PARAMETERS, parse_given)


def _walk(query: ListQuery, seen: dict[str, str]) -> None:
    """The filter, sort and include_deleted parameters into `query`."""
    for name, value in seen.items():
        if name in FILTERS:
            query.filters.append((name, FILTERS[name].value.parse(name, value)))
        elif name == "include_deleted":
            query.include_deleted = BOOLEAN.parse(name, value)
        elif name == "sort":
            query.sort = SORT.parse(name, value)
    if "q" not in seen and any(key == "relevance" for key, _ in query.sort):
        raise ValidationFailed({"sort": "Sort by relevance needs q"})
    query.walk = sorted((name, value) for name, value in seen.items() if name not in WALK_EXCLUDED)


def parse_list_query(items: list[tuple[str, str]], *, max_offset: int, secret: bytes) -> ListQuery:
    """Every rule of the list parameters; 422 names the parameter.

    With `cursor`, the walk is the cursor's: given alone it continues it, given with filter or
    sort parameters they must describe the same walk.
    """
    seen = _collect(items)
    query = ListQuery()
    _walk(query, seen)
    if "limit" in seen:
        query.limit = parse_int("limit", seen["limit"], 1, MAX_LIMIT)
        query.limit_given = True
    if "offset" in seen:
        query.offset = parse_int("offset", seen["offset"], 0, max_offset)
    if "min_position" in seen:
        query.min_position = parse_int("min_position", seen["min_position"], 0, MAX_POSITION)
    if "cursor" in seen:
        if "offset" in seen:
            raise ValidationFailed({"cursor": "Use either cursor or offset"})
        _continue(query, seen["cursor"], secret)
    return query


def _continue(query: ListQuery, cursor: str, secret: bytes) -> None:
    """The cursor's walk and place into `query`: its filter and sort, after its last row."""
    values, walk = decode_cursor(cursor, secret)
    carried = ListQuery()
    try:
        _walk(carried, _collect(walk))
    except ValidationFailed:
        raise invalid() from None
    if any(name in WALK_EXCLUDED for name, _ in walk):
        raise invalid()
    if query.walk and query.walk_key() != carried.walk_key():
        raise invalid("From another filter or sort: send the cursor alone to continue")
    query.filters, query.include_deleted = carried.filters, carried.include_deleted
    query.sort, query.walk = carried.sort, carried.walk
    query.offset = None
    query.after = cursor_keys(query.sort, values)


@dataclass(frozen=True)
class ListStatement:
    """The SQL of one list request, in two forms that take the same arguments.

    `sql` returns the position, the exact total and the page; `page_sql` the position and the
    page only, for when the total at that position is already known. `total_key` is everything
    the total depends on besides the position: the filter's SQL and its arguments (today's date
    included when `overdue` is used), not the sort, the limit, the offset or the cursor.
    """

    sql: str
    page_sql: str
    args: list[Any]
    total_key: tuple[str, bytes]


def _page(query: ListQuery, where: str, sql: Sql) -> str:
    """The page's rows (`doc`, `id` and the sort keys as `k_<name>`), one more than the limit."""
    if query.after is not None:
        where = f"{where} AND {keyset_clause(query.sort, query.after, sql)}"
    order = order_clause(query.sort, sql)
    keys = ", ".join(f"{sort_expression(name, sql)} AS k_{name}" for name, _ in query.sort)
    limit = sql.arg(query.limit + 1)
    offset = sql.arg(query.offset or 0)
    if not query.offset:
        return (
            f"SELECT doc, id, {keys} FROM tasks WHERE {where}"
            f" ORDER BY {order} LIMIT {limit} OFFSET {offset}"
        )
    # Skip rows on the sort keys and ids alone (an index-only scan where the index holds them),
    # then read `doc` for the page's rows only, by primary key.
    skipped = "".join(f", p.k_{name}" for name, _ in query.sort)
    return (
        f"SELECT d.doc, p.id{skipped} FROM (SELECT id, {keys} FROM tasks"
        f" WHERE {where} ORDER BY {order} LIMIT {limit} OFFSET {offset}) AS p"
        " JOIN tasks AS d ON d.id = p.id"
    )


def list_statements(query: ListQuery) -> ListStatement:
    """Both forms are one statement each, so the page, the total and the position share one
    snapshot."""
    sql = Sql()
    where = where_clause(query.filters, query.include_deleted, sql)
    total_key = (where, orjson.dumps(sql.args, default=str))
    page = _page(query, where, sql)
    key_names = "".join(f", page.k_{name}" for name, _ in query.sort)
    outer_order = ", ".join(ordered(f"page.k_{name}", name, d) for name, d in query.sort)
    state = "(SELECT position, generation FROM projection_state WHERE name = 'projector') AS state"
    tail = f" LEFT JOIN LATERAL ({page}) AS page ON true ORDER BY {outer_order}, page.id ASC"
    return ListStatement(
        sql=(
            f"SELECT state.position, state.generation, total.n AS total, page.doc,"
            f" page.id{key_names} FROM {state}"
            f" CROSS JOIN (SELECT count(*) AS n FROM tasks WHERE {where}) AS total{tail}"
        ),
        page_sql=(
            f"SELECT state.position, state.generation, page.doc, page.id{key_names}"
            f" FROM {state}{tail}"
        ),
        args=sql.args,
        total_key=total_key,
    )


def list_statement(query: ListQuery) -> tuple[str, list[Any]]:
    """The page with its exact total, computed in the statement's own snapshot."""
    statements = list_statements(query)
    return statements.sql, statements.args
