"""The read model's schema, applied at every start, brings an older table up to date, and a
rebuild's fresh table has exactly the columns and indexes of a migrated one."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
import httpx

from projector.projection import migrate_read_model
from projector.rebuild import rebuild
from shared.config import Settings
from tests.helpers import JSON, eventually

# The read table as the previous release created it: exact-word search, byte-order titles.
PREVIOUS = """
CREATE TABLE tasks (
    id uuid PRIMARY KEY, title text COLLATE "C" NOT NULL, description text,
    priority smallint NOT NULL, due_date date, tags text[] NOT NULL, completed boolean NOT NULL,
    completed_at timestamptz, deleted boolean NOT NULL, deleted_at timestamptz,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version integer NOT NULL,
    position bigint NOT NULL, doc text NOT NULL,
    search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', title || ' ' || coalesce(description, ''))
    ) STORED
);
CREATE INDEX tasks_title ON tasks (title, id) WHERE NOT deleted;
CREATE INDEX tasks_search ON tasks USING gin (search) WHERE NOT deleted;
INSERT INTO tasks VALUES ('9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11', 'Quarterly reports', NULL, 3,
    NULL, '{}', false, NULL, false, NULL, now(), now(), 1, 1, '{}');
"""


async def shape(conn: asyncpg.Connection) -> dict[str, Any]:
    columns = await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid) AS generated, c.collname"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d"
        " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " LEFT JOIN pg_collation c ON c.oid = a.attcollation AND a.attcollation <> 0"
        " WHERE a.attrelid = 'tasks'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attname"
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' ORDER BY indexname"
    )
    return {
        "columns": [tuple(row) for row in columns],
        "indexes": {row["indexname"]: row["indexdef"] for row in indexes},
    }


async def test_an_older_read_table_gains_stemmed_search_and_the_title_order(
    settings: Settings,
) -> None:
    await migrate_read_model(settings)  # creates the database and the state table
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        await conn.execute("DROP TABLE tasks")
        await conn.execute(PREVIOUS)

        await migrate_read_model(settings)
        await migrate_read_model(settings)  # and again, as at every start: nothing changes

        found = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE search @@ websearch_to_tsquery('english', 'report')"
        )
        migrated = await shape(conn)
    finally:
        await conn.close()

    assert found == 1
    assert "tasks_title" not in migrated["indexes"]
    assert "title_order" in migrated["indexes"]["tasks_title_order"]
    assert "english" in dict((c[0], c[3]) for c in migrated["columns"])["search"]


async def test_a_rebuilt_table_has_the_columns_and_indexes_of_a_migrated_one(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "Reports"}, headers=JSON)
    assert created.status_code == 201
    conn = await asyncpg.connect(settings.read_dsn)
    try:

        async def projected() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM tasks") == 1)

        await eventually(projected)
        before = await shape(conn)

        await rebuild(settings.model_copy(update={"rebuild_workers": 1}), io.StringIO())

        after = await shape(conn)
        stemmed = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE search @@ websearch_to_tsquery('english', 'report')"
        )
    finally:
        await conn.close()

    assert after == before
    assert stemmed == 1
