"""Keeps the read table vacuumed and analyzed when the PostgreSQL server does not.

Index-only scans (the deep offset, the counts) stay index-only only while the table's pages are
marked all-visible, and only VACUUM marks them. The table's autovacuum settings (schema.sql,
tuned for a table that mostly grows) get that from autovacuum. A server running with
`autovacuum = off` never vacuums, so there the projector applies the same thresholds itself:
`VACUUM (ANALYZE, SKIP_LOCKED)` once the rows inserted or dead since the last vacuum pass them,
`ANALYZE` once the rows changed since the last analyze do. With autovacuum on it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from shared.config import Settings

log = logging.getLogger("tasks.projector")

DEFAULTS = {
    # PostgreSQL's own defaults, for any parameter the table does not set.
    "autovacuum_vacuum_insert_threshold": 1000.0,
    "autovacuum_vacuum_insert_scale_factor": 0.2,
    "autovacuum_vacuum_threshold": 50.0,
    "autovacuum_vacuum_scale_factor": 0.2,
    "autovacuum_analyze_threshold": 50.0,
    "autovacuum_analyze_scale_factor": 0.1,
}


@dataclass(frozen=True)
class Activity:
    """The read table's rows and what changed since its last vacuum and analyze."""

    live: int
    inserted: int
    dead: int
    modified: int
    options: dict[str, float]

    def over(self, kind: str, count: int) -> bool:
        threshold = self.options[f"autovacuum_{kind}_threshold"]
        return count > threshold + self.options[f"autovacuum_{kind}_scale_factor"] * self.live

    @property
    def needs_vacuum(self) -> bool:
        return self.over("vacuum_insert", self.inserted) or self.over("vacuum", self.dead)

    @property
    def needs_analyze(self) -> bool:
        return self.over("analyze", self.modified)


def table_options(reloptions: list[str] | None) -> dict[str, float]:
    """The autovacuum thresholds in force for the table: its own, else the defaults."""
    options = dict(DEFAULTS)
    for option in reloptions or []:
        name, _, value = option.partition("=")
        if name in options:
            options[name] = float(value)
    return options


async def activity(conn: asyncpg.Connection) -> Activity:
    row = await conn.fetchrow(
        "SELECT c.reloptions, s.n_live_tup, s.n_ins_since_vacuum, s.n_dead_tup, "
        "s.n_mod_since_analyze FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.oid = 'tasks'::regclass"
    )
    if row is None:  # no statistics yet: nothing counted, nothing due
        return Activity(0, 0, 0, 0, table_options(None))
    return Activity(
        row["n_live_tup"],
        row["n_ins_since_vacuum"],
        row["n_dead_tup"],
        row["n_mod_since_analyze"],
        table_options(row["reloptions"]),
    )


async def vacuum_if_due(conn: asyncpg.Connection) -> str | None:
    """Vacuum (and analyze) or only analyze the read table if it is due; what ran, if anything.
    SKIP_LOCKED: a rebuild swapping the table, or another vacuum, is never waited for."""
    due = await activity(conn)
    if due.needs_vacuum:
        await conn.execute("VACUUM (ANALYZE, SKIP_LOCKED) tasks")
        return "vacuum"
    if due.needs_analyze:
        await conn.execute("ANALYZE (SKIP_LOCKED) tasks")
        return "analyze"
    return None


async def keep_vacuumed(settings: Settings, force: bool = False) -> None:
    """Every `read_vacuum_seconds`, vacuum the read table if it is due, while the server's
    autovacuum is off (or always, with `force`). Never raises: a failed check is logged and
    tried again at the next interval."""
    interval = settings.read_vacuum_seconds
    conn: asyncpg.Connection | None = None
    try:
        while interval > 0:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(settings.read_dsn)
                    if not force and await conn.fetchval("SHOW autovacuum") == "on":
                        log.info("autovacuum is on: the read table is left to it")
                        return
                ran = await vacuum_if_due(conn)
                if ran is not None:
                    log.info("read table maintained", extra={"operation": ran})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("read table maintenance failed: %s", exc)
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(interval)
    finally:
        if conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await conn.close(timeout=5)
