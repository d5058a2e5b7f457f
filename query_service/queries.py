"""List parameters to one SQL statement: filters, multi-key sort, offset or cursor, exact total."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote_plus, urlencode
from uuid import UUID

import orjson

from query_service.cursors import decode_cursor, encode_cursor, invalid
from shared.config import Settings
from shared.errors import ValidationFailed
from shared.text import FORMAT_CHARACTER_RANGES, normalise_tag

DEFAULT_MAX_OFFSET: int = Settings.model_fields["max_offset"].default

# As on write: C0 controls but tab and newline, DEL, C1 controls, and lone surrogates.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Matched with fullmatch (`$` would let a trailing newline through) and ASCII digits only
# (`\d` also takes other scripts' digits, which int() then reads).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INT = re.compile(r"[0-9]{1,19}")
# The controls `_FORBIDDEN` refuses, for JSON Schema patterns (a query string holds no lone
# surrogate: it is not UTF-8), and the whitespace `strip` trims that is no such control.
_CONTROL = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
_SPACE = f"[^\\S{_CONTROL}]*"
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
MAX_CSV = 50
MAX_Q = 200
MAX_TAG = 50
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# Positions and versions are PostgreSQL bigints: 19 digits, up to 2**63 - 1.
MAX_POSITION = 2**63 - 1
"""The largest position a parameter or header may name (18 digits)."""
LIST_PATH = "/api/v1/tasks"

# Sort key → (SQL expression, nullable). Expressions never come from input. Titles compare
# through the `title_order` collation (projector/schema.sql): case- and accent-insensitive.
SORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "created_at": ("created_at", False),
    "updated_at": ("updated_at", False),
    "due_date": ("due_date", True),
    "priority": ("priority", False),
    "title": ("title COLLATE title_order", False),
    "relevance": ("ts_rank(search, {query})", False),
}
# Keys whose plain (unprefixed) order is descending: `relevance` puts the best match first.
BEST_FIRST = frozenset({"relevance"})

PARAMETERS: dict[str, str] = {
    "completed": "true or false",
    "priority": "CSV of levels 1-5, any of",
    "priority_min": "inclusive lower bound, 1-5",
    "priority_max": "inclusive upper bound, 1-5",
    "tags": "CSV of tags, tasks having any of them",
    "tags_all": "CSV of tags, tasks having all of them",
    "due_before": "inclusive YYYY-MM-DD bound",
    "due_after": "inclusive YYYY-MM-DD bound",
    "overdue": "true: due before today (UTC) and not completed; false: the complement",
    "has_due_date": "true or false",
    "q": 'full text over title and description: web-search syntax (words, "phrases", '
    "-excluded, or), stemmed (English) alongside exact words, the last word also as a prefix",
    "created_after": "inclusive timestamp with Z or offset",
    "created_before": "inclusive timestamp with Z or offset",
    "updated_after": "inclusive timestamp with Z or offset",
    "include_deleted": "true also returns soft-deleted tasks",
    "sort": "CSV of created_at, updated_at, due_date, priority, title (case- and "
    "accent-insensitive) and, with q only, relevance (best match first); '-' reverses a key; "
    "default -created_at; ties broken by id",
    "limit": "1 to 100, default 20",
    "offset": "0 to the maximum offset setting, default 0; not with cursor",
    "cursor": "opaque cursor from next_cursor (or the next link); it carries the filter and "
    "sort, so it continues the walk alone; other filter or sort parameters, or offset, are 422",
    "min_position": "wait until the read model reaches this position (read-your-writes); 422 "
    "beyond the store's last position, 503 with Retry-After if not reached in time",
}


def _csv_pattern(item: str) -> str:
    return f"^{item}(?:,{item}){{0,{MAX_CSV - 1}}}$"


_BOOLEAN: dict[str, Any] = {"type": "boolean"}
_TIMESTAMP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": f"^{_TIMESTAMP.pattern}$",
}
_DATE_SCHEMA: dict[str, Any] = {"type": "string", "format": "date", "pattern": f"^{_DATE.pattern}$"}
_SORT_KEY = f"{_SPACE}-?(?:{'|'.join(SORT_COLUMNS)}){_SPACE}"
# Refused in a tag (as on write): controls, commas and invisible format characters.
_NOT_TAG = f",{_CONTROL}{FORMAT_CHARACTER_RANGES}"
_TAG_ITEM = f"{_SPACE}[^\\s{_NOT_TAG}](?:[^{_NOT_TAG}]{{0,{MAX_TAG - 2}}}[^\\s{_NOT_TAG}])?{_SPACE}"

PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "completed": _BOOLEAN,
    "priority": {"type": "string", "pattern": _csv_pattern(f"{_SPACE}0{{0,17}}[1-5]{_SPACE}")},
    "priority_min": {"type": "integer", "minimum": 1, "maximum": 5},
    "priority_max": {"type": "integer", "minimum": 1, "maximum": 5},
    "tags": {"type": "string", "pattern": _csv_pattern(_TAG_ITEM)},
    "tags_all": {"type": "string", "pattern": _csv_pattern(_TAG_ITEM)},
    "due_before": _DATE_SCHEMA,
    "due_after": _DATE_SCHEMA,
    "overdue": _BOOLEAN,
    "has_due_date": _BOOLEAN,
    "q": {"type": "string", "minLength": 1, "maxLength": MAX_Q, "pattern": f"^[^{_CONTROL}]*$"},
    "created_after": _TIMESTAMP_SCHEMA,
    "created_before": _TIMESTAMP_SCHEMA,
    "updated_after": _TIMESTAMP_SCHEMA,
    "include_deleted": _BOOLEAN,
    "sort": {"type": "string", "pattern": _csv_pattern(_SORT_KEY)},
    # Defaults are in the descriptions only: a client generated from a `default` would send it,
    # and an offset sent with a cursor is 422.
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    # The setting's default: a deployment that changes it serves another maximum.
    "offset": {"type": "integer", "minimum": 0, "maximum": DEFAULT_MAX_OFFSET},
    "cursor": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_=-]+$"},
    "min_position": {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
}
"""Each list parameter's JSON Schema, from the constants and patterns its parser uses. What
JSON Schema cannot say is in the descriptions: a sort key given twice, `relevance` without `q`,
`cursor` with `offset`, and the maximum offset (a setting)."""


@dataclass
class ListQuery:
    filters: list[tuple[str, Any]] = field(default_factory=list)
    include_deleted: bool = False
    sort: list[tuple[str, bool]] = field(default_factory=lambda: [("created_at", True)])
    limit: int = 20
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

    def search(self) -> str | None:
        return next((str(value) for name, value in self.filters if name == "q"), None)

    def next_cursor(self, row: Any, secret: bytes) -> str:
        return encode_cursor(cursor_values(self, row), self.walk, secret)

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


def _text(name: str, value: str) -> str:
    if _FORBIDDEN.search(value):
        raise ValidationFailed({name: "Must not contain control characters"})
    return value


def _bool(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise ValidationFailed({name: "Must be true or false"})
    return value == "true"


def parse_int(name: str, value: str, low: int, high: int) -> int:
    if not _INT.fullmatch(value) or not low <= int(value) <= high:
        raise ValidationFailed({name: f"Must be an integer from {low} to {high}"})
    return int(value)


def _csv(name: str, value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ValidationFailed({name: "Empty item in list"})
    if len(items) > MAX_CSV:
        raise ValidationFailed({name: f"At most {MAX_CSV} items"})
    return items


def _tags(name: str, value: str) -> list[str]:
    tags: list[str] = []
    for item in _csv(name, value):
        try:
            tag = normalise_tag(item)  # as on write: a fullwidth `work` finds `work`
        except ValueError as exc:
            raise ValidationFailed({name: str(exc)}) from None
        if tag not in tags:
            tags.append(tag)
    # Sorted, so the same set of tags in another order is the same query (and cursor).
    return sorted(tags)


def _date(name: str, value: str) -> date:
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed({name: "Must be a date YYYY-MM-DD"}) from None


def parse_timestamp(name: str, value: str) -> datetime:
    try:
        if not _TIMESTAMP.fullmatch(value):
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


def _sort(value: str) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for item in _csv("sort", value):
        descending = item.startswith("-")
        name = item.removeprefix("-")
        if name not in SORT_COLUMNS:
            raise ValidationFailed({"sort": f"Unknown sort key {name!r}"})
        if any(existing == name for existing, _ in keys):
            raise ValidationFailed({"sort": f"Sort key {name!r} given twice"})
        keys.append((name, descending))
    return keys


WALK_EXCLUDED = frozenset({"cursor", "limit", "offset", "min_position"})
"""Parameters that do not define the walk; every other one is carried by a cursor."""


def _collect(items: list[tuple[str, str]]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            raise ValidationFailed({name[:100]: "Unknown parameter"})
        if name in seen:
            raise ValidationFailed({name: "Given more than once"})
        if value == "":
            raise ValidationFailed({name: "Must not be empty"})
        seen[name] = _text(name, value)
    return seen


def _walk(query: ListQuery, seen: dict[str, str]) -> None:
    """The filter, sort and include_deleted parameters into `query`."""
    f = query.filters
    for name, value in seen.items():
        if name in ("completed", "has_due_date", "overdue"):
            f.append((name, _bool(name, value)))
        elif name == "priority":
            f.append((name, sorted({parse_int(name, item, 1, 5) for item in _csv(name, value)})))
        elif name in ("priority_min", "priority_max"):
            f.append((name, parse_int(name, value, 1, 5)))
        elif name in ("tags", "tags_all"):
            f.append((name, _tags(name, value)))
        elif name in ("due_before", "due_after"):
            f.append((name, _date(name, value)))
        elif name in ("created_after", "created_before", "updated_after"):
            f.append((name, parse_timestamp(name, value)))
        elif name == "q":
            if len(value) > MAX_Q:
                raise ValidationFailed({"q": f"At most {MAX_Q} characters"})
            f.append((name, value))
        elif name == "include_deleted":
            query.include_deleted = _bool(name, value)
        elif name == "sort":
            query.sort = _sort(value)
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
        values, walk = decode_cursor(seen["cursor"], secret)
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
        query.after = _cursor_keys(query, values)
    return query


def _cursor_keys(query: ListQuery, values: list[Any]) -> list[Any]:
    """The cursor's sort keys as typed values for its sort; 422 for any other shape."""
    if len(values) != len(query.sort) + 1:
        raise invalid()
    keys = [_key_value(name, raw) for (name, _), raw in zip(query.sort, values, strict=False)]
    last = values[-1]
    if not isinstance(last, str) or not _UUID.fullmatch(last):
        raise invalid()
    return [*keys, UUID(last)]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CURSOR_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,15}[+-][0-9]{2}:[0-9]{2}")


