-- The read model: one row per task, exactly the REST representation in `doc`,
-- typed columns for filtering and sorting, indexes for every filter and sort.
-- Applied at every start (under a DDL lock): each statement is idempotent, and the DO blocks
-- bring an older table up to date.

-- `sort=title` order: case- and accent-insensitive (ICU's root locale at primary strength, so
-- "apple" = "Apple" and "eclair" = "éclair", ties broken by id). A server built without ICU
-- falls back to the database's own libc locale: ordered by it, but case and accents break ties.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'title_order') THEN
        BEGIN
            CREATE COLLATION title_order
                (provider = icu, locale = 'und-u-ks-level1', deterministic = false);
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR undefined_object THEN
            EXECUTE format(
                'CREATE COLLATION title_order (provider = libc, locale = %L)',
                (SELECT datcollate FROM pg_database WHERE datname = current_database())
            );
        END;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS tasks (
    id            uuid PRIMARY KEY,
    title         text COLLATE "C" NOT NULL,
    description   text,
    priority      smallint NOT NULL,
    due_date      date,
    tags          text[] NOT NULL,
    completed     boolean NOT NULL,
    completed_at  timestamptz,
    deleted       boolean NOT NULL,
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       integer NOT NULL,
    position      bigint NOT NULL,
    doc           text NOT NULL,
    -- For `q`: the stemmed (English) words with their positions, and the exact (simple) words
    -- without (strip): they serve a search of stop words only and the prefix of the last word,
    -- and no phrase can match across the two halves.
    search        tsvector GENERATED ALWAYS AS (
                      to_tsvector('english', title || ' ' || coalesce(description, ''))
                      || strip(to_tsvector('simple', title || ' ' || coalesce(description, '')))
                  ) STORED
);

-- A table from before stemming: its search column (and the index on it) built anew.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_attrdef d
        JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE d.adrelid = 'tasks'::regclass AND a.attname = 'search'
          AND pg_get_expr(d.adbin, d.adrelid) NOT LIKE '%english%'
    ) THEN
        DROP INDEX IF EXISTS tasks_search;
        ALTER TABLE tasks DROP COLUMN search;
        ALTER TABLE tasks ADD COLUMN search tsvector GENERATED ALWAYS AS (
            to_tsvector('english', title || ' ' || coalesce(description, ''))
            || strip(to_tsvector('simple', title || ' ' || coalesce(description, '')))
        ) STORED;
    END IF;
END $$;
-- An insert-heavy life: rows arrive far more often than they change. The defaults vacuum after
-- 20% new rows, so a freshly seeded table is never vacuumed before it is read and index-only
-- scans visit the heap for every row. Vacuum (which marks pages all-visible) and analyze after
-- 1% new or changed rows instead, plus a thousand. `rebuild` copies these to its new table.
-- On a server with autovacuum off, the projector applies these same thresholds itself
-- (projector/maintenance.py).
ALTER TABLE tasks SET (
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);

-- Live rows only: soft-deleted tasks are never scanned by ordinary reads.
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at DESC, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated_at DESC, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_date, id) WHERE NOT deleted;
-- `sort=-due_date` is DESC NULLS LAST, id ASC: no scan direction of tasks_due gives that order.
CREATE INDEX IF NOT EXISTS tasks_due_desc ON tasks (due_date DESC NULLS LAST, id) WHERE NOT deleted;
-- `overdue=true` (due before today, not completed): its count is an index-only range scan.
CREATE INDEX IF NOT EXISTS tasks_open_due ON tasks (due_date, id) WHERE NOT deleted AND NOT completed;
-- The byte-order title index of earlier releases serves no query any more.
DROP INDEX IF EXISTS tasks_title;
CREATE INDEX IF NOT EXISTS tasks_title_order ON tasks (title COLLATE title_order, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_priority ON tasks (priority, created_at DESC, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_priority_due ON tasks (priority, due_date, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_completed ON tasks (completed, created_at DESC, id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_tags ON tasks USING gin (tags) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS tasks_search ON tasks USING gin (search) WHERE NOT deleted;
-- include_deleted=true reads everything in the default order.
CREATE INDEX IF NOT EXISTS tasks_all_created ON tasks (created_at DESC, id);

CREATE TABLE IF NOT EXISTS projection_state (
    name        text PRIMARY KEY,
    position    bigint NOT NULL,
    dead_letters bigint NOT NULL DEFAULT 0
);
INSERT INTO projection_state (name, position) VALUES ('projector', 0) ON CONFLICT DO NOTHING;
-- Raised by every `rebuild`: the same position in another generation may be another table.
ALTER TABLE projection_state ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
