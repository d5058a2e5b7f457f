"""At 100,000 tasks, the exact SQL of each filter and of the default sort uses its index."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import pytest

from projector.projection import COLUMNS, migrate_read_model
from query_service.queries import list_statement, list_statements, parse_list_query
from shared.config import Settings
from shared.domain import format_timestamp

ROWS = 100_000
TAGS = [f"tag{i:02d}" for i in range(48)] + ["work", "urgent"]
WORDS = ["quarterly", "report", "draft", "numbers", "finance", "team", "review", "plan", "budget"]


def task_rows(count: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """Read-table rows shaped like real use: 2-3 of 50 tags, 30% undated, 5% deleted."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    today = datetime.now(UTC).date()
    for position in range(1, count + 1):
        created = start + timedelta(seconds=position * 7, microseconds=rng.randint(0, 999_999))
        updated = created + timedelta(minutes=rng.randint(0, 100_000))
        completed = rng.random() < 0.4
        deleted = rng.random() < 0.05
        due = None if rng.random() < 0.3 else today + timedelta(days=rng.randint(-200, 200))
        task = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "title": " ".join(rng.choices(WORDS, k=3)),
            "description": " ".join(rng.choices(WORDS, k=8)) if rng.random() < 0.5 else None,
            "priority": rng.randint(1, 5),
            "due_date": due.isoformat() if due else None,
            "tags": rng.sample(TAGS, rng.randint(2, 3)),
            "completed": completed,
            "completed_at": format_timestamp(updated) if completed else None,
            "deleted": deleted,
            "deleted_at": format_timestamp(updated) if deleted else None,
            "created_at": format_timestamp(created),
            "updated_at": format_timestamp(updated),
            "version": 1 + completed + deleted,
        }
        yield (
            uuid.UUID(task["id"]),
            task["title"],
            task["description"],
            task["priority"],
            due,
            task["tags"],
            completed,
            updated if completed else None,
            deleted,
            updated if deleted else None,
            created,
            updated,
            task["version"],
            position,
            orjson.dumps(task).decode(),
        )


async def bulk_load(conn: asyncpg.Connection, count: int) -> None:
    await conn.copy_records_to_table("tasks", records=task_rows(count), columns=list(COLUMNS))
    await conn.execute("UPDATE projection_state SET position = $1", count)
    # VACUUM sets the visibility map, so counts can be index-only as in a settled table.
    await conn.execute("VACUUM ANALYZE tasks")


@pytest.fixture
async def big_read_table(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    await migrate_read_model(settings)
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        await bulk_load(conn, ROWS)
        yield conn
    finally:
        await conn.close()


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


async def plan(
    conn: asyncpg.Connection, query_string: str, *, page_only: bool = False
) -> list[dict[str, Any]]:
    """The nodes of the plan of exactly the statement the list endpoint runs (with its count,
    or the page alone as when the total is remembered)."""
    query = parse_list_query(
        parse_qsl(query_string, keep_blank_values=True), max_offset=100_000, secret=b"s"
    )
    statement, args = list_statement(query)
    if page_only:
        statement = list_statements(query).page_sql
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
    return list(_walk(orjson.loads(raw)[0]["Plan"]))


def indexes(nodes: list[dict[str, Any]]) -> set[str]:
    return {node["Index Name"] for node in nodes if "Index Name" in node}


def in_the_future(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


DUE = ("tasks_due", "tasks_due_desc")  # the same keys in both orders: either serves a range

# query string -> the indexes any of which must serve it (the count, the page, or both)
INTENDED: dict[str, tuple[str, ...]] = {
    "": ("tasks_created",),
    "completed=true": ("tasks_completed",),
    "completed=false": ("tasks_completed", "tasks_open_due"),
    "priority=5": ("tasks_priority", "tasks_priority_due"),
    "priority=4,5": ("tasks_priority", "tasks_priority_due"),
    "priority_min=5": ("tasks_priority", "tasks_priority_due"),
    "priority_max=1": ("tasks_priority", "tasks_priority_due"),
    "tags=work,urgent": ("tasks_tags",),
    "tags_all=work,urgent": ("tasks_tags",),
    "due_before=2026-01-10": DUE,
    "overdue=true": ("tasks_open_due",),
    "has_due_date=false": DUE,
    "q=quarterly+report": ("tasks_search",),
    "q=%22budget+meeting%22": ("tasks_search",),
    "created_after=2026-01-08T00:00:00Z": ("tasks_created",),
    "created_before=2026-01-01T12:00:00Z": ("tasks_created",),
    "include_deleted=true": ("tasks_all_created",),
    "sort=due_date": ("tasks_due",),
    "sort=-due_date": ("tasks_due_desc",),
    "sort=title": ("tasks_title_order",),
    "sort=-title": ("tasks_title_order",),
    # Selective searches (every word of WORDS is in about half the rows, where a scan of the
    # table is the better plan): stemmed, a prefix, and ranked.
    "q=meetings+budgets": ("tasks_search",),
    "q=budget+meet": ("tasks_search",),
    "q=meetings+or+%22quarterly+reports%22+-draft": ("tasks_search",),
    "q=meetings&sort=relevance": ("tasks_search",),
    "sort=-updated_at": ("tasks_updated",),
    "priority=3&sort=due_date": ("tasks_priority_due",),
}


async def test_each_filter_and_the_default_sort_use_their_index_at_100k_tasks(
    big_read_table: asyncpg.Connection,
) -> None:
    conn = big_read_table
    cases = {
        **INTENDED,
        f"due_after={in_the_future(190)}": DUE,
        "updated_after=2026-03-20T00:00:00Z": ("tasks_updated",),
    }

    plans = {query: await plan(conn, query) for query in cases}

    misses = {
        query: sorted(indexes(nodes))
        for query, nodes in plans.items()
        if not indexes(nodes) & set(cases[query])
    }
    assert misses == {}
    unindexed = {
        query: [node["Relation Name"] for node in nodes if node["Node Type"] == "Seq Scan"]
        for query, nodes in plans.items()
    }
    assert {query: scans for query, scans in unindexed.items() if scans} == {}


async def test_a_deep_offset_page_skips_rows_inside_the_index_and_reads_only_its_own_rows(
    big_read_table: asyncpg.Connection,
) -> None:
    conn = big_read_table

    nodes = await plan(conn, "offset=50000", page_only=True)

    skipping = [node for node in nodes if node.get("Index Name") == "tasks_created"]
    assert [node["Node Type"] for node in skipping] == ["Index Only Scan"]
    assert {node["Relation Name"] for node in nodes if node["Node Type"] == "Seq Scan"} == set()
    assert "tasks_pkey" in indexes(nodes)


async def test_a_title_cursor_page_range_scans_the_title_index_from_the_cursor(
    big_read_table: asyncpg.Connection,
) -> None:
    conn = big_read_table
    first = parse_list_query([("sort", "title")], max_offset=100_000, secret=b"s")
    statement, args = list_statement(first)
    rows = await conn.fetch(statement, *args)
    cursor = first.next_cursor(rows[first.limit - 1], b"s")

    nodes = await plan(conn, f"cursor={cursor}", page_only=True)

    scans = [node for node in nodes if node.get("Index Name") == "tasks_title_order"]
    assert scans, sorted(indexes(nodes))
    assert any("Index Cond" in node for node in scans), scans
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan"]