def _key_value(name: str, raw: Any) -> Any:
    """One sort key of a cursor, checked against what the sort key's column holds."""
    if raw is None and SORT_COLUMNS[name][1]:
        return None
    try:
        if name in ("created_at", "updated_at"):
            if not isinstance(raw, str) or not _CURSOR_TIMESTAMP.fullmatch(raw):
                raise ValueError
            return datetime.fromisoformat(raw)
        if name == "due_date":
            if not isinstance(raw, str) or not _DATE.fullmatch(raw):
                raise ValueError
            return date.fromisoformat(raw)
        if name == "priority":
            if type(raw) is not int or not 1 <= raw <= 5:
                raise ValueError
            return raw
        if name == "title":
            if not isinstance(raw, str) or _FORBIDDEN.search(raw):
                raise ValueError
            return raw
        if name == "relevance":
            if type(raw) not in (int, float) or not math.isfinite(raw):
                raise ValueError
            return float(raw)
    except ValueError:
        raise invalid() from None
    raise invalid()


def _today() -> date:
    return datetime.now(UTC).date()


class Sql:
    """Collects `$n` parameters while a statement is written."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.tsquery = "NULL::tsquery"

    def arg(self, value: Any, cast: str = "") -> str:
        self.args.append(value)
        return f"${len(self.args)}{cast}"


def where_clause(query: ListQuery, sql: Sql) -> str:
    conditions = [] if query.include_deleted else ["NOT deleted"]
    # In a fixed order, so the same filters given in another order are the same statement
    # (one prepared statement, one remembered total).
    for name, value in sorted(query.filters, key=lambda f: str(f[0])):
        if name == "completed":
            conditions.append("completed" if value else "NOT completed")
        elif name == "has_due_date":
            conditions.append("due_date IS NOT NULL" if value else "due_date IS NULL")
        elif name == "overdue":
            today = sql.arg(_today(), "::date")
            overdue = f"(due_date < {today} AND NOT completed)"
            conditions.append(overdue if value else f"NOT coalesce({overdue}, false)")
        elif name == "priority":
            conditions.append(
                f"priority = {sql.arg(value[0])}"
                if len(value) == 1
                else f"priority = ANY({sql.arg(value, '::smallint[]')})"
            )
        elif name == "priority_min":
            conditions.append(f"priority >= {sql.arg(value)}")
        elif name == "priority_max":
            conditions.append(f"priority <= {sql.arg(value)}")
        elif name == "tags":
            conditions.append(f"tags && {sql.arg(value, '::text[]')}")
        elif name == "tags_all":
            conditions.append(f"tags @> {sql.arg(value, '::text[]')}")
        elif name == "due_before":
            conditions.append(f"due_date <= {sql.arg(value)}")
        elif name == "due_after":
            conditions.append(f"due_date >= {sql.arg(value)}")
        elif name == "q":
            sql.tsquery = tsquery_sql(value, sql)
            conditions.append(f"search @@ {sql.tsquery}")
        elif name == "created_after":
            conditions.append(f"created_at >= {sql.arg(value)}")
        elif name == "created_before":
            conditions.append(f"created_at <= {sql.arg(value)}")
        elif name == "updated_after":
            conditions.append(f"updated_at >= {sql.arg(value)}")
    return " AND ".join(conditions) or "true"


# The last word of a search, when it is a plain word (not quoted, not excluded): also a prefix.
_LAST_WORD = re.compile(r"(?:^|\s)([^\W_]+)\s*$")


def _words(text: str, sql: Sql) -> str:
    """Stemmed (English); the exact words (simple) when English leaves nothing (stop words
    only). An exact match is a stemmed match too, so OR-ing both would only blur the plan."""
    placeholder = sql.arg(text)
    english = f"websearch_to_tsquery('english', {placeholder})"
    return (
        f"(CASE WHEN numnode({english}) > 0 THEN {english}"
        f" ELSE websearch_to_tsquery('simple', {placeholder}) END)"
    )


# `or` between groups, outside quotes (web-search syntax: it binds loosest, as in `a b or c`).
_OR = re.compile(r"(?<!\S)or(?!\S)", re.IGNORECASE)


def tsquery_sql(q: str, sql: Sql) -> str:
    """The search as one tsquery (one GIN scan): web-search syntax, stemmed, and the last plain
    word matched stemmed or as the prefix of an exact word (`financ` finds `financial`)."""
    found = _LAST_WORD.search(q)
    head = q[: found.start(1)] if found else q
    if found is None or found.group(1).lower() == "or" or head.count('"') % 2:
        return _words(q, sql)
    # Only the last `or` group ends with the word: `a or b financ` is a | (b & financ*).
    splits = [m for m in _OR.finditer(head) if head[: m.start()].count('"') % 2 == 0]
    groups = _words(head[: splits[-1].start()], sql) if splits else None
    head = head[splits[-1].end() :] if splits else head
    before = _words(head, sql) if head.strip() else None
    word = found.group(1)
    prefix = f"(websearch_to_tsquery('english', {sql.arg(word)})"
    prefix += f" || to_tsquery('simple', {sql.arg(word + ':*')}))"
    last = prefix if before is None else f"({before} && {prefix})"
    return last if groups is None else f"({groups} || {last})"


def sort_expression(name: str, sql: Sql) -> str:
    return SORT_COLUMNS[name][0].format(query=sql.tsquery)


def descends(name: str, descending: bool) -> bool:
    return descending != (name in BEST_FIRST)


def order_clause(query: ListQuery, sql: Sql) -> str:
    parts = []
    for name, descending in query.sort:
        nullable = SORT_COLUMNS[name][1]
        direction = "DESC" if descends(name, descending) else "ASC"
        parts.append(f"{sort_expression(name, sql)} {direction}{' NULLS LAST' if nullable else ''}")
    parts.append("id ASC")
    return ", ".join(parts)


def keyset_clause(query: ListQuery, sql: Sql) -> str:
    """Rows strictly after the cursor in the sort order (nulls last in both directions)."""
    assert query.after is not None
    keys = list(query.sort)
    values, last_id = query.after[:-1], query.after[-1]
    expression = f"id > {sql.arg(last_id)}"
    for (name, descending), value in reversed(list(zip(keys, values, strict=True))):
        column, nullable = sort_expression(name, sql), SORT_COLUMNS[name][1]
        if value is None:
            expression = f"({column} IS NULL AND {expression})"
            continue
        placeholder = sql.arg(value)
        after = f"{column} {'<' if descends(name, descending) else '>'} {placeholder}"
        if nullable:
            after = f"({after} OR {column} IS NULL)"
        expression = f"({after} OR ({column} = {placeholder} AND {expression}))"
    first_name, first_descending = keys[0]
    if not SORT_COLUMNS[first_name][1]:
        # A redundant bound on the leading key lets the index range-scan from the cursor.
        bound = sql.arg(values[0])
        direction = "<=" if descends(first_name, first_descending) else ">="
        expression = f"{sort_expression(first_name, sql)} {direction} {bound} AND {expression}"
    return expression


def cursor_values(query: ListQuery, row: Any) -> list[Any]:
    values: list[Any] = []
    for name, _ in query.sort:
        value = row[f"k_{name}"]
        if isinstance(value, (datetime, date)):
            value = value.isoformat()
        values.append(value)
    values.append(str(row["id"]))
    return values


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


def list_statements(query: ListQuery) -> ListStatement:
    """Both forms are one statement each, so the page, the total and the position share one
    snapshot."""
    sql = Sql()
    where = where_clause(query, sql)
    total_key = (where, orjson.dumps(sql.args, default=str))
    page_where = where
    if query.after is not None:
        page_where = f"{where} AND {keyset_clause(query, sql)}"
    order = order_clause(query, sql)
    keys = ", ".join(f"{sort_expression(name, sql)} AS k_{name}" for name, _ in query.sort)
    key_names = "".join(f", page.k_{name}" for name, _ in query.sort)
    limit = sql.arg(query.limit + 1)
    offset = sql.arg(query.offset or 0)
    if query.offset:
        # Skip rows on the sort keys and ids alone (an index-only scan where the index holds
        # them), then read `doc` for the page's rows only, by primary key.
        skipped = "".join(f", p.k_{name}" for name, _ in query.sort)
        page = (
            f"SELECT d.doc, p.id{skipped} FROM (SELECT id, {keys} FROM tasks"
            f" WHERE {page_where} ORDER BY {order} LIMIT {limit} OFFSET {offset}) AS p"
            " JOIN tasks AS d ON d.id = p.id"
        )
    else:
        page = (
            f"SELECT doc, id, {keys} FROM tasks WHERE {page_where}"
            f" ORDER BY {order} LIMIT {limit} OFFSET {offset}"
        )
    outer_order = ", ".join(
        f"page.k_{name} {'DESC' if descends(name, d) else 'ASC'}"
        f"{' NULLS LAST' if SORT_COLUMNS[name][1] else ''}"
        for name, d in query.sort
    )
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
