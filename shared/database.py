"""Creating the database when it is missing, and serialising schema changes across processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.errors import UNAVAILABLE_ERRORS

T = TypeVar("T")
log = logging.getLogger("tasks.database")

DDL_LOCK_KEY = 7_301_124_001
"""Advisory lock held around every `CREATE`: concurrent start-ups must not race."""


def _admin_dsn(dsn: str) -> tuple[str, str]:
    url = urlsplit(dsn)
    name = url.path.lstrip("/")
    return urlunsplit(url._replace(path="/postgres")), name


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` unless it exists (safe when many start at once)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        admin_dsn, name = _admin_dsn(dsn)
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        except asyncpg.UniqueViolationError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


@contextlib.asynccontextmanager
async def ddl_lock(conn: asyncpg.Connection) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock($1)", DDL_LOCK_KEY)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", DDL_LOCK_KEY)


async def drop_database(dsn: str) -> None:
    admin_dsn, name = _admin_dsn(dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (a round trip per request).

    Readers never change session state (no SET, LISTEN, advisory locks or open cursors on pool
    connections; the query service's watcher listens on a connection of its own), and asyncpg
    itself still rolls back any transaction left open before this runs.
    """


async def retried(read: Callable[[], Awaitable[T]], attempts: int = 10, wait: float = 0.2) -> T:
    """A read that lost its connection (a restart, a terminated backend) asked again, as the
    event-sourcing library retries its own: only for statements safe to repeat. After
    `attempts` the error stands (a 503 for the client)."""
    for attempt in range(1, attempts + 1):
        try:
            return await read()
        except UNAVAILABLE_ERRORS as exc:
            if attempt == attempts:
                raise
            log.info("read retried", extra={"error": type(exc).__name__, "attempt": attempt})
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
