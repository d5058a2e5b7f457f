"""List parameters to one SQL statement: filters, multi-key sort, offset or cursor, exact total."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

import orjson

from shared.errors import ValidationFailed
from shared.text import normalise_tag

# As on write: C0 controls but tab and newline, DEL, C1 controls, and lone surrogates.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Matched with fullmatch (`$` would let a trailing newline through) and ASCII digits only
# (`\d` also takes other scripts' digits, which int() then reads).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INT = re.compile(r"[0-9]{1,19}")
# Positions and versions are PostgreSQL bigints: 19 digits, up to 2**63 - 1.
MAX_POSITION = 2**63 - 1
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
MAX_CSV = 50

# Sort key → (column, nullable). Column names never come from input.
SORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "created_at": ("created_at", False),
    "updated_at": ("updated_at", False),
    "due_date": ("due_date", True),
    "priority": ("priority", False),
    "title": ("title", False),
}

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
    "q": "full text over title and description (websearch syntax, no stemming)",
    "created_after": "inclusive timestamp with Z or offset",
    "created_before": "inclusive timestamp with Z or offset",
    "updated_after": "inclusive timestamp with Z or offset",
    "include_deleted": "true also returns soft-deleted tasks",
    "sort": "CSV of created_at, updated_at, due_date, priority, title; '-' for descending",
    "limit": "1 to 100, default 20",
    "offset": "0 to 100000, default 0",
    "cursor": "opaque keyset cursor from next_cursor",
    "min_position": "wait until the read model reaches this position",
}


@dataclass
class ListQuery:
    filters: list[tuple[str, Any]] = field(default_factory=list)
    include_deleted: bool = False
    sort: list[tuple[str, bool]] = field(default_factory=lambda: [("created_at", True)])
    limit: int = 20
    offset: int | None = 0
    after: list[Any] | None = None
    min_position: int | None = None

    def fingerprint(self, secret: bytes) -> str:
        canonical = orjson.dumps(
            [sorted(self.filters, key=lambda f: f[0]), self.include_deleted, self.sort],
            default=str,
        )
        return hmac.new(secret, canonical, hashlib.sha256).hexdigest()[:16]


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


def parse_list_query(items: list[tuple[str, str]], *, max_offset: int, secret: bytes) -> ListQuery:
    """Every rule of the list parameters; 422 names the parameter."""
    seen: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            raise ValidationFailed({name[:100]: "Unknown parameter"})
        if name in seen:
            raise ValidationFailed({name: "Given more than once"})
        if value == "":
            raise ValidationFailed({name: "Must not be empty"})
        seen[name] = _text(name, value)
    query = ListQuery()
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
            if len(value) > 200:
                raise ValidationFailed({"q": "At most 200 characters"})
            f.append((name, value))
        elif name == "include_deleted":
            query.include_deleted = _bool(name, value)
        elif name == "sort":
            query.sort = _sort(value)
        elif name == "limit":
            query.limit = parse_int(name, value, 1, 100)
        elif name == "offset":
            query.offset = parse_int(name, value, 0, max_offset)
        elif name == "min_position":
            query.min_position = parse_int(name, value, 0, MAX_POSITION)
    if "cursor" in seen:
        if "offset" in seen:
            raise ValidationFailed({"cursor": "Use either cursor or offset"})
        query.offset = None
        query.after = decode_cursor(seen["cursor"], query.fingerprint(secret), secret)
    return query


def encode_cursor(values: list[Any], fingerprint: str, secret: bytes) -> str:
    payload = orjson.dumps({"v": values, "f": fingerprint})
    signature = hmac.new(secret, payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str, secret: bytes) -> list[Any]:
    problem = ValidationFailed({"cursor": "Invalid, tampered, or from another filter or sort"})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise problem from None
    signature, payload = raw[:12], raw[12:]
    if not hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()[:12]):
        raise problem
    data = orjson.loads(payload)
    if data.get("f") != fingerprint:
        raise problem
    values: list[Any] = data["v"]
    return values


def _today() -> date:
    return datetime.now(UTC).date()


class Sql:
    """Collects `$n` parameters while a statement is written."""

    def __init__(self) -> None:
        self.args: list[Any] = []

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
            conditions.append(f"search @@ websearch_to_tsquery('simple', {sql.arg(value)})")
        elif name == "created_after":
            conditions.append(f"created_at >= {sql.arg(value)}")
        elif name == "created_before":
            conditions.append(f"created_at <= {sql.arg(value)}")
        elif name == "updated_after":
            conditions.append(f"updated_at >= {sql.arg(value)}")
    return " AND ".join(conditions) or "true"


def order_clause(query: ListQuery) -> str:
    parts = []
    for name, descending in query.sort:
        column, nullable = SORT_COLUMNS[name]
        parts.append(
            f"{column} {'DESC' if descending else 'ASC'}{' NULLS LAST' if nullable else ''}"
        )
    parts.append("id ASC")
    return ", ".join(parts)


def _key_value(name: str, raw: Any) -> Any:
    if raw is None:
        return None
    if name in ("created_at", "updated_at"):
        return datetime.fromisoformat(raw)
    if name == "due_date":
        return date.fromisoformat(raw)
    return raw


def keyset_clause(query: ListQuery, sql: Sql) -> str:
    """Rows strictly after the cursor in the sort order (nulls last in both directions)."""
    assert query.after is not None
    keys = list(query.sort)
    problem = ValidationFailed({"cursor": "Invalid cursor"})
    if len(query.after) != len(keys) + 1:
        raise problem
    try:
        values = [_key_value(name, raw) for (name, _), raw in zip(keys, query.after, strict=False)]
        last_id = UUID(query.after[-1])
    except (ValueError, TypeError, AttributeError):
        raise problem from None
    expression = f"id > {sql.arg(last_id)}"
    for (name, descending), value in reversed(list(zip(keys, values, strict=True))):
        column, nullable = SORT_COLUMNS[name]
        if value is None:
            expression = f"({column} IS NULL AND {expression})"
            continue
        placeholder = sql.arg(value)
        after = f"{column} {'<' if descending else '>'} {placeholder}"
        if nullable:
            after = f"({after} OR {column} IS NULL)"
        expression = f"({after} OR ({column} = {placeholder} AND {expression}))"
    first_name, first_descending = keys[0]
    first_column, first_nullable = SORT_COLUMNS[first_name]
    if not first_nullable:
        # A redundant bound on the leading key lets the index range-scan from the cursor.
        bound = sql.arg(values[0])
        expression = f"{first_column} {'<=' if first_descending else '>='} {bound} AND {expression}"
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
    order = order_clause(query)
    keys = ", ".join(f"{SORT_COLUMNS[name][0]} AS k_{name}" for name, _ in query.sort)
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
        f"page.k_{name} {'DESC' if d else 'ASC'}{' NULLS LAST' if SORT_COLUMNS[name][1] else ''}"
        for name, d in query.sort
    )
    state = "(SELECT position FROM projection_state WHERE name = 'projector') AS state"
    tail = f" LEFT JOIN LATERAL ({page}) AS page ON true ORDER BY {outer_order}, page.id ASC"
    return ListStatement(
        sql=(
            f"SELECT state.position, total.n AS total, page.doc, page.id{key_names} FROM {state}"
            f" CROSS JOIN (SELECT count(*) AS n FROM tasks WHERE {where}) AS total{tail}"
        ),
        page_sql=f"SELECT state.position, page.doc, page.id{key_names} FROM {state}{tail}",
        args=sql.args,
        total_key=total_key,
    )


def list_statement(query: ListQuery) -> tuple[str, list[Any]]:
    """The page with its exact total, computed in the statement's own snapshot."""
    statements = list_statements(query)
    return statements.sql, statements.args
